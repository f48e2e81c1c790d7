"""BENCHMARKS.md, its tables and plots, from a run's results."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import (
    INTERVALS, TARGET_4K_GPU_MIB, TARGET_ANALYSIS_FRACTION, TARGET_CPU_FPS_360P, TARGET_GPU_FPS_1080P, _num
)
from .quality import aggregate
from .speed import _model_tag, _speed_lookup


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


def _what_label(row: dict) -> str:
    """"stylize, batch 4, compiled + CUDA graphs" and the like for the speed table."""
    parts = [row["what"] + _model_tag(row.get("arch", "paper"))]
    if row["what"] == "scan":
        parts.append("every frame's cut test and exposure measurement (`--deflicker`, `--per-shot`), no network")
    if row.get("note"):
        parts.append(row["note"])
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


def comparison_section(cmp: dict) -> list[str]:
    """BENCHMARKS.md lines: the regressions and improvements beyond the tolerances, and the rest counted."""
    changes = cmp["changes"]
    L = ["## Against a previous run", "",
         f"Compared with `{cmp['previous']}` ({cmp.get('date') or 'undated'}). Tolerances: quality "
         f"{cmp['quality_tolerance']:.0%}, speed {cmp['speed_tolerance']:.0%}, peak memory "
         f"{cmp['memory_tolerance']['rss_peak_mib']:.0%} (RSS) and {cmp['memory_tolerance']['cuda_peak_mib']:.0%} "
         "(CUDA), relative. The peer's and the input's rows are reported, never counted: the peer's speed "
         "shows how fast the machine ran this time.", ""]
    L += [f"- {n}" for n in cmp["notes"]] + ([""] if cmp["notes"] else [])
    moved = [c for c in changes if c["worse"] or c["better"]]
    if moved:
        rows = [[c["measure"], f"{c['before']:.4g}", f"{c['after']:.4g}", f"{c['relative']:+.1%}",
                 ("**worse**" if c["counts"] else "worse (not ours)") if c["worse"] else "better"]
                for c in sorted(moved, key=lambda c: not (c["worse"] and c["counts"]))]  # stable: table order
        L += [markdown_table(["measure", "previous run", "this run", "change", ""], rows), ""]
    control = [c for c in changes if not c["counts"] and c["measure"].endswith("frames/s")]
    if control:
        L += ["The peer's speed against the previous run, a gauge of the machine's: " +
              ", ".join(f"{c['measure'].split(': ')[0]} {c['relative']:+.0%}" for c in control) + ".", ""]
    regressions = len(cmp["regressions"])
    L += [f"{len(changes)} measures compared: {regressions} worse beyond the tolerance"
          f"{' (`bench` exits with status 3)' if regressions else ''}, "
          f"{sum(c['better'] for c in changes)} better, the rest within it.", ""]
    return L


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
          f"inference precision on the CPU: {env.get('cpu_precision', 'fp32')} (bf16 where the CPU has AMX, int8 convolutions where it has VNNI and no AMX); "
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
    if res.get("comparison"):
        L += comparison_section(res["comparison"])

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

    if res.get("flicker"):
        L += flicker_section(res["flicker"], args["frames"])
    if res.get("shots"):
        L += shots_section(res["shots"])
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
                                  "132-frame clip, own colours added later",
                                  "132-frame clip, reading every frame (`--deflicker`, `--per-shot`)"],
                                 [r + ["-"] * (8 - len(r)) for r in s["overhead_rows"]]), ""]
            L += ["At full strength (the default) `vst stylize`, the Blender add-on and the OpenFX plugin's "
                  "render-time analysis analyse only what full strength needs (the first columns). With a strength "
                  "below 1 anywhere, and in `vst analyze` and OpenFX *Analyze clip* (reusable for any strength), the "
                  "analysis includes the clip's own colours (*with own colours*). The hosts add them to a "
                  "full-strength analysis once a strength below 1 is keyed, analysing only them (*added later*: both "
                  "passes together). With `--deflicker` or `--per-shot` (the hosts' Deflicker and Per Shot) the "
                  "full-strength analysis also reads every frame for its exposure and the cut test: the scan rows, "
                  "CPU work on any device, without the decoding (*reading every frame*).", ""]
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


def flicker_section(fq: dict, frames: int) -> list[str]:
    """The exposure-flicker table: ours on the clips with a flickering exposure, and without it."""
    intervals = fq["intervals"]
    L = ["## Exposure flicker", "",
         f"The same {len(fq['clips'])} excerpts ({frames} frames) with a random exposure: each frame's pixels "
         f"multiplied by a gain drawn with a standard deviation of {fq['std']:.0%} (the same gains on every run), as "
         "in a time-lapse. Style "
         f"{fq['style']}. Temporal loss as above, with the flow and the photometric check of the clip without the "
         "flicker. `--deflicker` (README) measures in the analysis how each frame's exposure and black level "
         "changed from the frame before (on thumbnails with the motion undone) and evens them out before "
         "stylization; the first row is ours on the clip without the flicker, the last ours with `--deflicker` on "
         "it (what the deflicker costs footage that does not flicker).", ""]
    rows = [["ours, global features, no flicker (reference)",
             *[_num(fq["steady"]["temporal"].get(str(i))) if fq.get("steady") else "-" for i in intervals]]]
    for key, label in fq["labels"]:
        a = fq["aggregate"].get(key)
        rows.append([label, *[_num(a["temporal"].get(str(i))) if a else "-" for i in intervals]])
    L += [markdown_table(["method", *[f"temporal i={i}" for i in intervals]], rows), ""]
    return L


def shots_section(sq: dict) -> list[str]:
    """The shots table: ours on the excerpts joined by cuts, global features pooled over the shots or each
    shot's own."""
    intervals, clips = sq["intervals"], sq["clips"]
    w, h = clips[0]["size"]
    found = "`--per-shot` found its cuts and no others" if sq["cuts"] == sq["true_cuts"] else \
        f"`--per-shot` found cuts at frames {', '.join(map(str, sq['cuts'])) or 'none'} (the true ones: " \
        f"{', '.join(map(str, sq['true_cuts']))})"
    L = ["## Shots", "",
         f"The first {clips[0]['frames']} frames of each of the {len(clips)} excerpts, at {w}x{h}, joined into one "
         f"clip of {len(clips)} shots; {found}. Style {sq['style']}. Losses within each shot, means over the shots. "
         "With global features pooled over all the shots, each shot gets the statistics of all of them and is "
         "stylized less (a higher style loss, a lower content loss, and with it a lower temporal loss); "
         "`--per-shot` (README) analyses each shot on its own.", ""]
    header = ["method", "style loss", "content loss", *[f"temporal i={i}" for i in intervals]]
    rows = []
    for key, label in sq["labels"]:
        a = sq["aggregate"].get(key)
        rows.append([label, *([_num(a["style_loss"]), _num(a["content_loss"]),
                               *[_num(a["temporal"].get(str(i))) for i in intervals]] if a else
                              ["-"] * (2 + len(intervals)))])
    L += [markdown_table(header, rows), ""]
    per_shot = [[f"{c['clip']}", *[_num(next(r["style_loss"] for r in c["runs"] if r["method"] == key))
                                   for key, _ in sq["labels"]]] for c in clips]
    L += [markdown_table(["shot: style loss", *[label for _, label in sq["labels"]]], per_shot), ""]
    return L


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
