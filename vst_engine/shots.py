"""A clip's shots: where its cuts are, so that each shot can be analysed on its own (`--per-shot`).

Global features pooled over several shots give every shot the statistics of all of them, and stylize
it less than its own would: on the bench's four excerpts joined by cuts, their style loss was 2.2x
that of each shot's own features (1.64 against 0.76; docs/BENCHMARKS.md, Shots).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .deflicker import DARK, is_cut, thumbnail_luma


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

    def add(self, frame: np.ndarray) -> None:
        thumb = thumbnail_luma(frame)
        if float(thumb.mean()) >= DARK and float(thumb.std()) >= FLAT:
            if self._last is not None and is_cut(self._last, thumb):
                self.cuts.append(self.frames)
            self._last = thumb
        self.frames += 1


def shot_ranges(cuts: Sequence[int], start: int, end: int) -> list[tuple[int, int]]:
    """Frames start:end split at `cuts` (clip frame numbers) into [first, end) ranges."""
    bounds = [start] + sorted(c for c in set(cuts) if start < c < end) + [end]
    return list(zip(bounds, bounds[1:]))
