"""Inference precision: bf16 (CPUs with AMX / AVX512-BF16) against fp32, and how it is chosen."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic import synth_frame

import vst_engine
from vst_engine.engine import Engine, compute_dtype
from vst_engine.errors import VstError
from vst_engine.hardware import cpu_has_bf16
from vst_engine.network import reflect_pad1

STYLE = Path(vst_engine.__file__).parent / "assets" / "starry_night.jpg"
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 units")


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 16, 2, 3)])
def test_reflect_pad_equals_torch(layout, shape):
    x = torch.randn(shape).contiguous(memory_format=layout)
    padded = reflect_pad1(x)
    assert torch.equal(padded, F.pad(x, (1, 1, 1, 1), mode="reflect"))
    assert padded.is_contiguous(memory_format=layout)


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert compute_dtype(cpu, "fp32") == torch.float32
    assert compute_dtype(cpu, "auto") == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
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
