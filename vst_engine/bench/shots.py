"""The shots table: the quality table's excerpts joined by cuts into one clip, stylized with global
features pooled over all its shots, with each shot's own (`--per-shot`) and with per-frame statistics."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .common import StyleSpec

SHOT_FRAMES = 12  # frames of each excerpt in the joined clip
SHOT_METHODS = (("ours", "ours, global features pooled over the shots"),
                ("ours_pershot", "ours, global features, --per-shot"),
                ("ours_noglobal", "ours, --no-global"))


def joined_shots(excerpts: Sequence[np.ndarray], count: int = SHOT_FRAMES) -> list[np.ndarray]:
    """The first `count` frames of each excerpt, at the first one's size (a cut between each)."""
    h, w = excerpts[0].shape[1:3]
    return [np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in e[:count]]) for e in excerpts]


def shots_table(engine, excerpts: dict[str, np.ndarray], style: StyleSpec, vgg_frames: int, encoder) -> dict:
    """Each shot's losses by each method (the temporal loss within the shot), and the cuts `--per-shot`
    finds in the joined clip against the true ones."""
    from ..shots import CutFinder
    from .common import INTERVALS
    from .quality import clip_flows, measure, run_ours
    shots = joined_shots(list(excerpts.values()))
    joined = np.concatenate(shots)
    bounds = np.cumsum([0] + [len(s) for s in shots])
    intervals = [i for i in INTERVALS if i < min(len(s) for s in shots)]
    outputs = {"ours": run_ours(engine, joined, style, True),
               "ours_noglobal": run_ours(engine, joined, style, False)}
    each = [run_ours(engine, s, style, True) for s in shots]
    # As `vst stylize --per-shot` does: each shot analysed on its own, the times added up.
    outputs["ours_pershot"] = (np.concatenate([out for out, _ in each]),
                               {k: sum(t[k] for _, t in each) for k in each[0][1]})
    clips = []
    for k, (name, shot) in enumerate(zip(excerpts, shots)):
        flows = clip_flows(shot, intervals)
        runs = []
        for method, _ in SHOT_METHODS:
            out, times = outputs[method]
            runs.append({"method": method, "style": style.name, **times,
                         **measure(shot, out[bounds[k]:bounds[k + 1]], flows, intervals, style.path, vgg_frames,
                                   encoder)})
        clips.append({"clip": name, "size": [shot.shape[2], shot.shape[1]], "frames": len(shot), "runs": runs})
    finder = CutFinder()
    for frame in joined:
        finder.add(frame)
    return {"intervals": intervals, "clips": clips, "style": style.name, "cuts": finder.cuts,
            "true_cuts": [int(b) for b in bounds[1:-1]]}


def summarize_shots(table: dict) -> dict:
    """The shots table's rows: means over the shots per method."""
    from .quality import aggregate
    table["labels"] = [list(m) for m in SHOT_METHODS]
    table["aggregate"] = {key: aggregate(table["clips"], key, table["intervals"]) for key, _ in SHOT_METHODS}
    return table
