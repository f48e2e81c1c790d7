"""Random smooth warps for the compound regularization (training only)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_flow(n: int, h: int, w: int, gen: torch.Generator, std: float = 8.0, max_shift: float = 10.0,
                grid: int = 4, blur: int = 9) -> torch.Tensor:
    """A smooth random flow field in pixels, N x 2 x H x W (x, y displacement).

    Gaussian offsets (std pixels) on a coarse grid, bicubically upsampled, box-blurred, plus
    one random global shift per sample: locally varying, plausible camera/object motion.
    """
    coarse = torch.randn(n, 2, grid, grid, generator=gen) * std
    flow = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    flow = F.avg_pool2d(F.pad(flow, [blur // 2] * 4, mode="replicate"), blur, stride=1)
    shift = (torch.rand(n, 2, 1, 1, generator=gen) * 2 - 1) * max_shift
    return flow + shift


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp img (N x C x H x W) by flow in pixels: out(p) = img(p + flow(p))."""
    n, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=img.device),
                            torch.arange(w, dtype=torch.float32, device=img.device), indexing="ij")
    gx = (xs + flow[:, 0].float().to(img.device)) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1].float().to(img.device)) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(img.dtype)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)
