"""Inference precision: bf16 (CPUs with AMX) against fp32, and how it is chosen."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import synth_frame

import vst_engine
from vst_engine.engine import Engine, compute_dtype
from vst_engine.errors import VstError
from vst_engine.hardware import cpu_has_amx
from vst_engine.network import reflect_pad1
from vst_engine.norms import (EPS, channel_range, channel_stats, channel_sums, fused_normalize, moments,
                              sums_from_moments)

STYLE = Path(vst_engine.__file__).parent / "assets" / "starry_night.jpg"
needs_bf16 = pytest.mark.skipif(not cpu_has_amx(), reason="this CPU has no AMX")


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 16, 2, 3)])
def test_reflect_pad_equals_torch(layout, shape):
    x = torch.randn(shape).contiguous(memory_format=layout)
    padded = reflect_pad1(x)
    assert torch.equal(padded, F.pad(x, (1, 1, 1, 1), mode="reflect"))
    assert padded.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("flags, amx", [("fpu avx2 avx512f avx512_bf16", False),
                                         ("fpu avx2 avx512_bf16 amx_bf16 amx_tile", True), ("fpu avx2", False)])
def test_only_amx_cpus_compute_in_bf16(monkeypatch, flags, amx):
    """bf16 pays only with AMX: with AVX512-BF16 alone it was slower than fp32 (`cpu_has_amx`)."""
    from vst_engine import hardware

    class FakePath:
        def __init__(self, path: str) -> None:
            assert path == "/proc/cpuinfo"

        def read_text(self) -> str:
            return f"processor\t: 0\nflags\t\t: {flags}\n"
    monkeypatch.setattr(hardware, "Path", FakePath)
    monkeypatch.setattr(hardware, "cpu_flags", hardware.cpu_flags.__wrapped__)  # uncached
    assert hardware.cpu_has_amx.__wrapped__() is amx


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert compute_dtype(cpu, "fp32") == torch.float32
    assert compute_dtype(cpu, "auto") == (torch.bfloat16 if cpu_has_amx() else torch.float32)
    assert compute_dtype(torch.device("cuda"), "auto") == torch.float16
    monkeypatch.setenv("VST_PRECISION", "fp32")
    assert compute_dtype(cpu) == torch.float32
    monkeypatch.setenv("VST_PRECISION", "auto")
    assert compute_dtype(cpu) == compute_dtype(cpu, "auto")
    with pytest.raises(VstError, match="unknown precision 'fp8'"):
        compute_dtype(cpu, "fp8")


@needs_bf16
def test_bf16_output_is_close_to_fp32():
    """The trained model at 256x192: bf16 changes the picture by about one grey level.

    Measured (2-core AMX CPU, step-2,600 weights): mean absolute difference 1.00-1.08, 99th
    percentile 3-5, maximum 7-14, per-frame and global alike."""
    frames = [synth_frame(t, 256, 192) for t in (0, 5)]
    outs = {}
    for precision in ("fp32", "auto"):
        engine = Engine(device="cpu", precision=precision)
        styles = engine.load_styles([STYLE])
        feats = engine.analyze(frames, styles, sampled=[0, 1], frame_range=(0, 2))
        outs[engine.precision] = [engine.stylize(f, src) for f in frames for src in (styles, feats)]
    for a, b in zip(outs["fp32"], outs["bf16"]):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (diff.mean(), np.percentile(diff, 99))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_channel_sums_are_accurate(dtype):
    """Channels whose mean is up to 8 stds: the variance from the half-precision sums stays within 1%."""
    gen = torch.Generator().manual_seed(0)
    offset = torch.linspace(-4.0, 4.0, 32)[None, :, None, None]
    x = (torch.randn(2, 32, 45, 80, generator=gen) * 0.5 + offset).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    s, sq = channel_sums(x)
    ref = x.double()
    n = 45 * 80
    mean, var = s.double() / n, sq.double() / n - (s.double() / n) ** 2
    true_mean, true_var = ref.mean(dim=(2, 3)), ref.var(dim=(2, 3), unbiased=False)
    assert s.dtype == torch.float32 and s.shape == (2, 32)
    assert ((mean - true_mean).abs() / true_var.sqrt()).max() < 0.01
    assert ((var - true_var).abs() / true_var).max() < 0.01
    lo, hi = channel_range(x)
    assert torch.equal(lo, x.amin(dim=(2, 3))) and torch.equal(hi, x.amax(dim=(2, 3)))


@pytest.mark.parametrize("shape", [(2, 32, 45, 80), (1, 48, 9, 13), (1, 3, 10, 10), (2, 600, 3, 5), (1, 64, 6, 7)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_channel_range_is_exact(shape, layout, dtype):
    """The range reduces rows of several pixels' channels first (half precision, and float32 where
    the channels are not a multiple of 32); pixel counts that the row width does not divide, and
    inputs in either layout, give the exact range."""
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(*shape, generator=gen) * 3).to(dtype).contiguous(memory_format=layout)
    lo, hi = channel_range(x)
    assert lo.shape == hi.shape == shape[:2]
    assert torch.equal(lo, x.float().amin(dim=(2, 3)).to(x.dtype)) and torch.equal(hi, x.float().amax(dim=(2, 3)).to(x.dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_normalize_gives_the_statistics_it_normalizes_by(dtype):
    """The analysis's normalization: mean and std as float64 gives them (fp32, at a mean of 8 stds:
    within 1e-5 of the std; bf16, one fused pass: rounded to bf16), the output is x normalized by
    them, and the sums it records turn back into the same mean and std."""
    gen = torch.Generator().manual_seed(3)
    offset = torch.linspace(-4.0, 4.0, 16)[None, :, None, None]
    x = (torch.randn(2, 16, 30, 40, generator=gen) * 0.5 + offset).to(dtype).contiguous(memory_format=torch.channels_last)
    y, mean, std = fused_normalize(x)
    ref = x.double()
    true_mean, true_std = ref.mean(dim=(2, 3)), (ref.var(dim=(2, 3), unbiased=False) + EPS).sqrt()
    assert mean.dtype == std.dtype == torch.float32 and mean.shape == std.shape == (2, 16)
    assert y.dtype == dtype and y.shape == x.shape
    if dtype == torch.float32:
        assert ((mean.double() - true_mean).abs() / true_std).max() < 1e-5
        assert ((std.double() / true_std) - 1).abs().max() < 1e-5
    else:  # bf16 keeps 8 significant bits: the rounding of the result alone
        assert ((mean.double() - true_mean).abs() <= true_mean.abs() * 2 ** -8 + 1e-6).all()
        assert ((std.double() / true_std) - 1).abs().max() <= 2 ** -8
    normalized = (ref - true_mean[:, :, None, None]) / true_std[:, :, None, None]
    tol = 1e-4 if dtype == torch.float32 else 0.02
    assert ((y.double() - normalized).abs() <= tol * (normalized.abs() + 1)).all()
    back_mean, back_std = moments(*sums_from_moments(mean, std, 30 * 40), 30 * 40)
    assert torch.allclose(back_mean, mean, rtol=1e-5, atol=1e-6) and torch.allclose(back_std, std, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_observing_a_layer_records_what_normalizing_it_records(dtype):
    """`RecordNorm.observe` (a stats-only pass's last layer) records the sums and the normalized range
    that normalizing the same map records, without making the normalized map."""
    from vst_engine.norms import RecordNorm
    gen = torch.Generator().manual_seed(4)
    offset = torch.linspace(-3.0, 3.0, 16)[None, :, None, None]
    x = (torch.randn(1, 16, 24, 40, generator=gen) * 0.7 + offset).to(dtype).contiguous(memory_format=torch.channels_last)
    normalized, observed = RecordNorm(), RecordNorm()
    y = normalized.normalize(7, x).float()
    assert observed.observe(7, x) is None
    (layer, count, *made), = normalized.layers
    (layer2, count2, *seen), = observed.layers
    assert (layer2, count2) == (layer, count) == (7, 24 * 40)
    tol = 1e-5 if dtype == torch.float32 else 2 ** -7  # bf16: the rounding of the normalized map
    for a, b in zip(made, seen):
        assert float((a - b).abs().max()) <= tol * float(a.abs().max()), (a, b)
    # the recorded range (taken from x's) is the normalized map's
    for recorded, actual in zip(made[2:], (y.amin(dim=(2, 3)), y.amax(dim=(2, 3)))):
        assert float((recorded - actual).abs().max()) <= 2 * tol * float(actual.abs().max()), (recorded, actual)


def test_float32_analysis_normalizes_one_frame_with_a_batch_norm():
    """Eager float32 on a CPU, one frame a pass: `RecordNorm` takes statistics and map from ATen's batch
    norm, with AdaIN's target as its affine terms. At a mean of 8 stds the recorded sums give the
    float64 mean and std (within 1e-5 of the std), and the maps are the sums path's (two frames a pass)."""
    from vst_engine.norms import RecordNorm, _takes_batch_norm
    gen = torch.Generator().manual_seed(5)
    offset = torch.linspace(-4.0, 4.0, 48)[None, :, None, None]
    x = (torch.randn(1, 48, 30, 40, generator=gen) * 0.5 + offset).contiguous(memory_format=torch.channels_last)
    pair = torch.cat([x, x]).contiguous(memory_format=torch.channels_last)
    assert _takes_batch_norm(x) and not _takes_batch_norm(pair) and not _takes_batch_norm(x.bfloat16())
    style_mean, style_std = torch.randn(1, 48, generator=gen), torch.rand(1, 48, generator=gen) + 0.5
    one, two = RecordNorm(), RecordNorm()
    pair_mean, pair_std = style_mean.expand(2, -1), style_std.expand(2, -1)
    maps = [(one.normalize(0, x), two.normalize(0, pair)),
            (one.adain(1, x, style_mean, style_std), two.adain(1, pair, pair_mean, pair_std))]
    for mine, theirs in maps:
        assert mine.shape == x.shape and mine.is_contiguous(memory_format=torch.channels_last)
        assert float((mine - theirs[:1]).abs().max()) < 1e-4 * float(theirs.abs().max())
    ref = x.double()
    true_mean, true_std = ref.mean(dim=(2, 3)), (ref.var(dim=(2, 3), unbiased=False) + EPS).sqrt()
    for (_, count, s, sq, lo, hi), (_, count2, _, _, lo2, hi2) in zip(one.layers, two.layers, strict=True):
        mean, std = moments(s.double(), sq.double(), count)
        assert ((mean - true_mean).abs() / true_std).max() < 1e-5 and ((std / true_std) - 1).abs().max() < 1e-5
        assert count2 == count and torch.allclose(lo, lo2[:1], atol=1e-4) and torch.allclose(hi, hi2[:1], atol=1e-4)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_float32_channel_stats_match_float64(layout):
    """fp32 statistics come from sums of x and x^2: at a mean of 8 stds and a million pixels per
    channel the std stays within 1e-4 of the float64 value, and gradients still flow (training)."""
    gen = torch.Generator().manual_seed(1)
    offset = torch.linspace(-4.0, 4.0, 8)[None, :, None, None]
    x = (torch.randn(1, 8, 720, 1280, generator=gen) * 0.5 + offset).contiguous(memory_format=layout)
    mean, std = channel_stats(x)
    ref = x.double()
    true_std = (ref.var(dim=(2, 3), unbiased=False) + EPS).sqrt()
    assert mean.dtype == torch.float32 and mean.shape == (1, 8)
    assert ((mean.double() - ref.mean(dim=(2, 3))).abs() / true_std).max() < 1e-4
    assert ((std.double() - true_std).abs() / true_std).max() < 1e-4
    small = x[:, :, :16, :16].clone().requires_grad_(True)
    m, s = channel_stats(small)
    (m.sum() + s.sum()).backward()
    reference = small.mean(dim=(2, 3)) + (small.var(dim=(2, 3), unbiased=False) + EPS).sqrt()
    expected = torch.autograd.grad(reference.sum(), small)[0]
    torch.testing.assert_close(small.grad, expected, rtol=1e-3, atol=1e-5)


_FAULTS_SCRIPT = """
import json, resource, sys
import torch
from vst_engine.hardware import reuse_large_allocations
applied = sys.argv[1] == "on" and reuse_large_allocations()
faults = []
for _ in range(8):  # activations of mixed sizes, as in a forward pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a, b = torch.empty(40 << 20, dtype=torch.uint8).fill_(1), torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
    del a
    c = torch.empty(48 << 20, dtype=torch.uint8).fill_(1)
    del b, c
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _round_faults(setting: str) -> dict:
    """In a fresh process: the heap left by earlier tests in this one made the count vary (12,288 once)."""
    proc = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, setting], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_large_blocks_are_reused_without_page_faults():
    """glibc maps each block above 32 MiB afresh, so every reuse paid a page fault per 4 KiB
    (38,900 per round of this pattern); with the setting, rounds after the heap has grown reuse it."""
    pytest.importorskip("resource")
    with_setting = _round_faults("on")
    if not with_setting["applied"]:
        pytest.skip("not glibc")
    without = _round_faults("off")
    assert sum(without["faults"][4:]) > 4 * 20000, without  # the measure sees the mmap()s
    assert sum(with_setting["faults"][4:]) < 2000, with_setting


def test_fp16_sums_do_not_overflow():
    """Rows of large fp16 activations: their sums of squares exceed fp16's range (65504)."""
    x = torch.full((1, 4, 8, 2048), 30.0, dtype=torch.float16)
    x[:, :, :, ::2] = -30.0
    s, sq = channel_sums(x.contiguous(memory_format=torch.channels_last))
    assert torch.isfinite(sq).all()
    assert torch.allclose(sq, torch.full((1, 4), 900.0 * 8 * 2048)) and torch.allclose(s, torch.zeros(1, 4), atol=1.0)


@needs_bf16
def test_bf16_batched_analysis_is_close_to_frame_by_frame():
    """bf16 analysis takes the fused normalization, which reads maps only in the pass's layout: a batch's
    own-colour rows (every second frame) must be copied so. Five frames four a pass (the second batch
    padded) give the features of a frame a pass, within bf16's rounding."""
    frames = [synth_frame(t, 96, 64) for t in range(5)]
    engine = Engine(device="cpu", precision="auto")
    styles = engine.load_styles([STYLE])
    feats = []
    for batch in (1, 4):
        run = engine.analysis(styles, batch=batch)
        for frame in frames:
            run.add(frame)
        feats.append(run.finish())
    assert engine.precision == "bf16" and feats[1].has_own_colours
    for kind in ("norm_mean", "norm_std", "norm_min", "norm_max", "content_desc"):
        for mine, ref in zip(getattr(feats[1], kind), getattr(feats[0], kind), strict=True):
            assert float((mine - ref).abs().max() / ref.abs().max().clamp_min(1e-3)) < 2e-2, kind
