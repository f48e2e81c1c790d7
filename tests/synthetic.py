"""Deterministic synthetic frames, clips of the bundled assets and style images shared by the tests (a
module with a unique name, so test files can import it whatever conftest.py pytest loaded first)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vst_engine.video import open_source, read_image

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


def write_folder(path: Path, frames) -> Path:
    """RGB frames as a folder of PNGs (f000.png, f001.png, ...): a clip the command line reads."""
    path.mkdir(exist_ok=True)
    for k, frame in enumerate(frames):
        cv2.imwrite(str(path / f"f{k:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return path


ASSETS = Path(__file__).resolve().parents[1] / "vst_engine" / "assets"


def bunny(first: int, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Frames of the bundled clip (one shot, a moving camera)."""
    with open_source(ASSETS / "bigbuckbunny.mp4") as clip:
        return [cv2.resize(clip.read(i), size, interpolation=cv2.INTER_AREA) for i in range(first, first + count)]


def starry_pan(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """A pan across the bundled painting, 3 px a frame."""
    w, h = size
    art = cv2.resize(read_image(ASSETS / "starry_night.jpg"), (w + 3 * count, h), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(art[:, 3 * t: 3 * t + w]) for t in range(count)]
