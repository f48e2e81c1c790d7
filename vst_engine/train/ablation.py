"""The temporal-regularization ablation (in the spirit of the paper's Fig. 10), at CPU scale.

Every variant fine-tunes the same pre-trained checkpoint (the end of the run's pre-training, no
temporal term so far) for the same number of steps, with one temporal term at one weight:
none, L_noise, L_motion or L_comp. Each is then evaluated per frame (`--no-global`, so only
the training differs) on held-out clips and styles: temporal loss against style loss.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_write_text
from ..models import save_model
from ..network import StyleNet
from .loop import TrainConfig, Trainer, load_checkpoint

# (mode, weight): the paper's compound term and its two halves, each at two weights, and a control.
VARIANTS: tuple[tuple[str, float], ...] = (
    ("none", 0.0), ("noise", 20.0), ("noise", 60.0), ("motion", 20.0), ("motion", 60.0),
    ("comp", 20.0), ("comp", 60.0),
)
INTERVALS = (1, 2, 4, 8, 16)


def variant_name(mode: str, weight: float) -> str:
    return "none" if mode == "none" else f"{mode}_w{weight:g}"


def variant_config(base: TrainConfig, mode: str, weight: float, base_ckpt: Path, base_step: int, steps: int,
                   root: Path) -> TrainConfig:
    """The base recipe with one of the paper's temporal terms (no mirrored items) from the first step
    of the fine-tune."""
    return TrainConfig(**{**asdict(base), "out": str(root / variant_name(mode, weight)), "temporal": mode,
                          "w_temporal": weight, "flip_prob": 0.0, "pretrain_steps": 0, "steps": base_step + steps,
                          "init": str(base_ckpt), "ckpt_every": 50, "sample_every": 10 ** 9,
                          "extra": {"init_step": base_step}})


def train_variants(base_run: Path, root: Path, steps: int, names: Sequence[str] | None = None,
                   branch_point: Path | None = None) -> list[str]:
    """Train (or resume) each variant; returns the names trained. Uses the base run's recipe and
    style bank. The branch point is the base run's `ckpt_pretrain.pt`, or `branch_point`: another
    checkpoint, or a model file such as the shipped baseline (pre-trained, no temporal term)."""
    base_ckpt = branch_point or base_run / "ckpt_pretrain.pt"
    if not base_ckpt.is_file():
        raise SystemExit(f"{base_ckpt} not found" if branch_point else
                         f"{base_ckpt} not found: the base run has not finished its pre-training yet")
    base = TrainConfig(**json.loads((base_run / "config.json").read_text()))
    base_step = int(load_checkpoint(base_ckpt)["step"])
    done = []
    for mode, weight in VARIANTS:
        name = variant_name(mode, weight)
        if names and name not in names:
            continue
        cfg = variant_config(base, mode, weight, base_ckpt, base_step, steps, root)
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        bank = out / "style_bank.pt"
        if not bank.exists():  # identical for every variant: share the base run's (355 MB)
            os.symlink((base_run / "style_bank.pt").resolve(), bank)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        print(f"[ablation] {name}: steps {base_step} -> {cfg.steps}", flush=True)
        Trainer(cfg).run()
        done.append(name)
    return done


def export_raw(run: Path, path: Path) -> int:
    """The run's raw weights as a model file (a short fine-tune is too short for the EMA); its step."""
    ck = load_checkpoint(run / "ckpt.pt")
    net = StyleNet()
    net.load_state_dict(ck["net"])
    save_model(net, path, {"steps": int(ck["step"]), "weights": "raw", "note": f"ablation variant {run.name}"})
    return int(ck["step"])


def evaluate_variants(root: Path, clip_names: Sequence[str], style_names: Sequence[str], frames: int,
                      max_side: int, cache: Path) -> list[dict]:
    """Per variant: mean temporal loss per interval, style and content loss over clips x styles."""
    from ..bench.clips import fetch_clips, load_excerpt, resolve_styles
    from ..bench.quality import clip_flows, measure, run_ours
    from ..engine import Engine
    from ..vgg import VGGEncoder
    clips = fetch_clips(clip_names, cache)
    styles, skipped = resolve_styles(style_names)
    if skipped:
        raise SystemExit("styles missing: " + "; ".join(skipped))
    excerpts = [load_excerpt(c["path"], c.get("start", 0), frames, max_side) for c in clips]
    flows = [clip_flows(x, INTERVALS) for x in excerpts]
    encoder = VGGEncoder()
    results = []
    for mode, weight in VARIANTS:
        name = variant_name(mode, weight)
        run = root / name
        if not (run / "ckpt.pt").is_file():
            continue
        model = run / "model.pt"
        step = export_raw(run, model)
        engine = Engine(model=str(model), device="cpu")
        per = []
        for x, fl in zip(excerpts, flows):
            for style in styles:
                out, _ = run_ours(engine, x, style, use_global=False)
                per.append(measure(x, out, fl, INTERVALS, style.path, vgg_frames=4, encoder=encoder))
        results.append({
            "name": name, "mode": mode, "weight": weight, "step": step,
            "temporal": {str(i): float(np.mean([p["temporal"][str(i)] for p in per])) for i in INTERVALS},
            "style_loss": float(np.mean([p["style_loss"] for p in per])),
            "style_loss_ratio": float(np.mean([p["style_loss_ratio"] for p in per])),
            "content_loss": float(np.mean([p["content_loss"] for p in per])),
        })
        print(f"[ablation] {name}: temporal@1 {results[-1]['temporal']['1']:.4f}, "
              f"style {results[-1]['style_loss']:.3f}", flush=True)
    return results


def report(results: list[dict], settings: dict, out_dir: Path) -> None:
    """docs/ablation.json, docs/ablation.md (table) and docs/ablation.png (temporal vs style loss; only
    with matplotlib, the [bench] extra)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "ablation.json", json.dumps({"settings": settings, "results": results}, indent=1) + "\n")
    head = "| variant | weight | " + " | ".join(f"L_temp i={i}" for i in INTERVALS) + " | style loss | style / input | content |"
    rows = [head, "|" + "---|" * (len(INTERVALS) + 5)]
    for r in results:
        rows.append(f"| {r['mode']} | {r['weight']:g} | " + " | ".join(f"{r['temporal'][str(i)]:.4f}" for i in INTERVALS)
                    + f" | {r['style_loss']:.3f} | {r['style_loss_ratio']:.3f} | {r['content_loss']:.3f} |")
    text = ["# Ablation: temporal regularization", "",
            "Generated by `python -m vst_engine.train ablation`. Settings: "
            + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".", "", *rows, ""]
    atomic_write_text(out_dir / "ablation.md", "\n".join(text))
    try:
        import matplotlib
    except ImportError:
        print("[ablation] plot skipped: matplotlib is not installed (pip install '.[bench]')", flush=True)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # Short and long intervals side by side: the terms rank differently over 1 and 16 frames.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    colours = {"none": "black", "noise": "tab:blue", "motion": "tab:orange", "comp": "tab:red"}
    for ax, interval in zip(axes, ("1", "16")):
        for r in results:
            ax.scatter(r["style_loss"], r["temporal"][interval], color=colours[r["mode"]], s=40)
            ax.annotate(r["name"], (r["style_loss"], r["temporal"][interval]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
        ax.set_xlabel("style loss (Eq. 7, lower = closer to the style)")
        ax.set_ylabel(f"temporal loss, i = {interval} (Eq. 10, per-frame mode)")
        ax.grid(alpha=0.3)
    fig.suptitle("Temporal regularizers: stability against stylization")
    fig.tight_layout()
    tmp = out_dir / ".ablation.png.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out_dir / "ablation.png")
