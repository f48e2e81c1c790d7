"""Speed and memory: each configuration timed in a fresh worker process; the analysis's share of a clip."""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import VstError
from .common import (
    ANALYSIS_INTERVAL, ASSETS, CUDA_EXTRA_SIZES, PEER_SCRIPT, TENSOR_PEAK_TFLOPS, _worker_env, log,
    parse_size
)


def count_macs(engine, width: int, height: int) -> int:
    """Multiply-adds of one stylization forward pass (VGG to relu4_1 + decoder + filter predictors)
    at width x height, counted by hooks on every convolution and linear layer; the dynamic 32x32
    channel mixing (an einsum, two per filter block) is added analytically."""
    from unittest.mock import patch

    import torch
    from torch import nn

    from ..convs import use_winograd
    from ..engine import MULTIPLE
    from ..imageops import pad_to_multiple, to_tensor
    from ..norms import LocalNorm
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
    time WHAT (analyze, stylize, or scan: what `--deflicker` and `--per-shot` do to every frame) on a real
    frame of that size in this fresh process; prints JSON."""
    ap = argparse.ArgumentParser(prog="bench _speed")
    ap.add_argument("what", choices=("analyze", "stylize", "scan"))
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

    from ..engine import OWN_COLOUR_EVERY, Engine
    from ..features import GlobalFeatures
    if a.threads:
        torch.set_num_threads(a.threads)
    w, h = parse_size(a.size)
    frame = bench_frame(w, h)
    if a.what == "scan":  # no network: neither the model nor the styles are loaded
        return _scan_worker(frame, a.frames)
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
        own = a.own_colours or a.add_own_colours  # the own colours timed, analysed with the rest or added
        batch = a.batch or engine.analysis_batch(w, h, own)
        cycle = math.lcm(OWN_COLOUR_EVERY if own else 1, batch)
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
        out.update(batch=batch, own_colours=own, added=a.add_own_colours, default=not own,
                   stylize_seconds=stylize_times, back_to_back=cuda)
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


def _scan_worker(frame: np.ndarray, frames: int) -> int:
    """Every frame's cut test and exposure measurement, as `ShotAnalyses` makes them (one thumbnail for
    both), without the network: CPU work whatever the device. The frames alternate with a copy moved by
    1% of the width, so the motion is undone as in a pan. Frame pairs are measured in worker threads while
    the next frames come: the mean over frames back to back, until all are measured. Prints JSON."""
    import torch

    from ..deflicker import LevelTrack, thumbnail_luma
    from ..shots import CutFinder
    h, w = frame.shape[:2]
    moved = np.ascontiguousarray(np.roll(frame, max(1, w // 100), axis=1))

    def scan(count: int) -> float:
        t0 = time.perf_counter()
        finder, track = CutFinder(), LevelTrack()
        for k in range(count):
            f = moved if k % 2 else frame
            thumb = thumbnail_luma(f)
            finder.add(f, thumb)
            track.add(f, thumb)
        track.corrections()
        return time.perf_counter() - t0
    rss_loaded = peak_rss_mib()
    first = scan(4)
    seconds = [scan(frames) / frames] * frames
    print(json.dumps({"what": "scan", "size": [w, h], "device": "cpu", "threads": torch.get_num_threads(),
                      "seconds": seconds, "fps": 1 / seconds[0], "rss_loaded_mib": rss_loaded,
                      "rss_peak_mib": peak_rss_mib(), "first_frame_s": first}), flush=True)
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

    from ..acceleration import CapturedPass, compile_mode, compile_pass
    from ..engine import Engine, slot_weights
    from ..imageops import to_tensor
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
                        step = compile_pass(forward, engine.compiler.freeze)  # as the engine would
                    elif mode == "compile_graph":
                        step = CapturedPass(compile_pass(forward, engine.compiler.freeze), x, keep=None)
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

    from ..video import open_source
    with open_source(ASSETS / "bigbuckbunny.mp4") as src:
        img = src.read(min(60, src.info.count - 1))
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_CUBIC)


def _run_json(cmd: list[str], threads: int | None, timeout: float | None = None) -> dict:
    res = subprocess.run(cmd, capture_output=True, text=True, env=_worker_env(threads), timeout=timeout)
    if res.returncode != 0:
        raise VstError(res.stderr.strip()[-600:] or f"exit code {res.returncode}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _speed_command(what: str, size: tuple[int, int], device: str, extra: list[str], frames: int, model: str,
                   batch: int, folder: Path, threads: int | None) -> list[str]:
    """The `_speed` worker's command line; its features file (written by analyze, read by stylize)
    lies in `folder`, one per device, size and model."""
    w, h = size
    cmd = [sys.executable, "-m", "vst_engine.bench", "_speed", what, f"{w}x{h}", device, *extra,
           "--frames", str(frames), "--model", model, "--batch", str(batch),
           "--features", str(folder / f"{device}_{w}x{h}_{Path(model).stem}.vstf")]
    return cmd + (["--threads", str(threads)] if threads else [])


def retime_cpu_rows(args, rows: list[dict], indices: Sequence[int]) -> None:
    """Time these CPU rows (of `speed`) again, each in a fresh process, and keep the faster timing:
    this shared machine's speed moved by 20-40% between processes running the same code. A row gets
    "timed_again_fps", the slower timing's frames/s."""
    with tempfile.TemporaryDirectory(prefix="vst-bench-retime-") as td:
        for i in indices:
            row = rows[i]
            size, model = tuple(row["size"]), "lite" if row.get("arch") == "lite" else args.model
            extra = ["--add-own-colours"] if row.get("added") else ["--own-colours"] if row.get("own_colours") else []
            log(f"speed cpu {size[0]}x{size[1]}: {row['what']} {' '.join(extra)} model {model}, timed again: "
                f"{row['fps']:.3f} frames/s looked slower than the previous run")
            try:
                if row["what"] == "stylize":  # reads the features of an analysis of the frame
                    _run_json(_speed_command("analyze", size, "cpu", [], 1, model, 0, Path(td), args.threads),
                              args.threads)
                again = _run_json(_speed_command(row["what"], size, "cpu", extra, len(row["seconds"]), model, 0,
                                                 Path(td), args.threads), args.threads)
            except (VstError, subprocess.TimeoutExpired) as exc:
                log(f"  failed: {str(exc)[-300:]}")
                continue
            slower, faster = sorted((row, again), key=lambda r: r["fps"])
            rows[i] = {**faster, "timed_again_fps": slower["fps"]}


def speed(args, status: dict) -> dict:
    """Speed and memory of analysis, stylization and the peer per size and device (fresh processes)."""
    import torch
    devices = ["cpu"] if args.device in ("cpu", "auto") else []
    if torch.cuda.is_available() and not args.no_cuda and args.device in ("cpu", "auto", "cuda"):
        devices.append("cuda")
    if args.device == "cuda" and "cuda" not in devices:
        raise VstError("--device cuda but no CUDA GPU is available to PyTorch")
    from ..engine import AUTO_BATCH_PIXELS
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
                    cmd = _speed_command(what, (w, h), dev, extra, n, model, batch, Path(td), args.threads)
                    try:
                        rows.append(_run_json(cmd, args.threads))
                    except (VstError, subprocess.TimeoutExpired) as exc:
                        rows.append({"what": what, "size": [w, h], "device": dev, "error": str(exc)[-300:]})
                        log(f"  failed: {str(exc)[-300:]}")
                        break
        # What reading every frame adds (`--deflicker`, `--per-shot`): CPU work, timed once per size.
        for w, h in args.sizes:
            n = max(args.speed_frames or 0, 30)
            log(f"speed {w}x{h}: scan (cut test and exposure measurement of every frame, {n} frames)")
            try:
                rows.append(_run_json(_speed_command("scan", (w, h), "cpu", [], n, args.model, 0, Path(td),
                                                     args.threads), args.threads))
            except (VstError, subprocess.TimeoutExpired) as exc:
                rows.append({"what": "scan", "size": [w, h], "device": "cpu", "error": str(exc)[-300:]})
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
                      interval: int = ANALYSIS_INTERVAL, scan_s_per_frame: float = 0.0) -> float:
    """Share of the analysis pass in the total time of a clip of `clip_frames` frames; `scan_s_per_frame`:
    what the analysis does to every frame besides (`--deflicker`, `--per-shot`)."""
    from ..features import sample_indices
    k = len(sample_indices(0, clip_frames, interval))
    a, s = analysis_s_per_frame * k + scan_s_per_frame * clip_frames, stylize_s_per_frame * clip_frames
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
                scan = _speed_lookup(s["rows"], "scan", (w, h), "cpu")  # the CPU's work on any device
                f_scan = analysis_fraction(sa, sz, 132, scan_s_per_frame=float(np.mean(scan["seconds"]) / np.mean(
                    z["seconds"]))) if scan else None
                label = dev + _model_tag(arch)
                ov_rows.append([label, f"{w}x{h}", f"{f132 * 100:.1f}%", f"{f132_16 * 100:.1f}%", f"{flim * 100:.1f}%"] +
                               [f"{f * 100:.1f}%" if f is not None else "-" for f in (f_own, f_added, f_scan)])
                ov_vals.append((label, (w, h), f132))
    s["overhead_rows"], s["overhead_values"] = ov_rows, ov_vals


def _model_tag(arch: str) -> str:
    """" (lite model)" after a speed row's label where the lite network was timed, else nothing."""
    return " (lite model)" if arch == "lite" else ""


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
