"""Exposure deflicker: per-frame corrections that bring a clip's brightness onto its smoothed course.

Global features carry a flickering exposure through to the stylized frames (per-frame statistics
normalize it away, with their own flicker). So an analysis can also measure every frame's luma mean
and contrast (standard deviation) and store a correction `scale * x + offset` per frame that gives
the frame the smoothed mean and contrast; stylization applies it before the network. That evens out
a gain (an exposure) and an offset (a black level) alike. The smoothed values are a local linear fit
over nearby frames of the same shot whose mean is within STEP of the frame's own, so fades and ramps
keep their course, while cuts and lasting changes of light (a lamp switched on) stay sharp. A fast
camera passing bright and dark content changes a frame's mean as a flicker would (the bench's street
clip: clean frames moved by 1.05 grey levels on average), so footage that does not flicker is best
left alone.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import cv2
import numpy as np

from .errors import VstError

THUMB_WIDTH = 32  # enough to tell a cut from motion, and cheap at any frame size
WINDOW = 5  # frames each side in the fit (odd: its triangular weights then cancel an alternating flicker)
STEP = 0.15  # relative level change kept as a real change of light (flicker up to about +-7%)
# A cut: consecutive exposure-normalized thumbnails differing by this much on average. Measured: motion
# 0.03 at most on the bundled clip, up to 0.21 on a fast bike clip, whose cuts gave 0.35-0.62; cuts
# between the bench's four clips 0.36-1.1.
CUT = 0.3
DARK = 8.0  # mean luma (of 255) below which a frame is left as it is: its ratios are meaningless
FLAT = 2.0  # luma standard deviation (of 255) below which only the mean is corrected (a slate, fog)
MAX_SCALE = 1.25
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, as the network's content input


def thumbnail_luma(frame: np.ndarray) -> np.ndarray:
    """A frame (uint8, or float in [0, 1]) as a small luma image on the 0..255 scale."""
    h, w = frame.shape[:2]
    size = (min(w, THUMB_WIDTH), max(1, round(min(w, THUMB_WIDTH) * h / w)))
    small = cv2.resize(frame[..., :3], size, interpolation=cv2.INTER_AREA).astype(np.float32)
    if frame.dtype != np.uint8:
        small *= 255.0
    return small @ _LUMA


class LevelTrack:
    """Every frame's luma mean and standard deviation, and where the shots change, measured frame by
    frame in clip order. Memory: two numbers a frame and the last thumbnail."""

    def __init__(self) -> None:
        self.means: list[float] = []
        self.stds: list[float] = []
        self.cuts: list[int] = []  # frames (0-based in the track) that open a new shot
        self._last: np.ndarray | None = None

    def add(self, frame: np.ndarray) -> None:
        thumb = thumbnail_luma(frame)
        mean = float(thumb.mean())
        shape = thumb / mean if mean >= DARK else None
        if self.means and _is_cut(self._last, shape):
            self.cuts.append(len(self.means))
        self.means.append(mean)
        self.stds.append(float(thumb.std()))
        self._last = shape

    def corrections(self) -> list[list[float]]:
        return frame_corrections(self.means, self.stds, self.cuts)


def _is_cut(before: np.ndarray | None, after: np.ndarray | None) -> bool:
    """A new shot: consecutive frames whose exposure-normalized thumbnails differ (dark ones cannot tell)."""
    if before is None or after is None:
        return False
    return float(np.abs(after - before).mean()) > CUT


def frame_corrections(means: Sequence[float], stds: Sequence[float], cuts: Sequence[int] = ()) -> list[list[float]]:
    """Each frame's [scale, offset] (on the 0..255 scale): the luma mean and standard deviation fitted over
    nearby frames of its shot (within WINDOW frames, means within STEP of its own), reached from its own;
    [1, 0] for dark frames and where fewer than 3 frames fit."""
    means, stds = np.asarray(means, dtype=np.float64), np.asarray(stds, dtype=np.float64)
    shot = np.zeros(len(means), dtype=np.int64)
    for c in cuts:
        shot[c:] += 1
    out = [[1.0, 0.0] for _ in means]
    for t, mean in enumerate(means):
        if mean < DARK:
            continue
        lo, hi = max(0, t - WINDOW), min(len(means), t + WINDOW + 1)
        near = np.arange(lo, hi)
        near = near[(shot[lo:hi] == shot[t]) & (means[lo:hi] >= DARK) & (np.abs(means[lo:hi] / mean - 1.0) <= STEP)]
        if len(near) < 3:
            continue
        # Weighted least squares value = a + b (s - t), for the mean and the std; a is the smoothed value
        # at t (on a ramp, the one-sided windows at a shot's ends do not pull it towards the shot's
        # middle). Triangular weights over 2 * WINDOW + 1 frames cancel a flicker alternating frame by
        # frame exactly.
        root_w = np.sqrt(WINDOW + 1.0 - np.abs(near - t))
        design = np.stack([np.ones(len(near)), near - t], axis=1) * root_w[:, None]
        fit = np.linalg.lstsq(design, np.stack([means[near], stds[near]], axis=1) * root_w[:, None], rcond=None)[0]
        smooth_mean, smooth_std = fit[0]
        scale = smooth_std / stds[t] if stds[t] >= FLAT and smooth_std > 0 else 1.0
        scale = min(MAX_SCALE, max(1.0 / MAX_SCALE, scale))
        out[t] = [float(scale), float(smooth_mean - scale * mean)]
    return out


def check_corrections(corrections: object, frames: int) -> bool:
    """Whether `corrections` (from a features file) are `frames` [scale, offset] pairs within range."""
    def valid(c: object) -> bool:
        return (isinstance(c, list) and len(c) == 2 and all(isinstance(v, float) and math.isfinite(v) for v in c)
                and 1 / MAX_SCALE - 1e-9 <= c[0] <= MAX_SCALE + 1e-9 and abs(c[1]) <= 255.0)
    return isinstance(corrections, list) and len(corrections) == frames and all(valid(c) for c in corrections)


def even_out(frames: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Frames in memory, corrected as `vst stylize --deflicker` corrects them (the bench, the tests)."""
    frames = list(frames)
    track = LevelTrack()
    for f in frames:
        track.add(f)
    return [apply_correction(f, c) for f, c in zip(frames, track.corrections())]


def apply_correction(frame: np.ndarray, correction: Sequence[float]) -> np.ndarray:
    """The frame's colours mapped to `scale * x + offset` (x on the 0..255 scale; uint8 rounded and
    saturated, float32 clipped to [0, 1])."""
    scale, offset = correction
    if scale == 1.0 and offset == 0.0:
        return frame
    if frame.dtype == np.uint8:  # a table of 256 entries: faster than arithmetic on every pixel
        table = np.clip(np.arange(256) * scale + offset, 0, 255).round().astype(np.uint8)
        return cv2.LUT(frame, table)
    if frame.dtype != np.float32:
        raise VstError(f"frames must be uint8 or float32, got {frame.dtype}")
    return np.clip(frame * np.float32(scale) + np.float32(offset / 255.0), 0.0, 1.0)
