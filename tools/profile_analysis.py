"""Where a full-strength analysed frame's time goes, per phase and per kernel: a device-lease tool.

`python3 tools/profile_analysis.py WxH DEVICE OUT_DIR [--eager] [--no-graphs] [--own-colours]
[--stats plain]` times 10 analysed frames (after warm-up) as a whole (on CUDA replayed from graphs
unless --no-graphs; with --own-colours every 2nd also renders the clip's own colours) and by phase
(upload, content pass, record pass, folding the records into the clip's sums; compiled or eager,
never replayed), each phase synchronized, then writes torch.profiler's table of three frames to
OUT_DIR/profile_analysis_<mode>_<size>.txt and prints one JSON line. `--stats plain` takes
half-precision statistics as compiled CPU passes take them (`norms.plain_reductions`: float32 sums
and the range of x in one reduction) instead of the group norm: an A/B of the two on a GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vst_engine import norms  # noqa: E402
from vst_engine.bench.common import ASSETS, parse_size
from vst_engine.bench.speed import bench_frame, profile_table  # noqa: E402
from vst_engine.engine import MIN_PADDED, MULTIPLE, Engine  # noqa: E402
from vst_engine.imageops import pad_to_multiple  # noqa: E402
from vst_engine.network import StyleTargets  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("size")
    ap.add_argument("device")
    ap.add_argument("out", type=Path)
    ap.add_argument("--eager", action="store_true")
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--model", default="default")
    ap.add_argument("--own-colours", action="store_true", help="the whole frames also render the clip's own colours")
    ap.add_argument("--stats", choices=("fused", "plain"), default="fused")
    ap.add_argument("--frames", type=int, default=10)
    a = ap.parse_args()
    w, h = parse_size(a.size)
    frame = bench_frame(w, h)
    if a.stats == "plain":
        norms.plain_reductions = lambda x: x.dtype == torch.float32 or torch.compiler.is_compiling()
    engine = Engine(model=a.model, device=a.device, compile=not a.eager, cuda_graphs=not a.no_graphs)
    cuda = engine.device.type == "cuda"
    styles = engine.load_styles([ASSETS / "starry_night.jpg"])
    run = engine.analysis(styles, own_colours=a.own_colours, batch=1)  # a frame a pass: each add is timed

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def clock(fn) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0
    first = clock(lambda: run.add(frame))
    whole = [clock(lambda: run.add(frame)) for _ in range(a.frames)]
    phases: dict[str, list[float]] = {"upload": [], "content": [], "record": [], "fold": []}
    slot_targets = StyleTargets.cat([styles.targets.pick(0), styles.targets]).pick(1)  # as `_analyze_frames`
    with torch.no_grad():
        for _ in range(a.frames):
            box: dict = {}
            # the upload as `_analyze_frames` makes it (pinned and asynchronous on CUDA)
            phases["upload"].append(clock(lambda: box.update(
                x=pad_to_multiple(engine.transfers.upload([frame]), MULTIPLE, MIN_PADDED)[0])))
            phases["content"].append(clock(lambda: box.update(g=engine.compiler(engine._content, box["x"]))))
            phases["record"].append(clock(lambda: box.update(
                r=engine.compiler(engine._record_pass, box["g"], slot_targets))))
            phases["fold"].append(clock(lambda: run.acc.add_pass(1, *box["r"], primary=True)))
    med = {k: float(np.median(v)) * 1e3 for k, v in phases.items()}
    mode = ("eager" if a.eager else "compiled") + ("_graphs" if engine.analysis_graphs.active else "") + f"_{a.stats}"
    a.out.mkdir(parents=True, exist_ok=True)
    table = profile_table(lambda: run.add(frame), cuda)
    (a.out / f"profile_analysis_{mode}_{w}x{h}.txt").write_text(table)
    print(json.dumps({"size": [w, h], "mode": mode, "acceleration": engine.acceleration, "first_s": first,
                      "frame_ms_median": float(np.median(whole)) * 1e3, "phase_ms_median": med,
                      "peak_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
