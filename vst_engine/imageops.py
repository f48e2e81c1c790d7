"""Small tensor image operations shared by the engine and training."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)  # BT.601, as used for the paper's desaturated content


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W RGB -> N x 1 x H x W luma."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


def desaturate(rgb: torch.Tensor) -> torch.Tensor:
    """Luma copied to three channels: the network's content input."""
    return luma(rgb).expand(-1, 3, -1, -1)


def keep_colours(stylized: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the stylized luma with the original's chroma (YCbCr)."""
    # In YCbCr, Cb and Cr are scaled differences B - Y and R - Y: keeping those of the
    # original while taking Y from the stylized frame is adding the luma difference.
    return (original + (luma(stylized) - luma(original))).clamp(0.0, 1.0)


def frames_to_tensor(frames: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """H x W x 3 RGB frames of one size, uint8 or float32 in [0, 1] -> N x 3 x H x W float32 in
    [0, 1], in one copy to the device."""
    stacked = np.ascontiguousarray(frames[0][None] if len(frames) == 1 else np.stack(frames))
    return unit_nchw(torch.from_numpy(stacked).to(device))


def unit_nchw(frames: torch.Tensor) -> torch.Tensor:
    """N x H x W x 3 frames, uint8 or float -> N x 3 x H x W float32 in [0, 1]."""
    x = frames.permute(0, 3, 1, 2)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float().clamp(0.0, 1.0)


def to_tensor(frame: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """One frame as a 1 x 3 x H x W tensor (see `frames_to_tensor`)."""
    return frames_to_tensor([frame], device)


def quantize(img: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W float in [0, 1] -> N x H x W x 3 uint8 (rounded, clamped), contiguous, on img's device."""
    return (img.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def pad_to_multiple(img: torch.Tensor, multiple: int, minimum: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad bottom/right so both sides are multiples of `multiple` and at least `minimum`
    (replicating where the image is too small to reflect); returns the original size."""
    h, w = img.shape[-2:]
    ph, pw = max((-h) % multiple, minimum - h), max((-w) % multiple, minimum - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        img = F.pad(img, (0, pw, 0, ph), mode=mode)
    return img, (h, w)
