"""How the network's instance-norm layers get their statistics.

The paper's sequence-level global feature sharing replaces every per-frame statistic (the
eleven IN/AdaIN normalizations and the Filter Predictors' content descriptors) by one value
for the whole clip. The network asks a `Norm` for each statistic, so the same forward pass
runs in three modes:

* `LocalNorm`: each frame uses its own statistics (training, and the `--no-global` baseline).
* `RecordNorm`: like local, but also records each layer's sums for `GlobalFeatures`
  (the analysis pass, whose running sums do not grow with the number of frames).
* `SharedNorm`: uses stored clip statistics, blended over style slots, and clamps every
  normalized activation to the range seen during analysis.

Statistics are computed in float32, also inside half-precision passes (the half-precision analysis
rounds its mean and 1 / std to the pass's precision at the end).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

EPS = 1e-5
NUM_NORM_LAYERS = 11
NUM_PREDICTORS = 6


class RecordLayout(NamedTuple):
    """What a `RecordNorm`'s packed records hold, in order: (IN layer, pixel count, channels) per
    record, and each content descriptor's size."""
    layers: tuple[tuple[int, int, int], ...]
    desc_sizes: tuple[int, ...]


def plain_reductions(x: torch.Tensor) -> bool:
    """Whether x's statistics take plain float32 reductions: in float32, and in passes compiled for a
    CPU, where Inductor fuses the sums, range and casts into one loop over x (the half-precision
    workarounds below, written for eager kernels, made its loops slow: 2-core AMX, bf16, 640x360,
    0.59 s an analysed frame compiled against 0.30 eager)."""
    return x.dtype == torch.float32 or (torch.compiler.is_compiling() and x.device.type == "cpu")


def channel_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 sums of x and x^2 over the spatial dims, N x C."""
    if plain_reductions(x):
        x = x.float()  # compiled, the cast happens inside the fused reduction loop
        # float32 sums keep mean and std within 1e-4 of float64 even for channels whose mean is
        # 8 stds (tested); torch.var_mean was 5x (contiguous) to 13x (channels-last) slower on CPU.
        return x.sum(dim=(2, 3)), torch.square(x).sum(dim=(2, 3))
    # Half precision, without a float32 copy of x (the copies were a third of the analysis time).
    # Sums run over x - c, c a per-channel estimate of the mean from a sparse grid, so that
    # x^2 does not cancel against the mean's square; each row is summed in x's dtype, the rows in
    # float32. Twice as fast as float32 sums, and a 5x smaller variance error for channels whose
    # mean is 8 stds (summing x^2 rounded to bf16 was off by 1%; this is off by 0.2%).
    rows = x.permute(0, 2, 3, 1)  # N x H x W x C: a view of channels-last x
    count = rows.shape[1] * rows.shape[2]
    c = rows[:, ::4, ::4].float().mean(dim=(1, 2)).to(x.dtype)
    d = rows - c[:, None, None, :]
    # bf16 has float32's range; fp16 row sums of squares could overflow (CUDA casts on the fly).
    row_dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32
    s_d = d.sum(dim=2, dtype=row_dtype).float().sum(dim=1)
    sq_d = torch.square(d).sum(dim=2, dtype=row_dtype).float().sum(dim=1)
    c = c.float()
    return s_d + count * c, sq_d + 2 * c * s_d + count * c * c


def channel_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel minimum and maximum over the spatial dims, N x C."""
    if x.is_cuda or (plain_reductions(x) and (torch.compiler.is_compiling() or x.shape[1] % 32 == 0)):
        return x.amin(dim=(2, 3)), x.amax(dim=(2, 3))
    # On a CPU, PyTorch's min and max over the pixels of channels-last x were slow in bf16 with few
    # channels a pixel (32 x 360 x 640: 36 ms on a 2-core AMX CPU, a fifth of the lite network's
    # analysis), and in float32 where the channels are not a multiple of 32 (2-core AVX-512 CPU:
    # 48 x 184 x 320 9.2 ms, 48 x 368 x 640 45 ms; 32 and 64 channels 2.7 and 4.8 ms at 368 x 640).
    # Viewed as rows of k pixels' channels, about 512 values, then reduced over the k pixels, they
    # took 7, 0.9 and 4.9 ms; exact either way. (CUDA's reductions need no such view.)
    n, c, h, w = x.shape
    k = max(1, 512 // c)
    while (h * w) % k:
        k //= 2
    rows = x.permute(0, 2, 3, 1).reshape(n, h * w // k, k * c)  # a view of channels-last x
    return rows.amin(dim=1).view(n, k, c).amin(dim=1), rows.amax(dim=1).view(n, k, c).amax(dim=1)


def moments(s: torch.Tensor, sq: torch.Tensor, count: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (with EPS) from sums of x and x^2 over `count` values (or a count per row)."""
    mean = s / count
    var = (sq / count - mean * mean).clamp_min(0.0)
    return mean, (var + EPS).sqrt()


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std over the spatial dims (float32), shapes N x C."""
    return moments(*channel_sums(x), x.shape[2] * x.shape[3])


def fused_normalize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x normalized per sample and channel, with the mean and std it was normalized by (float32,
    N x C). For inference only: no gradient reaches the statistics.

    Half precision: one fused pass, ATen's group norm with a group per channel. Separate sums, range
    and multiply-add made the lite network's analysis 1.5x its stylization on a 2-core AMX CPU; this
    made it 1.24x. The statistics come back rounded to x's dtype (0.2-0.4%), as the half-precision
    stylization rounds its normalization anyway. Float32 keeps `channel_stats`: the fused pass
    gained 3% there, and its std was only within 1e-3 (against 1e-4) for channels whose mean is 8
    stds, which an untrained network's gain magnified past the one-frame equality tests. Passes
    compiled for a CPU take `channel_stats` too (`plain_reductions`: the clip's own colours of a
    640x360 frame 78 -> 65 ms compiled)."""
    if plain_reductions(x):
        mean, std = channel_stats(x)
        return scale_shift(x, 1.0 / std, -mean / std), mean, std
    n, c, h, w = x.shape
    # CUDA's eager group norm reads only contiguous maps (a CPU's takes channels-last too; compiled,
    # Inductor's decomposition takes either): a copy there and back, on the eager fallback only.
    relayout = x.is_cuda and not x.is_contiguous() and not torch.compiler.is_compiling()
    y, mean, rstd = torch.native_group_norm(x.contiguous() if relayout else x, None, None, n, c, h * w, c, EPS)
    if relayout:
        y = y.contiguous(memory_format=torch.channels_last)
    return y, mean.float().view(n, c), 1.0 / rstd.float().view(n, c)


def inference_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std of `fused_normalize`, where its normalized map is not needed. In half
    precision the group norm is still the fastest way to them (bf16 on a 2-core AMX CPU, 64 x 360 x
    640: 4.3 ms against `channel_stats`' 26.8); in float32, and compiled for a CPU, the map would be a
    wasted pass (float32: 41.4 against 24.5 ms)."""
    if plain_reductions(x):
        return channel_stats(x)
    return fused_normalize(x)[1:]


def sums_from_moments(mean: torch.Tensor, std: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sums of x and x^2 over `count` values that `moments` turns into this mean and std."""
    var = (std * std - EPS).clamp_min(0.0)
    return mean * count, (var + mean * mean) * count


def scale_shift(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x * scale + shift with per-sample, per-channel (N x C, float32) scale and shift, in x's dtype.

    One fused pass: a multiply and an add took twice the time (64 x 360 x 640 float32 on a
    2-core CPU: 15.6 against 7.4 ms), and in half precision the float32 round trip of every
    activation was a third of the CPU inference time."""
    scale, shift = scale[:, :, None, None], shift[:, :, None, None]
    return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


def _affine_clamp(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, lo: torch.Tensor,
                  hi: torch.Tensor) -> torch.Tensor:
    """clamp(x * scale + shift, lo, hi) per channel (N x C x 1 x 1 float32 terms), in x's dtype.

    One fused pass and an in-place clamp: subtract, divide and clamp took three passes and three
    new tensors (2-core CPU, 640x360: 136 ms a frame). The clamp is two one-sided passes, which
    took half the time of clamp_(lo, hi) with per-channel bounds (64 x 360 x 640: 12 -> 7 ms)."""
    scale, shift, lo, hi = (t.to(x.dtype) for t in (scale, shift, lo, hi))
    return torch.addcmul(shift, x, scale).clamp_min_(lo).clamp_max_(hi)


class LocalNorm:
    """Local per-frame normalization; the base of the other modes."""

    def frame_stats(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and std (N x C, float32) of x, which IN layer `layer` normalizes it with."""
        return channel_stats(x)

    def normalize(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.frame_stats(layer, x)
        return scale_shift(x, 1.0 / std, -mean / std)

    def observe(self, layer: int, x: torch.Tensor) -> None:
        """IN layer `layer`'s statistics of x, taken without normalizing x (the last layer of a pass run
        only for its statistics)."""
        self.frame_stats(layer, x)

    def adain(self, layer: int, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """AdaIN: x normalized as layer `layer`, then given the style's channel mean and std (N x C),
        as one multiply-add over x."""
        own_mean, own_std = self.frame_stats(layer, x)
        scale = std / own_std
        return scale_shift(x, scale, mean - own_mean * scale)

    def content_descriptors(self, describe: Callable[[torch.Tensor], list[torch.Tensor]],
                            x: torch.Tensor) -> list[torch.Tensor]:
        """The Filter Predictors' content descriptors of the normalized relu4_1 `x`: `describe(x)`,
        or the clip's where they are shared (then `describe` is not run at all)."""
        return describe(x)


def _takes_batch_norm(x: torch.Tensor) -> bool:
    """Whether `RecordNorm` normalizes x with ATen's batch norm: eager float32 on a CPU, one frame.

    One call instead of the sums, the square and the multiply-add (2-core AVX-512 CPU, analysed
    frames alternated in one process: lite model 277 -> 262 ms at 640x360 and 1154 -> 1033 ms at
    1280x720, after `channel_range`'s view took them from 297 and 1395 ms; default model 3%). Its
    statistics were within 2e-5 (relative) of the sums' and the stylized frames within a grey level."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and x.shape[0] == 1 and not torch.compiler.is_compiling()


class RecordNorm(LocalNorm):
    """Local normalization that records what the analysis needs of one pass: per IN layer the channel
    sums of x and x^2 (float32, N x C), its pixel count and the per-channel range of the normalized
    activation, taken from x's range (normalizing is increasing); and each content descriptor. In
    half precision the sums come from the `fused_normalize` pass (the last layer, which the analysis
    only observes, from its statistics alone), in eager float32 on a CPU from a batch norm's. It only
    appends to its own lists; `packed` gives them as two tensors, which a compiled (and
    graph-replayed) pass returns and `FeatureAccumulator.add_pass` folds into the clip's sums."""

    def __init__(self) -> None:
        self.layers: list[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.descs: list[torch.Tensor] = []

    def packed(self) -> tuple[RecordLayout, torch.Tensor, torch.Tensor]:
        """The records as (layout, stats, descs): stats N x 4 x C float32, the layers' sums of x and x^2
        and normalized minimum and maximum, channels of every layer side by side in recording order;
        descs N x D float32, the descriptors side by side. Two tensors instead of 50: each is a copy
        and a fold on the GPU, and the fold's launches were a tenth of an analysed frame."""
        layout = RecordLayout(tuple((layer, count, s.shape[1]) for layer, count, s, *_ in self.layers),
                              tuple(d.shape[1] for d in self.descs))
        stats = torch.stack([torch.cat([r[k].float() for r in self.layers], dim=1) for k in range(2, 6)], dim=1)
        return layout, stats, torch.cat([d.float() for d in self.descs], dim=1)

    # Eager float32 on a CPU, one frame a pass: statistics and map from ATen's batch norm (a frame's
    # channels are a batch norm's over one sample), with AdaIN's target as its affine terms. A pass
    # compiled for a CPU (and float32 elsewhere) records the sums it normalizes with (`frame_stats`),
    # and AdaIN stays one multiply-add. Eager half precision takes statistics and normalized map from
    # one fused pass, then applies AdaIN.
    def normalize(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if _takes_batch_norm(x):
            return self._batch_norm(layer, x)
        if plain_reductions(x):
            return super().normalize(layer, x)
        y, mean, std = fused_normalize(x)
        self._append_moments(layer, x, mean, std)
        return y

    def adain(self, layer: int, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        if _takes_batch_norm(x):
            return self._batch_norm(layer, x, std[0], mean[0])
        if plain_reductions(x):
            return super().adain(layer, x, mean, std)
        return scale_shift(self.normalize(layer, x), std, mean)

    def _batch_norm(self, layer: int, x: torch.Tensor, std: torch.Tensor | None = None,
                    mean: torch.Tensor | None = None) -> torch.Tensor:
        """x (one frame) normalized by IN layer `layer`, then given `mean` and `std` (C) where given."""
        y, own_mean, rstd = torch.native_batch_norm(x, std, mean, None, None, True, 0.0, EPS)
        self._append_moments(layer, x, own_mean[None], 1.0 / rstd[None])
        return y

    def frame_stats(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, sq = channel_sums(x)
        mean, std = moments(s, sq, x.shape[2] * x.shape[3])
        self._append(layer, x, s, sq, mean, std)
        return mean, std

    def observe(self, layer: int, x: torch.Tensor) -> None:
        if _takes_batch_norm(x):  # the statistics `normalize` takes (the map is dropped)
            self._batch_norm(layer, x)
            return
        if plain_reductions(x):
            self.frame_stats(layer, x)
            return
        self._append_moments(layer, x, *inference_stats(x))  # half precision: as `normalize` takes them

    def _append_moments(self, layer: int, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Record layer `layer` of x from its mean and std (a group norm's or a batch norm's)."""
        self._append(layer, x, *sums_from_moments(mean, std, x.shape[2] * x.shape[3]), mean, std)

    def _append(self, layer: int, x: torch.Tensor, s: torch.Tensor, sq: torch.Tensor, mean: torch.Tensor,
                std: torch.Tensor) -> None:
        # The normalized activation's range follows from x's: normalizing is increasing (std > 0).
        lo, hi = channel_range(x)
        lo, hi = (lo.float() - mean) / std, (hi.float() - mean) / std
        self.layers.append((layer, x.shape[2] * x.shape[3], s, sq, lo, hi))

    def content_descriptors(self, describe: Callable[[torch.Tensor], list[torch.Tensor]],
                            x: torch.Tensor) -> list[torch.Tensor]:
        descs = describe(x)
        self.descs.extend(descs)
        return descs


class SharedNorm(LocalNorm):
    """Clip-level statistics from `GlobalFeatures`, blended by slot weights.

    `alpha` (1 x S, or N x S for per-frame weights) is a convex combination of the slots'
    statistics. The blend is made once, on `device`, and every frame reads the same tensors:
    per-layer copies to the GPU stalled it 44 times a frame and made CUDA-graph capture
    impossible. `set_alpha` rewrites the blend in place, so a captured graph stays valid when the
    style weights change.
    """

    def __init__(self, mean: list[torch.Tensor], std: list[torch.Tensor], lo: list[torch.Tensor],
                 hi: list[torch.Tensor], content_desc: list[torch.Tensor], alpha: torch.Tensor,
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._per_slot = [[t.to(self.device, torch.float32) for t in kind] for kind in (mean, std, lo, hi)]
        self.content_desc = [d.to(self.device, torch.float32)[None] for d in content_desc]
        self._stats: list[tuple[torch.Tensor, ...]] = []
        self.set_alpha(alpha)

    def set_alpha(self, alpha: torch.Tensor) -> None:
        """Blend the slots with new weights (in place when the shape is unchanged)."""
        self.alpha = alpha.to(self.device, torch.float32)
        mean, std, lo, hi = ([(self.alpha @ t)[:, :, None, None] for t in kind] for kind in self._per_slot)
        blended = [(1.0 / s, -m / s, a, b) for m, s, a, b in zip(mean, std, lo, hi)]
        if self._stats and all(o.shape == n.shape for old, new in zip(self._stats, blended) for o, n in zip(old, new)):
            for old, new in zip(self._stats, blended):
                for o, n in zip(old, new):
                    o.copy_(n)
        else:
            self._stats = blended

    def stats(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One IN layer's blended statistics as the map x * scale + shift (1 / std, -mean / std) and
        the normalized range lo, hi: scale, shift, lo, hi, each N x C x 1 x 1."""
        return self._stats[layer]

    def normalize(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return _affine_clamp(x, *self.stats(layer))

    def adain(self, layer: int, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        # clamp(x * a + b, lo, hi) * std + mean is clamp(x * a' + b', lo', hi') with every term
        # multiplied by std and mean added (std > 0): one pass over x instead of three.
        scale, shift, lo, hi = self.stats(layer)
        std, mean = std[:, :, None, None], mean[:, :, None, None]
        return _affine_clamp(x, scale * std, shift * std + mean, lo * std + mean, hi * std + mean)

    def content_descriptors(self, describe: Callable[[torch.Tensor], list[torch.Tensor]],
                            x: torch.Tensor) -> list[torch.Tensor]:
        return [d.expand(x.shape[0], -1) for d in self.content_desc]
