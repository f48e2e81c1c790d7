"""Optical flow helpers for measuring temporal consistency.

Conventions: a flow is an H x W x 2 float32 array of (dx, dy) displacements in pixels. The
flow from frame A to frame B maps pixel p of A to p + flow(p) in B, so backward-warping B with it
(`warp(B, flow)`, out(p) = B(p + flow(p))) aligns B to A.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import VstError

FLO_MAGIC = 202021.25  # Middlebury .flo tag ("PIEH" as bytes)

# DIS preset: MEDIUM is the accuracy/speed trade-off used by the metric (FAST is too coarse on
# large motions, ULTRAFAST much worse); see tests/test_evaluate.py for its error on MPI Sintel.
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def read_flo(path: str | Path) -> np.ndarray:
    """Read a Middlebury .flo file: float32 tag 202021.25, int32 width, int32 height, then
    width*height (u, v) float32 pairs, row-major, little-endian. Returns H x W x 2 float32."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VstError(f"cannot read flow file {path}: {exc.strerror or exc}") from None
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != np.float32(FLO_MAGIC):
        raise VstError(f"not a Middlebury .flo file (bad tag): {path}")
    w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(data) != 12 + 8 * w * h:
        raise VstError(f"corrupt .flo file {path}: header says {w}x{h}, file has {len(data)} bytes")
    return np.frombuffer(data[12:], "<f4").reshape(h, w, 2).astype(np.float32)


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write an H x W x 2 flow as a Middlebury .flo file."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be H x W x 2, got {flow.shape}")
    h, w = flow.shape[:2]
    with open(path, "wb") as fh:
        fh.write(np.array([FLO_MAGIC], "<f4").tobytes())
        fh.write(np.array([w, h], "<i4").tobytes())
        fh.write(np.ascontiguousarray(flow, dtype="<f4").tobytes())


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A flow at another (width, height): resized bilinearly, its vectors scaled with the image."""
    h, w = flow.shape[:2]
    if (w, h) == tuple(size):
        return flow
    scale = np.float32([size[0] / w, size[1] / h])
    return cv2.resize(flow, tuple(size), interpolation=cv2.INTER_LINEAR) * scale


def read_mask(path: str | Path) -> np.ndarray:
    """A mask image as H x W bool, white (> 127) = set (MPI Sintel's occlusion and invalid masks)."""
    from .video import read_image  # its checks and one-line errors for missing or unreadable files
    return cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY) > 127


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask at another (width, height); downscaled, a pixel is set if any pixel under it was."""
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return cv2.resize(mask.astype(np.uint8) * 255, tuple(size), interpolation=cv2.INTER_AREA) > 0


def _grey(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(img)


# The smallest frames `vst eval` measures: DIS refuses frames under 12 px on either side.
MIN_FLOW_SIDE = 12
# OpenCV 4.10's DIS crashes (segmentation fault) on frames 12-15 px high and 40 px wide or more; frames
# with a side under this are padded for it (no crash found from 16 px up, up to 3200x16 and 16x3200).
DIS_SAFE_SIDE = 16


def dis_flow(a_rgb: np.ndarray, b_rgb: np.ndarray, preset: int = DIS_PRESET) -> np.ndarray:
    """Dense flow from frame a to frame b (OpenCV DIS on the grey images).

    Frames: H x W x 3 RGB (uint8, or float in [0, 1]) or H x W grey. Pixel p of a maps to
    p + flow(p) in b.
    """
    ga, gb = _grey(a_rgb), _grey(b_rgb)
    if ga.shape != gb.shape:
        raise ValueError(f"frames differ in size: {ga.shape} vs {gb.shape}")
    h, w = ga.shape
    pad_y, pad_x = max(0, DIS_SAFE_SIDE - h), max(0, DIS_SAFE_SIDE - w)
    if pad_y or pad_x:
        ga, gb = (cv2.copyMakeBorder(g, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE) for g in (ga, gb))
    flow = cv2.DISOpticalFlow_create(preset).calc(ga, gb, None)[:h, :w]
    return np.ascontiguousarray(flow, dtype=np.float32)


def _sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    xs = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    ys = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    return xs.astype(np.float32, copy=False), ys.astype(np.float32, copy=False)


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(p) = img(p + flow(p)), bilinear, border replicated.

    `img` is H x W or H x W x C (any dtype cv2.remap takes; use float32 for exact values).
    """
    if img.shape[:2] != flow.shape[:2]:
        raise ValueError(f"image {img.shape[:2]} and flow {flow.shape[:2]} differ in size")
    mx, my = _sample_maps(np.asarray(flow, dtype=np.float32))
    if img.ndim == 3 and img.shape[2] > 4:  # remap handles up to 4 channels at once
        return np.stack([warp(img[..., c], flow) for c in range(img.shape[2])], -1)
    return cv2.remap(img, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def in_frame(flow: np.ndarray) -> np.ndarray:
    """Pixels whose target p + flow(p) lies inside the image (bilinear support included)."""
    h, w = flow.shape[:2]
    mx, my = _sample_maps(flow)
    return (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)


def occlusion_mask(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """Reliable pixels of the first frame by the forward-backward consistency check.

    `fwd` is the flow A -> B, `bwd` the flow B -> A. A pixel p of A is reliable when its target
    p + f lies inside B and the backward flow there undoes the forward one (Sundaram et al. 2010,
    as used by Ruder et al. 2016 for video style transfer):
        |f + b(p+f)|^2 < 0.01 (|f|^2 + |b(p+f)|^2) + 0.5
    Returns an H x W boolean mask (True = reliable).
    """
    fwd = np.asarray(fwd, dtype=np.float32)
    bwd = np.asarray(bwd, dtype=np.float32)
    if fwd.shape != bwd.shape or fwd.ndim != 3 or fwd.shape[2] != 2:
        raise ValueError(f"flows must both be H x W x 2, got {fwd.shape} and {bwd.shape}")
    b = warp(bwd, fwd)
    lhs = np.sum((fwd + b) ** 2, axis=2)
    rhs = 0.01 * (np.sum(fwd ** 2, axis=2) + np.sum(b ** 2, axis=2)) + 0.5
    return (lhs < rhs) & in_frame(fwd)
