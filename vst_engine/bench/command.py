"""`python -m vst_engine.bench`: arguments, the run, and the report it writes."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_write_text
from ..errors import VstError
from .clips import fetch_clips, resolve_styles
from .compare import QUALITY_TOLERANCE, SPEED_TOLERANCE, compare, load_previous, slower_cpu_rows
from .common import (
    CLIPS, DEFAULT_CACHE, DEFAULT_CLIPS, DEFAULT_PEER_PYTHON, DEFAULT_SIZES, DEFAULT_STYLES, PEER_PACKAGE,
    ROOT, STYLES, parse_size
)
from .flicker import summarize_flicker
from .shots import summarize_shots
from .quality import peer_info, quality, quality_models, sintel_quality, summarize
from .report import make_plots, render_report, targets_table
from .speed import (
    analysis_overheads, count_macs, retime_cpu_rows, speed, speed_worker, tensor_peak_tflops, throughput_worker
)

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
    ap.add_argument("--skip-flicker", action="store_true", help="leave the exposure-flicker table out (ours on "
                    "the clips with a flickering exposure, with and without --deflicker)")
    ap.add_argument("--skip-shots", action="store_true", help="leave the shots table out (ours on the clips joined "
                    "by cuts, with features pooled over the shots and --per-shot)")
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
    ap.add_argument("--previous", default=None, metavar="RESULTS_JSON",
                    help="compare with an earlier run's results.json (a section of the report); exit status 3 "
                    "when a measure of ours got worse beyond the tolerances")
    ap.add_argument("--quality-tolerance", type=float, default=QUALITY_TOLERANCE,
                    help=f"relative rise of a loss that counts as worse (default {QUALITY_TOLERANCE})")
    ap.add_argument("--speed-tolerance", type=float, default=SPEED_TOLERANCE,
                    help=f"relative loss of frames/s or rise of the analysis share that counts as worse "
                    f"(default {SPEED_TOLERANCE}: shared CPUs move by 20-40%% between processes)")
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
    args.flicker = not args.skip_flicker and not args.skip_quality  # it reuses the quality table's excerpts
    args.shots = not args.skip_shots and not args.skip_quality  # so does the shots table
    if args.compile_timeout < 0:
        raise VstError("--compile-timeout must not be negative")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise VstError("--peak-tflops must be positive")
    if not (0 <= args.quality_tolerance < 1 and 0 <= args.speed_tolerance < 1):
        raise VstError("--quality-tolerance and --speed-tolerance must be fractions in [0, 1)")
    if args.previous:
        load_previous(args.previous)  # a bad file fails now, not after the run
    args.out = Path(args.out) if args.out else (ROOT / "build" / "bench-quick" if q else ROOT / "docs")
    args.cache = Path(args.cache)
    args.peer_python = Path(args.peer_python) if args.peer_python else DEFAULT_PEER_PYTHON
    return args


def validate_sintel(args: argparse.Namespace) -> None:
    """Where the true-flow table's data is, which scenes, and at what size (None: no table)."""
    from .. import sintel
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

def environment() -> dict:
    import cv2
    import torch

    from .. import engine_version
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
    from ..engine import OWN_COLOUR_EVERY, accelerations, compute_dtype, int8_convolutions, precision_name
    from ..hardware import cpu_has_amx
    cpu_device = torch.device("cpu")
    compiled = accelerations(cpu_device)[0]
    precision = precision_name(compute_dtype(cpu_device), int8_convolutions(cpu_device, None, compiled))
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_amx": cpu_has_amx(),
            "cpu_precision": precision, "cpu_compiled": compiled,
            "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()), "cuda": cuda,
            "vst_engine": engine_version(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "platform": platform.platform(),
            "own_colour_every": OWN_COLOUR_EVERY}


def run(args: argparse.Namespace, argv: Sequence[str], previous: dict | None = None) -> dict:
    """Measure what `args` ask for; CPU speed rows slower than `previous` run's are timed again."""
    import torch

    from ..models import load_model, model_path
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
        if q.get("flicker"):
            res["flicker"] = summarize_flicker(q.pop("flicker"), q)
        if q.get("shots"):
            res["shots"] = summarize_shots(q.pop("shots"))
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
        if previous is not None and previous.get("speed"):
            retime_cpu_rows(args, s["rows"], slower_cpu_rows(
                {"environment": res["environment"], "speed": s}, previous, args.speed_tolerance))
        # Multiply-adds of the stylization network per size (counted once, on CPU).
        from ..engine import Engine
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
        previous = load_previous(args.previous) if args.previous else None
        if args.report_only:
            try:
                res = json.loads(Path(args.report_only).read_text())
            except (OSError, ValueError) as exc:
                raise VstError(f"cannot read {args.report_only}: {exc}") from None
            res["notes"] = [n for n in res.get("notes", []) if not n.startswith("plots skipped")]
        else:
            res = run(args, argv, previous)
        if previous is not None:
            res["comparison"] = compare(res, previous, args.quality_tolerance, args.speed_tolerance)
            res["comparison"]["previous"] = str(args.previous)
        report = write_report(res, args.out)
    except VstError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    for row in res["targets"]:
        print(f"  {row[0]}: {row[1]} -> {row[2].strip('*')}")
    regressions = res.get("comparison", {}).get("regressions", [])
    for name in regressions:
        print(f"  worse than the previous run: {name}")
    return 3 if regressions else 0
