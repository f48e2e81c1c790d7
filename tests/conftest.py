"""Shared fixtures for the engine and CLI tests: one engine, tiny synthetic frames, clips and styles.

Everything is deliberately tiny (frames of at most 128x96, a few dozen frames) so the suite
stays quick on a small CPU machine.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic import STYLE_NAMES, style_image, synth_frame

REPO = Path(__file__).resolve().parent.parent

# The mode-equality tests (global features of one frame == per-frame statistics, service ==
# in-process, plugin == engine) hold bit for bit in fp32 only; so every engine here, in-process
# or started as a subprocess, computes in fp32, and tests/test_precision.py covers bf16.
os.environ.setdefault("VST_PRECISION", "fp32")


def _pin_winograd_threads() -> None:
    """NNPACK sizes its thread pool once, at its first convolution, and its sums depend on that
    size. The service and plugin subprocesses run one thread, so this process's pool must too."""
    import torch

    from vst_engine.convs import Conv3x3, winograd_available
    if winograd_available():
        conv = Conv3x3(1, 1)
        conv.winograd = True
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with torch.no_grad():
            conv(torch.zeros(1, 1, 3, 3))
        torch.set_num_threads(threads)


_pin_winograd_threads()


def write_png(path: Path, rgb: np.ndarray) -> Path:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.fixture(scope="session")
def style_paths(tmp_path_factory) -> dict[str, Path]:
    """{name: path} of tiny PNG style images."""
    d = tmp_path_factory.mktemp("styles")
    return {k: write_png(d / f"{k}.png", style_image(k)) for k in STYLE_NAMES}


@pytest.fixture(scope="session")
def frame_folder(tmp_path_factory) -> Path:
    """A folder of 12 PNG frames, 64x48."""
    d = tmp_path_factory.mktemp("frames")
    for t in range(12):
        write_png(d / f"frame{t}.png", synth_frame(t))
    return d


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A 12-frame 64x48 25 fps H.264 clip (no audio), written with the engine's own sink."""
    from vst_engine.video import open_sink

    path = tmp_path_factory.mktemp("clip") / "tiny.mp4"
    with open_sink(path, 25.0, 64, 48) as sink:
        for t in range(12):
            sink.write(t, synth_frame(t))
    return path


@pytest.fixture(scope="module")
def engine():
    """One untrained (seeded, deterministic) CPU engine per module.

    Torch runs single-threaded here: on a 2-core machine shared with other work, two
    intra-op threads are several times slower than one on these tiny frames.
    """
    import torch

    from vst_engine import Engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Pinned to the seeded untrained network: these tests check the engine's mechanics, and
        # their numeric tolerances must not move as the shipped weights are retrained.
        yield Engine(model="untrained", device="cpu")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """Environment for `python -m vst_engine` subprocesses (single-threaded torch, see `engine`)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


@pytest.fixture(scope="session")
def make_frame():
    """synth_frame(t, w=64, h=48) -> H x W x 3 uint8 RGB."""
    return synth_frame


@pytest.fixture(scope="session")
def make_style():
    """style_image(kind, size=64) -> size x size x 3 uint8 RGB (kind in STYLE_NAMES)."""
    return style_image
