"""3x3 convolutions that can run on NNPACK's Winograd kernels for fp32 inference on CPUs.

On a 2-core AVX2 CPU oneDNN ran this network's 3x3 convolutions at 110-170 GFLOPS of direct
arithmetic; NNPACK's Winograd F(6x6, 3x3) kernels do about 2.3x fewer multiplications and ran the
wide layers 1.3-2.9x faster (512->256 at 160x90: 247 -> 85 ms; 64->64 at 640x360: 150 -> 126 ms),
with results within 2e-5 of oneDNN's (relative to the largest output). Narrow layers (3 or 32
channels on a side) were as fast or faster on oneDNN, so they stay there. Training never uses it:
PyTorch's NNPACK entry point has no backward pass.
"""
from __future__ import annotations

import os

import torch
from torch import nn

# Winograd pays off where both sides have at least this many channels (measured, see above).
WINOGRAD_MIN_CHANNELS = 64


def winograd_available() -> bool:
    """Whether this PyTorch build has NNPACK and this CPU runs it ($VST_WINOGRAD=0 turns it off).

    `torch._nnpack_available` also initialises NNPACK, without which every call fails."""
    if os.environ.get("VST_WINOGRAD", "1") == "0":
        return False
    available = getattr(torch, "_nnpack_available", None)
    return bool(available and available())


class Conv3x3(nn.Conv2d):
    """A 3x3 convolution (the parameters of nn.Conv2d) whose fp32 CPU inference can take Winograd kernels."""

    def __init__(self, cin: int, cout: int, padding: int = 1) -> None:
        super().__init__(cin, cout, 3, padding=padding)
        self.winograd = False

    @property
    def wide(self) -> bool:
        return min(self.in_channels, self.out_channels) >= WINOGRAD_MIN_CHANNELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.winograd and x.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled():
            # One sample at a time: NNPACK's batched entry point was 1.2-4x slower than a loop.
            parts = [torch._nnpack_spatial_convolution(x[i:i + 1].contiguous(), self.weight, self.bias,
                                                       self.padding) for i in range(x.shape[0])]
            return parts[0] if len(parts) == 1 else torch.cat(parts)
        return super().forward(x)


def use_winograd(module: nn.Module, enabled: bool) -> int:
    """Route `module`'s wide 3x3 convolutions to Winograd kernels (or back); returns how many."""
    convs = [m for m in module.modules() if isinstance(m, Conv3x3) and m.wide]
    for conv in convs:
        conv.winograd = enabled
    return len(convs)
