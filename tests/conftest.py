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

REPO = Path(__file__).resolve().parent.parent

# Style images: 64x64, clearly different textures and colours.
STYLE_NAMES = ("stripes", "checker", "dots")


def synth_frame(t: int, w: int = 64, h: int = 48) -> np.ndarray:
    """Frame t of a deterministic synthetic clip: drifting colour waves, a moving square, grain."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 90 * np.sin(2 * np.pi * (x / w + t / 37.0))
    g = 128 + 90 * np.sin(2 * np.pi * (y / h - t / 29.0))
    b = 128 + 70 * np.cos(2 * np.pi * ((x + 2 * y) / (w + h) + t / 23.0))
    img = np.stack([r, g, b], -1)
    s = max(4, min(w, h) // 4)
    x0 = (3 * t) % max(1, w - s)
    y0 = (2 * t) % max(1, h - s)
    img[y0:y0 + s, x0:x0 + s] = (240, 40, 60)
    grain = np.random.default_rng(t).normal(0, 6, size=(h, w, 1))
    return np.clip(img + grain, 0, 255).round().astype(np.uint8)


def style_image(kind: str, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    if kind == "stripes":  # red/blue diagonal stripes
        m = ((x + y) // 6) % 2 == 0
        img = np.where(m[..., None], [220, 30, 40], [30, 40, 200])
    elif kind == "checker":  # green/yellow checkerboard
        m = ((x // 8) + (y // 8)) % 2 == 0
        img = np.where(m[..., None], [40, 180, 40], [240, 230, 60])
    elif kind == "dots":  # purple noise with bright dots
        rng = np.random.default_rng(7)
        img = np.clip(rng.normal([120, 40, 140], 30, size=(size, size, 3)), 0, 255)
        img[(x % 10 < 3) & (y % 10 < 3)] = (255, 250, 240)
    else:
        raise ValueError(kind)
    return np.asarray(img, dtype=np.uint8)


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
