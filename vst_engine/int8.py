"""int8 convolutions on oneDNN for fp32 inference on CPUs with AVX-512 VNNI (`--precision int8`).

One convolution, int8 with a float32 output against float32 (2-core Xeon with VNNI, no AMX,
channels-last): 64->64 at 640x360 40 against 116 ms, 128->128 at 320x180 17 against 65,
256->256 at 160x90 17 against 66, 512->256 at 160x90 27 against 136.

Weights are int8 with a scale per output channel. Inputs are uint8 with one scale and zero point
per map, from that map's own minimum and maximum: per frame, so no calibration is stored, and a
frame's result does not depend on which frames came before it (hosts render in any order) or
were batched with it (`Conv3x3.int8_conv`).
Which layers take int8 is the network's choice (`StyleNet.int8_convs`, `VGGEncoder.int8_convs`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .hardware import cpu_flags

# quantize_per_tensor is the one fused float32 -> uint8 pass here (4 ms for 64 x 360 x 640 on 2
# cores, against 67 for a multiply, round, clamp and cast). PyTorch deprecates the quantized tensor
# it returns; only a plain uint8 view of its bytes is used, at once.
warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")


def available() -> bool:
    """Whether this PyTorch has oneDNN's int8 convolution and the CPU has VNNI (without which
    oneDNN emulates the int8 products)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv2d_pointwise") \
        and "avx512_vnni" in cpu_flags()


@dataclass(frozen=True)
class PackedConv:
    """A convolution's int8 weights in oneDNN's layout, with what running them needs."""

    packed: torch.Tensor
    scales: torch.Tensor  # float32, per output channel
    zeros: torch.Tensor  # int64, per output channel (symmetric weights: all 0)
    bias: torch.Tensor | None
    padding: int


def pack(weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> PackedConv:
    """`weight` (O x I x kH x kW) as int8 with a symmetric scale per output channel; zero padding."""
    w = weight.detach().float().contiguous()
    scales = (w.abs().amax(dim=(1, 2, 3)) / 127).clamp_min(1e-12)
    q = torch.round(w / scales[:, None, None, None]).clamp_(-127, 127).to(torch.int8)
    pads = [padding, padding]
    packed = torch.ops.onednn.qconv_prepack(q, scales, 1.0, 0, [1, 1], pads, [1, 1], 1, None)
    return PackedConv(packed, scales, torch.zeros(len(scales), dtype=torch.int64),
                      None if bias is None else bias.detach().float(), padding)


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """x (float32) as uint8 over its own range widened to include 0: (values, scale, zero point).

    amin and amax, not torch.aminmax: 1.5 ms each against 60 for 64 x 360 x 640 channels-last."""
    lo, hi = min(x.amin().item(), 0.0), max(x.amax().item(), 0.0)
    scale = (hi - lo) / 255
    if not math.isfinite(scale) or scale == 0.0:  # a map of zeros, or not finite (then so is fp32's result)
        scale, lo = 1.0, 0.0
    zero = min(255, round(-lo / scale))
    q = torch.quantize_per_tensor(x, scale, zero, torch.quint8)
    # A plain uint8 tensor over the quantized one's bytes (int_repr's copy took 6 ms at 64 x 360 x 640).
    plain = torch.empty(0, dtype=torch.uint8, device=x.device)
    return plain.set_(q.untyped_storage(), q.storage_offset(), q.size(), q.stride()), scale, zero


def conv(q: torch.Tensor, scale: float, zero: int, weights: PackedConv, relu: bool = False) -> torch.Tensor:
    """The float32 convolution of the uint8 map q (values (q - zero) * scale), followed by a ReLU in
    the same pass where `relu` asks. Its zero padding is the zero point, the real 0."""
    pads = [weights.padding, weights.padding]
    return torch.ops.onednn.qconv2d_pointwise(q, scale, zero, weights.packed, weights.scales, weights.zeros,
                                              weights.bias, [1, 1], pads, [1, 1], 1, 1.0, 0, torch.float32,
                                              "relu" if relu else "none", [], "")
