"""Winograd (NNPACK) convolutions and the fast max-pool on the CPU, and the network's exact rewrites of its own layers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vst_engine.convs import WINOGRAD_MIN_CHANNELS, Conv3x3, use_winograd, winograd_available
from vst_engine.network import StyleNet, UpBlock
from vst_engine.norms import LocalNorm, SharedNorm

needs_nnpack = pytest.mark.skipif(not winograd_available(), reason="this PyTorch build has no NNPACK")


def _conv(cin: int, cout: int, padding: int = 1) -> Conv3x3:
    torch.manual_seed(cin * 1000 + cout)
    conv = Conv3x3(cin, cout, padding)
    with torch.no_grad():
        conv.bias.normal_()
    return conv


@needs_nnpack
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("padding", [0, 1])
def test_winograd_matches_direct_convolution(layout, padding):
    conv = _conv(64, 96, padding)
    x = torch.randn(3, 64, 21, 34).contiguous(memory_format=layout)  # batch of 3: the per-sample loop
    with torch.no_grad():
        direct = conv(x)
        conv.winograd = True
        fast = conv(x)
    assert fast.shape == direct.shape == (3, 96, 21 - 2 + 2 * padding, 34 - 2 + 2 * padding)
    assert not torch.equal(fast, direct)  # another algorithm did run
    assert (fast - direct).abs().max() <= 1e-4 * direct.abs().max()


@needs_nnpack
def test_winograd_is_inference_only():
    """With gradients on (training) the convolution is oneDNN's, whose backward exists."""
    conv = _conv(64, 64)
    conv.winograd = True
    x = torch.randn(1, 64, 12, 12, requires_grad=True)
    conv(x).square().sum().backward()
    ref = torch.autograd.grad(F.conv2d(x, conv.weight, conv.bias, padding=1).square().sum(), x)[0]
    assert torch.allclose(x.grad, ref)
    with torch.no_grad():  # and other dtypes are left alone too
        assert conv.to(torch.float64)(x.detach().double()).dtype == torch.float64


def test_only_wide_convolutions_are_switched():
    net = StyleNet()
    convs = [m for m in net.modules() if isinstance(m, Conv3x3)]
    switched = use_winograd(net, True)
    wide = [m for m in convs if min(m.in_channels, m.out_channels) >= WINOGRAD_MIN_CHANNELS]
    # Six decoder convolutions are wide; the 32-channel bottlenecks and the RGB output are not.
    assert switched == len(wide) == 6 and len(convs) == 6 + 3 * (2 + 2) + 1
    assert all(m.winograd == (m in wide) for m in convs)
    assert use_winograd(net, False) == 6 and not any(m.winograd for m in convs)


def _reference_upblock(block: UpBlock, x: torch.Tensor) -> torch.Tensor:
    """UpBlock's maths written out: upsampling first, activations out of place, per-frame statistics."""
    up = F.interpolate(x, scale_factor=2.0, mode="nearest")
    h = LocalNorm().normalize(2, F.leaky_relu(block.conv1(up), 0.2))
    h = LocalNorm().normalize(3, F.leaky_relu(block.conv2(h), 0.2))
    return h + block.shortcut(up)


def test_upblock_shortcut_at_low_resolution_equals_the_reference():
    """The 1x1 shortcut runs before the upsampling; nearest upsampling commutes with it exactly."""
    torch.manual_seed(0)
    block = UpBlock(32, 16).eval()
    x = torch.randn(2, 32, 5, 7)
    with torch.no_grad():
        out = block(x, LocalNorm(), 2)
        ref = _reference_upblock(block, x)
    assert out.shape == (2, 16, 10, 14)
    assert torch.allclose(out, ref, atol=1e-5)


@needs_nnpack
@pytest.mark.parametrize("shape", [(2, 64, 5, 7), (1, 128, 12, 9), (1, 64, 2, 2)])
def test_upsampled_convolution_folded_to_low_resolution(shape):
    """The Winograd path convolves x with four folded kernels at its own size; it equals the
    convolution of the upsampled x, border included."""
    from vst_engine.network import ReflectConv3x3

    torch.manual_seed(shape[1] + shape[2])
    conv = ReflectConv3x3(shape[1], 48)
    x = torch.randn(shape)
    with torch.no_grad():
        ref = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        conv.winograd = True
        folded = conv.forward_upsampled(x)
        assert folded.shape == ref.shape
        assert (folded - ref).abs().max() <= 1e-4 * ref.abs().max()
        conv.weight.mul_(-2.0)  # new parameters: the folded kernels follow
        expected = -2 * ref + 3 * conv.bias[:, None, None]
        assert (conv.forward_upsampled(x) - expected).abs().max() <= 2e-4 * ref.abs().max()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_phase_convolution_equals_the_upsampled_one(layout, monkeypatch):
    """The 2x2 phase convolution (inference off NNPACK) equals the 3x3 convolution of the upsampled x,
    border included, keeps x's layout and follows new parameters; VST_PHASE_CONV=0 or training
    convolve the upsampled x."""
    from vst_engine.network import ReflectConv3x3

    torch.manual_seed(7)
    conv = ReflectConv3x3(32, 24).to(memory_format=layout)
    for shape in ((2, 32, 5, 7), (1, 32, 1, 3)):
        x = torch.randn(shape).contiguous(memory_format=layout)
        with torch.no_grad():
            ref = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            out = conv.phase_conv(x)
            assert out.shape == ref.shape and out.is_contiguous(memory_format=layout)
            assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
            assert torch.equal(conv.forward_upsampled(x), out)
    assert torch.equal(conv.forward_upsampled(x), conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))  # training
    with torch.no_grad():
        conv.weight.mul_(-2.0)
        expected = -2 * ref + 3 * conv.bias[:, None, None]
        assert (conv.phase_conv(x) - expected).abs().max() <= 2e-5 * ref.abs().max()
        monkeypatch.setenv("VST_PHASE_CONV", "0")
        assert torch.equal(conv.forward_upsampled(x), conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))


def test_compiled_convolutions_equal_eager_ones():
    """Compiled, the phase convolution interleaves its phases by a gather (on a CPU, as here, in
    pixel-major order; on CUDA by indexing, covered in test_cuda.py) and the reflection border is
    F.pad's, where eager passes write slices: the same results."""
    from vst_engine.network import ReflectConv3x3

    torch.manual_seed(11)
    up, conv = ReflectConv3x3(16, 8), ReflectConv3x3(8, 8)
    x = torch.randn(2, 16, 6, 10).contiguous(memory_format=torch.channels_last)

    def block(t: torch.Tensor) -> torch.Tensor:
        return conv(F.leaky_relu(up.phase_conv(t), 0.2))
    with torch.no_grad():
        compiled = torch.compile(block, dynamic=False)(x)
        ref = conv(F.leaky_relu(up(F.interpolate(x, scale_factor=2.0, mode="nearest")), 0.2))
        assert (block(x) - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert compiled.shape == ref.shape
    assert (compiled - ref).abs().max() <= 1e-5 * ref.abs().max()


@needs_nnpack
def test_winograd_upblock_equals_the_reference():
    torch.manual_seed(3)
    block = UpBlock(64, 64).eval()
    x = torch.randn(1, 64, 6, 10)
    with torch.no_grad():
        ref = _reference_upblock(block, x)
        use_winograd(block, True)
        got = block(x, LocalNorm(), 2)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_upblock_in_place_activations_keep_the_gradients():
    """The leaky ReLUs run in place on the convolution outputs; training gets the same gradients."""
    torch.manual_seed(1)
    block = UpBlock(8, 4)
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    block(x, LocalNorm(), 2).square().sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]
    x.grad = None
    block.zero_grad()
    _reference_upblock(block, x).square().sum().backward()
    for got, ref in zip(grads, [x.grad] + [p.grad for p in block.parameters()]):
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shared_adain_is_normalize_then_style(dtype):
    """SharedNorm's one-pass AdaIN equals normalizing with clip statistics, clamping, then scaling
    and shifting to the style, over a blend of two slots and a batch of two style rows."""
    from vst_engine.norms import scale_shift

    torch.manual_seed(2)
    c = 6
    mean, std = torch.randn(2, c), torch.rand(2, c) + 0.5
    lo, hi = -torch.rand(2, c) - 0.5, torch.rand(2, c) + 0.5
    shared = SharedNorm([mean], [std], [lo], [hi], [torch.zeros(3)], torch.tensor([[0.3, 0.7]]))
    x = (torch.randn(2, c, 9, 11) * 3).to(dtype)  # wide enough that the clamp bites
    style_mean, style_std = torch.randn(2, c), torch.rand(2, c) + 0.1
    with torch.no_grad():
        fused = shared.adain(0, x, style_mean, style_std)
        normalized = shared.normalize(0, x)
        ref = scale_shift(normalized, style_std, style_mean)
    blend = [torch.tensor([[0.3, 0.7]]) @ t for t in (mean, std, lo, hi)]
    clamped = (normalized.float() <= blend[2][:, :, None, None] + 1e-6) | (normalized.float() >= blend[3][:, :, None, None] - 1e-6)
    assert 0.05 < clamped.float().mean() < 0.95
    tol = 1e-5 if dtype == torch.float32 else 4e-2
    assert fused.dtype == dtype
    assert (fused.float() - ref.float()).abs().max() <= tol * ref.float().abs().max()


def test_shared_content_descriptors_skip_the_embedding():
    """With clip statistics the per-frame descriptor is never computed; locally it is."""
    shared = SharedNorm([torch.zeros(1, 4)], [torch.ones(1, 4)], [torch.zeros(1, 4)], [torch.ones(1, 4)],
                        [torch.arange(3.0)], torch.ones(1, 1))

    def never(x):
        raise AssertionError("descriptor computed")
    desc = shared.content_descriptors(never, torch.zeros(2, 5, 1, 1))
    assert len(desc) == 1 and torch.equal(desc[0], torch.arange(3.0).expand(2, 3))
    assert torch.equal(LocalNorm().content_descriptors(lambda x: [x * 2], torch.ones(2))[0], torch.full((2,), 2.0))


@pytest.mark.parametrize("shape", [(2, 512, 12, 20), (1, 512, 2, 2), (1, 512, 3, 7)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_descriptor_equals_the_pooled_embedding(shape, layout):
    """The descriptor from the taps' window means is the pixel mean of the embedding convolution,
    reflection border included (the smallest maps are where the border weighs most)."""
    from vst_engine.network import FilterPredictor
    torch.manual_seed(0)
    pred = FilterPredictor()
    torch.nn.init.normal_(pred.embed.bias)
    x = torch.randn(shape).contiguous(memory_format=layout)
    with torch.no_grad():
        ref = pred.embed(x).mean(dim=(2, 3))
        desc = pred.descriptor(x)
    assert desc.shape == ref.shape == (shape[0], 32)
    assert (desc - ref).abs().max() <= 1e-5 * ref.abs().max()
    x.requires_grad_(True)  # training takes the same path: it must pass gradients to map and kernel
    pred.descriptor(x).sum().backward()
    assert x.grad is not None and pred.embed.weight.grad.abs().sum() > 0


def test_relu4_1_alone_equals_the_last_tap():
    from vst_engine.vgg import VGGEncoder

    vgg = VGGEncoder()
    rgb = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(vgg.relu4_1(rgb), vgg(rgb)[3])


@pytest.mark.parametrize("shape", [(2, 3, 8, 12), (1, 4, 7, 9)])
def test_inference_max_pool_equals_torch(shape):
    from vst_engine.vgg import max_pool2

    x = torch.randn(shape)
    x[0, 0, :2, :2] = 5.0  # ties
    with torch.no_grad():
        assert torch.equal(max_pool2(x), F.max_pool2d(x, 2))
        cl = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(max_pool2(cl), F.max_pool2d(x, 2))
    y = x.clone().requires_grad_()
    max_pool2(y).sum().backward()
    assert y.grad.sum() == max_pool2(x).numel()  # one input per window gets the gradient


@needs_nnpack
@pytest.mark.parametrize("padding", [0, 1])
def test_winograd_bands_cover_every_row_once(padding, monkeypatch):
    """Convolutions larger than the workspace budget run in bands of rows and give the same result."""
    import vst_engine.convs as convs

    conv = _conv(64, 64, padding)
    x = torch.randn(2, 64, 40, 31)
    with torch.no_grad():
        direct = conv(x)
        conv.winograd = True
        whole = conv(x)
        monkeypatch.setattr(convs, "WORKSPACE_BYTES", 2 ** 18)  # bands of 6 rows: 7 bands
        banded = conv(x)
    assert banded.shape == whole.shape
    assert (banded - direct).abs().max() <= 1e-4 * direct.abs().max()
    assert (banded - whole).abs().max() <= 1e-5 * direct.abs().max()
