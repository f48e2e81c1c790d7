"""Overlapping tiles for frames too large to process in one piece."""
from __future__ import annotations

import torch


def _spans(length: int, size: int, overlap: int, grid: int) -> list[tuple[int, int]]:
    """The fewest windows of at most `size` that cover `length` with neighbours overlapping by at
    least `overlap`, of one length and evenly spread, all starting on the `grid`.

    The start must be a multiple of the encoder's pooling grid: a tile shifted off it pools other
    pixel pairs and renders other textures than the whole frame (4 px off: 17 grey levels on
    average). Windows of the full `size` stepped from the start overlapped far more where the last
    one was pulled back to fit: 6 tiles of 768x768 for a 1920x1080 frame, 1.7x its pixels, where
    6 tiles of 608x728 cover it with 1.3x."""
    if length <= size:
        return [(0, length)]
    # In units of the grid; the last window may end inside its last unit (at `length`).
    n_len, n_size, n_overlap = -(-length // grid), size // grid, -(-overlap // grid)
    n = -(-(n_len - n_overlap) // (n_size - n_overlap))
    t = -(-(n_len + (n - 1) * n_overlap) // n)  # n * t >= n_len + (n - 1) * n_overlap, t <= n_size
    # Steps of at most ceil((n_len - t) / (n - 1)) <= t - n_overlap units keep every overlap.
    starts = [i * (n_len - t) // (n - 1) for i in range(n)]
    return [(grid * a, min(grid * (a + t), length)) for a in starts]


def tile_windows(h: int, w: int, size: int, overlap: int, grid: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) windows of at most size x size covering h x w, neighbours overlapping,
    starting on multiples of `grid`."""
    return [(y0, y1, x0, x1) for y0, y1 in _spans(h, size, overlap, grid) for x0, x1 in _spans(w, size, overlap, grid)]


def analysis_windows(h: int, w: int, size: int, grid: int) -> list[tuple[int, int, int, int]]:
    """Windows of at most size x size covering h x w for the analysis, whose sums are additive
    over pixels: neighbours overlap by at most `grid` pixels (0.7% of a 1920x1080 frame is counted
    twice in 544-row tiles), which gives every window one shape once padded to the grid. An exact
    partition into 768-px tiles had 4 shapes at 1920x1080, each compiled anew."""
    return tile_windows(h, w, size, 0, grid)


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
