"""Passes compiled for a CPU ($VST_COMPILE=1) render what eager passes render.

Compiled CPU passes take their own paths: the phase convolutions' outputs interleaved by a gather
Inductor vectorizes, and every normalization's statistics from plain float32 reductions (the
half-precision workarounds are for eager kernels). Both are checked here in float32, where the
results may differ only by rounding (the eager engine on NNPACK or oneDNN, the compiled one on oneDNN).
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from synthetic import synth_frame

from vst_engine import Engine
from vst_engine.engine import accelerations, compile_pays_off

W, H = 96, 64


@pytest.fixture(scope="module")
def engines():
    return Engine(device="cpu", compile=True), Engine(device="cpu", compile=False)


def test_compiling_on_a_cpu_is_opt_in(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("VST_COMPILE", raising=False)
    assert accelerations(cpu) == (False, False)
    assert accelerations(torch.device("cuda")) == (True, True)
    monkeypatch.setenv("VST_COMPILE", "1")
    assert accelerations(cpu) == (True, False)
    monkeypatch.setenv("VST_COMPILE", "0")
    assert accelerations(torch.device("cuda"))[0] is False


def test_long_bf16_cpu_renders_compile(monkeypatch):
    """Where no one decided, a render long enough to repay the compilation compiles a bf16 CPU's passes
    (the CLI asks before stylizing); fp32 passes never (compiling gained little or nothing there)."""
    cpu = torch.device("cpu")
    assert compile_pays_off(cpu, torch.bfloat16, 869, 640, 360) and compile_pays_off(cpu, torch.bfloat16, 218, 1280, 720)
    assert not compile_pays_off(cpu, torch.bfloat16, 868, 640, 360)
    assert not compile_pays_off(cpu, torch.float32, 10**6, 1920, 1080)
    monkeypatch.delenv("VST_COMPILE", raising=False)
    undecided, tiled, refused = Engine(device="cpu"), Engine(device="cpu"), Engine(device="cpu", compile=False)
    monkeypatch.setenv("VST_COMPILE", "0")
    refused_by_env = Engine(device="cpu")
    for engine in (undecided, tiled, refused, refused_by_env):
        engine.dtype = torch.bfloat16  # as on a CPU with AMX (the decision only; nothing runs)
    assert not undecided.compile_for_render(100, 640, 360) and not undecided.compiler.enabled
    assert undecided.compile_for_render(1000, 640, 360) and undecided.compiler.enabled
    assert 1920 * 1080 > tiled.tile_area and tiled.compile_for_render(100, 1920, 1080) and tiled.compiler.enabled
    assert not refused.compile_for_render(1000, 640, 360) and not refused.compiler.enabled
    assert not refused_by_env.compile_for_render(1000, 640, 360) and not refused_by_env.compiler.enabled


def test_short_cuda_renders_run_uncompiled(monkeypatch):
    """On CUDA, where compiling is the default, a render or an analysis too short to repay the
    compilation (20-90 s at 1920x1080) runs uncompiled; a long one, the caller's or $VST_COMPILE's
    choice stay compiled."""
    cuda = torch.device("cuda")
    assert compile_pays_off(cuda, torch.float16, 1000, 1920, 1080) and compile_pays_off(cuda, torch.float16, 9000, 640, 360)
    assert not compile_pays_off(cuda, torch.float16, 900, 1920, 1080)
    monkeypatch.delenv("VST_COMPILE", raising=False)
    short, long, asked = Engine(device="cpu"), Engine(device="cpu"), Engine(device="cpu", compile=True)
    short_analysis, long_analysis = Engine(device="cpu"), Engine(device="cpu")
    monkeypatch.setenv("VST_COMPILE", "1")
    asked_by_env = Engine(device="cpu")
    # as CUDA engines (the decision only; nothing runs)
    for engine in (short, long, asked, asked_by_env, short_analysis, long_analysis):
        engine.device, engine.dtype, engine.compiler.enabled = cuda, torch.float16, True
    assert "uncompiled" in short.compile_for_render(100, 1920, 1080) and not short.compiler.enabled
    assert long.compile_for_render(1000, 1920, 1080) is None and long.compiler.enabled
    # `vst analyze` alone: an analysed frame counts as 3 stylized ones (965 frames of 1920x1080 repay it)
    assert short_analysis.compile_for_render(0, 1920, 1080, analysed=321) == (
        "a short analysis: the passes run uncompiled (compiling would wait 20-90 s; VST_COMPILE=1 compiles)")
    assert long_analysis.compile_for_render(0, 1920, 1080, analysed=322) is None and long_analysis.compiler.enabled
    assert asked.compile_for_render(100, 1920, 1080) is None and asked.compiler.enabled
    assert asked_by_env.compile_for_render(100, 1920, 1080) is None and asked_by_env.compiler.enabled


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="Inductor's CPU backend needs a C++ compiler")
def test_compiled_cpu_passes_equal_eager_ones(engines, style_paths):
    compiled, eager = engines
    clip = [synth_frame(t, W, H) for t in range(3)]
    results = []
    for engine, batch in zip(engines, (2, 1)):
        styles = engine.load_styles([style_paths["stripes"], style_paths["dots"]])
        # Compiled, two frames a pass (as a GPU analyses small frames; the last batch padded), the
        # own colours on the first row of each: the same features as eager frame by frame.
        run = engine.analysis(styles, batch=batch)
        for frame in clip:
            run.add(frame)
        feats = run.finish()
        other = engine.analysis(styles, batch=batch)
        for frame in clip[:2]:
            other.add(frame)
        # Compiled CPU passes hold the weights as constants (`compile_pass`, freeze), never the clip's
        # statistics: new slot weights and another clip's features, both updated in place, must tell.
        frames = [engine.stylize(clip[1], feats, [0.3, 0.7], strength=0.6), engine.stylize(clip[1], feats, [1, 0]),
                  engine.stylize(clip[1], other.finish(), [0.3, 0.7], strength=0.6),
                  engine.stylize(clip[2], styles, [1, 0])]
        results.append((feats, frames))
    assert compiled.acceleration == "compiled" and eager.acceleration != "compiled"
    (feats, frames), (ref_feats, ref_frames) = results
    for kind in ("norm_mean", "norm_std", "norm_min", "norm_max", "content_desc"):
        for mine, theirs in zip(getattr(feats, kind), getattr(ref_feats, kind), strict=True):
            scale = theirs.abs().max().clamp_min(1e-3)
            assert float((mine - theirs).abs().max() / scale) < 1e-3, kind
    for mine, theirs in zip(frames, ref_frames, strict=True):
        d = np.abs(mine.astype(int) - theirs.astype(int))
        assert mine.shape == theirs.shape == (H, W, 3) and d.max() <= 2, d.max()
    assert all(np.abs(frames[0].astype(int) - f).mean() > 1 for f in frames[1:3])  # the changes show
    # the clip's own colours were analysed (strength 0.6 blends towards them), by the compiled engine too
    assert feats.has_own_colours and len(compiled.compiler._compiled) >= 3
