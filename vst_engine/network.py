"""The stylization network of Wang et al. (AAAI 2020): decoder with AdaIN at four scales and
dynamic inter-channel filters.

Content enters as the VGG relu4_1 of the desaturated frame. Style enters as `StyleTargets`:
channel means/stds at relu4_1..relu1_1 and one descriptor per Filter Predictor. Every
normalization goes through a `norms.LocalNorm` (or subclass), which is what makes
sequence-level sharing possible without changing the network.

Normalization layer indices (11, none affine): 0 content relu4_1; 1 AdaIN@relu4_1;
2, 3 block 1; 4 AdaIN@relu3_1; 5, 6 block 2; 7 AdaIN@relu2_1; 8, 9 block 3; 10 AdaIN@relu1_1.

Two architectures share this code (`ARCHS`): "paper", the network above, and "lite", for CPUs
without AMX: its own small content encoder (trained to match VGG relu4_1) instead of
VGG, a 1x1 squeeze after the filter blocks and up-blocks of 96, 48 and 32 channels whose AdaIN
targets are the VGG statistics mapped to those widths by learned projections. It is trained by
distillation from the paper network (`vst_engine.train`, `--teacher`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import int8
from .convs import Conv3x3, winograd_conv
from .norms import LocalNorm, channel_stats, fused_normalize, inference_stats
from .vgg import STYLE_CHANNELS

BOTTLENECK = 32
# Style statistics used by the four AdaIN layers, in decoding order: relu4_1, relu3_1, relu2_1, relu1_1.
ADAIN_STYLE_LAYER = (3, 2, 1, 0)


@dataclass(frozen=True)
class Arch:
    """Widths of one architecture: the up-blocks' inputs and outputs (the first is what the 512
    filtered maps are squeezed to, 512 for none), and the content encoder's layers (none: VGG)."""

    ups: tuple[int, ...]
    encoder: tuple[tuple[int, int], ...] = ()  # (channels, stride) per 3x3 layer, then 1x1 to 512


ARCHS = {
    "paper": Arch(ups=(512, 256, 128, 64)),
    # A 640x360 frame on a 2-core AVX2 CPU: 0.28 s (channels-last, oneDNN) against the paper network's 1.11 s.
    "lite": Arch(ups=(128, 96, 48, 32), encoder=((32, 2), (48, 1), (96, 2), (96, 1), (192, 2), (192, 1))),
}


@dataclass
class StyleTargets:
    """What the decoder needs of a style (or a blend of styles), batched: N x C each."""

    mean: list[torch.Tensor]  # per VGG layer relu1_1..relu4_1
    std: list[torch.Tensor]
    desc: list[torch.Tensor]  # per Filter Predictor, N x 32

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "StyleTargets":
        """The targets with `fn` applied to every tensor (a move, a cast, a batch view)."""
        return StyleTargets([fn(t) for t in self.mean], [fn(t) for t in self.std], [fn(t) for t in self.desc])

    def tensors(self) -> list[torch.Tensor]:
        return [*self.mean, *self.std, *self.desc]

    def blend(self, alpha: torch.Tensor) -> "StyleTargets":
        """Convex combination of the batch entries (slots) with weights alpha (M x S)."""
        return self.map(lambda t: alpha.to(t.device, torch.float32) @ t.float())

    def pick(self, index: int) -> "StyleTargets":
        """One batch entry (slot), keeping the batch dimension."""
        return StyleTargets(*[[t[index:index + 1] for t in getattr(self, f)] for f in ("mean", "std", "desc")])

    @staticmethod
    def cat(items: list["StyleTargets"]) -> "StyleTargets":
        return StyleTargets(*[[torch.cat(parts) for parts in zip(*[getattr(i, f) for i in items])]
                              for f in ("mean", "std", "desc")])


def _layout(x: torch.Tensor) -> torch.memory_format:
    """x's memory format, for new tensors made from it."""
    return torch.channels_last if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format


def reflect_pad1(x: torch.Tensor) -> torch.Tensor:
    """A one-pixel reflection border, written in one copy that keeps the memory layout.

    Equal to F.pad(x, (1, 1, 1, 1), mode="reflect"), which on channels-last CPU tensors took
    half of the inference time (measured)."""
    n, c, h, w = x.shape
    out = torch.empty((n, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=_layout(x))
    out[:, :, 1:-1, 1:-1] = x
    out[:, :, 0, 1:-1] = x[:, :, 1]
    out[:, :, -1, 1:-1] = x[:, :, -2]
    out[:, :, :, 0] = out[:, :, :, 2]
    out[:, :, :, -1] = out[:, :, :, -3]
    return out


def phase_convs_enabled() -> bool:
    """Whether inference runs upsampled convolutions as 2x2 phase convolutions where it does not run
    them on NNPACK ($VST_PHASE_CONV=0 turns it off)."""
    return os.environ.get("VST_PHASE_CONV", "1") != "0"


class ReflectConv3x3(Conv3x3):
    """3x3 convolution over a reflection border (same parameters as nn.Conv2d)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In training F.pad's backward is the faster one (measured: 12% of a step). Compiled, F.pad is
        # an index expression that Inductor fuses into the op before it, where reflect_pad1's five
        # writes became five buffers (an H100's 1080p pass spent 1.25 ms of 8.9 on them).
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return super().forward(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        if self.takes_int8(x):
            return self.int8_conv(x, reflect_pad1)
        return super().forward(reflect_pad1(x))

    def forward_upsampled(self, x: torch.Tensor) -> torch.Tensor:
        """This convolution of x upsampled x2 (nearest neighbour)."""
        if self.takes_winograd(x):
            # Over the upsampled grid an output pixel's 3x3 window reads a 2x2 window of x, which one
            # of four folded kernels (one per output phase: even or odd row and column) applies to x
            # directly. All four run as one convolution at x's resolution, and pixel_shuffle interleaves
            # them. The upsampled grid's reflection border is x's replicated border. Same arithmetic,
            # but NNPACK ran it faster than at the upsampled size and skips two full-size copies
            # (2-core AVX2, 128->64 channels to 640x360: 250 -> 136 ms).
            weight, bias = self._folded("winograd")
            folded = winograd_conv(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, bias, 0)
            return F.pixel_shuffle(folded, 2)
        if not torch.is_grad_enabled() and phase_convs_enabled():
            return self.phase_conv(x)
        return self(F.interpolate(x, scale_factor=2.0, mode="nearest"))

    def phase_conv(self, x: torch.Tensor) -> torch.Tensor:
        """forward_upsampled(x) as one 2x2 convolution of x: 4/9 of the multiply-adds, no upsampled copy.

        Each output phase reads a 2x2 window of x (see forward_upsampled), rows i - 1, i for even
        output rows and i, i + 1 for odd ones (columns alike). One 2x2 convolution over x with a
        one-pixel replicated border gives all four phases at (h + 1) x (w + 1) positions;
        phase (a, b) is the window shifted by (a, b)."""
        n, _, h, w = x.shape
        c = self.out_channels
        if self.takes_int8(x):
            y = self.int8_conv(x, lambda q: F.pad(q, (1, 1, 1, 1), mode="replicate"), "phases")
        else:
            weight, bias = self._folded("phases")
            y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, bias)
        y = y.view(n, 2, 2, c, h + 1, w + 1)
        phases = {(a, b): y[:, a, b, :, a:a + h, b:b + w] for a in (0, 1) for b in (0, 1)}
        if torch.compiler.is_compiling():
            if x.is_cuda:  # interleaved by indexing, which Inductor fuses into the next op
                stacked = torch.stack(list(phases.values()), -1).view(n, c, h, w, 2, 2)
                return stacked.permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)
            # Inductor's C++ code vectorizes over channels: stacked in pixel-major order, each output
            # pixel's channels are one contiguous run of a phase's (this gather, the CUDA form and
            # slice writes: 2-core AMX, bf16, 640x360, 0.16, 0.27 and 0.18 s a compiled frame).
            yl = y.permute(0, 4, 5, 1, 2, 3)  # n, h + 1, w + 1, a, b, c
            rows = [torch.stack([yl[:, a:a + h, b:b + w, a, b] for b in (0, 1)], dim=3) for a in (0, 1)]
            return torch.stack(rows, dim=2).reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
        out = torch.empty((n, c, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=_layout(x))
        for (a, b), phase in phases.items():  # eager: slice writes keep x's memory layout
            out[:, :, a::2, b::2] = phase
        return out

    def _folded(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernels of one folding ("winograd": 3x3 over x, "phases": 2x2; 4 x out channels, one
        per output phase) and their biases, rebuilt when the parameters change."""
        if torch.compiler.is_compiling():
            return self._fold(kind)  # traced into the compiled pass (the cache's checks break graphs)
        return self.cached(kind, lambda: self._fold(kind))

    def _int8_weights(self, kind: str) -> int8.PackedConv:
        if kind == "phases":
            return int8.pack(*self._folded(kind), padding=0)
        return super()._int8_weights(kind)

    def _fold(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        # Sums and stacks of the weight alone: a constant folding matrix would be a host-to-GPU copy
        # inside a compiled pass, which CUDA-graph capture refuses.
        phases = _phase_windows(_phase_windows(self.weight.detach(), 2), 4).transpose(0, 1)  # a, b, o, i, 2, 2
        if kind == "phases":
            kernel, bias = phases.flatten(0, 2), self.bias.detach().repeat(4)
        else:  # 3x3 kernels over x, each window where its rows and columns start; pixel_shuffle reads o, a, b
            kernel = torch.stack([torch.stack([F.pad(phases[a, b], (b, 1 - b, a, 1 - a)) for b in (0, 1)], 1)
                                  for a in (0, 1)], 1).flatten(0, 2)
            bias = self.bias.detach().repeat_interleave(4)
        return kernel.contiguous(memory_format=_layout(self.weight)), bias


def _phase_windows(w: torch.Tensor, dim: int) -> torch.Tensor:
    """A 3-tap kernel axis `dim` of w folded to the 2-tap windows of the two output phases over a x2
    nearest-upsampled input (stacked in a new first axis): even outputs read samples i - 1, i with
    taps 0 | 1 + 2, odd ones i, i + 1 with taps 0 + 1 | 2."""
    t0, t1, t2 = w.unbind(dim)
    return torch.stack([torch.stack([t0, t1 + t2], dim), torch.stack([t0 + t1, t2], dim)])


def _tap_counts(n: int, device: torch.device) -> torch.Tensor:
    """3 x n: how often taps 0, 1 and 2 of a 3-tap kernel over a one-sample reflection border read
    each of n samples. Tap 0 reads samples 1, 0, 1, ..., n - 2; tap 1 each once; tap 2 1, ..., n - 1, n - 2."""
    counts = torch.ones(3, n, device=device)
    counts[0, n - 1] -= 1
    counts[0, 1] += 1
    counts[2, 0] -= 1
    counts[2, n - 2] += 1
    return counts


def conv3x3(cin: int, cout: int) -> ReflectConv3x3:
    return ReflectConv3x3(cin, cout)


def window_means(x: torch.Tensor) -> torch.Tensor:
    """The means of what each of a 3x3 convolution's nine taps reads over a map with a one-sample
    reflection border, N x (C * 9) float32: the mean of the convolution is its kernel applied to
    these, so the Filter Predictors' pooled embeddings are never computed pixel by pixel (the six
    of an analysed frame took 30 ms of the lite network's 0.38 s at 640x360 on a 2-core CPU), and
    all six share them."""
    x = x.float()
    n, c, h, w = x.shape
    rows, cols = _tap_counts(h, x.device), _tap_counts(w, x.device)
    if x.is_contiguous():
        sums = rows @ x.reshape(n * c, h, w) @ cols.T  # n*c x 3 x 3
    else:  # channels-last: in memory order, without copying the map (as einsum did)
        by_row = cols @ x.permute(0, 2, 3, 1).reshape(n * h, w, c)  # n*h x 3 x c
        sums = (rows @ by_row.reshape(n, h, 3 * c)).reshape(n, 3, 3, c).permute(0, 3, 1, 2)
    return (sums.reshape(n, c, 9) / (h * w)).flatten(1)


class FilterPredictor(nn.Module):
    """Predicts a 32x32 channel-mixing filter from content and style (the paper's Fig. 4 design)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = conv3x3(512, BOTTLENECK)
        self.fc = nn.Linear(2 * BOTTLENECK, BOTTLENECK * BOTTLENECK)
        # Start near the identity filter so early training sees a plain residual path.
        nn.init.normal_(self.fc.weight, std=1e-3)
        with torch.no_grad():
            self.fc.bias.copy_(torch.eye(BOTTLENECK).flatten())

    def descriptor(self, normalized_feat: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled embedding of a normalized relu4_1 map: N x 32 (float32)."""
        return self.embed_means(window_means(normalized_feat))

    def embed_means(self, means: torch.Tensor) -> torch.Tensor:
        """The pooled embedding from a map's `window_means`."""
        return means @ self.embed.weight.float().flatten(1).T + self.embed.bias.float()

    def forward(self, content_desc: torch.Tensor, style_desc: torch.Tensor) -> torch.Tensor:
        w = self.fc(torch.cat([content_desc, style_desc], dim=1).to(self.fc.weight.dtype))
        return w.view(-1, BOTTLENECK, BOTTLENECK)


class FilterBlock(nn.Module):
    """Residual bottleneck with two predicted 1x1 filters (the dynamic inter-channel filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = conv3x3(512, BOTTLENECK)
        self.up = conv3x3(BOTTLENECK, 512)
        self.predictors = nn.ModuleList([FilterPredictor(), FilterPredictor()])

    def forward(self, x: torch.Tensor, filters: list[torch.Tensor]) -> torch.Tensor:
        h = self.down(x)
        h = torch.einsum("noc,nchw->nohw", filters[0].to(h.dtype), h)
        h = F.leaky_relu(h, 0.2)
        h = torch.einsum("noc,nchw->nohw", filters[1].to(h.dtype), h)
        return x + self.up(h)


class UpBlock(nn.Module):
    """Nearest x2 upsampling residual block; its two IN layers take statistics from the Norm."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv1 = conv3x3(cin, cout)
        self.conv2 = conv3x3(cout, cout)

    def forward(self, x: torch.Tensor, norm: LocalNorm, first_layer: int) -> torch.Tensor:
        # In place on the fresh convolution outputs (an out-of-place activation's new tensor cost
        # as much as the activation); leaky ReLU's backward reads its output, so training is unchanged.
        h = norm.normalize(first_layer, F.leaky_relu(self.conv1.forward_upsampled(x), 0.2, inplace=True))
        h = norm.normalize(first_layer + 1, F.leaky_relu(self.conv2(h), 0.2, inplace=True))
        # A 1x1 convolution commutes with nearest upsampling: a quarter of the work at low resolution.
        return h + F.interpolate(self.shortcut(x), scale_factor=2.0, mode="nearest")


class ContentEncoder(nn.Module):
    """The lite network's content encoder: a desaturated frame (3 equal channels in [0, 1]) to 512
    maps at 1/8 of its size, trained to match VGG's relu4_1 (as scaled by `vgg.TAP_SCALE`)."""

    def __init__(self, layers: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        widths = [1] + [c for c, _ in layers]
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 3, stride=s, padding=1)
                                    for a, b, (_, s) in zip(widths[:-1], widths[1:], layers)])
        self.out = nn.Conv2d(widths[-1], 512, 1)
        # VGG relu4_1 / 540 averages about 0.7 on photos. Adam moves a bias by about its learning rate
        # a step, so a zero start spent the first hundreds of steps near a mean of 0.03.
        nn.init.constant_(self.out.bias, 0.5)

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        x = (grey[:, :1] - 0.45) / 0.25  # one channel of luma, centred
        for conv in self.convs:
            x = F.relu(conv(x), inplace=True)
        return F.relu(self.out(x), inplace=True)


class StyleProjection(nn.Module):
    """A VGG layer's style mean and std (N x C) mapped to a narrower decoder layer's (N x c):
    linear in the mean, log-linear in the std (so it stays positive)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.mean = nn.Linear(cin, cout)
        self.log_std = nn.Linear(cin, cout)

    def forward(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(mean), torch.exp(self.log_std(torch.log(std)))


class StyleNet(nn.Module):
    """Decoder plus filter blocks: (content relu4_1, style targets, norm) -> RGB image."""

    def __init__(self, arch: str = "paper") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r} (one of {', '.join(ARCHS)})")
        self.arch = arch
        widths = ARCHS[arch].ups
        self.encoder = ContentEncoder(ARCHS[arch].encoder) if ARCHS[arch].encoder else None
        self.filters = nn.ModuleList([FilterBlock() for _ in range(3)])
        self.squeeze = nn.Conv2d(512, widths[0], 1) if widths[0] != 512 else None
        self.ups = nn.ModuleList([UpBlock(a, b) for a, b in zip(widths[:-1], widths[1:])])
        targets = [STYLE_CHANNELS[layer] for layer in ADAIN_STYLE_LAYER[1:]]
        self.style_proj = nn.ModuleList([StyleProjection(c, w) for c, w in zip(targets, widths[1:])]) \
            if tuple(targets) != widths[1:] else None
        self.to_rgb = conv3x3(widths[-1], 3)

    def content(self, grey: torch.Tensor, vgg: nn.Module) -> torch.Tensor:
        """The network's content input from a desaturated frame: its own encoder's maps where it has
        one, else `vgg`'s relu4_1."""
        return self.encoder(grey) if self.encoder is not None else vgg.relu4_1(grey)

    def int8_convs(self) -> list[Conv3x3]:
        """The convolutions that take int8 where it is on (`vst_engine.int8`): the up-blocks' 3x3
        ones but the last block's second, in the paper network (the lite one meets its speed in fp32).

        One layer at a time in int8 (simulated in fp32; default model, bundled clip, 640x360, frames
        40-43), the RGB convolution added 1.8 grey levels to the mean change between frames (of 9.1),
        the last block's second convolution and its shortcut 0.27 and 0.22, any other layer 0.1 at most."""
        if self.arch != "paper":
            return []
        return [conv for up in self.ups for conv in (up.conv1, up.conv2)][:-1]

    @property
    def predictors(self) -> list[FilterPredictor]:
        return [p for block in self.filters for p in block.predictors]

    def style_targets(self, style_feats: list[torch.Tensor], fused: bool = False) -> StyleTargets:
        """Style statistics of VGG features [relu1_1..relu4_1] (one entry per image). `fused` takes
        them from `norms.fused_normalize` (inference only; faster, rounded in half precision)."""
        if fused:  # only relu4_1's normalized map is used (the descriptors)
            normalized, *last = fused_normalize(style_feats[3])
            stats = [inference_stats(f) for f in style_feats[:3]] + [tuple(last)]
        else:
            stats = [channel_stats(f) for f in style_feats]
            normalized = (style_feats[3].float() - stats[3][0][:, :, None, None]) / stats[3][1][:, :, None, None]
            normalized = normalized.to(style_feats[3].dtype)
        return StyleTargets([m for m, _ in stats], [s for _, s in stats], self.descriptors(normalized))

    def descriptors(self, normalized_feat: torch.Tensor) -> list[torch.Tensor]:
        """Every Filter Predictor's descriptor of a normalized relu4_1 map, from one `window_means`."""
        means = window_means(normalized_feat)
        return [p.embed_means(means) for p in self.predictors]

    def forward(self, content4: torch.Tensor, style: StyleTargets, norm: LocalNorm | None = None,
                stats_only: bool = False) -> torch.Tensor | None:
        """The stylized frame; with `stats_only`, the pass stops once `norm` has taken the last IN layer's
        statistics (all an analysis records): the last AdaIN and the RGB convolution are not run."""
        norm = norm or LocalNorm()
        x = norm.normalize(0, content4)
        content_desc = norm.content_descriptors(self.descriptors, x)
        filters = [p(d, s) for p, d, s in zip(self.predictors, content_desc, style.desc, strict=True)]
        for b, block in enumerate(self.filters):
            x = block(x, filters[2 * b:2 * b + 2])
        x = norm.adain(1, x, style.mean[3], style.std[3])
        if self.squeeze is not None:
            x = self.squeeze(x)
        for b, up in enumerate(self.ups):
            layer = ADAIN_STYLE_LAYER[b + 1]
            mean, std = style.mean[layer], style.std[layer]
            if self.style_proj is not None:
                mean, std = self.style_proj[b](mean, std)
            x = up(x, norm, 2 + 3 * b)
            if stats_only and b == len(self.ups) - 1:
                norm.observe(4 + 3 * b, x)
                return None
            x = norm.adain(4 + 3 * b, x, mean, std)
        return self.to_rgb(x)


