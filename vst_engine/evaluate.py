"""Measure a stylized clip: temporal consistency (the paper's Eq. 10) and style/content losses.

Temporal loss, for each frame interval i (default 1, 2, 4, 8, 16) and every frame pair
(n - i, n) of the clip:

* The optical flow F of the INPUT clip from frame n - i to frame n (OpenCV DIS, MEDIUM preset,
  on grey frames; see `flow.py`), and the backward flow B from n to n - i. Where the true flow is
  given (`vst eval --flow`, interval 1), it replaces F, the consistency check is skipped and the
  given occlusion masks remove the pixels they mark.
* Stylized frame n is backward-warped to frame n - i: W(Y_n)(p) = Y_n(p + F(p)) (bilinear).
* Mask O of reliable pixels p: p + F(p) lies inside the frame, F and B pass the
  forward-backward consistency check |F + B(p+F)|^2 < 0.01 (|F|^2 + |B(p+F)|^2) + 0.5, and the
  warped INPUT agrees with input n - i within 10 on the 0..255 scale in every channel
  (max over channels <= 10), which removes flow errors and lighting changes.
* Normalization (fixed here, the paper publishes none): frames are RGB scaled to [0, 1]; the pair's
  error is the root mean square over masked pixels and the three channels,
      e(n, i) = sqrt( sum_{p in O} sum_c (W(Y_n) - Y_{n-i})^2 / (3 |O|) ),
  and the loss at interval i is the mean of e(n, i) over the pairs that have at least one masked
  pixel. So it is an RMS intensity difference on [0, 1]: 0 for a perfectly consistent clip, ~0.1
  for a clip whose brightness jumps by 0.1 between frames. The mean absolute difference (same
  mask, same averaging) is reported alongside as `mae`, and `coverage` is the mean fraction of
  pixels in the mask.

Style loss (Eq. 7), per frame: sum over relu1_1..relu4_1 of the mean over channels of the squared
differences of the channel means and of the channel standard deviations between the frame's VGG
features and the style image's (the convention of the training loss in train/losses.py), averaged
over frames. Content loss (Eq. 8): mean squared difference of relu4_1 features between the
stylized frame and the desaturated input frame, averaged over frames. Frames and the style image are
downscaled so their longer side is at most `max_side` (default 512) before VGG. The style loss
ratio divides the stylized frames' style loss by that of the unstylized input frames.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .atomic import atomic_write_text
from .engine import process_size, resize_frame
from .errors import VstError
from .flow import (MIN_FLOW_SIDE, dis_flow, in_frame, occlusion_mask, read_flo, read_mask, resize_flow, resize_mask,
                   warp)

DEFAULT_INTERVALS = (1, 2, 4, 8, 16)
DEFAULT_INTERVALS_TEXT = ",".join(map(str, DEFAULT_INTERVALS))
PHOTOMETRIC_THRESHOLD = 10.0  # on 0..255: warped input must agree with the target input
VGG_MAX_SIDE = 512
DEFAULT_VGG_FRAMES = 16  # VGG passes are slow on CPU (3 per frame at <= 512 px)
FLOW_METHOD = ("OpenCV DIS optical flow of the input (MEDIUM preset, grey frames), forward-backward "
               "consistency check, out-of-frame and |warped input - input| > 10/255 pixels masked")
TEMPORAL_METRIC = ("RMS over masked pixels and RGB channels of (warped stylized frame n - stylized frame "
                   "n-i), frames in [0, 1], averaged over frame pairs")

Flows = Mapping[tuple[int, int], np.ndarray]


# --------------------------------------------------------------------------- temporal loss


def _as_float(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be H x W x 3 RGB, got shape {frame.shape}")
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) * np.float32(1.0 / 255.0)
    return frame.astype(np.float32, copy=False)


@dataclass
class _IntervalAcc:
    rms: list[float] = field(default_factory=list)
    mae: list[float] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        def mean(v: list[float]) -> float | None:
            return float(np.mean(v)) if v else None
        return {"loss": mean(self.rms), "mae": mean(self.mae), "coverage": mean(self.coverage),
                "pairs": len(self.coverage), "empty_pairs": len(self.coverage) - len(self.rms)}


def _check_intervals(intervals: Iterable[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(i) for i in intervals}))
    if not out or out[0] < 1:
        raise ValueError(f"intervals must be positive integers, got {intervals!r}")
    return out


def temporal_stats(pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                   intervals: Sequence[int] = DEFAULT_INTERVALS, flows: Flows | None = None,
                   masks: Mapping[tuple[int, int], np.ndarray] | None = None) -> dict[int, dict]:
    """Temporal loss with details, streaming over (input frame, stylized frame) pairs.

    Frames are H x W x 3 RGB, uint8 or float in [0, 1]; only the last max(intervals) + 1 frames
    are held in memory. `flows` may supply flows keyed by (a, b) frame positions (0-based) to use
    instead of DIS: flows[(a, b)] is the flow from frame a to frame b. When flows[(n-i, n)] is given
    and flows[(n, n-i)] too, both go through the consistency check; with only the forward one,
    the check is skipped (ground truth) and only out-of-frame pixels are removed. `masks[(a, b)]`
    (boolean, True = reliable) further restricts the mask, e.g. to ground-truth non-occluded
    pixels. The photometric check always applies.

    Returns {interval: {"loss", "mae", "coverage", "pairs", "empty_pairs"}}; loss, mae and
    coverage are None for an interval without frame pairs.
    """
    intervals = _check_intervals(intervals)
    accs = {i: _IntervalAcc() for i in intervals}
    buf: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=intervals[-1] + 1)
    cache: dict[tuple[int, int], np.ndarray] = {}  # DIS flows of this call, by (a, b)
    thr = PHOTOMETRIC_THRESHOLD / 255.0 + 1e-6

    def get_flow(a: int, b: int, fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        if flows is not None and (a, b) in flows:
            return np.asarray(flows[(a, b)], dtype=np.float32)
        if (a, b) not in cache:
            cache[(a, b)] = dis_flow(fa, fb)
        return cache[(a, b)]

    size = None
    for n, (x, y) in enumerate(pairs):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise ValueError(f"frame {n}: input {x.shape} and stylized {y.shape} differ in shape")
        if size is None:
            size = x.shape
        elif x.shape != size:
            raise ValueError(f"frame {n} has shape {x.shape}, the clip {size}")
        buf.append((x, y))
        cache.clear()  # every pair ends at the current frame: earlier flows are not needed again
        xn = yn = None
        for i in intervals:
            if n - i < 0:
                continue
            a = n - i
            xa, ya = buf[-1 - i]
            fwd = get_flow(a, n, xa, x)
            if flows is not None and (a, n) in flows:
                bwd = flows.get((n, a))
                reliable = occlusion_mask(fwd, bwd) if bwd is not None else in_frame(fwd)
            else:
                reliable = occlusion_mask(fwd, get_flow(n, a, x, xa))
            if masks is not None and (a, n) in masks:
                reliable &= np.asarray(masks[(a, n)], dtype=bool)
            if xn is None:
                xn, yn = _as_float(x), _as_float(y)
            xa_f, ya_f = _as_float(xa), _as_float(ya)
            photo = np.abs(warp(xn, fwd) - xa_f).max(axis=2) <= thr
            m = reliable & photo
            count = int(m.sum())
            acc = accs[i]
            acc.coverage.append(count / m.size)
            if count == 0:
                continue
            d = (warp(yn, fwd) - ya_f)[m]  # count x 3
            acc.rms.append(float(np.sqrt(np.mean(d.astype(np.float64) ** 2))))
            acc.mae.append(float(np.mean(np.abs(d), dtype=np.float64)))
    return {i: accs[i].summary() for i in intervals}


def temporal_loss(inputs: Iterable[np.ndarray], outputs: Iterable[np.ndarray],
                  intervals: Sequence[int] = DEFAULT_INTERVALS, flows: Flows | None = None,
                  masks: Mapping[tuple[int, int], np.ndarray] | None = None) -> dict[int, float]:
    """The paper's temporal loss (Eq. 10) per frame interval; see the module docstring.

    `inputs` are the original frames (their flow is used), `outputs` the stylized ones, same
    count and size (H x W x 3 RGB, uint8 or float in [0, 1]). Intervals without any frame pair
    with a non-empty mask are left out of the result. `flows`/`masks`: see `temporal_stats`.
    """
    stats = temporal_stats(zip(inputs, outputs, strict=True), intervals, flows, masks)
    return {i: s["loss"] for i, s in stats.items() if s["loss"] is not None}


# --------------------------------------------------------------------------- style / content


def _uint8(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame
    return (np.clip(frame.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _resolve_device(name: str | None):
    import torch
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not str(name).startswith("cuda:"):
        raise VstError(f"unsupported device '{name}' (use auto, cpu or cuda)")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise VstError("device 'cuda' requested but no CUDA GPU is available to PyTorch")
    return torch.device(name)


@lru_cache(maxsize=2)
def _encoder(device: str):
    """One frozen VGG encoder per device for the process (loading the weights takes seconds)."""
    from .vgg import VGGEncoder
    return VGGEncoder().to(device)


class FeatureLosses:
    """Accumulates the VGG-based losses (Eqs. 7 and 8) frame by frame.

    `add(input_frame, stylized_frame)` updates the content loss and, given a style image, the
    style loss of the stylized frame and of the input frame (for the ratio).
    """

    def __init__(self, style_image: np.ndarray | str | Path | None = None, max_side: int | None = VGG_MAX_SIDE,
                 device: str | None = None, encoder=None) -> None:
        import torch

        from .norms import channel_stats
        self._torch, self._stats = torch, channel_stats
        self.device = _resolve_device(device)
        self.max_side = max_side
        self.encoder = encoder.to(self.device) if encoder is not None else _encoder(str(self.device))
        self.style_stats = None
        if style_image is not None:
            if isinstance(style_image, (str, Path)):
                from .video import read_image
                style_image = read_image(style_image)
            self.style_stats = [self._stats(t) for t in self._features(_uint8(style_image))]
        self.style: list[float] = []
        self.style_input: list[float] = []
        self.content: list[float] = []

    def _tensor(self, frame: np.ndarray):
        from .imageops import to_tensor
        h, w = frame.shape[:2]
        tw, th = process_size(w, h, self.max_side)
        # Multiples of 8 for the encoder: resize to them (no padding, which would bias statistics).
        tw, th = max(8, round(tw / 8) * 8), max(8, round(th / 8) * 8)
        return to_tensor(resize_frame(_uint8(frame), (tw, th)), self.device)

    def _features(self, frame: np.ndarray):
        with self._torch.no_grad():
            return self.encoder(self._tensor(frame))

    def _style_loss(self, feats) -> float:
        total = 0.0
        for f, (sm, ss) in zip(feats, self.style_stats):
            m, s = self._stats(f)
            total += float(((m - sm) ** 2).mean() + ((s - ss) ** 2).mean())
        return total

    def add(self, input_frame: np.ndarray | None, stylized: np.ndarray) -> None:
        from .imageops import desaturate
        out = self._features(stylized)
        if self.style_stats is not None:
            self.style.append(self._style_loss(out))
            if input_frame is not None:
                self.style_input.append(self._style_loss(self._features(input_frame)))
        if input_frame is not None:
            if np.shape(input_frame)[:2] != np.shape(stylized)[:2]:
                raise ValueError("input and stylized frames differ in size")
            x = self._tensor(input_frame)
            with self._torch.no_grad():
                ref = self.encoder(desaturate(x))[-1]
            self.content.append(float(((out[-1].float() - ref.float()) ** 2).mean()))

    def result(self) -> dict:
        def mean(v: list[float]) -> float | None:
            return float(np.mean(v)) if v else None
        style, style_in = mean(self.style), mean(self.style_input)
        ratio = style / style_in if style is not None and style_in else None
        return {"style_loss": style, "style_loss_input": style_in, "style_loss_ratio": ratio,
                "content_loss": mean(self.content), "vgg_frames": max(len(self.style), len(self.content)),
                "vgg_max_side": self.max_side}


def style_loss(outputs: Iterable[np.ndarray], style_image: np.ndarray | str | Path,
               max_side: int | None = VGG_MAX_SIDE, device: str | None = None) -> float:
    """Eq. 7 averaged over the stylized frames (see the module docstring)."""
    acc = FeatureLosses(style_image, max_side, device)
    for y in outputs:
        acc.add(None, y)
    if not acc.style:
        raise ValueError("no frames")
    return float(np.mean(acc.style))


def content_loss(inputs: Iterable[np.ndarray], outputs: Iterable[np.ndarray],
                 max_side: int | None = VGG_MAX_SIDE, device: str | None = None) -> float:
    """Eq. 8 averaged over frames: relu4_1 MSE between stylized and desaturated input frames."""
    acc = FeatureLosses(None, max_side, device)
    for x, y in zip(inputs, outputs, strict=True):
        acc.add(x, y)
    if not acc.content:
        raise ValueError("no frames")
    return float(np.mean(acc.content))


def style_loss_ratio(inputs: Iterable[np.ndarray], outputs: Iterable[np.ndarray],
                     style_image: np.ndarray | str | Path, max_side: int | None = VGG_MAX_SIDE,
                     device: str | None = None) -> float:
    """Style loss of the stylized frames / style loss of the unstylized input frames (< 1: closer
    to the style than the input was)."""
    acc = FeatureLosses(style_image, max_side, device)
    for x, y in zip(inputs, outputs, strict=True):
        acc.add(x, y)
    ratio = acc.result()["style_loss_ratio"]
    if ratio is None:
        raise ValueError("no frames, or the input already has zero style loss")
    return ratio


def edge_texture(outputs: Iterable[np.ndarray], strip: int = 32) -> dict[str, float]:
    """Texture along the frames' left and right edges relative to their middle: the mean absolute
    horizontal gradient over the `strip` outermost columns each side, divided by its mean over the
    middle half. About 1 where a network treats the edges like the rest; a band of texture that a
    network piles along one edge raises that side's ratio (feed mirrored inputs too, so that the
    content's own left-right differences cancel)."""
    cols = [np.abs(np.diff(_as_float(f), axis=1)).mean(axis=(0, 2)) for f in outputs]
    if not cols or len({c.shape for c in cols}) != 1 or cols[0].shape[0] < 4 * strip:
        raise ValueError(f"needs frames of one size, at least {4 * strip + 1} pixels wide")
    g = np.mean(cols, axis=0)
    w = g.shape[0]
    middle = float(g[w // 4: 3 * w // 4].mean())
    return {"left": float(g[:strip].mean()) / middle, "right": float(g[-strip:].mean()) / middle}


# --------------------------------------------------------------------------- whole clips


def _sample(count: int, k: int | None) -> set[int]:
    if k is None or k >= count:
        return set(range(count))
    if k <= 0:
        return set()
    return {int(round(j * (count - 1) / max(k - 1, 1))) for j in range(k)}


class PairFiles(Mapping):
    """Per-pair files of a clip (true flows, occlusion masks): a folder's files in natural order,
    the k-th keyed (k, k + 1), each read when asked for (a long clip's flows need not fit in memory)."""

    def __init__(self, folder: Path, suffixes: Sequence[str], pairs: int, what: str,
                 load: Callable[[Path], np.ndarray]) -> None:
        from .video import natural_key
        if not folder.is_dir():
            raise VstError(f"{what} folder not found: {folder}")
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")),
                       key=lambda p: natural_key(p.name))
        if len(files) < pairs:
            raise VstError(f"{folder} holds {len(files)} {what} file(s) ({', '.join(suffixes)}) for {pairs} "
                           "pairs of consecutive frames")
        self._files, self._load = files[:pairs], load

    def __getitem__(self, key: tuple[int, int]) -> np.ndarray:
        if key not in self:
            raise KeyError(key)
        return self._load(self._files[key[0]])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and key[1] == key[0] + 1 and 0 <= key[0] < len(self._files)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((k, k + 1) for k in range(len(self._files)))

    def __len__(self) -> int:
        return len(self._files)


def true_flows(flow_dir: Path, occlusion_dir: Path | None, pairs: int, source_size: tuple[int, int],
               size: tuple[int, int]) -> tuple[PairFiles, PairFiles | None]:
    """Ground truth for consecutive frames of a clip of `source_size`, measured at `size`: the flows
    (.flo) and, optionally, masks of the pixels to leave out (white = occluded or invalid)."""
    def checked(path: Path, shape: tuple[int, ...]) -> None:
        if shape[:2] != (source_size[1], source_size[0]):
            raise VstError(f"{path} is {shape[1]}x{shape[0]}, the input clip {source_size[0]}x{source_size[1]}")

    def flow(path: Path) -> np.ndarray:
        f = read_flo(path)
        checked(path, f.shape)
        return resize_flow(f, size)

    def visible(path: Path) -> np.ndarray:
        m = read_mask(path)
        checked(path, m.shape)
        return ~resize_mask(m, size)
    from .video import IMAGE_EXTS
    flows = PairFiles(Path(flow_dir), (".flo",), pairs, "flow", flow)
    masks = PairFiles(Path(occlusion_dir), IMAGE_EXTS, pairs, "occlusion mask", visible) if occlusion_dir else None
    return flows, masks


def evaluate(input_path: str | Path, stylized_path: str | Path, style_path: str | Path | None = None,
             intervals: Sequence[int] = DEFAULT_INTERVALS, max_frames: int | None = None,
             max_side: int | None = None, vgg_frames: int | None = DEFAULT_VGG_FRAMES,
             device: str | None = None, flow_dir: str | Path | None = None,
             occlusion_dir: str | Path | None = None) -> dict:
    """Measure a stylized clip against its input; returns a JSON-able dict.

    Inputs are videos, image folders or single images (anything `open_source` reads). The first
    min(count) frames of both are compared (at most `max_frames`); a larger input is resized to the
    stylized size, then both are downscaled to at most `max_side` pixels on the longer side.
    The VGG losses (with `style_path`: style loss, its ratio to the input's, and the content loss)
    use `vgg_frames` evenly spaced frames (None = all) at most VGG_MAX_SIDE pixels.
    `flow_dir` gives the input's true flow between consecutive frames (.flo files in natural order,
    the k-th from frame k to k + 1, as MPI Sintel lays them out; interval 1 only) instead of DIS,
    and `occlusion_dir` masks (white = occluded) of the pixels to leave out with it.
    """
    from .video import open_source
    try:
        intervals = _check_intervals(intervals)
    except (TypeError, ValueError):
        raise VstError(f"invalid intervals {intervals!r}: expected positive integers") from None
    if flow_dir is not None and intervals != (1,):
        raise VstError("true flow is given between consecutive frames: measure it at interval 1 only")
    if occlusion_dir is not None and flow_dir is None:
        raise VstError("occlusion masks go with a true flow: give the flow folder too")
    if max_frames is not None and max_frames < 1:
        raise VstError(f"max_frames must be at least 1, got {max_frames}")
    if max_side is not None and max_side < 8:
        raise VstError(f"max_side must be at least 8, got {max_side}")
    with open_source(input_path) as src, open_source(stylized_path) as sty:
        iw, ih, sw, sh = src.info.width, src.info.height, sty.info.width, sty.info.height
        if abs(iw / ih - sw / sh) > 0.02 * (sw / sh) + 1.0 / min(sh, sw):
            raise VstError(f"the input ({iw}x{ih}) and stylized clip ({sw}x{sh}) have different "
                           "aspect ratios: not the same clip?")
        count = min(len(src), len(sty))
        if max_frames is not None:
            count = min(count, max_frames)
        size = process_size(sw, sh, max_side)
        if count > 1 and min(size) < MIN_FLOW_SIDE:
            raise VstError(f"frames of {size[0]}x{size[1]} are too small for optical flow: at least "
                           f"{MIN_FLOW_SIDE} px a side are needed")
        feats = FeatureLosses(style_path, VGG_MAX_SIDE, device) if style_path is not None else None
        picks = _sample(count, vgg_frames) if feats is not None else set()

        def frames() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for k in range(count):
                x = resize_frame(resize_frame(src.read(src.indices()[k]), (sw, sh)), size)
                y = resize_frame(sty.read(sty.indices()[k]), size)
                if k in picks:
                    feats.add(x, y)
                yield x, y

        flows = masks = None
        method = FLOW_METHOD
        if flow_dir is not None:
            flows, masks = true_flows(Path(flow_dir), occlusion_dir and Path(occlusion_dir), count - 1, (iw, ih), size)
            method = (f"true flow of the input from {flow_dir}" +
                      (f", pixels masked in {occlusion_dir} left out" if occlusion_dir else "") +
                      ", out-of-frame and |warped input - input| > 10/255 pixels masked")
        stats = temporal_stats(frames(), intervals, flows, masks)
        result = {
            "input": str(input_path), "stylized": str(stylized_path),
            "style": str(style_path) if style_path is not None else None,
            "frames": count, "input_frames": len(src), "stylized_frames": len(sty),
            "size": [size[0], size[1]], "flow": method, "temporal_metric": TEMPORAL_METRIC,
            "temporal": [{"interval": i, **stats[i]} for i in intervals],
        }
    if feats is not None:
        result.update(feats.result())
    return result


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(result: dict) -> str:
    """A readable summary of an `evaluate` result."""
    w, h = result["size"]
    lines = [f"{result['frames']} frames at {w}x{h}: {result['stylized']} vs input {result['input']}"]
    if result["input_frames"] != result["stylized_frames"]:
        lines.append(f"warning: the input has {result['input_frames']} frames, the stylized clip "
                     f"{result['stylized_frames']}: compared the first {result['frames']}")
    lines.append("temporal loss (RMS on [0,1] over reliable pixels; lower = more consistent)")
    lines.append(f"{'interval':>8}  {'loss':>8}  {'mae':>8}  {'coverage':>8}  {'pairs':>5}")
    for row in result["temporal"]:
        cov = None if row["coverage"] is None else 100.0 * row["coverage"]
        lines.append(f"{row['interval']:>8}  {_fmt(row['loss'], '.4f'):>8}  {_fmt(row['mae'], '.4f'):>8}  "
                     f"{_fmt(cov, '.1f') + ('%' if cov is not None else ''):>8}  {row['pairs']:>5}")
    if result.get("style") is not None:
        lines.append(f"style loss    {_fmt(result.get('style_loss'), '.4f')}  (input "
                     f"{_fmt(result.get('style_loss_input'), '.4f')}, ratio "
                     f"{_fmt(result.get('style_loss_ratio'), '.3f')})")
        lines.append(f"content loss  {_fmt(result.get('content_loss'), '.4f')}  "
                     f"({result.get('vgg_frames')} frames at <= {result.get('vgg_max_side')} px)")
    lines.append(f"flow: {result['flow']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def _parse_intervals(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        vals = ()
    if not vals or min(vals) < 1:
        raise VstError(f"invalid --intervals {text!r}: expected positive integers such as 1,2,4,8,16")
    return vals


def cmd_eval(args: argparse.Namespace) -> int:
    intervals = _parse_intervals(args.intervals)
    if args.max_frames is not None and args.max_frames < 2:
        raise VstError("--max-frames must be at least 2")
    if args.vgg_frames is not None and args.vgg_frames < 1:
        raise VstError("--vgg-frames must be at least 1")
    if args.json:  # before minutes of work, not after
        from .video import check_writable_dir
        check_writable_dir(Path(args.json).resolve().parent, Path(args.json))
    if args.flow is not None and args.intervals == DEFAULT_INTERVALS_TEXT:
        intervals = (1,)  # true flow is given between consecutive frames
    result = evaluate(args.input, args.stylized, args.style, intervals, args.max_frames, args.max_side,
                      args.vgg_frames, args.device, args.flow, args.occlusions)
    print(format_table(result))
    if args.json:
        try:
            atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise VstError(f"cannot write {args.json}: {exc.strerror or exc}") from None
        print(f"results -> {args.json}")
    return 0


def add_eval_parser(subparsers) -> None:
    """Register `eval INPUT STYLIZED [--style S] [--json OUT] ...` on an argparse subparsers object."""
    p = subparsers.add_parser("eval", help="measure temporal consistency and style/content losses of a stylized clip")
    p.add_argument("input", type=Path, help="the original clip (video file or folder of images)")
    p.add_argument("stylized", type=Path, help="the stylized clip (video file or folder of images)")
    p.add_argument("-s", "--style", type=Path, default=None,
                   help="style image: also report style loss, its ratio to the input's, and content loss")
    p.add_argument("--json", default=None, help="write the results as JSON to this file")
    p.add_argument("--max-frames", type=int, default=None, help="compare at most the first N frames")
    p.add_argument("--max-side", type=int, default=None,
                   help="downscale both clips so the longer side is at most N pixels (faster flow)")
    p.add_argument("--intervals", default=DEFAULT_INTERVALS_TEXT,
                   help="frame intervals of the temporal loss (default 1,2,4,8,16; 1 with --flow)")
    p.add_argument("--flow", type=Path, default=None,
                   help="folder of the input's true optical flow between consecutive frames (Middlebury .flo, "
                        "natural order, the k-th from frame k to k+1, as in MPI Sintel), used instead of DIS")
    p.add_argument("--occlusions", type=Path, default=None,
                   help="with --flow: folder of masks (images, white = occluded or invalid) in the same order; "
                        "those pixels are left out")
    p.add_argument("--vgg-frames", type=int, default=DEFAULT_VGG_FRAMES,
                   help=f"evenly spaced frames used for the style/content losses (default {DEFAULT_VGG_FRAMES})")
    p.add_argument("--device", default="auto", help="device for the VGG losses: auto, cpu or cuda")
    p.set_defaults(func=cmd_eval)
