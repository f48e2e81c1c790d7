"""The MPI Sintel ground-truth samples of the project's test data (`../shared/data/sintel_gt`).

Three scenes, clean and final render passes, frames 1 to 4 (1024x436 PNG), with the true optical
flow from frame 2 to frame 3 and its occlusion and invalid-pixel masks. They validate the temporal
metric (tests) and give the benchmark the paper's protocol: consistency measured with true flow.
Test data only (Sintel images: CC-BY 3.0, Blender Foundation): numbers may be published, the
frames are never shipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engine import process_size, resize_frame
from .flow import in_frame, read_flo, read_mask, resize_flow, resize_mask
from .video import read_image

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "sintel_gt"
SCENES = ("alley_1", "cave_2", "market_5")
PASSES = ("clean", "final")
FRAMES = 4  # frames 1..4; the true flow is given for frame 2 -> 3 (positions 1 -> 2)


@dataclass
class Scene:
    name: str
    render_pass: str
    frames: np.ndarray     # 4 x H x W x 3 uint8, frames 1..4
    flow: np.ndarray       # H x W x 2 float32, true flow from frame 2 to frame 3
    occluded: np.ndarray   # H x W bool: visible in frame 2, hidden in frame 3
    reliable: np.ndarray   # H x W bool: not occluded, not invalid, lands inside frame 3


def scene_dir(root: Path, render_pass: str, name: str) -> Path:
    return Path(root) / render_pass / name


def available(root: Path, render_pass: str = "clean", name: str = "alley_1") -> bool:
    return (scene_dir(root, render_pass, name) / "gt" / "frame_0002.flo").is_file()


def load_scene(root: Path, render_pass: str, name: str, max_side: int | None = None) -> Scene:
    """One scene at a processing size of at most `max_side` (None: the original 1024x436); a
    downscaled flow is resized and its vectors scaled with the frame."""
    d = scene_dir(root, render_pass, name)
    frames = [read_image(d / f"frame_{k:04d}.png") for k in range(1, FRAMES + 1)]
    flow = read_flo(d / "gt" / "frame_0002.flo")
    h, w = frames[0].shape[:2]
    size = process_size(w, h, max_side)
    frames = [resize_frame(f, size) for f in frames]
    flow = resize_flow(flow, size)
    occluded = resize_mask(read_mask(d / "gt" / "occlusions" / "frame_0002.png"), size)
    invalid = resize_mask(read_mask(d / "gt" / "invalid" / "frame_0002.png"), size)
    return Scene(name, render_pass, np.stack(frames), flow, occluded, ~occluded & ~invalid & in_frame(flow))
