"""3x3 convolutions that can run on faster CPU kernels for fp32 inference: NNPACK's Winograd
kernels, or oneDNN's int8 ones (`vst_engine.int8`).

On a 2-core AVX2 CPU oneDNN ran this network's 3x3 convolutions at 110-170 GFLOPS of direct
arithmetic; NNPACK's Winograd F(6x6, 3x3) kernels do about 2.3x fewer multiplications and ran the
wide layers 1.3-2.9x faster (512->256 at 160x90: 247 -> 85 ms; 64->64 at 640x360: 150 -> 126 ms),
with results within 2e-5 of oneDNN's (relative to the largest output). Narrow layers (3 or 32
channels on a side) were as fast or faster on oneDNN, so they stay there. Training never uses it:
PyTorch's NNPACK entry point has no backward pass.
"""
from __future__ import annotations

import os
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from . import int8
from .hardware import cpu_has_avx512

T = TypeVar("T")

# Winograd pays off where both sides have at least this many channels (measured, see above).
WINOGRAD_MIN_CHANNELS = 64
# NNPACK transforms a whole input and output at once, in a workspace about 1.8x their size that it
# keeps (1.2 GB for a 128->64 convolution at 1280x720; a 720p analysis then peaked at 6.1 GB,
# against 2.4 GB on oneDNN). Larger convolutions run in bands of output rows whose workspace stays
# near this size: 720p stylization then peaks at 2.6-2.8 GB (oneDNN 3.0), at the same speed. This
# size leaves 640x360 frames unbanded (128 MiB bands were 6% slower there).
WORKSPACE_BYTES = 320 * 2**20
# Workspace bytes per output row and channel: 8x8 float32 transforms per 6x6 output tile.
_BYTES_PER_ROW_CHANNEL_PIXEL = 64 * 4 / 36
_TILE = 6


def winograd_available() -> bool:
    """Whether this PyTorch build has NNPACK and this CPU runs it ($VST_WINOGRAD=0 turns it off).

    `torch._nnpack_available` also initialises NNPACK, without which every call fails."""
    if os.environ.get("VST_WINOGRAD") == "0":
        return False
    available = getattr(torch, "_nnpack_available", None)
    return bool(available and available())


def winograd_preferred() -> bool:
    """Whether fp32 CPU inference takes NNPACK's Winograd kernels: where they are available, on CPUs
    without AVX-512 ($VST_WINOGRAD=1 takes them anyway, 0 never).

    NNPACK's kernels are AVX2 at most; oneDNN's direct ones use AVX-512's 512-bit units, and were the
    faster on both AVX-512 CPUs measured (2-core Xeons, default model in fp32, engines alternated in
    one process): 640x360 1.10 against 1.45 s a frame and 1280x720 4.8 against 6.1 s (AMX hidden),
    640x360 1.06 against 1.24 s (with AMX, computing in fp32). Capped at AVX2 (ONEDNN_MAX_CPU_ISA),
    oneDNN lost again: 1.53 against 1.26 s. Not measured: CPUs that run AVX-512 on 256-bit halves
    (AMD Zen 4), where this choice may be the slower one ($VST_WINOGRAD=1)."""
    if not winograd_available():
        return False
    return os.environ.get("VST_WINOGRAD") == "1" or not cpu_has_avx512()


class Conv3x3(nn.Conv2d):
    """A 3x3 convolution (the parameters of nn.Conv2d) whose fp32 CPU inference can take Winograd
    or int8 kernels."""

    def __init__(self, cin: int, cout: int, padding: int = 1) -> None:
        super().__init__(cin, cout, 3, padding=padding)
        self.winograd = False
        self.int8 = False

    @property
    def wide(self) -> bool:
        return min(self.in_channels, self.out_channels) >= WINOGRAD_MIN_CHANNELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_int8(x):
            return self.int8_conv(x)
        if self.takes_winograd(x):
            return winograd_conv(x, self.weight, self.bias, self.padding[0])
        return super().forward(x)

    def takes_winograd(self, x: torch.Tensor) -> bool:
        """Whether this convolution of x runs on NNPACK: fp32 inference on a CPU, where switched on."""
        return self.winograd and _cpu_inference(x)

    def takes_int8(self, x: torch.Tensor) -> bool:
        """Whether this convolution of x runs in int8: fp32 inference on a CPU, where switched on."""
        return self.int8 and _cpu_inference(x) and not torch.compiler.is_compiling()

    def relu_forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(self(x)); in int8 the ReLU is part of the convolution's pass."""
        if self.takes_int8(x):
            return self.int8_conv(x, relu=True)
        # In place on the fresh convolution output: an out-of-place ReLU's new tensor cost as
        # much as the ReLU itself (autograd keeps working: ReLU's backward reads its output).
        return F.relu(self(x), inplace=True)

    def int8_conv(self, x: torch.Tensor, pad: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  kind: str = "plain", relu: bool = False) -> torch.Tensor:
        """This convolution of x in int8: x quantized, then padded by `pad` (its uint8 copy is a
        quarter of the float32 bytes to pad), then convolved with the weights of `kind` ("plain":
        this layer's, with its zero padding; other kinds: a subclass's `_int8_weights`). Each sample
        of a batch is quantized over its own range, so a frame's result does not depend on the frames
        batched with it."""
        if x.shape[0] > 1:
            return torch.cat([self.int8_conv(x[i:i + 1], pad, kind, relu) for i in range(x.shape[0])])
        q, scale, zero = int8.quantize(x)
        weights = self.cached(f"int8 {kind}", lambda: self._int8_weights(kind))
        return int8.conv(q if pad is None else pad(q), scale, zero, weights, relu)

    def _int8_weights(self, kind: str) -> int8.PackedConv:
        return int8.pack(self.weight, self.bias, self.padding[0])

    def cached(self, key: str, make: Callable[[], T]) -> T:
        """`make()`, kept until this layer's parameters change (weights derived from them)."""
        version = (self.weight._version, self.weight.data_ptr(), self.bias._version)
        cache = self.__dict__.setdefault("_derived", {})
        if cache.get(key, (None,))[0] != version:
            cache[key] = (version, make())
        return cache[key][1]


def _cpu_inference(x: torch.Tensor) -> bool:
    return x.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled()


def winograd_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pad: int) -> torch.Tensor:
    """The 3x3 convolution of x (zero-padded by `pad`) on NNPACK's Winograd kernels (fp32 CPU, no autograd)."""
    # One sample at a time: NNPACK's batched entry point was 1.2-4x slower than a loop.
    parts = [_winograd_sample(x[i:i + 1], weight, bias, pad) for i in range(x.shape[0])]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _winograd_sample(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pad: int) -> torch.Tensor:
    """NNPACK on one sample, in bands of output rows where the whole would overrun WORKSPACE_BYTES."""
    c_out = weight.shape[0]
    h_out, w_out = x.shape[2] + 2 * pad - 2, x.shape[3] + 2 * pad - 2
    per_row = w_out * (x.shape[1] + c_out) * _BYTES_PER_ROW_CHANNEL_PIXEL
    rows = max(_TILE, int(WORKSPACE_BYTES / per_row) // _TILE * _TILE)
    if rows >= h_out:
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, (pad, pad))
    out = x.new_empty((1, c_out, h_out, w_out))
    for r0 in range(0, h_out, rows):
        r1 = min(r0 + rows, h_out)
        # The input rows that output rows r0..r1 read. NNPACK pads a band's top and bottom
        # alike, so the rows computed from a pad inside the frame are dropped.
        a, b = max(r0 - pad, 0), min(r1 - pad + 2, x.shape[2])
        band = torch._nnpack_spatial_convolution(x[:, :, a:b].contiguous(), weight, bias, (pad, pad))
        out[:, :, r0:r1] = band[:, :, r0 - a:r1 - a]
    return out


def use_winograd(module: nn.Module, enabled: bool) -> int:
    """Route `module`'s wide 3x3 convolutions to Winograd kernels (or back); returns how many."""
    convs = [m for m in module.modules() if isinstance(m, Conv3x3) and m.wide]
    for conv in convs:
        conv.winograd = enabled
    return len(convs)
