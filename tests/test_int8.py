"""int8 convolutions (oneDNN, CPUs with VNNI): their arithmetic, the layers that take them, and
what they change in a stylization."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthetic import bunny
from test_cli import ok, pngs, vst, vst_many
from vst_engine import int8
from vst_engine.bench.common import ASSETS
from vst_engine.convs import Conv3x3, winograd_available
from vst_engine.engine import (Engine, compute_dtype, int8_convolutions, precision_setting,
                               winograd_convolutions)
from vst_engine.errors import VstError
from vst_engine.network import ReflectConv3x3, StyleNet
from vst_engine.vgg import VGGEncoder

needs_int8 = pytest.mark.skipif(not int8.available(), reason="this CPU or PyTorch build has no int8 convolutions")


def _dequantized_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weights the int8 kernels multiply with: per output channel, symmetric, 127 steps."""
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    return torch.round(weight / scale).clamp(-127, 127) * scale


def _dequantized_input(x: torch.Tensor) -> torch.Tensor:
    """x as the int8 convolutions see it: each sample over its own range."""
    parts = [int8.quantize(x[i:i + 1]) for i in range(x.shape[0])]
    return torch.cat([(q.float() - zero) * scale for q, scale, zero in parts])


def test_quantize_spans_the_map_and_keeps_zero_exact():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 9).contiguous(memory_format=torch.channels_last) * 3 + 1
    q, scale, zero = int8.quantize(x)
    assert q.dtype == torch.uint8 and not q.is_quantized and q.shape == x.shape
    assert scale == pytest.approx((x.max() - x.min()).item() / 255)
    assert q.min() == 0 and q.max() == 255  # the whole range is used
    assert ((q.float() - zero) * scale - x).abs().max() <= scale / 2 + 1e-6
    assert (torch.zeros(1) / scale + zero).item() == zero  # the real 0 is a code: zero padding is exact
    relu = x.clamp_min(0)
    assert int8.quantize(relu)[2] == 0  # a non-negative map spans [0, max]
    zeros, scale0, zero0 = int8.quantize(torch.zeros(1, 3, 4, 4))
    assert (scale0, zero0) == (1.0, 0) and not zeros.any()


@needs_int8
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_int8_convolution_equals_its_quantized_arithmetic(layout):
    """Zero padding (VGG's), reflection padding and the folded upsampled convolution: each equals
    the float32 convolution of the dequantized input and weights, borders included."""
    torch.manual_seed(1)
    x = torch.randn(2, 64, 9, 13).contiguous(memory_format=layout) * 2 - 0.5
    plain, reflect = Conv3x3(64, 48), ReflectConv3x3(64, 48)
    with torch.no_grad():
        for conv in (plain, reflect):
            conv.bias.normal_()
        xq = _dequantized_input(x)
        refs = [F.conv2d(xq, _dequantized_weight(plain.weight), plain.bias, padding=1),
                F.conv2d(F.pad(xq, (1, 1, 1, 1), mode="reflect"), _dequantized_weight(reflect.weight), reflect.bias),
                torch.relu(F.conv2d(xq, _dequantized_weight(plain.weight), plain.bias, padding=1))]
        fp32 = [plain(x), reflect(x), torch.relu(plain(x)), reflect.phase_conv(x)]
        plain.int8 = reflect.int8 = True
        outs = [plain(x), reflect(x), plain.relu_forward(x)]
        for out, ref, full in zip(outs, refs, fp32):
            assert out.shape == ref.shape
            assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
            assert (out - full).abs().max() > 1e-3  # the int8 kernels did run
        # Each sample is quantized on its own: in a batch as alone (another frame's range does not matter).
        alone = torch.cat([plain(x[i:i + 1] * (1 + 9 * i)) for i in range(2)])
        assert torch.equal(plain(x * torch.tensor([1.0, 10.0])[:, None, None, None]), alone)
        # The upsampled convolution folds its kernels before they are quantized: 4 phases of 2x2.
        folded = reflect.phase_conv(x)
        weight, bias = reflect._folded("phases")
        ref = F.conv2d(F.pad(xq, (1, 1, 1, 1), mode="replicate"), _dequantized_weight(weight), bias)
        n, _, h, w = x.shape
        ref = ref.view(n, 2, 2, 48, h + 1, w + 1)
        for a in (0, 1):
            for b in (0, 1):
                phase = ref[:, a, b, :, a:a + h, b:b + w]
                assert (folded[:, :, a::2, b::2] - phase).abs().max() <= 1e-4 * phase.abs().max()
        assert (folded - fp32[3]).abs().max() < 0.05 * fp32[3].abs().max()


@needs_int8
def test_int8_weights_follow_parameter_changes_and_training_stays_float():
    torch.manual_seed(2)
    conv = ReflectConv3x3(64, 32)
    conv.int8 = True
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        before = conv(x)
        conv.weight.mul_(-1)
        assert torch.allclose(conv(x) - conv.bias[:, None, None], -(before - conv.bias[:, None, None]), atol=1e-4)
    x.requires_grad_(True)
    out = conv(x)  # with gradients: float32 and differentiable
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), conv.weight, conv.bias)
    assert torch.equal(out, ref)
    out.sum().backward()
    assert x.grad is not None


def test_int8_layers_leave_the_output_end_in_float32():
    """The RGB convolution alone in int8 added 1.8 grey levels of change between frames: it, the
    last block's second convolution and VGG's first stay float32."""
    net = StyleNet()
    chosen = net.int8_convs()
    assert chosen == [net.ups[0].conv1, net.ups[0].conv2, net.ups[1].conv1, net.ups[1].conv2, net.ups[2].conv1]
    assert net.to_rgb not in chosen and StyleNet("lite").int8_convs() == []
    vgg = VGGEncoder()
    assert [c.in_channels for c in vgg.int8_convs()] == [64, 64, 128, 128, 256, 256, 256, 256]


def test_int8_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert compute_dtype(cpu, "int8") == torch.float32
    assert int8_convolutions(cpu, "int8", compile=False) == int8.available()
    assert not int8_convolutions(cpu, "int8", compile=True)  # compiled passes stay float32
    assert not int8_convolutions(cpu, "int8", compile=False, arch="lite")
    assert not int8_convolutions(cpu, "fp32", compile=False)
    assert not int8_convolutions(cpu, "auto", compile=False)  # asked for only: it costs consistency
    if winograd_available():  # NNPACK where it is taken, but not beside int8
        monkeypatch.setenv("VST_WINOGRAD", "1")
        assert winograd_convolutions(cpu, torch.float32, False, "paper", "fp32")
        assert winograd_convolutions(cpu, torch.float32, False, "paper", "int8") != int8.available()
    with pytest.raises(VstError, match="int8 is for CPUs"):
        compute_dtype(torch.device("cuda"), "int8")
    with pytest.raises(VstError, match="use auto, fp32 or int8"):
        precision_setting("int4")
    monkeypatch.setenv("VST_PRECISION", "int8")
    assert precision_setting() == "int8" and precision_setting("fp32") == "fp32"


@needs_int8
def test_int8_engine_stays_within_grey_levels_of_fp32(monkeypatch):
    """The real model on a real frame: int8 moves the stylized frame by about a grey level."""
    monkeypatch.delenv("VST_PRECISION", raising=False)
    frame = bunny(60, 1, (192, 112))[0]
    outs = {}
    for precision in ("fp32", "int8"):
        engine = Engine("default", device="cpu", precision=precision, compile=False)
        assert engine.precision == precision and engine.int8 == (precision == "int8")
        styles = engine.load_styles([ASSETS / "starry_night.jpg"])
        feats = engine.analyze([frame], styles)
        outs[precision] = engine.stylize(frame, feats).astype(np.float32)
    diff = np.abs(outs["int8"] - outs["fp32"]).mean()
    assert 0.1 < diff < 2.5, diff
    lite = Engine("lite", device="cpu", precision="int8", compile=False)
    assert not lite.int8 and lite.precision == "fp32"


@needs_int8
def test_cli_computes_in_int8_where_asked(cli_env, tiny_clip, style_paths, tmp_path):
    """`--precision int8` (the Blender add-on's "CPU, int8" device): info says so, the frames differ
    from fp32's by about a grey level."""
    style = next(iter(style_paths.values()))
    info = ok(vst(cli_env, "info", "--precision", "int8", "--device", "cpu")).stdout
    assert re.search(r"^precision:\s+int8$", info, re.M) and "int8 convolutions (oneDNN)" in info, info
    runs = vst_many(cli_env, [["stylize", tiny_clip, "-s", style, "--frames", "0:4", "--device", "cpu",
                               "--precision", p, "-o", str(tmp_path / p) + "/"] for p in ("fp32", "int8")])
    for run in runs:
        ok(run)
    fp32, int8_frames = pngs(tmp_path / "fp32"), pngs(tmp_path / "int8")
    assert fp32.keys() == int8_frames.keys() and len(fp32) == 4
    diff = np.mean([np.abs(fp32[k].astype(np.float32) - int8_frames[k]).mean() for k in fp32])
    assert 0.05 < diff < 4, diff
