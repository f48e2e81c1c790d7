"""The `vst` command line, run as `python -m vst_engine` subprocesses on tiny clips.

Independent runs go through a small thread pool: each run is mostly interpreter and torch
start-up, so a few at a time keep the module quick on a small machine.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic import synth_frame

from vst_engine.models import model_path

from vst_engine.video import ffmpeg_exe, open_source, read_image

REPO = Path(__file__).resolve().parent.parent
BUNNY = REPO / "vst_engine" / "assets" / "bigbuckbunny.mp4"
BANNER = "WARNING: no trained weights"
WORKERS = 3



TRAINED = model_path("default").is_file()

def vst(env: dict, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    # Bytes, decoded here: text mode would turn the progress bars' \r into newlines.
    proc = subprocess.run([sys.executable, "-m", "vst_engine", *map(str, args)], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))


def vst_many(env: dict, runs: list[list]) -> list[subprocess.CompletedProcess]:
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda a: vst(env, *a), runs))


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def visible_lines(stderr: str) -> list[str]:
    """stderr as a terminal shows it (progress bars redraw with \\r), without the untrained banner."""
    lines = [ln.split("\r")[-1].strip() for ln in stderr.split("\n")]
    return [ln for ln in lines if ln and not ln.startswith(BANNER)]


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_image(p) for p in sorted(folder.glob("*.png"))}


def names(n: int, start: int = 0) -> list[str]:
    return [f"{i:06d}.png" for i in range(start, start + n)]


def same_frames(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), f"{name} differs"


# ---------------------------------------------------------------------------------------
# 1. Outputs: video file and PNG folder
# ---------------------------------------------------------------------------------------
def test_stylize_to_video_and_folder(cli_env, tiny_clip, frame_folder, style_paths, tmp_path):
    video, folder = tmp_path / "out.mp4", tmp_path / "out"
    runs = vst_many(cli_env, [
        ["stylize", frame_folder, "-s", style_paths["stripes"], "-o", video],
        ["stylize", tiny_clip, "-s", style_paths["stripes"], "-s", style_paths["dots"], "-o", f"{folder}/"],
    ])
    for proc in runs:
        ok(proc)
        # The banner shows exactly when no trained weights are shipped for the default model.
        assert ("UNTRAINED" in proc.stderr and BANNER in proc.stderr) == (not TRAINED)
        assert "stylized frames 0:12 at 64x48" in proc.stdout
    with open_source(frame_folder) as src, open_source(video) as out:
        assert (out.info.count, out.info.fps) == (src.info.count, src.info.fps) == (12, 25.0)
        assert (out.info.width, out.info.height, out.info.has_audio) == (64, 48, False)
    assert sorted(p.name for p in folder.iterdir()) == names(12)  # nothing else (no temporaries)
    umask = os.umask(0)
    os.umask(umask)
    # Frames take the umask's mode like the video (a render node under another user reads them).
    assert {stat.S_IMODE(p.stat().st_mode) for p in [video, *folder.iterdir()]} == {0o666 & ~umask}
    with open_source(tiny_clip) as src, open_source(folder) as out:
        assert out.info.count == src.info.count == 12
        assert (out.info.width, out.info.height) == (64, 48)
        assert src.info.fps == 25.0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------------------------------
# 2. Chunked renders into one folder equal one render
# ---------------------------------------------------------------------------------------
def test_frame_ranges_into_one_folder_match_single_run(cli_env, tiny_clip, style_paths, tmp_path):
    common = ["-s", style_paths["stripes"], "-s", style_paths["checker"], "--weights", "0.3,0.7"]
    single, chunks, fchunks = tmp_path / "single", tmp_path / "chunks", tmp_path / "fchunks"
    feats = tmp_path / "clip.vstf"
    # The two chunks run at the same time, as a render farm would.
    runs = vst_many(cli_env, [
        ["stylize", tiny_clip, *common, "--frames", "0:12", "-o", f"{single}/"],
        ["stylize", tiny_clip, *common, "--frames", "0:6", "-o", f"{chunks}/"],
        ["stylize", tiny_clip, *common, "--frames", "6:12", "-o", f"{chunks}/"],
        ["analyze", tiny_clip, "-s", style_paths["stripes"], "-s", style_paths["checker"], "-o", feats],
    ])
    for proc in runs:
        ok(proc)
    assert "analysed 3 of frames 0:12 at 64x48" in runs[3].stdout
    assert feats.is_file()
    for proc in vst_many(cli_env, [
        ["stylize", tiny_clip, *common, "--features", feats, "--frames", "6:12", "-o", f"{fchunks}/"],
        ["stylize", tiny_clip, *common, "--features", feats, "--frames", "0:6", "-o", f"{fchunks}/"],
    ]):
        ok(proc)
    ref = pngs(single)
    assert sorted(ref) == names(12)
    same_frames(pngs(chunks), ref)
    same_frames(pngs(fchunks), ref)  # the stored features are the ones stylize computes itself


def test_full_strength_analysis_is_completed_later(cli_env, tiny_clip, style_paths, tmp_path):
    """`analyze --full-strength` serves strength 1 only; `--complete` adds the clip's own colours,
    and those features render a lower strength exactly as stylize's own analysis does."""
    style = ["-s", style_paths["dots"]]
    lean, full, ref, out = tmp_path / "lean.vstf", tmp_path / "full.vstf", tmp_path / "ref", tmp_path / "out"
    ok(vst(cli_env, "analyze", tiny_clip, *style, "--full-strength", "-o", lean))
    refused, done, _, contradiction, reframed = vst_many(cli_env, [
        ["stylize", tiny_clip, *style, "--features", lean, "--strength", "0.5", "-o", f"{out}/"],
        ["analyze", tiny_clip, *style, "--complete", lean, "-o", full],
        ["stylize", tiny_clip, *style, "--strength", "0.5", "--frames", "3:6", "-o", f"{ref}/"],
        ["analyze", tiny_clip, *style, "--complete", lean, "--full-strength", "-o", tmp_path / "x.vstf"],
        ["analyze", tiny_clip, *style, "--complete", lean, "--frames", "0:6", "-o", tmp_path / "x.vstf"],
    ])
    assert refused.returncode == 1 and "vst analyze --complete" in visible_lines(refused.stderr)[-1]
    assert "analysed 3 of frames 0:12 at 64x48 (added the clip's own colours)" in ok(done).stdout
    assert contradiction.returncode == 1 and "contradict" in contradiction.stderr
    assert reframed.returncode == 1 and "reuses the features' frames" in reframed.stderr
    again, used = vst_many(cli_env, [
        ["analyze", tiny_clip, *style, "--complete", full, "-o", tmp_path / "y.vstf"],
        ["stylize", tiny_clip, *style, "--features", full, "--strength", "0.5", "--frames", "3:6", "-o", f"{out}/"],
    ])
    assert again.returncode == 1 and "already include the clip's own colours" in again.stderr
    ok(used)
    same_frames(pngs(out), pngs(ref))
    assert not (tmp_path / "x.vstf").exists() and not (tmp_path / "y.vstf").exists()


# ---------------------------------------------------------------------------------------
# 3. Keyframed weights
# ---------------------------------------------------------------------------------------
def test_weights_file_cross_fade(cli_env, tiny_clip, style_paths, tmp_path):
    keys = tmp_path / "fade.json"
    keys.write_text(json.dumps([{"0": 1, "11": 0}, {"0": 0, "11": 1}]))
    styles = ["-s", style_paths["stripes"], "-s", style_paths["checker"]]
    fade, first, last = tmp_path / "fade", tmp_path / "first", tmp_path / "last"
    for proc in vst_many(cli_env, [
        ["stylize", tiny_clip, *styles, "--weights-file", keys, "-o", f"{fade}/"],
        ["stylize", tiny_clip, *styles, "--weights", "1,0", "--frames", "0:1", "-o", f"{first}/"],
        ["stylize", tiny_clip, *styles, "--weights", "0,1", "--frames", "11:12", "-o", f"{last}/"],
    ]):
        ok(proc)
    f = pngs(fade)
    assert sorted(f) == names(12)
    a, b = pngs(first)["000000.png"], pngs(last)["000011.png"]
    assert np.array_equal(f["000000.png"], a)
    assert np.array_equal(f["000011.png"], b)
    # The fade really changes style: the ends are not renders of the other weights.
    assert not np.array_equal(f["000000.png"], f["000011.png"])


def test_strength_keys_in_weights_file(cli_env, tiny_clip, style_paths, tmp_path):
    """Animated strength in one run equals separate runs at each frame's constant strength."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"weights": [{"0": 1}], "strength": {"2": 0.0, "6": 1.0}}))
    style = ["-s", style_paths["dots"]]
    anim, half, zero = tmp_path / "anim", tmp_path / "half", tmp_path / "zero"
    procs = vst_many(cli_env, [
        ["stylize", tiny_clip, *style, "--weights-file", keys, "--frames", "0:8", "-o", f"{anim}/"],
        ["stylize", tiny_clip, *style, "--strength", "0.5", "--frames", "4:5", "-o", f"{half}/"],
        ["stylize", tiny_clip, *style, "--strength", "0", "--frames", "1:2", "-o", f"{zero}/"],
        ["stylize", tiny_clip, *style, "--weights-file", keys, "--strength", "1", "-o", f"{tmp_path / 'x'}/"],
    ])
    for proc in procs[:3]:
        ok(proc)
    a = pngs(anim)
    assert np.array_equal(a["000004.png"], pngs(half)["000004.png"])  # halfway between the keys
    assert np.array_equal(a["000001.png"], pngs(zero)["000001.png"])  # held before the first key
    assert procs[3].returncode == 1 and "contradicts the strength keys" in procs[3].stderr


def test_batched_passes_render_as_frame_by_frame(cli_env, tiny_clip, style_paths, tmp_path):
    """--batch groups frames that share weights and strength into one pass: animated strength
    (groups cut at every change) and constant weights (groups of 5, 5, 2) give the frames of --batch 1,
    the analysis taking its frames in batches of that size too (the strength keys need the own colours)."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"weights": [{"0": 1}], "strength": {"2": 0.0, "6": 1.0}}))
    style = ["-s", style_paths["dots"]]
    runs = {name: tmp_path / name for name in ("anim1", "anim4", "const1", "const5")}
    for proc in vst_many(cli_env, [
        ["stylize", tiny_clip, *style, "--weights-file", keys, "--frames", "0:8", "--batch", "1", "-o", f"{runs['anim1']}/"],
        ["stylize", tiny_clip, *style, "--weights-file", keys, "--frames", "0:8", "--batch", "4", "-o", f"{runs['anim4']}/"],
        ["stylize", tiny_clip, *style, "--batch", "1", "-o", f"{runs['const1']}/"],
        ["stylize", tiny_clip, *style, "--batch", "5", "-o", f"{runs['const5']}/"],
    ]):
        ok(proc)
    for one, many in (("anim1", "anim4"), ("const1", "const5")):
        a, b = pngs(runs[one]), pngs(runs[many])
        assert sorted(a) == sorted(b) and len(a) in (8, 12)
        for name in a:  # batched convolutions may round differently by one level
            assert np.abs(a[name].astype(int) - b[name].astype(int)).max() <= 1, name


# ---------------------------------------------------------------------------------------
# 4. Audio
# ---------------------------------------------------------------------------------------
def test_audio_is_kept(cli_env, tmp_path):
    out = tmp_path / "bunny.mp4"
    ok(vst(cli_env, "stylize", BUNNY, "-s", REPO / "vst_engine" / "assets" / "starry_night.jpg",
           "--max-side", "96", "--frames", "0:10", "-o", out))
    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert re.search(r"Stream #\d+:\d+.*: Audio: ", probe), probe
    assert re.search(r"Stream #\d+:\d+.*: Video: ", probe), probe
    with open_source(out) as src:
        assert (src.info.count, src.info.width, src.info.height, src.info.fps) == (10, 96, 54, 25.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bunny.mp4"]


# ---------------------------------------------------------------------------------------
# 5. Bad input: exit 1, one error line, nothing written
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_runs(cli_env, tiny_clip, style_paths, tmp_path_factory):
    """Run every bad-input case once; {case: (process, output path, files before in its folder)}."""
    d = tmp_path_factory.mktemp("bad")
    (d / "clip.mp4").write_text("this is not a video\n")
    (d / "style.png").write_text("this is not an image\n")
    (d / "empty").mkdir()
    (d / "broken.json").write_text('[{"0": 1, "11": 0}, {"0": ')
    (d / "mixed").mkdir()  # fails in the analysis, after the output folder was made
    cv2.imwrite(str(d / "mixed" / "a.png"), synth_frame(0))
    cv2.imwrite(str(d / "mixed" / "b.png"), synth_frame(1, 64, 40))
    two = ["-s", style_paths["stripes"], "-s", style_paths["checker"]]
    cases = {
        "missing-input": [d / "nope.mp4", *two],
        "text-as-video": [d / "clip.mp4", *two],
        "style-not-image": [tiny_clip, "-s", d / "style.png"],
        "missing-style": [tiny_clip, "-s", style_paths["stripes"], "-s", d / "nope.png"],
        "empty-folder": [d / "empty", *two],
        "frames-outside": [tiny_clip, *two, "--frames", "5:500"],
        "output-dir-missing": [tiny_clip, *two],
        "negative-weights": [tiny_clip, *two, "--weights=-1,2"],
        "weights-count": [tiny_clip, *two, "--weights", "1,2,3"],
        "strength": [tiny_clip, *two, "--strength", "2"],
        "features-other-style": [tiny_clip, *two, "--features", d / "dots.vstf"],
        "broken-weights-json": [tiny_clip, *two, "--weights-file", d / "broken.json"],
        "negative-weights-space": [tiny_clip, *two, "--weights", "-1,2"],
        "batch-zero": [tiny_clip, *two, "--batch", "0"],
        "mixed-sizes": [d / "mixed", *two],
        "style-is-folder": [tiny_clip, "-s", d / "empty"],
        "features-is-folder": [tiny_clip, *two, "--features", d / "empty"],
        "image-many-frames": [tiny_clip, *two],
    }
    folder_outputs = {"empty-folder", "strength", "weights-count", "mixed-sizes"}  # PNG-folder outputs for these
    plan = {}
    for name, args in cases.items():
        if name == "output-dir-missing":
            out = d / "no-such-dir" / "out.mp4"
        else:
            (d / f"out-{name}").mkdir()
            out = d / f"out-{name}" / ("frames/" if name in folder_outputs else
                                       "still.png" if name == "image-many-frames" else "out.mp4")
        target = f"{out}/" if name in folder_outputs else out  # Path drops the trailing slash
        plan[name] = (["stylize", *args, "-o", target], Path(out))

    with ThreadPoolExecutor(WORKERS) as pool:
        # A features file made for another style (same clip, model and size).
        analysed = pool.submit(vst, cli_env, "analyze", tiny_clip, "-s", style_paths["dots"],
                               "-s", style_paths["checker"], "-o", d / "dots.vstf")

        def run(name: str):
            if name == "features-other-style":
                ok(analysed.result())
            return vst(cli_env, *plan[name][0])

        futures = {name: pool.submit(run, name) for name in plan}
        results = {name: f.result() for name, f in futures.items()}
    return {name: (results[name], plan[name][1]) for name in plan}


CLEAN_CASES = ["missing-input", "text-as-video", "style-not-image", "missing-style", "empty-folder",
               "frames-outside", "output-dir-missing", "negative-weights", "weights-count", "strength",
               "features-other-style", "broken-weights-json", "batch-zero", "mixed-sizes",
               "style-is-folder", "features-is-folder", "image-many-frames"]


@pytest.mark.parametrize("case", CLEAN_CASES)
def test_bad_input_fails_cleanly(bad_runs, case):
    proc, out = bad_runs[case]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = visible_lines(proc.stderr)
    assert lines and lines[-1].startswith("vst: error: "), proc.stderr
    assert not out.exists()
    if case == "output-dir-missing":
        assert not out.parent.exists()
    else:  # the output's own (pre-existing, empty) folder: no partial or temporary files
        assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("case", CLEAN_CASES)
def test_bad_input_error_is_one_line(bad_runs, case):
    proc, _ = bad_runs[case]
    lines = visible_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("vst: error: "), proc.stderr


def test_error_messages_name_the_problem(bad_runs):
    expect = {
        "missing-input": "input not found", "text-as-video": "not a readable video",
        "style-not-image": "not a readable image", "missing-style": "image not found",
        "empty-folder": "no images", "frames-outside": "outside the clip",
        "output-dir-missing": "output folder does not exist", "negative-weights": "negative",
        "weights-count": "3 value(s) for 2 style(s)", "strength": "strength",
        "features-other-style": "other styles", "broken-weights-json": "cannot read weights file",
        "batch-zero": "--batch must be at least 1", "mixed-sizes": "but the sequence is 64x48",
        "style-is-folder": "is a folder, not an image", "features-is-folder": "is a folder, not a global features file",
        "image-many-frames": "an image output holds one frame, and frames 0:",
    }
    for case, text in expect.items():
        assert text in visible_lines(bad_runs[case][0].stderr)[-1], case


def test_negative_weights_with_space_is_a_weights_error(bad_runs):
    proc, out = bad_runs["negative-weights-space"]
    assert not out.exists()
    assert proc.returncode == 1, proc.stderr
    assert visible_lines(proc.stderr) == [visible_lines(proc.stderr)[-1]]
    assert "negative" in proc.stderr


def test_failed_run_leaves_existing_output_untouched(cli_env, tiny_clip, tmp_path):
    out = tmp_path / "out.mp4"
    payload = b"previous render, must survive\x00\xff" * 10
    out.write_bytes(payload)
    (tmp_path / "not-an-image.png").write_bytes(b"\x89PNG but not really")
    proc = vst(cli_env, "stylize", tiny_clip, "-s", tmp_path / "not-an-image.png", "-o", out)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert visible_lines(proc.stderr)[-1].startswith("vst: error: ")
    assert out.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-an-image.png", "out.mp4"]


def test_alpha_of_an_image_sequence_is_kept_in_png_frames(cli_env, style_paths, tmp_path):
    src = tmp_path / "rgba"
    src.mkdir()
    alpha = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))
    for t in range(3):
        rgba = np.dstack([synth_frame(t)[..., ::-1], np.roll(alpha, 5 * t, axis=1)])
        cv2.imwrite(str(src / f"f{t}.png"), rgba)
    deep = tmp_path / "rgba16"  # 16-bit alpha is scaled to 8 bits
    deep.mkdir()
    cv2.imwrite(str(deep / "f0.png"), np.dstack([synth_frame(0)[..., ::-1], alpha]).astype(np.uint16) * 257)
    runs = [["stylize", src, "-s", style_paths["dots"], "-o", f"{tmp_path / 'out'}/"],
            ["stylize", src, "-s", style_paths["dots"], "--max-side", "32", "-o", f"{tmp_path / 'small'}/"],
            ["stylize", deep, "-s", style_paths["dots"], "-o", f"{tmp_path / 'out16'}/"],
            ["stylize", src, "-s", style_paths["dots"], "-o", tmp_path / "out.mp4"]]
    for proc in vst_many(cli_env, runs):
        ok(proc)
    for t in range(3):
        out = cv2.imread(str(tmp_path / "out" / f"{t:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert out.shape == (48, 64, 4)
        np.testing.assert_array_equal(out[..., 3], cv2.imread(str(src / f"f{t}.png"), cv2.IMREAD_UNCHANGED)[..., 3])
        # RGB is the stylization, as without alpha
        np.testing.assert_array_equal(out[..., 2::-1], read_image(tmp_path / "out" / f"{t:06d}.png"))
    small = cv2.imread(str(tmp_path / "small" / "000002.png"), cv2.IMREAD_UNCHANGED)
    src2 = cv2.imread(str(src / "f2.png"), cv2.IMREAD_UNCHANGED)[..., 3]
    assert small.shape == (24, 32, 4)
    assert np.abs(small[..., 3].astype(int) - cv2.resize(src2, (32, 24), interpolation=cv2.INTER_AREA)).max() <= 1
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out16" / "000000.png"), cv2.IMREAD_UNCHANGED)[..., 3], alpha)
    with open_source(tmp_path / "out.mp4") as video:  # video outputs stay opaque
        assert video.info.count == 3 and not video.info.has_alpha


def test_one_frame_to_an_image_file(cli_env, tiny_clip, style_paths, tmp_path):
    """One frame may be written as an image: PNG holds the pixels of the folder output's frame, JPEG
    close to them; a transparent still keeps its alpha in PNG and WebP, not in JPEG."""
    still = tmp_path / "still.png"
    alpha = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))
    cv2.imwrite(str(still), np.dstack([synth_frame(1)[..., ::-1], alpha]))
    dots = style_paths["dots"]
    runs = [["stylize", tiny_clip, "--frames", "2:3", "-s", dots, "-o", tmp_path / "f2.png"],
            ["stylize", tiny_clip, "--frames", "2:3", "-s", dots, "-o", tmp_path / "f2.jpg"],
            ["stylize", tiny_clip, "--frames", "2:3", "-s", dots, "-o", f"{tmp_path / 'frames'}/"],
            ["stylize", still, "-s", dots, "-o", tmp_path / "styled.webp"],
            ["stylize", still, "-s", dots, "-o", tmp_path / "styled.jpg"]]
    for proc in vst_many(cli_env, runs):
        ok(proc)
    ref = read_image(tmp_path / "frames" / "000002.png")
    np.testing.assert_array_equal(read_image(tmp_path / "f2.png"), ref)
    assert 0 < np.abs(read_image(tmp_path / "f2.jpg").astype(int) - ref).mean() < 4
    webp = cv2.imread(str(tmp_path / "styled.webp"), cv2.IMREAD_UNCHANGED)
    assert webp.shape == (48, 64, 4)
    np.testing.assert_array_equal(webp[..., 3], alpha)
    assert cv2.imread(str(tmp_path / "styled.jpg"), cv2.IMREAD_UNCHANGED).shape == (48, 64, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f2.jpg", "f2.png", "frames", "still.png",
                                                          "styled.jpg", "styled.webp"]


def test_output_that_is_an_input_is_refused(cli_env, tiny_clip, frame_folder, style_paths, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(tiny_clip.read_bytes())
    style = style_paths["dots"]
    keys = tmp_path / "keys.json"
    keys.write_text('[{"0": 1}]')
    before = {p: p.read_bytes() for p in (clip, style, keys)}
    listing = sorted(frame_folder.iterdir())
    runs = [["stylize", clip, "-s", style, "-o", tmp_path / "." / "clip.mp4"],
            ["stylize", frame_folder, "-s", style, "-o", f"{frame_folder}/"],
            ["stylize", clip, "-s", style, "--weights-file", keys, "-o", keys],
            ["analyze", clip, "-s", style, "-o", style]]
    for proc in vst_many(cli_env, runs):
        assert proc.returncode == 1, proc.stderr
        assert visible_lines(proc.stderr) == [visible_lines(proc.stderr)[-1]], proc.stderr
        assert "is also an input" in proc.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(frame_folder.iterdir()) == listing


# ---------------------------------------------------------------------------------------
# 6. info
# ---------------------------------------------------------------------------------------
def test_info(cli_env):
    proc = ok(vst(cli_env, "info", "--device", "cpu"))
    text = proc.stdout
    for key in ("model:", "trained:", "device:", "versions:", "VGG-19:"):
        assert key in text, text
    if TRAINED:
        assert re.search(r"^model:\s+default \(default-[0-9a-f]{16}\)", text, re.M), text
        assert re.search(r"^trained:\s+yes", text, re.M), text
    else:
        assert re.search(r"^model:\s+default \(untrained-seed0\)", text, re.M), text
        assert re.search(r"^trained:\s+NO", text, re.M), text
    assert re.search(r"^device:\s+cpu", text, re.M), text
    assert re.search(r"torch \d+\.\d+", text) and "numpy" in text and "python" in text and "opencv" in text
    assert "sha256 ok" in text
    # cli_env pins fp32: the convolutions are NNPACK's where preferred (CPUs without AVX-512), and
    # $VST_WINOGRAD=0 says no.
    from vst_engine.convs import winograd_available, winograd_preferred
    expected = "Winograd convolutions (NNPACK)" if winograd_preferred() else "none (eager)"
    assert re.search(rf"^acceleration:\s+{re.escape(expected)}$", text, re.M), text
    off = ok(vst(dict(cli_env, VST_WINOGRAD="0"), "info", "--device", "cpu")).stdout
    assert re.search(r"^acceleration:\s+none \(eager\)$", off, re.M), off
    if winograd_available():
        on = ok(vst(dict(cli_env, VST_WINOGRAD="1"), "info", "--device", "cpu")).stdout
        assert re.search(r"^acceleration:\s+Winograd convolutions \(NNPACK\)$", on, re.M), on
    # Compiling on a CPU: asked for, or (AMX) for long renders, which info mentions.
    compiled = ok(vst(dict(cli_env, VST_COMPILE="1"), "info", "--device", "cpu")).stdout
    assert re.search(r"^acceleration:\s+torch\.compile$", compiled, re.M), compiled
    from vst_engine.hardware import cpu_has_amx
    if cpu_has_amx():
        bf16 = ok(vst(dict(cli_env, VST_PRECISION="auto"), "info", "--device", "cpu")).stdout
        assert re.search(r"^acceleration:\s+none \(eager\) \(long jobs compile: renders of 200 million frame pixels "
                         r"or more, an analysed frame counting 3", bf16, re.M), bf16
