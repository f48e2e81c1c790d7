"""The gallery (docs/gallery.png): real clips x styles, with the quality bar measured per cell.

Each clip's excerpt is analysed (global features) and its middle frame stylized. The clips are
never seen in training (training uses still photos); two of the styles are held out. Per cell,
the style loss of the stylized frame is divided by that of the unstylized frame (the issue's
quality bar: at most 0.4) and the content loss is reported.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..features import sample_indices
from ..atomic import atomic_write_bytes, atomic_write_text

PRESETS = Path(__file__).resolve().parents[2] / "blender_addon" / "video_style_transfer" / "presets"
CLIPS = ("vtest", "bikes", "band", "bigbuckbunny")
# bench style names, or preset files (trained on)
STYLES = ("starry_night", "great_wave", "night_cafe", "church_auvers",
          str(PRESETS / "kandinsky_composition_viii.jpg"), str(PRESETS / "van_gogh_cafe_terrace_at_night.jpg"))
CELL = 240  # pixels on the longer side of a gallery cell
QUALITY_BAR = 0.4


def _cell(img: np.ndarray, label: str) -> np.ndarray:
    """Fit into CELL x CELL*9/16 on white, with a caption strip below."""
    ch, cw = round(CELL * 9 / 16), CELL
    h, w = img.shape[:2]
    s = min(cw / w, ch / h)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    canvas = np.full((ch + 22, cw, 3), 255, np.uint8)
    y, x = (ch - small.shape[0]) // 2, (cw - small.shape[1]) // 2
    canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
    cv2.putText(canvas, label[:34], (4, ch + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def compose(rows: Sequence[Sequence[tuple[np.ndarray, str]]]) -> np.ndarray:
    """A grid of captioned cells (all rows the same length), 4 px white gutters."""
    gut = 4
    lines = []
    for row in rows:
        cells = [_cell(img, label) for img, label in row]
        pad = np.full((cells[0].shape[0], gut, 3), 255, np.uint8)
        lines.append(np.concatenate([c for cell in cells for c in (cell, pad)][:-1], axis=1))
    hpad = np.full((gut, lines[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([p for line in lines for p in (line, hpad)][:-1], axis=0)


def make_gallery(model: str, out_dir: Path, clips: Sequence[str] = CLIPS, styles: Sequence[str] = STYLES,
                 frames: int = 17, max_side: int = 320, cache: Path = Path(".cache/bench")) -> dict:
    from ..bench.clips import fetch_clips, load_excerpt, resolve_styles
    from ..engine import Engine
    from ..evaluate import FeatureLosses
    from ..vgg import VGGEncoder
    engine = Engine(model=model, device="cpu")
    specs, skipped = resolve_styles(styles)
    if skipped:
        raise SystemExit("styles missing: " + "; ".join(skipped))
    encoder = VGGEncoder()
    header = [(np.full((90, 160, 3), 255, np.uint8), "input (middle frame)")]
    header += [(cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2RGB),
                f"{s.name}{' (held out)' if s.held_out else ''}") for s in specs]
    rows, cells = [header], []
    for clip in fetch_clips(clips, cache):
        x = load_excerpt(clip["path"], clip.get("start", 0), frames, max_side)
        mid = len(x) // 2
        row = [(x[mid], clip["name"])]
        picks = sample_indices(0, len(x), 8)
        for s in specs:
            st = engine.load_styles([s.path])
            feats = engine.analyze((x[i] for i in picks), st, sampled=picks, frame_range=(0, len(x)))
            y = engine.stylize(x[mid], feats)
            acc = FeatureLosses(str(s.path), None, "cpu", encoder=encoder)
            acc.add(x[mid], y)
            r = acc.result()
            cells.append({"clip": clip["name"], "style": s.name, "style_held_out": bool(s.held_out),
                          "style_loss_ratio": r["style_loss_ratio"], "content_loss": r["content_loss"]})
            row.append((y, f"ratio {r['style_loss_ratio']:.2f}"))
        rows.append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(compose(rows), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("cannot encode the gallery as PNG")
    atomic_write_bytes(out_dir / "gallery.png", png.tobytes())
    meta = engine.model.meta
    summary = {"model": model, "model_id": engine.model.model_id, "steps": meta.get("steps"),
               "frames": frames, "max_side": max_side, "cells": cells,
               "held_out_ratio_mean": float(np.mean([c["style_loss_ratio"] for c in cells if c["style_held_out"]]
                                                    or [np.nan])),
               "ratio_mean": float(np.mean([c["style_loss_ratio"] for c in cells])),
               "cells_meeting_bar": sum(c["style_loss_ratio"] <= QUALITY_BAR for c in cells)}
    atomic_write_text(out_dir / "gallery.json", json.dumps(summary, indent=1) + "\n")
    return summary
