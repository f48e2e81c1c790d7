"""The paper's training losses (content, style, colour reconstruction, total variation)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..norms import channel_stats


def content_loss(out_feat4: torch.Tensor, content_feat4: torch.Tensor) -> torch.Tensor:
    """MSE at relu4_1 against the desaturated content (Eq. 8)."""
    return F.mse_loss(out_feat4.float(), content_feat4.float())


def style_loss(out_feats: list[torch.Tensor], mean: list[torch.Tensor], std: list[torch.Tensor]) -> torch.Tensor:
    """Squared differences of channel means and stds at relu1_1..relu4_1 (Eq. 7), per-sample mean."""
    total = 0.0
    for f, m, s in zip(out_feats, mean, std):
        fm, fs = channel_stats(f)
        total = total + F.mse_loss(fm, m.float()) + F.mse_loss(fs, s.float())
    return total


def tv_loss(img: torch.Tensor) -> torch.Tensor:
    return (img[:, :, 1:, :] - img[:, :, :-1, :]).abs().mean() + (img[:, :, :, 1:] - img[:, :, :, :-1]).abs().mean()
