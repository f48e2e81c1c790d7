"""Exposure deflicker: per-frame corrections that bring a clip's exposure onto its smoothed course.

Global features carry a flickering exposure through to the stylized frames (per-frame statistics
normalize it away, with their own flicker). So an analysis can also measure how each frame's exposure
(a gain) and black level (an offset) changed from the frame before, chain those changes along the
shot, and store a correction `scale * x + offset` per frame that puts the frame on their smoothed
course; stylization applies it before the network.

The change between two frames is read from small luma thumbnails once the motion between them is
undone (optical flow on contrast-normalized thumbnails, which a flicker does not move): a robust line
through the pairs of aligned pixels gives the gain and the offset. A frame's mean or spread would
follow the content instead (a fast street camera passing bright and dark things: clean frames moved
by 1.05 grey levels on average, against 0.18 now). The smoothing is a local linear fit over nearby
frames of the same shot whose exposure is within STEP of the frame's own, so fades and ramps keep
their course, while cuts and lasting changes of light (a lamp switched on) stay sharp.
"""
from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Sequence

import cv2
import numpy as np

from .errors import VstError
from .flow import dis_flow, in_frame, warp

THUMB_PIXELS = 8192  # thumbnails have at least this many pixels (smaller frames are used whole): a robust fit
CUT_WIDTH = 32  # thumbnails compared for cuts are this wide (what CUT was measured on)
WINDOW = 5  # frames each side in the fit (odd: its triangular weights then cancel an alternating flicker)
STEP = 0.15  # relative level change kept as a real change of light (flicker up to about +-7%)
# A cut: consecutive exposure-normalized thumbnails differing by more than CUT on average and by more
# than CUT_MEDIAN at the median pixel: motion changes a part of the picture, a cut nearly all of it.
# Measured on the bench's four whole clips: motion gave means up to 0.21 on a fast street camera, but
# up to 0.39 on dark shots with a bright lamp moving, at medians of 0.12 and 0.07 (0.14 in an animated
# title); their cuts gave means of 0.35-1.1 at medians of 0.21-0.61, and the cuts between the clips
# means of 0.36-1.1.
CUT = 0.3
CUT_MEDIAN = 0.17
DARK = 8.0  # mean luma (of 255) below which a frame is left as it is: its ratios are meaningless
FLAT = 8.0  # spread of levels (of 255) below which only an offset is told
CLIPPED = (8.0, 247.0)  # thumbnail pixels outside these levels (of 255) say nothing of a gain or offset
MIN_PIXELS = 0.25  # frames sharing fewer such pixels are not related (a new shot starts)
MAX_SCALE = 1.25
# Frame pairs measured at once, ahead of the frame being read: on a 2-core CPU the reading thread and one
# worker; on a GPU machine's many cores up to 4 (the reader then keeps up with the decoder).
PAIR_WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))
PAIRS_AHEAD = 4 * PAIR_WORKERS
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, as the network's content input


def thumbnail_luma(frame: np.ndarray) -> np.ndarray:
    """A frame (uint8, or float in [0, 1]) as a small luma image (THUMB_PIXELS to 4x as many, or the whole
    frame) on the 0..255 scale."""
    h, w = frame.shape[:2]
    # An integer factor (the frame cropped by under `k` pixels to a multiple of it): OpenCV's area
    # resampling is 2-3x faster then (1920x1080: 3.6 against 8.6 ms).
    k = max(1, min(w // CUT_WIDTH, h, math.floor(math.sqrt(w * h / THUMB_PIXELS))))
    small = cv2.resize(frame[: h - h % k, : w - w % k, :3], (w // k, h // k), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    if frame.dtype != np.uint8:
        small *= 255.0
    return small @ _LUMA


class LevelTrack:
    """Every frame's exposure and black level relative to the first frame of its shot, and where the shots
    change, measured frame by frame in clip order. Each pair of frames is measured on its own (3 ms at
    any size: the thumbnails are alike), so worker threads measure them while the caller reads on; only
    chaining the results is sequential. Memory: three numbers a frame, the last thumbnail and those of
    the pairs still being measured (at most PAIRS_AHEAD)."""

    def __init__(self) -> None:
        self.dark: list[bool] = []
        self._log_gains: list[float] = []
        self._offsets: list[float] = []  # grey levels (of 255), on the same terms
        self._cuts: list[int] = []  # frames that open a new shot, or cannot be related to the one before
        self._pending: deque = deque()  # per frame not chained yet: None (unrelated) or frame_change's Future
        self._last: np.ndarray | None = None

    def add(self, frame: np.ndarray, thumb: np.ndarray | None = None) -> None:
        """The next frame; `thumb`: its `thumbnail_luma` where the caller has it already."""
        thumb = thumbnail_luma(frame) if thumb is None else thumb
        dark = float(thumb.mean()) < DARK
        if dark or not self.dark or self.dark[-1]:
            self._pending.append(None)
        else:
            self._pending.append(_PAIRS.submit(frame_change, self._last, thumb))
        self.dark.append(dark)
        self._last = thumb
        while self._pending and (len(self._pending) > PAIRS_AHEAD or self._pending[0] is None
                                 or self._pending[0].done()):
            self._chain(self._pending.popleft())

    @property
    def cuts(self) -> list[int]:
        self._settle()
        return self._cuts

    def corrections(self) -> list[list[float]]:
        self._settle()
        return frame_corrections(self._log_gains, self._offsets, self._cuts, self.dark)

    def _settle(self) -> None:
        while self._pending:
            self._chain(self._pending.popleft())

    def _chain(self, pending: Future | None) -> None:
        change = pending.result() if pending is not None else None
        index = len(self._log_gains)
        if change is None:
            if index:
                self._cuts.append(index)
            log_gain, offset = 0.0, 0.0
        else:
            gain, shift = change
            log_gain, offset = self._log_gains[-1] + math.log(gain), gain * self._offsets[-1] + shift
        self._log_gains.append(log_gain)
        self._offsets.append(offset)


# The threads that measure frame pairs (OpenCV and NumPy release the GIL for most of the work); they start
# with the first pair.
_PAIRS = ThreadPoolExecutor(max_workers=PAIR_WORKERS, thread_name_prefix="vst-deflicker")


def frame_change(before: np.ndarray, after: np.ndarray) -> tuple[float, float] | None:
    """(gain, offset) with after = gain * before + offset on two luma thumbnails once the motion between
    them is undone, or None where they are not one shot (a cut, too few unclipped pixels, a gain beyond
    a flicker's, a nearly black thumbnail)."""
    if min(before.mean(), after.mean()) < DARK or is_cut(before, after):
        return None
    x, y = _aligned_pairs(before, after)
    if len(x) < MIN_PIXELS * after.size:
        return None
    # A line through the pairs, refitted without the pairs it misses by over 2.5 robust standard
    # deviations (occlusions, flow errors). Its slope is the ratio of the spreads (x and y are equally
    # noisy: regressing y on x would shrink the gain). Content of one level tells only an offset.
    keep = np.ones(len(x), dtype=bool)
    for _ in range(3):
        xs, ys = x[keep], y[keep]
        gain = float(ys.std() / xs.std()) if xs.std() >= FLAT else 1.0
        offset = float(ys.mean() - gain * xs.mean())
        miss = np.abs(y - gain * x - offset)
        keep = miss < 2.5 * (1.4826 * float(np.median(miss)) + 0.5)  # + 0.5: frames identical to rounding
    if not 1 / MAX_SCALE <= gain <= MAX_SCALE:  # beyond what a flicker does: not related
        return None
    return gain, offset


def is_cut(before: np.ndarray, after: np.ndarray) -> bool:
    """A new shot: consecutive thumbnails, at CUT_WIDTH and exposure-normalized, differing by over CUT on
    average and over CUT_MEDIAN at the median."""
    def small(t: np.ndarray) -> np.ndarray:
        h, w = t.shape
        width = min(w, CUT_WIDTH)
        s = cv2.resize(t, (width, max(1, round(width * h / w))), interpolation=cv2.INTER_AREA)
        return s / s.mean()
    change = np.abs(small(after) - small(before))
    return float(change.mean()) > CUT and float(np.median(change)) > CUT_MEDIAN


def _aligned_pairs(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of `before` moved onto `after` by dense optical flow (DIS), paired with `after`'s: both
    unclipped, the flow inside the frame."""
    def normalized(t: np.ndarray) -> np.ndarray:  # the flow should see the content, not the exposure
        return np.clip((t - t.mean()) * (40.0 / (t.std() + 1e-6)) + 128.0, 0, 255).astype(np.uint8)
    flow = dis_flow(normalized(after), normalized(before))
    moved = warp(before, flow)
    lo, hi = CLIPPED
    usable = in_frame(flow) & (moved > lo) & (moved < hi) & (after > lo) & (after < hi)
    return moved[usable].astype(np.float64), after[usable].astype(np.float64)


def frame_corrections(log_gains: Sequence[float], offsets: Sequence[float], cuts: Sequence[int] = (),
                      dark: Sequence[bool] = ()) -> list[list[float]]:
    """Each frame's [scale, offset] (on the 0..255 scale) from its exposure and black level (`LevelTrack`):
    both fitted over nearby frames of its shot (within WINDOW frames, exposures within STEP of its
    own), reached from its own; [1, 0] for dark frames and where fewer than 3 frames fit."""
    log_gains, offsets = np.asarray(log_gains, dtype=np.float64), np.asarray(offsets, dtype=np.float64)
    dark = np.asarray(dark if len(dark) else [False] * len(log_gains), dtype=bool)
    shot = np.zeros(len(log_gains), dtype=np.int64)
    for c in cuts:
        shot[c:] += 1
    out = [[1.0, 0.0] for _ in log_gains]
    for t in range(len(log_gains)):
        if dark[t]:
            continue
        lo, hi = max(0, t - WINDOW), min(len(log_gains), t + WINDOW + 1)
        near = np.arange(lo, hi)
        near = near[(shot[lo:hi] == shot[t]) & ~dark[lo:hi]
                    & (np.abs(log_gains[lo:hi] - log_gains[t]) <= math.log1p(STEP))]
        if len(near) < 3:
            continue
        # Weighted least squares value = a + b (s - t), for the log gain and the offset; a is the smoothed
        # value at t (on a ramp, the one-sided windows at a shot's ends do not pull it towards the shot's
        # middle). Triangular weights over 2 * WINDOW + 1 frames cancel a flicker alternating frame by
        # frame exactly.
        root_w = np.sqrt(WINDOW + 1.0 - np.abs(near - t))
        design = np.stack([np.ones(len(near)), near - t], axis=1) * root_w[:, None]
        values = np.stack([log_gains[near], offsets[near]], axis=1) * root_w[:, None]
        smooth_log_gain, smooth_offset = np.linalg.lstsq(design, values, rcond=None)[0][0]
        # The frame's pixels x = gain_t y + offset_t of the scene's y, put on the smoothed course.
        scale = min(MAX_SCALE, max(1.0 / MAX_SCALE, math.exp(smooth_log_gain - log_gains[t])))
        out[t] = [float(scale), float(min(255.0, max(-255.0, smooth_offset - scale * offsets[t])))]
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
