"""Frame sources and sinks on tiny synthetic clips (64x48, a few frames)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from vst_engine.errors import VstError
from vst_engine.video import (
    _fps_arg,
    ffmpeg_exe,
    is_folder_output,
    open_sink,
    open_source,
    parse_frame_range,
    read_image,
)

W, H = 64, 48
NTSC = 30000 / 1001


def gradient_frames(n: int, w: int = W, h: int = H) -> list[np.ndarray]:
    """Smooth colour waves drifting over time: every frame differs, codecs handle it well."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for t in range(n):
        r = 128 + 80 * np.sin(np.pi * (x / w + 2 * t / n))
        g = 128 + 80 * np.sin(np.pi * (y / h - 2 * t / n))
        b = 128 + 60 * np.cos(np.pi * ((x + y) / (w + h) + t / n))
        frames.append(np.stack([r, g, b], -1).round().astype(np.uint8))
    return frames


def make_video(path: Path, frames: list[np.ndarray], rate: str = "25", audio: bool = False) -> Path:
    h, w = frames[0].shape[:2]
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", rate, "-i", "-"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-shortest",
                "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "8", str(path)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)
    return path


def probe(path: Path) -> str:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr


def duration(path: Path) -> float:
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", probe(path)).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    frames = gradient_frames(16)
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames), frames


@pytest.fixture(scope="module")
def ntsc_clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("ntsc") / "ntsc.mov", gradient_frames(18),
                      rate="30000/1001", audio=True)


# ----------------------------------------------------------------------------- sources


def test_video_source_info_iteration_and_random_access(clip):
    path, written = clip
    with open_source(path) as src:
        assert (src.info.count, src.info.fps, src.info.width, src.info.height) == (16, 25.0, W, H)
        assert src.info.has_audio is False and src.info.path == path
        assert src.indices() == range(16)
        items = list(src)
        assert [i for i, _ in items] == list(range(16))
        for (_, got), ref in zip(items, written):
            assert got.shape == (H, W, 3) and got.dtype == np.uint8
            assert mae(got, ref) < 3  # RGB order, not BGR
        assert mae(items[0][1], items[8][1]) > 20  # frames really differ
        # Backwards and forwards jumps must give exactly the iterated pixels.
        for i in (15, 3, 0, 7, 7, 8, 2):
            assert np.array_equal(src.read(i), items[i][1])
        with pytest.raises(VstError, match="outside the clip"):
            src.read(16)


def test_video_source_frame_range(clip):
    path, _ = clip
    with open_source(path) as src:
        full = dict(src)
    with open_source(path, frames=(3, 8)) as src:
        assert src.info.count == 16 and src.indices() == range(3, 8)
        got = list(src)
        assert [i for i, _ in got] == [3, 4, 5, 6, 7]
        assert all(np.array_equal(f, full[i]) for i, f in got)
    with open_source(path, frames="12:") as src:
        assert src.indices() == range(12, 16)
    with pytest.raises(VstError, match=r"frame range 10:500 is outside the clip \(0:16\)"):
        open_source(path, frames=(10, 500))
    with pytest.raises(VstError, match="outside the clip"):
        open_source(path, frames="20:")


def test_frame_count_verified_when_container_lies(tmp_path):
    # A truncated AVI still claims all its frames in the header.
    path = tmp_path / "cut.avi"
    with open_sink(path, 25, W, H) as sink:
        for i, f in enumerate(gradient_frames(12)):
            sink.write(i, f)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 6 // 10])
    cap = cv2.VideoCapture(str(path))
    claimed, decodable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while cap.grab():
        decodable += 1
    cap.release()
    assert 0 < decodable < claimed == 12
    with open_source(path) as src:
        assert src.info.count == decodable
        assert len(list(src)) == decodable
    with pytest.raises(VstError, match="outside the clip"):
        open_source(path, frames=(0, 12))


def test_ntsc_rate_and_audio_detected(ntsc_clip):
    with open_source(ntsc_clip) as src:
        assert src.info.count == 18
        assert src.info.fps == pytest.approx(NTSC, abs=1e-6)
        assert src.info.has_audio is True


def test_parse_frame_range():
    assert parse_frame_range("2:5") == (2, 5)
    assert parse_frame_range("2:", 10) == (2, 10)
    assert parse_frame_range(":4") == (0, 4)
    assert parse_frame_range(" 3 : ") == (3, None)
    assert parse_frame_range(":", 7) == (0, 7)
    for bad in ("5:2", "4:4", "a:b", "3", "-1:4", "", "1:2:3"):
        with pytest.raises(VstError):
            parse_frame_range(bad, 10)
    with pytest.raises(VstError, match=r"frame range 3:20 is outside the clip \(0:10\)"):
        parse_frame_range("3:20", 10)
    with pytest.raises(VstError, match="outside"):
        parse_frame_range("10:", 10)


def test_folder_source_natural_order(tmp_path):
    for value, name in [(10, "f10.png"), (2, "f2.png"), (1, "f1.png"), (20, "f20.jpg")]:
        cv2.imwrite(str(tmp_path / name), np.full((H, W, 3), value, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".f3.png.tmp").write_bytes(b"partial")  # hidden temporaries are ignored
    cv2.imwrite(str(tmp_path / "f3.png"), np.dstack([np.full((H, W), 3, np.uint8),
                                                     np.zeros((H, W), np.uint8),
                                                     np.full((H, W), 200, np.uint8)]))
    with open_source(tmp_path) as src:
        assert (src.info.count, src.info.fps, src.info.width, src.info.height) == (5, 25.0, W, H)
        assert src.info.has_audio is False
        frames = dict(src)
    assert [int(frames[i][0, 0, 1]) for i in range(3)] == [1, 2, 0]  # f1, f2, f3 (BGR 3,0,200)
    assert frames[2][0, 0].tolist() == [200, 0, 3]  # converted to RGB
    assert [int(frames[i][0, 0, 0]) for i in (3, 4)] == [10, 20]  # f10, f20
    with open_source(tmp_path, frames=(1, 3), fps=12) as src:
        assert src.info.fps == 12 and [i for i, _ in src] == [1, 2]
        assert np.array_equal(src.read(4), frames[4])


def test_folder_source_mismatched_sizes(tmp_path):
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((H, W, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((H, W + 2, 3), np.uint8))
    with open_source(tmp_path) as src, pytest.raises(VstError, match="1.png"):
        list(src)


def test_single_image_and_read_image(tmp_path):
    img = gradient_frames(1)[0]
    cv2.imwrite(str(tmp_path / "style.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_image(tmp_path / "style.png"), img)
    with open_source(tmp_path / "style.png") as src:
        assert src.info.count == 1 and np.array_equal(src.read(0), img)
    (tmp_path / "fake.jpg").write_text("not an image")
    with pytest.raises(VstError, match="fake.jpg"):
        read_image(tmp_path / "fake.jpg")
    with pytest.raises(VstError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_bad_sources(tmp_path):
    with pytest.raises(VstError, match="not found"):
        open_source(tmp_path / "missing.mp4")
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 10)
    with pytest.raises(VstError, match="fake.mp4"):
        open_source(fake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VstError, match="no images"):
        open_source(tmp_path / "empty")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(VstError, match="no images"):
        open_source(tmp_path / "texts")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "0.png").write_text("x")
    with pytest.raises(VstError, match="0.png"):
        open_source(tmp_path / "broken")


# ----------------------------------------------------------------------------- sinks


def test_is_folder_output(tmp_path):
    assert is_folder_output("out/") and is_folder_output(str(tmp_path / "new") + "/")
    assert is_folder_output(tmp_path)
    assert not is_folder_output(tmp_path / "out.mp4") and not is_folder_output("out")


def test_fps_arg_is_exact():
    assert _fps_arg(25.0) == "25"
    assert _fps_arg(29.97) == "30000/1001" and _fps_arg(NTSC) == "30000/1001"
    assert _fps_arg(23.976) == "24000/1001" and _fps_arg(59.94) == "60000/1001"
    assert _fps_arg(12.5) == "25/2" and _fps_arg(30.0) == "30"


def test_folder_sink_two_ranges_assemble_clip(tmp_path):
    frames = gradient_frames(10)
    out = tmp_path / "render"
    with open_sink(str(out) + "/", 25, W, H) as sink:
        for i in range(5, 10):
            sink.write(i, frames[i])
    with open_sink(out, 25, W, H) as sink:  # existing folder: no trailing slash needed
        for i in range(0, 5):
            sink.write(i, frames[i])
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(10)]
    with open_source(out) as src:
        assert all(np.array_equal(f, frames[i]) for i, f in src)  # PNG is lossless


def test_folder_sink_frame_size_mismatch(tmp_path):
    with open_sink(str(tmp_path / "o") + "/", 25, W, H) as sink, \
            pytest.raises(VstError, match="does not match"):
        sink.write(0, np.zeros((H, W + 1, 3), np.uint8))
    assert list((tmp_path / "o").iterdir()) == []


def test_image_sink_holds_one_frame_written_on_close(tmp_path):
    frame = gradient_frames(1)[0]
    out = tmp_path / "still.tif"
    with open_sink(out, 25, W, H) as sink:
        assert sink.keeps_alpha
        sink.write(7, frame, np.full((H, W), 9, np.uint8))
        assert not out.exists()  # appears whole on close
        with pytest.raises(VstError, match="holds one frame"):
            sink.write(8, frame)
    rgba = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(rgba[..., 2::-1], frame) and (rgba[..., 3] == 9).all()
    with pytest.raises(RuntimeError), open_sink(tmp_path / "aborted.png", 25, W, H) as sink:
        sink.write(0, frame)
        raise RuntimeError("the run failed")
    with pytest.raises(VstError, match="no frame"), open_sink(tmp_path / "empty.bmp", 25, W, H):
        pass
    assert not open_sink(tmp_path / "x.jpg", 25, W, H).keeps_alpha
    assert sorted(p.name for p in tmp_path.iterdir()) == ["still.tif"]


@pytest.mark.parametrize("ext, max_err", [(".mp4", 3), (".mkv", 3), (".avi", 4), (".webm", 4)])
def test_video_sink_round_trip(tmp_path, ext, max_err):
    frames = gradient_frames(8)
    out = tmp_path / f"out{ext}"
    with open_sink(out, 25, W, H) as sink:
        for i, f in enumerate(frames):
            sink.write(i, f)
        assert not out.exists()  # only appears, complete, on close
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    with open_source(out) as src:
        assert (src.info.count, src.info.width, src.info.height) == (8, W, H)
        assert src.info.fps == pytest.approx(25.0)
        for i, got in src:
            assert mae(got, frames[i]) < max_err, (ext, i)


def test_video_sink_odd_size(tmp_path):
    frames = gradient_frames(3, 63, 47)
    with open_sink(tmp_path / "odd.mp4", 25, 63, 47) as sink:  # x264 4:2:0: padded by 1 px
        assert sink.encoded_size == (64, 48)  # what the CLI reports
        for i, f in enumerate(frames):
            sink.write(i, f)
    with open_sink(tmp_path / "odd.webm", 25, 63, 47) as sink:  # VP9 keeps the odd size
        assert sink.encoded_size == (63, 47)
        for i, f in enumerate(frames):
            sink.write(i, f)
    with open_source(tmp_path / "odd.mp4") as src:
        assert (src.info.width, src.info.height) == (64, 48)
        assert mae(src.read(1)[:47, :63], frames[1]) < 3
    with open_source(tmp_path / "odd.webm") as src:
        assert (src.info.width, src.info.height) == (63, 47)


def test_video_sink_ntsc_with_audio_subrange(tmp_path, ntsc_clip):
    out = tmp_path / "styled.mp4"
    with open_source(ntsc_clip, frames=(4, 14)) as src:
        info = src.info
        start = src.indices().start / info.fps
        with open_sink(out, info.fps, info.width, info.height, audio_from=info.path,
                       start_time=start) as sink:
            for i, f in src:
                sink.write(i, f)
    with open_source(out) as res:
        assert res.info.count == 10
        assert res.info.fps == pytest.approx(NTSC, abs=1e-6)
        assert res.info.has_audio
    assert re.search(r"Stream #0:\d.*Audio: aac", probe(out))
    assert duration(out) == pytest.approx(10 / NTSC, abs=0.1)


def test_video_sink_audio_reencoded_for_webm(tmp_path, ntsc_clip):
    out = tmp_path / "styled.webm"
    with open_source(ntsc_clip) as src, \
            open_sink(out, src.info.fps, W, H, audio_from=ntsc_clip) as sink:
        for i, f in src:
            sink.write(i, f)
    assert re.search(r"Audio: opus", probe(out))
    with open_source(out) as res:
        assert res.info.count == 18


def mean_volume(path: Path) -> float:
    err = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:a",
                          "-af", "volumedetect", "-f", "null", "-"],
                         capture_output=True, text=True).stderr
    return float(re.search(r"mean_volume: (-?[\d.]+|-inf) dB", err).group(1))


def test_video_sink_audio_offset_and_short_audio(tmp_path):
    # 20 frames (0.8 s) whose audio is a tone for 0.4 s, then silence, then nothing.
    src_path = tmp_path / "src.mkv"
    frames = gradient_frames(20)
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", "25", "-i", "-",
                    "-f", "lavfi", "-i", "aevalsrc='if(lt(t,0.4),sin(2*PI*440*t),0)':s=44100:d=0.6",
                    "-c:v", "libx264", "-crf", "8", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(src_path)], input=b"".join(f.tobytes() for f in frames), check=True)
    for name, (a, b) in {"head.mkv": (0, 10), "tail.mkv": (10, 20)}.items():
        with open_source(src_path, frames=(a, b)) as src, \
                open_sink(tmp_path / name, 25, W, H, audio_from=src_path,
                          start_time=a / 25) as sink:
            for i, f in src:
                sink.write(i, f)
    assert re.search(r"Audio: aac", probe(tmp_path / "head.mkv"))  # copied
    assert mean_volume(tmp_path / "head.mkv") > -10  # the tone
    assert mean_volume(tmp_path / "tail.mkv") < -30  # offset 0.4 s: past the tone
    # The audio ends at 0.6 s, before the video: no frame may be lost to it.
    with open_source(tmp_path / "tail.mkv") as res:
        assert res.info.count == 10 and res.info.has_audio
    assert duration(tmp_path / "tail.mkv") == pytest.approx(0.4, abs=0.05)


def test_video_sink_reports_ffmpeg_failure(tmp_path):
    out = tmp_path / "out.mp4"
    sink = open_sink(out, 25, W, H)
    sink.write(0, gradient_frames(1)[0])
    sink._proc.kill()  # simulate the encoder dying (disk full, crash...)
    sink._proc.wait()
    with pytest.raises(VstError, match="ffmpeg failed writing .*out.mp4"):
        for i in range(1, 200):
            sink.write(i, gradient_frames(1)[0])
        sink.close()
    assert list(tmp_path.iterdir()) == []


def test_video_sink_gap_repeats_previous_frame(tmp_path):
    frames = gradient_frames(4)
    with open_sink(tmp_path / "gap.mkv", 25, W, H) as sink:
        sink.write(0, frames[0])
        sink.write(3, frames[3])
    with open_source(tmp_path / "gap.mkv") as src:
        assert src.info.count == 4
        assert mae(src.read(2), frames[0]) < 3 and mae(src.read(3), frames[3]) < 3


def test_video_sink_abort_keeps_existing_output(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous render")
    with pytest.raises(RuntimeError):
        with open_sink(out, 25, W, H) as sink:
            for i, f in enumerate(gradient_frames(3)):
                sink.write(i, f)
            raise RuntimeError("interrupted")
    assert out.read_bytes() == b"previous render"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_video_sink_errors(tmp_path):
    frame = gradient_frames(1)[0]
    with pytest.raises(VstError, match=r"unsupported output extension '.xyz'.*\.mp4"):
        open_sink(tmp_path / "out.xyz", 25, W, H)
    with pytest.raises(VstError, match="does not exist"):
        open_sink(tmp_path / "no" / "such" / "out.mp4", 25, W, H)
    (tmp_path / "file").write_text("x")
    with pytest.raises(VstError):
        open_sink(tmp_path / "file" / "out.mp4", 25, W, H)
    with pytest.raises(VstError, match="existing file"):
        open_sink(str(tmp_path / "file") + "/", 25, W, H)

    sink = open_sink(tmp_path / "out.mp4", 25, W, H)
    with pytest.raises(VstError, match="does not match"):
        sink.write(0, np.zeros((H + 2, W, 3), np.uint8))
    sink.write(1, frame)
    with pytest.raises(VstError, match="increasing order"):
        sink.write(1, frame)
    sink.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]

    with pytest.raises(VstError, match="no frames"):
        with open_sink(tmp_path / "empty.mp4", 25, W, H):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_unwritable_output_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        try:  # root ignores permission bits: only test when they apply
            (locked / "probe").touch()
            pytest.skip("running with permissions that bypass directory modes")
        except PermissionError:
            pass
        with pytest.raises(VstError, match="not writable"):
            open_sink(locked / "out.mp4", 25, W, H)
        with pytest.raises(VstError, match="not writable"):
            open_sink(str(locked) + "/", 25, W, H)
    finally:
        locked.chmod(0o755)


def test_unwritable_output_dir_simulated(tmp_path, monkeypatch):
    # Same check for root / read-only mounts, where mode bits say nothing: creation fails.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("vst_engine.video.tempfile.TemporaryFile", refuse)
    with pytest.raises(VstError, match="not writable"):
        open_sink(tmp_path / "out.mp4", 25, W, H)
    with pytest.raises(VstError, match="not writable"):
        open_sink(str(tmp_path / "frames") + "/", 25, W, H)


def test_reading_needs_no_ffmpeg(tiny_clip, monkeypatch):
    """Decoding goes through OpenCV: without ffmpeg (imageio-ffmpeg missing) a video still opens and
    reads, and it simply reports no audio streams."""
    from vst_engine import video

    def missing() -> str:
        raise VstError("ffmpeg is not available (imageio-ffmpeg): No module named 'imageio_ffmpeg'")

    monkeypatch.setattr(video, "ffmpeg_exe", missing)
    assert video._audio_codecs(tiny_clip) == []
    with video.open_source(tiny_clip) as src:
        frame = src.read(0)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.std() > 1.0
