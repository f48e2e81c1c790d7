"""Consistency guard: global feature sharing must make a moving clip steadier than per-frame statistics.

A synthetic clip with known motion: a textured canvas whose brightness and contrast grow from left
to right, seen through a window that moves 8 px to the right per frame, so the content entering
and leaving changes every frame's own statistics; on top, a per-frame brightness offset and sensor
noise. The seeded untrained network (the engine's test model) stylizes it with global features
(the default) and with per-frame statistics (`--no-global`), and the temporal loss of
`vst_engine.evaluate` is computed with the TRUE flow (the known translation) instead of DIS. The
shipped networks (default and lite) are held to the same motion without the brightness offset, which
trained networks carry through, and with it once deflickered (see SHIPPED_MAX_RATIO).

Two choices keep the comparison about the statistics and nothing else:

* Motion by whole multiples of 8 px: the encoder pools three times, so such a shift moves every
  feature map by whole cells and the network is shift-equivariant away from the frame edges.
* Pixels within EDGE px of the left/right edge (in either frame of a pair) are left out with
  the `masks` argument: convolutions there see the reflect padding, which does not move with the
  content, so both modes change there alike (measured on a 256x128 version: mean absolute error
  0.28 in the outer 16 columns for both; with global features it is below 0.01 from 32 px in,
  with per-frame statistics 0.01-0.04 everywhere). Top and bottom edges stay in: the motion is
  horizontal, so they move with the content.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vst_engine import sample_indices
from vst_engine.deflicker import even_out
from vst_engine.engine import Engine
from vst_engine.evaluate import temporal_stats
from vst_engine.features import StyleRef
from vst_engine.hardware import cpu_has_amx

WIDTH, HEIGHT, FRAMES = 256, 64, 5
SHIFT = 8       # px per frame, to the right (content moves left)
EDGE = 48       # px kept away from the left and right edges
INTERVALS = (1, 2, 4)

# Measured (torch 2.13 CPU, seeded untrained model, one thread, 2026-11-25), temporal loss:
#   interval              1       2       4     mean
#   default          0.0399  0.0309  0.0359  0.0356   (global features)
#   no-global        0.0658  0.0765  0.0804  0.0742   (per-frame statistics)
#   ratio             0.607   0.404   0.446   0.479
#   input clip       0.0131  0.0057  0.0057           (exposure flicker and grain only)
#   ratio in bf16     0.617   0.416   0.454           (2-core AMX CPU)
# The bounds leave headroom over the measured ratios.
MAX_RATIO_EACH = 0.8   # at every interval
MAX_RATIO_MEAN = 0.7   # mean over the intervals


def canvas(rng: np.random.Generator) -> np.ndarray:
    import cv2
    cw, ch = WIDTH + SHIFT * FRAMES, HEIGHT
    noise = rng.normal(0.0, 1.0, (ch // 4 + 1, cw // 4 + 1, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(cv2.resize(noise, (cw, ch), interpolation=cv2.INTER_CUBIC), (0, 0), 1.0)
    ramp = (np.arange(cw, dtype=np.float32) / cw)[None, :, None]
    base = 70.0 + 120.0 * ramp * np.array([1.0, 0.7, 0.4], np.float32)   # brighter and warmer to the right
    contrast = 10.0 + 70.0 * ramp                                          # and more contrasted
    return np.clip(base + contrast * tex, 0, 255)


def synthetic_clip(exposure: float = 1.5) -> list[np.ndarray]:
    """Frame t shows the canvas from column SHIFT * t: frame_t(p) = canvas(p + (SHIFT * t, 0)), its
    exposure +-`exposure` grey levels on odd and even frames."""
    c = canvas(np.random.default_rng(0))
    frames = []
    for t in range(FRAMES):
        window = c[:, SHIFT * t: SHIFT * t + WIDTH]
        offset = exposure if t % 2 else -exposure  # a flickering exposure (well within the metric's 10/255 check)
        grain = np.random.default_rng(100 + t).normal(0.0, 1.0, window.shape)
        frames.append(np.clip(window + offset + grain, 0, 255).round().astype(np.uint8))
    return frames


def true_flows_and_masks():
    """Flow from frame n-i to n is (-SHIFT * i, 0) everywhere (and the opposite one back); the mask
    keeps pixels p of frame n-i with p and p + flow at least EDGE px from the left/right edges."""
    flows, masks = {}, {}
    cols = np.arange(WIDTH)
    for n in range(FRAMES):
        for i in INTERVALS:
            if n - i < 0:
                continue
            fwd = np.zeros((HEIGHT, WIDTH, 2), np.float32)
            fwd[..., 0] = -SHIFT * i
            flows[(n - i, n)], flows[(n, n - i)] = fwd, -fwd
            ok = (cols >= EDGE + SHIFT * i) & (cols < WIDTH - EDGE)
            masks[(n - i, n)] = np.broadcast_to(ok[None, :], (HEIGHT, WIDTH))
    return flows, masks


def style_image() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64]
    stripes = ((x + y) // 6) % 2 == 0
    return np.where(stripes[..., None], [220, 30, 40], [30, 40, 200]).astype(np.uint8)


def losses(frames, outputs) -> dict[int, float]:
    flows, masks = true_flows_and_masks()
    stats = temporal_stats(zip(frames, outputs), INTERVALS, flows=flows, masks=masks)
    for i in INTERVALS:
        assert stats[i]["empty_pairs"] == 0 and stats[i]["coverage"] > 0.3, stats[i]
    return {i: stats[i]["loss"] for i in INTERVALS}


def test_true_flow_aligns_the_input():
    """The metric with the known flow: only the exposure flicker (3/255 between odd and even frames)
    and the grain remain."""
    frames = synthetic_clip()
    loss = losses(frames, frames)
    assert 0.002 < loss[2] < 0.01 and 0.002 < loss[4] < 0.01  # same exposure: grain only
    assert loss[1] > loss[2] and loss[1] < 0.02


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_global_features_are_steadier_than_per_frame_statistics(engine, precision):
    if precision == "bf16":  # the engine's default on CPUs with AMX
        if not cpu_has_amx():
            pytest.skip("this CPU has no AMX: the engine computes in fp32 here")
        engine = Engine(model="untrained", device="cpu", precision="auto")
        assert engine.precision == "bf16"
    frames = synthetic_clip()
    styles = engine.style_set([StyleRef("stripes", "0")], [style_image()])
    picks = sample_indices(0, FRAMES, 8)
    feats = engine.analyze((frames[k] for k in picks), styles, interval=8, sampled=picks,
                           frame_range=(0, FRAMES))
    default = losses(frames, [engine.stylize(f, feats) for f in frames])
    no_global = losses(frames, [engine.stylize(f, styles) for f in frames])
    for i in INTERVALS:
        assert default[i] < MAX_RATIO_EACH * no_global[i], (i, default, no_global)
    assert np.mean(list(default.values())) < MAX_RATIO_MEAN * np.mean(list(no_global.values())), (default, no_global)


# The shipped networks on the same motion without the exposure flicker (grain only), temporal loss
# (measured 2026-11-28, fp32; the input's own loss, its grain, is 0.0057-0.0058 at every interval):
#                         i=1     i=2     i=4
#   default, stripes   0.0055  0.0058  0.0050   (per-frame statistics: 0.0338 0.0588 0.1130)
#   default, starry    0.0056  0.0063  0.0064   (0.0147 0.0232 0.0427)
#   lite, stripes      0.0058  0.0057  0.0058   (0.0211 0.0307 0.0498)
#   lite, starry       0.0042  0.0042  0.0042   (0.0128 0.0212 0.0392)
# With global features they add nothing to the input's own change. A flickering exposure (+-1.5
# grey levels) is another matter: global statistics carry it through, scaled by the style's contrast
# over the content's, where per-frame statistics normalize it away. The deflicker (`--deflicker`)
# evens it out first; measured at i = 1 / 2 / 4 with the flicker:
#                         global features            deflickered first
#   default, stripes   0.0580  0.0053  0.0055     0.0054  0.0054  0.0053
#   default, starry    0.0284  0.0063  0.0066     0.0055  0.0062  0.0065
#   lite, stripes      0.0184  0.0054  0.0054     0.0058  0.0055  0.0055
#   lite, starry       0.0210  0.0043  0.0041     0.0044  0.0043  0.0041
# so deflickered, the loss is within 1.05x of the clip's without the flicker at every interval.
SHIPPED_MAX_RATIO = 0.5     # global over per-frame statistics, at every interval (measured at most 0.38)
SHIPPED_MAX_OVER_INPUT = 1.25  # global over the input's own loss (measured at most 1.10)
DEFLICKERED_MAX_OVER_STEADY = 1.15  # deflickered flicker over the same clip without it (at most 1.05)
DEFLICKERED_MAX_OVER_FLICKER = 0.4  # at i = 1, deflickered over not (measured at most 0.32)


@pytest.mark.parametrize("model", ["default", "lite"])
def test_shipped_weights_follow_the_motion_with_global_features(model):
    engine = Engine(model=model, device="cpu")
    frames = synthetic_clip(exposure=0.0)
    flickering = synthetic_clip(exposure=1.5)
    floor = losses(frames, frames)
    picks = sample_indices(0, FRAMES, 8)
    assets = Path(__file__).resolve().parents[1] / "vst_engine" / "assets"

    def stylized(inputs, styles):
        feats = engine.analyze((inputs[k] for k in picks), styles, interval=8, sampled=picks, frame_range=(0, FRAMES))
        return [engine.stylize(f, feats) for f in inputs]

    for styles in (engine.style_set([StyleRef("stripes", "0")], [style_image()]),
                   engine.load_styles([assets / "starry_night.jpg"])):
        default = losses(frames, stylized(frames, styles))
        no_global = losses(frames, [engine.stylize(f, styles) for f in frames])
        flicker = losses(flickering, stylized(flickering, styles))
        evened = losses(flickering, stylized(even_out(flickering), styles))
        for i in INTERVALS:
            assert default[i] < SHIPPED_MAX_RATIO * no_global[i], (styles.refs, i, default, no_global)
            assert default[i] < SHIPPED_MAX_OVER_INPUT * floor[i], (styles.refs, i, default, floor)
            assert evened[i] < DEFLICKERED_MAX_OVER_STEADY * default[i], (styles.refs, i, evened, default)
        assert evened[1] < DEFLICKERED_MAX_OVER_FLICKER * flicker[1], (styles.refs, evened, flicker)


# `--precision int8` on the same clip (measured 2026-11-28, 2-core Xeon with VNNI), temporal loss:
#                         i=1     i=2     i=4      over per-frame statistics
#   default, stripes   0.0154  0.0159  0.0138     0.41  0.26  0.12   (fp32: 0.0055 0.0058 0.0050)
#   default, starry    0.0077  0.0082  0.0084     0.49  0.34  0.19   (fp32: 0.0056 0.0063 0.0064)
# Its rounding noise changes from frame to frame (up to 2.8x fp32's loss here, +2% on the bundled
# clip): why it is asked for, not the default. Global features still beat per-frame statistics.
INT8_MAX_RATIO = 0.6        # int8 global over int8 per-frame statistics (measured at most 0.49)
INT8_MAX_OVER_FP32 = 3.5    # int8 global over fp32 global (measured at most 2.8)


def test_int8_keeps_global_features_steadier_than_per_frame_statistics():
    engines = {p: Engine(model="default", device="cpu", precision=p) for p in ("fp32", "int8")}
    if engines["int8"].precision != "int8":
        pytest.skip("this CPU or PyTorch build has no int8 convolutions")
    frames = synthetic_clip(exposure=0.0)
    picks = sample_indices(0, FRAMES, 8)
    assets = Path(__file__).resolve().parents[1] / "vst_engine" / "assets"
    for name in ("stripes", "starry"):
        loss = {}
        for precision, engine in engines.items():
            styles = engine.style_set([StyleRef("stripes", "0")], [style_image()]) if name == "stripes" \
                else engine.load_styles([assets / "starry_night.jpg"])
            feats = engine.analyze((frames[k] for k in picks), styles, interval=8, sampled=picks,
                                   frame_range=(0, FRAMES))
            loss[precision] = losses(frames, [engine.stylize(f, feats) for f in frames])
            if precision == "int8":
                per_frame = losses(frames, [engine.stylize(f, styles) for f in frames])
        for i in INTERVALS:
            assert loss["int8"][i] < INT8_MAX_RATIO * per_frame[i], (name, i, loss, per_frame)
            assert loss["int8"][i] < INT8_MAX_OVER_FP32 * loss["fp32"][i], (name, i, loss)
        assert loss["int8"][1] > loss["fp32"][1]  # int8 did run
