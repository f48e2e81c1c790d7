"""A clip's shots: where its cuts are, so that each shot can be analysed on its own (`--per-shot`).

Global features pooled over several shots give every shot the statistics of all of them, and stylize
it less than its own would: on the bench's four excerpts joined by cuts, their style loss was 2.2x
that of each shot's own features (1.64 against 0.76; docs/BENCHMARKS.md, Shots).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .deflicker import DARK, LevelTrack, is_cut, thumbnail_luma
from .engine import process_size, resize_frame
from .errors import VstError
from .features import GlobalFeatures, sample_indices

if TYPE_CHECKING:
    from .engine import Analysis


# Thumbnail luma spread (of 255) of a frame with nothing to compare (a slate, a single colour): the
# analysis leaves such frames out too (`engine.is_flat`).
FLAT = 2.0


class CutFinder:
    """Cuts between frames fed in clip order, by the deflicker's test (exposure-normalized thumbnails
    that differ). Nearly black and single-colour frames are passed over: the frame after a fade
    through black or a slate is compared with the last one before it. Memory: the last thumbnail."""

    def __init__(self) -> None:
        self.cuts: list[int] = []  # frames (counted from the first one fed) that open a new shot
        self.frames = 0
        self._last: np.ndarray | None = None

    def add(self, frame: np.ndarray, thumb: np.ndarray | None = None) -> None:
        """The next frame; `thumb`: its `thumbnail_luma` where the caller has it already."""
        thumb = thumbnail_luma(frame) if thumb is None else thumb
        if float(thumb.mean()) >= DARK and float(thumb.std()) >= FLAT:
            if self._last is not None and is_cut(self._last, thumb):
                self.cuts.append(self.frames)
            self._last = thumb
        self.frames += 1


def shot_ranges(cuts: Sequence[int], start: int, end: int) -> list[tuple[int, int]]:
    """Frames start:end split at `cuts` (clip frame numbers) into [first, end) ranges."""
    bounds = [start] + sorted(c for c in set(cuts) if start < c < end) + [end]
    return list(zip(bounds, bounds[1:]))


class ShotAnalyses:
    """The global features of clip frames start:end, one analysis per shot, from frames fed in clip order.

    Each shot's analysis gets its sampled frames (`sample_indices` over the shot: every `interval`-th from
    its first, and its last) at the processing size for `max_side`. With `cuts` None the shots are found
    as the frames arrive (`CutFinder`), so every frame must be fed, and an unsampled frame is held until
    the next one tells whether it ended its shot; otherwise the frames are split at `cuts` and only
    `wanted()` need to be fed. With `deflicker`, every frame's exposure is measured, shot by shot.
    `begin(k)` starts shot k's analysis (a completion's starts one of the clip's own colours). `until`:
    the shots found from a cut at or after this frame on are not needed; `done` tells when that cut came
    (the frames after it need not be fed)."""

    def __init__(self, begin: Callable[[int], "Analysis"], start: int, end: int, interval: int,
                 max_side: int | None, cuts: Sequence[int] | None = None, deflicker: bool = False,
                 source: str = "", until: int | None = None) -> None:
        self.begin, self.end, self.interval, self.max_side = begin, end, interval, max_side
        self.finder = CutFinder() if cuts is None else None
        self.ranges = shot_ranges(cuts or (), start, end)  # when found as they come: only the first shot's start
        self.deflicker, self.source, self.until = deflicker, source, end if until is None else until
        self.done = False
        self.shots: list[GlobalFeatures] = []
        self.size: tuple[int, int] | None = None
        self._open(start)

    def wanted(self) -> Sequence[int]:
        """The frames to feed, in order."""
        if self.finder is not None or self.deflicker:
            return range(self.ranges[0][0], self.end)
        return [i for a, b in self.ranges for i in sample_indices(a, b, self.interval)]

    def add(self, index: int, frame: np.ndarray) -> None:
        """Clip frame `index` (full size: the cut finder and the deflicker read it so)."""
        if self.done:
            raise ValueError("frames fed after the last shot wanted")
        size = frame.shape[1], frame.shape[0]
        if self.size is None:
            self.size = size
        elif size != self.size:  # the thumbnails compared and the analysed frames must match
            raise VstError(f"all frames of a clip must have one size: frame {index} is {size[0]}x{size[1]}, the "
                           f"first was {self.size[0]}x{self.size[1]}")
        # The cut finder and the deflicker read the same thumbnail (3.4 ms a 1920x1080 frame).
        thumb = thumbnail_luma(frame) if self.finder is not None or self.deflicker else None
        if self._opens_shot(index, frame, thumb):
            self._close(index)
            if index >= self.until:
                self.done = True
                return
            self._open(index)
        if self.track is not None:
            self.track.add(frame, thumb)
        if (index - self.first) % self.interval == 0 or index == self.shot_end - 1:
            self._analyse(index, frame)
        elif self.finder is not None:
            self.held = index, frame

    def finish(self) -> list[GlobalFeatures]:
        """Each shot's features, in clip order."""
        if not self.done:
            self._close(self.end)
            self.done = True
        return self.shots

    @property
    def shot_end(self) -> int:
        """Where the current shot ends, as far as known."""
        return self.end if self.finder is not None else self.ranges[len(self.shots)][1]

    def _opens_shot(self, index: int, frame: np.ndarray, thumb: np.ndarray | None) -> bool:
        if self.finder is None:
            return index >= self.shot_end
        self.finder.add(frame, thumb)
        return bool(self.finder.cuts) and self.finder.cuts[-1] == self.finder.frames - 1

    def _open(self, first: int) -> None:
        self.first, self.picks, self.held = first, [], None
        self.run = self.begin(len(self.shots))
        self.track = LevelTrack() if self.deflicker else None

    def _analyse(self, index: int, frame: np.ndarray) -> None:
        self.run.add(resize_frame(frame, process_size(frame.shape[1], frame.shape[0], self.max_side)))
        self.picks.append(index)
        self.held = None

    def _close(self, end: int) -> None:
        if self.held is not None:  # the shot's last frame
            self._analyse(*self.held)
        feats = self.run.finish(source=self.source, frame_range=(self.first, end), interval=self.interval,
                                sampled=self.picks, settings={"max_side": self.max_side})
        self.shots.append(feats.with_deflicker(self.track.corrections()) if self.track is not None else feats)
