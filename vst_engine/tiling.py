"""Overlapping tiles for frames too large to process in one piece."""
from __future__ import annotations

import torch


def _starts(length: int, size: int, overlap: int) -> list[int]:
    if length <= size:
        return [0]
    stride = size - overlap
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


def tile_windows(h: int, w: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) windows of at most size x size covering h x w, neighbours overlapping."""
    return [(y, min(y + size, h), x, min(x + size, w))
            for y in _starts(h, size, overlap) for x in _starts(w, size, overlap)]


def tile_partition(h: int, w: int, size: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping windows covering h x w exactly once (for additive statistics)."""
    return [(y, min(y + size, h), x, min(x + size, w)) for y in range(0, h, size) for x in range(0, w, size)]


def _ramp(n: int, lo_edge: bool, hi_edge: bool, overlap: int) -> torch.Tensor:
    r = torch.ones(n)
    ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
    k = min(overlap, n)
    if lo_edge:
        r[:k] = torch.minimum(r[:k], ramp[:k])
    if hi_edge:
        r[n - k:] = torch.minimum(r[n - k:], ramp[:k].flip(0))
    return r


def blend_weights(y0: int, y1: int, x0: int, x1: int, h: int, w: int, overlap: int) -> torch.Tensor:
    """1 x 1 x th x tw weights: linear ramps over the overlap on edges shared with other tiles."""
    wy = _ramp(y1 - y0, y0 > 0, y1 < h, overlap)
    wx = _ramp(x1 - x0, x0 > 0, x1 < w, overlap)
    return (wy[:, None] * wx[None, :])[None, None]
