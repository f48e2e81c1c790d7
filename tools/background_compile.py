"""What a host sees of the engine service's first frames of a new size: a device-lease tool.

`python3 tools/background_compile.py WxH DEVICE OUT.json [--foreground]` runs what a host asks of
the service (`Engine(compile_in_background=True)`, as `vst serve` builds it): an analysis of 12
frames, then stylized frames one by one until every pass is compiled and replayed, and 20 more.
Each frame is synchronized and timed. It writes the timeline and prints a summary line: the first
analysed and stylized frames' waits, when the last compilation finished, and the median frame
before and after (stopping after --max-seconds). `--foreground` compiles as `vst stylize` does (each first frame waits).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vst_engine.bench import ASSETS, bench_frame, parse_size  # noqa: E402
from vst_engine.engine import Engine  # noqa: E402

ANALYSED = 12
AFTER = 20


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("size")
    ap.add_argument("device")
    ap.add_argument("out", type=Path)
    ap.add_argument("--foreground", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=200.0, help="stop stylizing after this long")
    a = ap.parse_args()
    w, h = parse_size(a.size)
    frame = bench_frame(w, h)
    start = time.perf_counter()
    engine = Engine(device=a.device, compile=True, compile_in_background=not a.foreground)
    cuda = engine.device.type == "cuda"
    styles = engine.load_styles([ASSETS / "starry_night.jpg"])
    timeline: list[dict] = []

    def timed(kind: str, fn) -> object:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        timeline.append({"kind": kind, "at_s": round(t0 - start, 3), "ms": round((time.perf_counter() - t0) * 1e3, 2),
                         "compiling": engine.compiler.compiling, "eager_runs": engine.compiler.eager_runs})
        return out

    run = engine.analysis(styles, own_colours=False)
    for _ in range(ANALYSED):
        timed("analyse", lambda: run.add(frame))
    feats = run.finish()
    settled_at = None
    while time.perf_counter() - start < a.max_seconds:
        runs = engine.compiler.eager_runs
        timed("stylize", lambda: engine.stylize(frame, feats))
        if settled_at is None and engine.compiler.eager_runs == runs and not engine.compiler.compiling \
                and (engine.graphs.keys() or not engine.graphs.active):
            settled_at = len(timeline)
        if settled_at is not None and len(timeline) >= settled_at + AFTER:
            break
    stylized = [t for t in timeline if t["kind"] == "stylize"]
    settled = settled_at or len(timeline)
    waiting = [t["ms"] for t in timeline[ANALYSED + 1:settled - 1]]  # after the first, before compiled
    summary = {
        "size": [w, h], "device": torch.cuda.get_device_name() if cuda else "cpu",
        "mode": "foreground" if a.foreground else "background",
        "first_analysed_s": timeline[0]["ms"] / 1e3,
        "first_stylized_s": stylized[0]["ms"] / 1e3,
        "compiled_after_s": timeline[settled_at - 1]["at_s"] if settled_at else None,
        "frames_before_compiled": settled - 1,
        "median_ms_while_compiling": statistics.median(waiting) if waiting else None,
        "median_ms_compiled": statistics.median(t["ms"] for t in timeline[-AFTER:]),
        "acceleration": engine.acceleration,
    }
    a.out.write_text(json.dumps({"summary": summary, "timeline": timeline}, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
