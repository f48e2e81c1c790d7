"""The exposure-flicker table: the clips with a random exposure flicker added, stylized with global
features, with the deflicker (`--deflicker`) and with per-frame statistics."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .common import StyleSpec

FLICKER_STD = 0.04  # a time-lapse's exposure: gains with 4% standard deviation, frame by frame
FLICKER_SEED = 0
FLICKER_METHODS = (("input", "input clip with the flicker, unstylized"),
                   ("ours", "ours, global features"),
                   ("ours_deflicker", "ours, global features, --deflicker"),
                   ("ours_noglobal", "ours, --no-global"),
                   ("ours_deflicker_steady", "ours, global features, --deflicker, on the clip without the flicker"))


def flickering(frames: np.ndarray, std: float = FLICKER_STD, seed: int = FLICKER_SEED) -> np.ndarray:
    """The frames with a random gain each (the same gains on every run)."""
    gains = 1.0 + std * np.random.default_rng(seed).standard_normal(len(frames))
    return np.stack([np.clip(f * g, 0, 255).round().astype(np.uint8) for f, g in zip(frames.astype(np.float32), gains)])


def flicker_runs(engine, frames: np.ndarray, flows, intervals: Sequence[int], style: StyleSpec) -> list[dict]:
    """Each method's temporal loss on the flickering excerpt, and the deflicker's on the clean one (what it
    costs footage that does not flicker). The flows and the photometric check are the clean excerpt's:
    the flicker moves nothing, and it should not change which pixels count."""
    from ..deflicker import even_out
    from .quality import measure, run_ours
    flicker = flickering(frames)
    runs = [{"method": "input", "style": None, **measure(frames, flicker, flows, intervals, None, 0)}]
    # As `vst stylize --deflicker` does: the analysis reads the frames as they are, and stylization
    # takes them corrected.
    evened, steady = np.stack(even_out(flicker)), np.stack(even_out(frames))
    for method, inputs, analysed, use_global in (
            ("ours", flicker, flicker, True), ("ours_deflicker", evened, flicker, True),
            ("ours_noglobal", flicker, flicker, False), ("ours_deflicker_steady", steady, frames, True)):
        out, times = run_ours(engine, inputs, style, use_global, analysed=analysed)
        runs.append({"method": method, "style": style.name, **times,
                     **measure(frames, out, flows, intervals, None, 0)})
    return runs


def summarize_flicker(table: dict, quality: dict) -> dict:
    """The flicker table's rows: means per method, and ours on the same clips and style without the
    flicker ("steady", from the quality table) as the reference."""
    from .quality import aggregate
    table["labels"] = [list(m) for m in FLICKER_METHODS]
    table["aggregate"] = {key: aggregate(table["clips"], key, table["intervals"]) for key, _ in FLICKER_METHODS}
    steady = [dict(c, runs=[r for r in c["runs"] if r["method"] == "ours" and r["style"] == table["style"]])
              for c in quality["clips"]]
    table["steady"] = aggregate(steady, "ours", table["intervals"])
    return table
