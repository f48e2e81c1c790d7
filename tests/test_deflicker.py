"""Exposure deflicker: the corrections even out flicker and keep fades, cuts and changes of light; the
features file carries them; `vst analyze/stylize --deflicker` applies them."""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from synthetic import synth_frame, write_folder
from test_cli import ok, pngs, same_frames, visible_lines, vst_many

from vst_engine.deflicker import LevelTrack, apply_correction, even_out, frame_change, frame_corrections, thumbnail_luma
from vst_engine.errors import VstError
from vst_engine.features import GlobalFeatures
from vst_engine.video import open_source, read_image

ASSETS = Path(__file__).resolve().parents[1] / "vst_engine" / "assets"


def photo(w: int = 160, h: int = 96) -> np.ndarray:
    """A real picture (the bundled clip's first frame), mid-grey on average."""
    with open_source(ASSETS / "bigbuckbunny.mp4") as clip:
        return cv2.resize(clip.read(0), (w, h), interpolation=cv2.INTER_AREA)


def exposed(frame: np.ndarray, gain: float, offset: float = 0.0) -> np.ndarray:
    return np.clip(frame.astype(np.float64) * gain + offset, 0, 255).round().astype(np.uint8)


def corrected(frames: list[np.ndarray]) -> tuple[list[np.ndarray], LevelTrack]:
    """`even_out(frames)`, and the track it measured (its cuts)."""
    track = LevelTrack()
    for f in frames:
        track.add(f)
    out = even_out(frames)
    assert all(np.array_equal(a, apply_correction(f, c)) for a, f, c in zip(out, frames, track.corrections()))
    return out, track


def step_diff(frames: list[np.ndarray]) -> float:
    """Mean absolute change between consecutive frames, in grey levels."""
    return float(np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames, frames[1:])]))


@pytest.mark.parametrize("kind", ["gain", "offset", "random gain"])
def test_flicker_of_a_still_shot_is_evened_out(kind):
    base = photo()
    rng = np.random.default_rng(3)
    alternate = [(-1) ** t for t in range(30)]
    if kind == "gain":  # an exposure alternating by +-4%
        frames = [exposed(base, 1 + 0.04 * s) for s in alternate]
    elif kind == "offset":  # a black level alternating by +-3 grey levels
        frames = [exposed(base, 1, 3 * s) for s in alternate]
    else:  # a time-lapse's random exposure, 3% standard deviation
        frames = [exposed(base, 1 + 0.03 * g) for g in rng.standard_normal(30)]
    out, _ = corrected(frames)
    before, after = step_diff(frames), step_diff(out)
    assert before > 3.0
    # Measured: 0.45 / 0.08 / 0.62 grey levels against 8.2 / 6.0 / 3.8 (the rounding of both the flickering
    # and the corrected frames remains; a random flicker is smoothed over 11 frames, not removed).
    assert after < {"gain": 0.6, "offset": 0.3, "random gain": 1.2}[kind], (before, after)
    if kind != "random gain":  # away from the clip's ends (one-sided fits) the frame itself comes back
        assert all(np.abs(f.astype(np.int16) - base).mean() < 0.7 for f in out[6:-6])


def test_fades_ramps_cuts_and_changes_of_light_are_kept():
    base = photo()
    # A fade from 130% to 40% exposure and on to black: no flicker, nothing to correct.
    fade = [exposed(base, g) for g in np.linspace(1.3, 0.4, 20)] + [exposed(base, g) for g in (0.2, 0.08, 0.02, 0)]
    out, track = corrected(fade)
    assert track.cuts[0] == 20  # halving the exposure from one frame to the next is no flicker
    assert max(np.abs(a.astype(np.int16) - b).mean() for a, b in zip(out, fade)) < 1.0
    # A lamp switched on (+30%), and a cut to another picture only 10% brighter: kept sharp.
    other = exposed(cv2.resize(read_image(ASSETS / "starry_night.jpg"), base.shape[1::-1]), 1.0)
    other = exposed(other, 1.1 * base.mean() / other.mean())
    clip = [base] * 12 + [exposed(base, 1.3)] * 12 + [exposed(other, 1.3)] * 12
    out, track = corrected(clip)
    assert track.cuts == [12, 24]  # 30% more light in one frame is no flicker either: a shot of its own
    assert all(np.abs(a.astype(np.int16) - b).mean() < 0.5 for a, b in zip(out, clip))


def test_cuts_are_told_from_motion():
    with open_source(ASSETS / "bigbuckbunny.mp4") as clip:
        moving = [cv2.resize(clip.read(i), (160, 96), interpolation=cv2.INTER_AREA) for i in range(0, 60, 3)]
    track = LevelTrack()
    for f in moving:  # the clip's motion, sped up 3x
        track.add(f)
    assert track.cuts == []
    track.add(cv2.resize(read_image(ASSETS / "starry_night.jpg"), (160, 96)))
    assert track.cuts == [len(moving)]


def test_levels_fit_within_a_shot_and_leave_dark_frames():
    step = math.log(1.04)
    log_gains = [0, step, 0, step, 0, step, 0, 0, 0, step, 0, 0, 0]
    offsets = [0.0] * 8 + [0, 3, 0] + [0, 0]
    dark = [False] * 6 + [True, True] + [False] * 5
    c = frame_corrections(log_gains, offsets, cuts=[6, 7, 8, 11], dark=dark)
    assert c[6] == c[7] == [1.0, 0.0]  # dark: left as they are
    assert c[11] == c[12] == [1.0, 0.0]  # a shot of two frames: too few to fit
    # Frame 9 is fitted over its own shot only (frames 8-10, triangular weights 5, 6, 5).
    assert c[9] == pytest.approx([math.exp((6 / 16 - 1) * step), 6 * 3 / 16 - 3 * math.exp((6 / 16 - 1) * step)])
    assert 1.0 < c[0][0] < 1.04 and c[0][1] == 0.0  # pulled towards its shot's course, without the dark frames
    assert frame_corrections([], []) == []


def test_gain_and_offset_between_two_frames_are_read_through_motion():
    with open_source(ASSETS / "bigbuckbunny.mp4") as clip:
        a, b = (thumbnail_luma(cv2.resize(clip.read(i), (160, 96), interpolation=cv2.INTER_AREA)) for i in (30, 33))
    gain, offset = frame_change(a, b)  # motion only: no change of exposure
    assert abs(gain - 1) < 0.01 and abs(offset) < 1.0
    gain, offset = frame_change(a, np.clip(b * 1.1 - 4, 0, 255))
    assert gain == pytest.approx(1.1, abs=0.015) and offset == pytest.approx(-4, abs=1.5)
    assert frame_change(a, np.full_like(a, 255.0)) is None  # clipped: nothing to tell


def test_motion_is_not_read_as_flicker():
    """A camera panning across bright and dark content changes the frames' mean (here by 67 to 95 grey
    levels) as an exposure would; the motion-compensated estimate leaves the frames as they are, and
    evens out a flicker on top of the motion."""
    art = cv2.resize(read_image(ASSETS / "starry_night.jpg"), (1000, 120), interpolation=cv2.INTER_AREA)
    light = cv2.GaussianBlur(np.where(np.arange(1000) // 90 % 2 == 0, 0.7, 1.25)[None, :], (0, 0), 8)[0]
    canvas = art * light[None, :, None]
    pan = [exposed(canvas[:, 9 * t: 9 * t + 160], 1.0) for t in range(40)]

    def changes(frames: list[np.ndarray]) -> np.ndarray:  # each frame's difference from the pan's
        return np.array([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames, pan)])
    # Measured: unchanged (each frame's mean and contrast instead: 1.33 on average, at most 4.0).
    assert changes(even_out(pan)).max() < 0.5
    flicker = [exposed(f, 1.04 if t % 2 else 0.96) for t, f in enumerate(pan)]
    # Measured 3.33 before and 0.26 after (at most 0.34 away from the ends, whose fits are one-sided).
    assert changes(flicker).mean() > 3.0 and changes(even_out(flicker))[6:-6].max() < 0.6


def test_pairs_measured_by_workers_as_in_order(monkeypatch):
    """Frame pairs are measured in worker threads ahead of the reader: the corrections are those of
    measuring each pair in turn, and at most PAIRS_AHEAD pairs (their thumbnails) wait at any time."""
    from concurrent.futures import Future

    from vst_engine import deflicker
    base = photo()
    frames = [exposed(np.roll(base, 3 * t, axis=1), 1 + 0.04 * (-1) ** t) for t in range(24)]
    measure = deflicker.frame_change

    def slow(*args):  # slower than the reader: the pairs pile up to the bound
        time.sleep(0.02)
        return measure(*args)
    monkeypatch.setattr(deflicker, "frame_change", slow)
    threaded = LevelTrack()
    waiting = []
    for f in frames:
        threaded.add(f)
        waiting.append(len(threaded._pending))
    assert max(waiting) == deflicker.PAIRS_AHEAD
    monkeypatch.setattr(deflicker, "frame_change", measure)

    class InOrder:  # each pair measured at once, in the reading thread
        def submit(self, fn, *args):
            done = Future()
            done.set_result(fn(*args))
            return done
    monkeypatch.setattr(deflicker, "_PAIRS", InOrder())
    in_order = LevelTrack()
    for f in frames:
        in_order.add(f)
    assert threaded.corrections() == in_order.corrections() and threaded.cuts == in_order.cuts == []
    assert max(abs(s - 1) for s, _ in in_order.corrections()) > 0.02  # the flicker was measured


@pytest.mark.parametrize("size", [(40, 12), (7, 5)])
def test_small_frames(size):
    """Frames too small for the flow as they are (DIS: 16 px a side) are measured too."""
    base = cv2.resize(photo(), size, interpolation=cv2.INTER_AREA)
    frames = [exposed(base, 1.04 if t % 2 else 0.96) for t in range(16)]
    assert step_diff(even_out(frames)) < 0.3 * step_diff(frames)


def test_corrections_on_uint8_and_float_frames():
    frame = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, 2)
    assert apply_correction(frame, [1.0, 0.0]) is frame
    out = apply_correction(frame, [1.1, -5.0])
    expect = np.clip(np.arange(256) * 1.1 - 5.0, 0, 255).round().astype(np.uint8).reshape(16, 16, 1).repeat(3, 2)
    assert np.array_equal(out, expect)
    as_float = apply_correction(frame.astype(np.float32) / 255, [1.1, -5.0])
    assert as_float.dtype == np.float32 and as_float.min() == 0.0 and as_float.max() == 1.0
    assert np.abs(as_float * 255 - expect).max() <= 0.5 + 1e-3
    with pytest.raises(VstError, match="uint8 or float32"):
        apply_correction(frame.astype(np.float64), [1.1, 0.0])


def features(frame_range=(2, 6)) -> GlobalFeatures:
    """Global features of one style (zeros) analysed over `frame_range`."""
    from vst_engine.features import StyleRef
    from vst_engine.network import StyleTargets
    from vst_engine.norms import NUM_NORM_LAYERS, NUM_PREDICTORS
    z = lambda n: [torch.zeros(2, 4) for _ in range(n)]  # noqa: E731
    descs = [torch.zeros(2, 32) for _ in range(NUM_PREDICTORS)]
    return GlobalFeatures("m", [StyleRef("s", "0" * 64)], "clip", frame_range, 8, [2, 5], (64, 48), {},
                          z(NUM_NORM_LAYERS), z(NUM_NORM_LAYERS), z(NUM_NORM_LAYERS), z(NUM_NORM_LAYERS),
                          [torch.zeros(32) for _ in range(NUM_PREDICTORS)], StyleTargets(z(4), z(4), descs))


def test_features_file_carries_the_corrections(tmp_path):
    plain = features()
    assert not plain.deflickered and plain.exposure_correction(40) == [1.0, 0.0]
    corrections = [[1.0, 0.0], [1.02, -1.5], [0.98, 2.0], [1.0, 0.25]]
    feats = plain.with_deflicker(corrections)
    with pytest.raises(ValueError):
        plain.with_deflicker(corrections[:3])
    with pytest.raises(ValueError):
        plain.with_deflicker([[1.0, 0.0]] * 3 + [[2.0, 0.0]])  # beyond the largest scale
    feats.save(tmp_path / "f.vstf")
    loaded = GlobalFeatures.load(tmp_path / "f.vstf")
    assert loaded.deflickered and loaded.exposure_correction(3) == [1.02, -1.5]
    with pytest.raises(VstError, match="outside the frames 2:6"):
        loaded.exposure_correction(6)
    d = feats.to_dict()
    d["meta"]["extra"]["deflicker"][1] = [1.0, float("nan")]
    torch.save(d, tmp_path / "bad.vstf")
    with pytest.raises(VstError, match="malformed"):
        GlobalFeatures.load(tmp_path / "bad.vstf")


# ----- the command line -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flickering_folder(tmp_path_factory) -> Path:
    """12 frames of one still picture whose exposure alternates by +-5%."""
    base = synth_frame(0)
    return write_folder(tmp_path_factory.mktemp("flicker"), [exposed(base, 1 + 0.05 * (-1) ** t) for t in range(12)])


def test_cli_deflicker(cli_env, flickering_folder, style_paths, tmp_path):
    """Stylized with global features, the flicker comes through; deflickered, it does not. Features
    analysed with --deflicker carry it to every stylization that uses them."""
    style = ["-s", style_paths["dots"]]
    plain, fixed, feats = tmp_path / "plain", tmp_path / "fixed", tmp_path / "f.vstf"
    lean, chunk = tmp_path / "lean.vstf", tmp_path / "chunk.vstf"
    runs = vst_many(cli_env, [
        ["stylize", flickering_folder, *style, "-o", f"{plain}/"],
        ["stylize", flickering_folder, *style, "--deflicker", "-o", f"{fixed}/"],
        ["analyze", flickering_folder, *style, "--deflicker", "--full-strength", "-o", feats],
        ["analyze", flickering_folder, *style, "--full-strength", "-o", lean],
        ["analyze", flickering_folder, *style, "--deflicker", "--frames", "0:6", "-o", chunk],
    ])
    for proc in runs:
        ok(proc)
    assert "(full strength only) (with deflicker corrections)" in runs[2].stdout
    # The alternating 5% shows in the corrections' range (the synthetic frame's bright square clips a little).
    low, high = map(float, re.search(r"deflicker: frames scaled by ([\d.]+)-([\d.]+)", runs[2].stdout).groups())
    assert 0.93 < low < 0.97 and 1.03 < high < 1.07, runs[2].stdout
    before, after = step_diff(list(pngs(plain).values())), step_diff(list(pngs(fixed).values()))
    assert after < 0.25 * before, (before, after)
    used, no_global, not_analysed, complete, outside = vst_many(cli_env, [
        ["stylize", flickering_folder, *style, "--features", feats, "--frames", "4:12", "-o", f"{tmp_path / 'used'}/"],
        ["stylize", flickering_folder, *style, "--deflicker", "--no-global", "-o", f"{tmp_path / 'x'}/"],
        ["stylize", flickering_folder, *style, "--features", lean, "--deflicker", "-o", f"{tmp_path / 'x'}/"],
        ["analyze", flickering_folder, *style, "--complete", lean, "--deflicker", "-o", tmp_path / "x.vstf"],
        ["stylize", flickering_folder, *style, "--features", chunk, "--frames", "4:8", "-o", f"{tmp_path / 'x'}/"],
    ])
    ok(used)
    same_frames(pngs(tmp_path / "used"), {k: v for k, v in pngs(fixed).items() if k >= "000004"})
    for proc, text in ((no_global, "--deflicker and --no-global contradict"),
                       (not_analysed, "analysed without --deflicker"), (complete, "leave out --frames"),
                       (outside, "outside the frames 0:6 the deflicker was analysed over")):
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert text in visible_lines(proc.stderr)[-1]
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.vstf").exists()
