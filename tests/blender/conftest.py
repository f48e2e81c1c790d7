"""Fixtures for the Blender add-on tests: the real `blender` binary (skipped when absent), the add-on
on a private scripts path, a tiny generated clip and two tiny style images.

Everything is tiny (64x36 px, 6 frames, styles of at most 64 px) because each engine call loads
PyTorch and the model on a small CPU machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from blender_run import engine_python

ROOT = Path(__file__).resolve().parents[2]
ADDON_SRC = ROOT / "blender_addon" / "video_style_transfer"
BLENDER = shutil.which("blender")


def pytest_collection_modifyitems(config, items):
    if BLENDER:
        return
    skip = pytest.mark.skip(reason="the `blender` binary is not on PATH (apt-get install blender)")
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def scripts_dir(tmp_path_factory) -> Path:
    """A BLENDER_USER_SCRIPTS folder with the add-on linked into addons/."""
    d = tmp_path_factory.mktemp("bl_scripts")
    (d / "addons").mkdir()
    (d / "addons" / "video_style_transfer").symlink_to(ADDON_SRC, target_is_directory=True)
    return d


@pytest.fixture(scope="session")
def bl_env(scripts_dir, tmp_path_factory) -> dict:
    env = dict(os.environ)
    env["BLENDER_USER_SCRIPTS"] = str(scripts_dir)
    env["VST_ENGINE_PYTHON"] = engine_python()
    # A private config folder: tests must not read or write the user's Blender settings.
    env["BLENDER_USER_CONFIG"] = str(tmp_path_factory.mktemp("bl_config"))
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict:
    """clip.mp4 (64x36, 6 frames, 24 fps), frames/ (the same as PNGs) and two style images."""
    d = tmp_path_factory.mktemp("media")
    code = f"""
import numpy as np, cv2
from pathlib import Path
from vst_engine.video import open_sink
d = Path({str(d)!r})
(d / "frames").mkdir()
frames = []
with open_sink(str(d / "clip.mp4"), 24.0, 64, 36) as sink:
    for i in range(6):
        y, x = np.mgrid[0:36, 0:64]
        f = np.stack([(x * 4 + i * 20) % 256, (y * 7 + i * 9) % 256, ((x + y) * 3 + i * 40) % 256], -1).astype(np.uint8)
        sink.write(i, f)
        cv2.imwrite(str(d / "frames" / f"img_{{i + 1:03d}}.png"), f[:, :, ::-1])
art = cv2.imread({str(ROOT / 'vst_engine' / 'assets' / 'starry_night.jpg')!r})
cv2.imwrite(str(d / "style_a.png"), cv2.resize(art, (64, 51), interpolation=cv2.INTER_AREA))
y, x = np.mgrid[0:48, 0:48]
stripes = np.stack([(x * 16) % 256, (y * 5) % 256, ((x // 8 + y // 8) % 2) * 255], -1).astype(np.uint8)
cv2.imwrite(str(d / "style_b.png"), stripes)
"""
    subprocess.run([engine_python(), "-c", code], check=True, cwd=ROOT)
    return {"dir": d, "clip": d / "clip.mp4", "frames": d / "frames", "style_a": d / "style_a.png",
            "style_b": d / "style_b.png"}
