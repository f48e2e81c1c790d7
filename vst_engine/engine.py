"""The engine: styles, the analysis pass (global features) and per-frame stylization.

Everything a host does goes through `Engine.analyze` and `Engine.stylize`. Frames are
H x W x 3 RGB numpy arrays (uint8, or float32 in [0, 1]) at the processing size (see `process_size`).
"""
from __future__ import annotations

import hashlib
import math
import os
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch

from . import int8
from .acceleration import Compiler, GraphCache
from .convs import use_winograd, winograd_preferred
from .errors import VstError
from .hardware import cpu_has_amx, reuse_large_allocations
from .features import FeatureAccumulator, GlobalFeatures, StyleRef
from .imageops import desaturate, keep_colours, pad_to_multiple, to_tensor
from .models import LoadedModel, load_model
from .network import StyleTargets
from .norms import LocalNorm, RecordLayout, RecordNorm, SharedNorm, sums_from_moments
from .tiling import analysis_windows, blend_weights, tile_windows
from .transfer import Pending, Transfers
from .video import read_image
from .vgg import VGGEncoder

MULTIPLE = 8  # three 2x poolings in the encoder
# The smallest padded side: relu4_1 maps of one pixel cannot take a reflection border.
MIN_PADDED = 2 * MULTIPLE
DEFAULT_STYLE_SIZE = 512
# Largest frame area processed in one piece; larger frames are tiled (same global features).
DEFAULT_TILE_AREA = {"cpu": 1280 * 736, "cuda": 2048 * 2048}
TILE_SIZE = 768
# The clip's own colours (what strength below 1 blends towards) are rendered on every 2nd analysed
# frame: a second pass of the network per frame made the analysis twice as long. Stylized at strength
# 0.3, the features moved frames by 0.04-0.95 grey levels on average on four clips, no more than
# analysing every 16th frame instead of every 8th moves them (0.07-1.70); every 4th moved one clip by
# 1.19, every 8th by 4.2.
OWN_COLOUR_EVERY = 2
# Border effects of a tile reach about 100 px into it (VGG to relu4_1 plus the decoder).
TILE_OVERLAP = 128
# CUDA memory a frame pass needs per pixel in fp16 (3,806 MiB peak at 1920x1080 on an H200, rounded
# up): bounds the automatic batch.
CUDA_BYTES_PER_PIXEL = 2048
MAX_AUTO_BATCH = 4
# Batching paid only for small frames (H200, graph replay: 640x360 272 -> 338 frames/s at batch 4;
# 1280x720 90 -> 93; compiled 1920x1080 86 -> 75): frames are batched up to this many pixels a pass.
AUTO_BATCH_PIXELS = 1280 * 720
# Compiled bf16 CPU passes saved 0.5-0.75 us a pixel a frame (2-core AMX: 0.12 s a 640x360 frame,
# 0.69 s a 1280x720 one) after 60-100 s of compiling when nothing is cached: a render of this many
# frame pixels repays that (869 frames at 640x360, 218 at 1280x720, 97 at 1920x1080).
CPU_COMPILE_PIXELS = 200_000_000
# On CUDA, compiled passes saved about 20 ms a 1920x1080 frame (H200: stylization 22.4 ms uncompiled,
# replayed from a graph, against 7.8 compiled; analysis 54 against 9.3 ms an analysed frame, every 8th)
# after 21 s of compiling from Inductor's cache (85 s with nothing cached): `vst stylize` compiles from
# the cached break-even on, about 1,000 frames at 1920x1080 or 9,000 at 640x360.
CUDA_COMPILE_PIXELS = 2_000_000_000
# Compiling saved an analysed frame about 3x what it saved a stylized one (H200, 1920x1080: 45 against
# 14.6 ms): an analysis counts this many stylized frames a frame towards the thresholds above.
ANALYSED_FRAME_WEIGHT = 3


@dataclass
class _SharedInputs:
    """Device-resident style targets and clip statistics for one features object, reused by every
    frame; updated in place when the slot weights change."""

    features: weakref.ref
    alpha: torch.Tensor
    targets: StyleTargets
    norm: SharedNorm


@dataclass
class StyleSet:
    """Loaded style images with their statistics (one entry per style, in order)."""

    refs: list[StyleRef]
    targets: StyleTargets  # N x C


def resolve_device(name: str = "auto") -> torch.device:
    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise VstError(f"unknown device '{name}' (use auto, cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VstError("device 'cuda' requested but no CUDA GPU is available to PyTorch")
    if dev.type not in ("cpu", "cuda"):
        raise VstError(f"unsupported device '{name}' (use auto, cpu or cuda)")
    return dev


def process_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Processing size for a frame: downscaled so the longer side is at most max_side."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = frame.shape[:2]
    if (w, h) == tuple(size):
        return frame
    interp = cv2.INTER_AREA if size[0] < w else cv2.INTER_CUBIC
    return cv2.resize(frame, tuple(size), interpolation=interp)


def normalize_weights(weights: Sequence[float] | None, count: int) -> np.ndarray:
    """Validate style weights: finite, non-negative, not all zero; returned summing to 1."""
    if weights is None:
        return np.full(count, 1.0 / count)
    w = np.asarray(list(weights), dtype=np.float64)
    if w.shape != (count,):
        raise VstError(f"expected {count} style weight(s), got {len(w)}")
    if not np.all(np.isfinite(w)):
        raise VstError("style weights must be finite numbers")
    if np.any(w < 0):
        raise VstError("style weights must not be negative")
    if w.sum() <= 0:
        raise VstError("style weights must not all be zero")
    return w / w.sum()


def slot_weights(weights: Sequence[float] | None, count: int, strength: float) -> torch.Tensor:
    """Convex weights over slots (clip's own colours, style 1..N) for one frame: 1 x (N + 1)."""
    if not (0.0 <= strength <= 1.0) or not np.isfinite(strength):
        raise VstError(f"style strength must be between 0 and 1, got {strength}")
    w = normalize_weights(weights, count) * strength
    return torch.tensor([[1.0 - strength, *w]], dtype=torch.float32)


PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def precision_setting(precision: str | None = None) -> str:
    """The precision asked for: `precision`, else $VST_PRECISION (for hosts that start the engine
    service), else "auto"."""
    precision = precision or os.environ.get("VST_PRECISION") or "auto"
    if precision not in ("auto", "fp32", "int8"):
        raise VstError(f"unknown precision '{precision}' (use auto, fp32 or int8)")
    return precision


def compute_dtype(device: torch.device, precision: str | None = None) -> torch.dtype:
    """The inference dtype: "auto" is fp16 on CUDA, bf16 on CPUs with AMX, else fp32; "int8" is
    fp32 around the int8 convolutions (`int8_convolutions`), on CPUs only."""
    precision = precision_setting(precision)
    if precision == "int8" and device.type != "cpu":
        raise VstError("precision int8 is for CPUs (on CUDA use auto or fp32)")
    if precision != "auto":
        return torch.float32
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_has_amx() else torch.float32


def int8_convolutions(device: torch.device, precision: str | None, compile: bool, arch: str = "paper") -> bool:
    """Whether the paper network's wide convolutions run in int8 (`vst_engine.int8`): where asked
    for ("int8"), on a CPU with VNNI and oneDNN's int8 kernels, in eager passes (compiled ones stay fp32).

    Not the default: it trades some consistency for speed. A 2-core Xeon with VNNI and no AMX, the
    bundled clip at 640x360: `vst stylize` 93.7 against 183.8 s (132 frames), temporal loss at
    i = 1 / 16 0.0252 / 0.0755 against fp32's 0.0247 / 0.0752, frames 1.2 grey levels apart on
    average. But on the consistency test's still-textured synthetic clip with its contrasted
    stripes style, the temporal loss at i = 1 was 0.0154 against fp32's 0.0056 (the input's grain
    alone: 0.0058): the rounding noise changes from frame to frame."""
    return precision_setting(precision) == "int8" and device.type == "cpu" and not compile \
        and arch == "paper" and int8.available()


def precision_name(dtype: torch.dtype, int8_convs: bool) -> str:
    """How results are computed, as `vst info`, the bench and the hosts' cache keys name it."""
    return "int8" if int8_convs else PRECISION_NAMES[dtype]


def accelerations(device: torch.device, compile: bool | None = None,
                  cuda_graphs: bool | None = None) -> tuple[bool, bool]:
    """Whether whole-frame passes run compiled and replayed from CUDA graphs (None: the default).

    Both by default on CUDA: torch.compile fuses the elementwise work around the convolutions (1080p
    on an H200: 43 -> 86 frames/s) and graphs remove the launch overhead (640x360: 85 -> 272).
    $VST_COMPILE=0 / $VST_CUDA_GRAPHS=0 turn either off. On a CPU graphs do not exist, and passes are
    compiled only with $VST_COMPILE=1 or for a long render (`Engine.compile_for_render`): with bf16
    units compiling fuses the same elementwise work (2-core AMX: stylization 1.6x as fast at
    640x360, 1.9x at 1280x720), but the first frame of each size waits one to one and a half minutes
    for the C++ compiler (about 10 s from Inductor's cache). In fp32 it was slower where the eager
    passes run on NNPACK (AVX2; it cannot trace NNPACK), and with AVX-512 it gained too little for the
    wait (2-core Xeon without AMX, default model: 1.10 against 1.20 s a 640x360 frame, no gain at
    1280x720)."""
    cuda = device.type == "cuda"
    if compile is None:
        setting = os.environ.get("VST_COMPILE", "1" if cuda else "0")
        compile = setting != "0" if cuda else setting == "1"
    if cuda_graphs is None:
        cuda_graphs = os.environ.get("VST_CUDA_GRAPHS", "1") != "0"
    return compile, cuda_graphs and cuda


def compile_threshold(device: torch.device) -> int:
    """The frame pixels of a render from which compiling repays its wait on this kind of device."""
    return CUDA_COMPILE_PIXELS if device.type == "cuda" else CPU_COMPILE_PIXELS


def compile_pays_off(device: torch.device, dtype: torch.dtype, frames: int, width: int, height: int) -> bool:
    """Whether compiling the passes repays its wait in a render of `frames` frames at this size: from
    `compile_threshold` frame pixels on, on CUDA and on a CPU in bf16 (`accelerations`: fp32 gains
    too little or nothing)."""
    compiles = device.type == "cuda" or (device.type == "cpu" and dtype != torch.float32)
    return compiles and frames * width * height >= compile_threshold(device)


def winograd_convolutions(device: torch.device, dtype: torch.dtype, compile: bool, arch: str = "paper",
                          precision: str | None = None) -> bool:
    """Whether the wide 3x3 convolutions take NNPACK's Winograd kernels: in eager fp32 on a CPU
    without AVX-512 (2-core AVX2, 640x360: 2.6 -> 1.6 s a frame) where PyTorch has NNPACK
    (`winograd_preferred`), unless they run in int8 (`int8_convolutions`, for `precision`). Not
    compiled: torch.compile cannot trace them. Not for the lite network, whose narrow layers ran
    faster on oneDNN in channels-last (48->32 channels at 640x360: 44 ms against NNPACK's 55 and
    contiguous oneDNN's 105)."""
    return arch == "paper" and device.type == "cpu" and dtype == torch.float32 and not compile \
        and winograd_preferred() and not int8_convolutions(device, precision, compile, arch)


class Engine:
    def __init__(self, model: str = "default", device: str = "auto", tile_area: int | None = None,
                 style_size: int = DEFAULT_STYLE_SIZE, precision: str | None = None,
                 cuda_graphs: bool | None = None, compile: bool | None = None) -> None:
        reuse_large_allocations()
        self.device = resolve_device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # a clip's frames share one shape: pick the fastest kernels
        self.dtype = compute_dtype(self.device, precision)
        self.model: LoadedModel = load_model(model)
        # Where neither the caller nor $VST_COMPILE decides, a long CPU render may (`compile_for_render`).
        self._compile_undecided = compile is None and "VST_COMPILE" not in os.environ
        compile, cuda_graphs = accelerations(self.device, compile, cuda_graphs)
        self.int8 = int8_convolutions(self.device, precision, compile, self.model.net.arch)
        # NNPACK reads contiguous tensors; otherwise channels-last feeds tensor cores, AMX and oneDNN best.
        self.winograd = winograd_convolutions(self.device, self.dtype, compile, self.model.net.arch, precision)
        self.layout = torch.contiguous_format if self.winograd else torch.channels_last
        self.net = self.model.net.to(self.device, memory_format=self.layout).eval()
        self.vgg = VGGEncoder().to(self.device, memory_format=self.layout)
        for module in (self.net, self.vgg):
            use_winograd(module, self.winograd)
        for conv in self.net.int8_convs() + self.vgg.int8_convs():
            conv.int8 = self.int8
        self.tile_area = tile_area or DEFAULT_TILE_AREA[self.device.type]
        self.style_size = style_size
        self.graphs = GraphCache(enabled=cuda_graphs)
        # The analysis's own graphs: a capture failing there leaves stylization's on.
        self.analysis_graphs = GraphCache(enabled=cuda_graphs)
        self.compiler = Compiler(enabled=compile, freeze=self.device.type == "cpu")  # CUDA: not measured
        self.transfers = Transfers(self.device)
        self._shared: _SharedInputs | None = None

    @property
    def trained(self) -> bool:
        return self.model.trained

    @property
    def precision(self) -> str:
        return precision_name(self.dtype, self.int8)

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        # No weight-cast cache on CUDA: graph capture needs the casts inside the graph, and each
        # weight is used once a pass anyway.
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=self.device.type != "cuda")

    def auto_batch(self, width: int, height: int) -> int:
        """Frames per pass for a clip at this size: several on a GPU with room (replays of
        larger batches use the tensor cores better), one on a CPU (no gain, more memory)."""
        if self.device.type != "cuda" or width * height > self.tile_area:
            return 1
        free, _ = torch.cuda.mem_get_info(self.device)
        fits = free // 2 // (CUDA_BYTES_PER_PIXEL * width * height)
        return int(max(1, min(MAX_AUTO_BATCH, fits, AUTO_BATCH_PIXELS // (width * height))))

    def analysis_batch(self, width: int, height: int, own_colours: bool) -> int:
        """Frames per analysis pass: `auto_batch`, a multiple of OWN_COLOUR_EVERY where the clip's own
        colours are analysed, so that every batch renders them on the same rows (one compiled and
        captured pass for all)."""
        batch = self.auto_batch(width, height)
        return batch - batch % OWN_COLOUR_EVERY if own_colours and batch > OWN_COLOUR_EVERY else batch

    def compile_for_render(self, frames: int, width: int, height: int, analysed: int = 0) -> str | None:
        """Compile this engine's passes from here on exactly if stylizing `frames` frames and analysing
        `analysed` at this size repays it (`compile_pays_off`, an analysed frame counting as
        ANALYSED_FRAME_WEIGHT stylized ones), unless the caller or $VST_COMPILE decided: a CPU's long
        renders compile, CUDA's short ones do not (still replayed from CUDA graphs); the engine service
        asks for each clip a host analyses. Returns a line for the user where that changed the engine's
        setting, else None. Tiled frames compile two tile shapes: one for the analysis, one for the
        stylization."""
        pays = compile_pays_off(self.device, self.dtype, frames + ANALYSED_FRAME_WEIGHT * analysed, width, height)
        if not self._compile_undecided or pays == self.compiler.enabled:
            return None
        self.compiler.enabled = pays
        self.graphs.clear()  # they replay the other kind of passes
        self.analysis_graphs.clear()
        job = "render" if frames else "analysis"
        if pays:
            wait = "20-90 s" if self.device.type == "cuda" else "1-2 minutes, about 10 s once cached"
            return f"a long {job}: compiling the passes first ({wait}; VST_COMPILE=0 skips it)"
        return f"a short {job}: the passes run uncompiled (compiling would wait 20-90 s; VST_COMPILE=1 compiles)"

    @property
    def acceleration(self) -> str:
        """How whole-frame passes run: for `vst info` and the benchmark report."""
        parts = ["compiled" if self.compiler.active else "eager"]
        if self.winograd:
            parts.append("Winograd convolutions (NNPACK)")
        if self.graphs.active:
            parts.append("CUDA graphs")
        failures = [f"{what} failed: {why}" for what, why in (
            ("compile", self.compiler.failure), ("graph capture", self.graphs.failure),
            ("analysis graph capture", self.analysis_graphs.failure)) if why]
        return " + ".join(parts) + (f" ({'; '.join(failures)})" if failures else "")

    # ----- styles --------------------------------------------------------------------------
    def load_styles(self, paths: Sequence[str | Path]) -> StyleSet:
        if not paths:
            raise VstError("at least one style image is needed (-s STYLE)")
        refs, images = [], []
        for p in paths:
            p = Path(p)
            img = read_image(p)  # VstError for missing or non-image files
            refs.append(StyleRef(p.stem, hashlib.sha256(p.read_bytes()).hexdigest()))
            images.append(img)
        return self.style_set(refs, images)

    @torch.no_grad()
    def style_set(self, refs: list[StyleRef], images: list[np.ndarray]) -> StyleSet:
        parts = []
        for img in images:
            w, h = process_size(img.shape[1], img.shape[0], self.style_size)
            x, _ = pad_to_multiple(to_tensor(resize_frame(img, (w, h)), self.device), MULTIPLE, MIN_PADDED)
            with self._autocast():
                parts.append(self.net.style_targets(self.vgg(x)))
        cat = StyleTargets.cat(parts)
        return StyleSet(refs, cat.map(lambda t: t.float()))

    # ----- analysis ------------------------------------------------------------------------
    def analysis(self, styles: StyleSet, own_colours: bool = True, batch: int | None = None) -> "Analysis":
        """An incremental analysis, for hosts that deliver the sampled frames one at a time.

        Without `own_colours` the clip's own colour statistics (what strength below 1 blends
        towards) are skipped, which saves about a third of the analysis; the result then serves full
        strength only. `batch`: frames a pass (default `analysis_batch` at the frames' size)."""
        return Analysis(self, styles, own_colours, batch=batch)

    def own_colour_analysis(self, lean: GlobalFeatures, styles: StyleSet, batch: int | None = None) -> "Analysis":
        """An analysis of only the clip's own colours, completing `lean` features (analysed with
        `own_colours=False`, for the same `styles`). Fed the same frames, its `finish` gives the
        features a complete analysis gives, for the cost of the part that was skipped."""
        lean.check(self.model.model_id, styles.refs)
        if lean.has_own_colours:
            raise VstError("these global features already include the clip's own colours")
        return Analysis(self, styles, own_colours=True, lean=lean, batch=batch)

    def analyze(self, frames: Iterable[np.ndarray], styles: StyleSet, *, source: str = "",
                frame_range: tuple[int, int] = (0, 0), interval: int = 8, sampled: Sequence[int] = (),
                settings: dict | None = None, own_colours: bool = True) -> GlobalFeatures:
        """Accumulate global features over the given (already sampled) frames, streaming (hosts
        that need progress or completion feed an `analysis` frame by frame instead)."""
        run = self.analysis(styles, own_colours)
        for frame in frames:
            run.add(frame)
        return run.finish(source=source, frame_range=frame_range, interval=interval, sampled=sampled,
                          settings=settings)

    def _analyze_frames(self, frames: list[np.ndarray], styles: StyleSet, acc: FeatureAccumulator,
                        own: slice | None, styled: int, valid: int) -> None:
        """Fold a batch of frames into `acc`: the clip's own colours (slot 0) on the rows `own` selects,
        the first `styled` styles on every row. Rows from `valid` on repeat the last frame to fill the
        batch (a new batch size would mean a new compilation or graph) and are left out of the sums."""
        x = self.transfers.upload(frames)  # pinned on CUDA: a pageable copy would wait for the last frame's work
        h, w = x.shape[-2:]
        # Large frames are analysed tile by tile (only ever one frame a batch): the sums are additive
        # over pixels, so the tiles barely overlap (`analysis_windows`).
        windows = analysis_windows(h, w, self._largest_tile_side(), MULTIPLE) if h * w > self.tile_area \
            else [(0, h, 0, w)]
        own_rows = len(range(valid)[own]) if own is not None else 0
        slots = ([0] if own is not None else []) + list(range(1, styled + 1))
        for y0, y1, x0, x1 in windows:
            tile, _ = pad_to_multiple(x[..., y0:y1, x0:x1], MULTIPLE, MIN_PADDED)
            # A tile's passes read only the tile and the styles' targets, so on CUDA they replay
            # from one graph: launching them took the CPU longer than the GPU took to run them
            # (1920x1080 on an H200: 18.9 against 10.3 ms).
            own_key = None if own is None else (own.start, own.step)
            own_stats, records = self.analysis_graphs.run(
                (id(styles), own_key, styled), lambda t: self._tile_records(t, styles.targets, own, styled), tile,
                keep=styles, copy_out=False)
            if own_stats is not None:
                _, _, desc, sums, counts = own_stats
                acc.add_own_colours(sums, counts, desc, rows=own_rows)
            for slot, record in zip(slots, records, strict=True):
                # The content descriptor (the same in every slot's pass) from the first pass of all rows.
                acc.add_pass(slot, *record, rows=own_rows if slot == 0 else valid, primary=slot == min(styled, 1))

    def _tile_records(self, tile: torch.Tensor, targets: StyleTargets, own: slice | None, count: int) -> tuple:
        """The analysis of a batch of tiles: the own colours (`_own_colours`) of the rows `own`
        selects, and the records of one pass of the network per slot rendered: the own colours'
        first (those rows), then the first `count` styles of `targets` (all rows). One slot at a
        time: on a 2-core CPU at 1280x720 with two slots this was faster than one batch of all slots
        (15.7 s against 18.0 s) at less than half the peak memory (3.2 GiB against 7.3 GiB)."""
        def rows(x: torch.Tensor) -> torch.Tensor:  # a copy in the pass's layout: half-precision norms need one
            return x[own].contiguous(memory_format=self.layout)
        own_stats = self.compiler(self._own_colours, rows(tile)) if own is not None else None
        grey4 = self.compiler(self._content, tile if count else rows(tile))
        passes = [(rows(grey4) if count else grey4, StyleTargets(*own_stats[:3]))] if own is not None else []
        n = grey4.shape[0]  # a style's targets, one row, are repeated for each frame of the batch
        passes += [(grey4, targets.pick(i).map(lambda t: t.expand(n, -1))) for i in range(count)]
        return own_stats, [self.compiler(self._record_pass, g, t) for g, t in passes]

    def _own_colours(self, tile: torch.Tensor) -> tuple:
        """Tiles' own colours as styles: mean, std and descriptors, and the channel sums and
        pixel counts (a tile's) of their VGG taps."""
        with self._autocast():
            taps = self.vgg(tile)
            own = self.net.style_targets(taps, fused=True)
        sums = [sums_from_moments(m, s, t.shape[2] * t.shape[3]) for m, s, t in zip(own.mean, own.std, taps)]
        counts = [t.shape[2] * t.shape[3] for t in taps]
        return own.mean, own.std, own.desc, sums, counts

    def _content(self, tile: torch.Tensor) -> torch.Tensor:
        """The network's content input from the desaturated tile (VGG relu4_1, or the lite encoder's)."""
        with self._autocast():
            return self.net.content(desaturate(tile), self.vgg).contiguous(memory_format=self.layout)

    def _record_pass(self, grey4: torch.Tensor,
                     targets: StyleTargets) -> tuple[RecordLayout, torch.Tensor, torch.Tensor]:
        """One pass of the network for one style slot, returning what a `RecordNorm` recorded, packed."""
        rec = RecordNorm()
        with self._autocast():
            self.net(grey4, targets, rec, stats_only=True)
        return rec.packed()

    # ----- stylization ---------------------------------------------------------------------
    def stylize(self, frame: np.ndarray, source: GlobalFeatures | StyleSet, weights: Sequence[float] | None = None,
                strength: float = 1.0, preserve_color: bool = False, as_float: bool = False) -> np.ndarray:
        """Stylize one frame with stored global features, or per-frame statistics given a StyleSet.

        Frames may be uint8 or float32 in [0, 1]; the result is uint8 unless `as_float`
        asks for float32 in [0, 1] (for hosts that work in float, such as OpenFX)."""
        return self.stylize_batch([frame], source, weights, strength, preserve_color, as_float)[0]

    def stylize_batch(self, frames: Sequence[np.ndarray], source: GlobalFeatures | StyleSet,
                      weights: Sequence[float] | None = None, strength: float = 1.0, preserve_color: bool = False,
                      as_float: bool = False) -> list[np.ndarray]:
        """`stylize` for frames of one size that share weights and strength, in one pass where the
        statistics are the clip's (the same result as frame by frame, faster on a GPU)."""
        return self.submit(frames, source, weights, strength, preserve_color, as_float).result()

    @torch.no_grad()
    def submit(self, frames: Sequence[np.ndarray], source: GlobalFeatures | StyleSet,
               weights: Sequence[float] | None = None, strength: float = 1.0, preserve_color: bool = False,
               as_float: bool = False) -> Pending:
        """`stylize_batch` without waiting for the frames: `result()` gives them. On a GPU, submitting
        the next frames before taking the last ones' result overlaps their copies with the passes."""
        if not frames:
            return Pending(torch.empty(0))
        if len({f.shape for f in frames}) != 1:
            raise VstError("frames stylized together must have the same size")
        count = len(source.refs) if isinstance(source, StyleSet) else len(source.styles)
        alpha = slot_weights(weights, count, strength)
        shared = isinstance(source, GlobalFeatures)
        if shared:  # before the upload: a mismatch is refused without touching the device
            source.check(self.model.model_id, process_size=(frames[0].shape[1], frames[0].shape[0]), strength=strength)
        x = self.transfers.upload(frames)
        out = self._render_shared(x, source, alpha) if shared else \
            torch.cat([self._render_local(f, x[i:i + 1], source, alpha) for i, f in enumerate(frames)])
        if preserve_color:
            out = keep_colours(out, x)
        return self.transfers.download(out, as_float)

    def _shared_inputs(self, feats: GlobalFeatures, alpha: torch.Tensor) -> tuple[StyleTargets, SharedNorm]:
        """Style targets and clip statistics on the device for these weights, reused across frames."""
        cache = self._shared
        if cache is None or cache.features() is not feats:
            targets = feats.style.blend(alpha).map(lambda t: t.to(self.device))
            self.graphs.clear()  # captured graphs read the previous clip's tensors
            self.analysis_graphs.clear()  # the analysis is done: its graphs' memory goes to the stylization
            self._shared = cache = _SharedInputs(weakref.ref(feats), alpha.clone(), targets,
                                                 feats.shared_norm(alpha, self.device))
        elif not torch.equal(cache.alpha, alpha):
            for mine, new in zip(cache.targets.tensors(), feats.style.blend(alpha).tensors()):
                mine.copy_(new)
            cache.norm.set_alpha(alpha)
            cache.alpha = alpha.clone()
        return cache.targets, cache.norm

    def _render_shared(self, x: torch.Tensor, feats: GlobalFeatures, alpha: torch.Tensor) -> torch.Tensor:
        targets, norm = self._shared_inputs(feats, alpha)
        n, _, h, w = x.shape
        if h * w <= self.tile_area:
            # A short batch (a clip's last frames, a change of weights) is padded to the batch already
            # captured for this size: a new shape would mean a new compilation and graph.
            full = max(n, self.graphs.captured_batch(x.shape, id(norm)))
            x = torch.cat([x, x[-1:].expand(full - n, -1, -1, -1)]) if full > n else x
            return self._shared_pass(x, targets.map(lambda t: t.expand(full, -1)), norm)[:n]
        # Tiles share the clip statistics, so only the convolutions' borders differ between
        # neighbours; a linear cross-fade over the overlap hides them.
        out = torch.zeros(n, 3, h, w, device=self.device)
        total = torch.zeros(1, 1, h, w, device=self.device)
        one = targets.pick(0)
        for y0, y1, x0, x1 in tile_windows(h, w, self._tile_side(), TILE_OVERLAP, MULTIPLE):
            wgt = blend_weights(y0, y1, x0, x1, h, w, TILE_OVERLAP).to(self.device)
            for i in range(n):  # one frame at a time: a tile's memory is sized for one
                out[i:i + 1, :, y0:y1, x0:x1] += self._shared_pass(x[i:i + 1, :, y0:y1, x0:x1], one, norm) * wgt
            total[..., y0:y1, x0:x1] += wgt
        return out / total

    def _shared_pass(self, x: torch.Tensor, targets: StyleTargets, norm: SharedNorm) -> torch.Tensor:
        """One pass over a whole frame or a tile with the clip's statistics: compiled and replayed
        from a graph where those are on (the tiles of a frame share one shape, so one graph)."""
        return self.graphs.run(id(norm), lambda t: self.compiler(self._forward, t, targets, norm), x,
                               keep=(targets, norm))

    def _tile_side(self) -> int:
        """The stylization tiles' side: TILE_SIZE on CPUs (tuned there); on CUDA the tile area's side,
        so that a 3840x2160 frame takes 4 passes of 1144x1984 (1.09x its pixels) instead of 24 of
        640x752 (1.39x)."""
        return self._largest_tile_side() if self.device.type == "cuda" else TILE_SIZE

    def _largest_tile_side(self) -> int:
        """The side of the largest square tile the tile area allows (on the pooling grid). The
        analysis takes tiles this large on every device: each tile is normalized with its own
        statistics, so fewer seams keep the clip's statistics nearer a whole frame's (1920x1080 on
        a CPU: 4 tiles of 544x960 moved frames 2.0-4.4 grey levels from an untiled analysis, the
        earlier 768-px tiles 3.5-7.9)."""
        return max(TILE_SIZE, math.isqrt(self.tile_area) // MULTIPLE * MULTIPLE)

    def _render_local(self, frame: np.ndarray, x: torch.Tensor, styles: StyleSet, alpha: torch.Tensor) -> torch.Tensor:
        """One frame with its own statistics; `x` is the frame already on the device."""
        h, w = frame.shape[:2]
        if h * w > self.tile_area:
            # Per-frame statistics of a frame too large for one pass: analyse it alone, then tile.
            feats = self.analyze([frame], styles, interval=1, sampled=[0])
            return self._render_shared(x, feats, alpha)
        if float(alpha[0, 0]) > 0:  # strength < 1 blends towards the frame's own colours
            with self._autocast():
                padded, _ = pad_to_multiple(x, MULTIPLE, MIN_PADDED)
                own = self.net.style_targets(self.vgg(padded))
            slots = StyleTargets.cat([own.map(lambda t: t.float()), styles.targets])
        else:
            slots = StyleTargets.cat([styles.targets.pick(0).map(lambda t: t * 0), styles.targets])
        return self._forward(x, slots.blend(alpha.to(self.device)), LocalNorm())

    def _forward(self, x: torch.Tensor, targets: StyleTargets, norm: LocalNorm) -> torch.Tensor:
        padded, (h, w) = pad_to_multiple(x, MULTIPLE, MIN_PADDED)
        with self._autocast():
            grey4 = self.net.content(desaturate(padded), self.vgg)
            out = self.net(grey4, targets, norm)
        return out[..., :h, :w].float().clamp(0.0, 1.0)


FLAT_STD = 2.0  # grey levels (of 255): a frame varying less than this is black or one colour


def is_flat(frame: np.ndarray) -> bool:
    """Whether a frame (uint8, or float in [0, 1]) is black or a single colour (a fade or a slate)."""
    # Every 16th pixel is plenty to tell. OpenCV on a contiguous copy: numpy's std of the strided sample
    # took 6.2 ms of a 1920x1080 frame (2-core AMX CPU), a quarter of a GPU's analysed frame; this 0.7.
    _, std = cv2.meanStdDev(np.ascontiguousarray(frame[::4, ::4]))
    scale = 255.0 if frame.dtype != np.uint8 else 1.0
    return float(std.max()) * scale < FLAT_STD


class Analysis:
    """Global features accumulated frame by frame (the first pass); `finish` gives the result.

    Frames are analysed in batches of `batch` (default: `Engine.analysis_batch` at their size, several
    only for small frames on a GPU, where one frame a pass left the tensor cores idle); `flush`
    analyses a partial batch."""

    def __init__(self, engine: Engine, styles: StyleSet, own_colours: bool = True,
                 lean: GlobalFeatures | None = None, batch: int | None = None) -> None:
        self.engine, self.styles, self.lean = engine, styles, lean
        # Completing `lean` features renders only slot 0, the clip's own colours.
        count = 1 if lean is not None else 1 + len(styles.refs)
        self.own_colours = own_colours
        self.styled = count - 1
        self.acc = FeatureAccumulator(slots=count, own_colours=own_colours)
        self.size: tuple[int, int] | None = None
        self.batch = batch
        self.pending: list[np.ndarray] = []  # frames waiting for a full batch
        self.flat_skipped = 0
        self._flat_fallback: np.ndarray | None = None  # used only if every frame is flat

    @torch.no_grad()
    def add(self, frame: np.ndarray) -> None:
        size = (frame.shape[1], frame.shape[0])
        if self.size is None:
            self.size = size
            self.batch = self.batch or self.engine.analysis_batch(*size, self.own_colours)
        elif size != self.size:
            raise VstError("all analysed frames must have the same size")
        if is_flat(frame):
            # A black or single-colour frame (fade, slate) has no texture: its near-zero feature
            # variances would skew the clip's statistics (a clip opening on one black frame lost
            # most of its contrast), so it is left out unless every frame is flat.
            self.flat_skipped += 1
            if self._flat_fallback is None:
                self._flat_fallback = frame.copy()
            return
        # A copy when it waits for a batch: callers may reuse their frame buffer.
        self.pending.append(frame if self.batch == 1 else frame.copy())
        if len(self.pending) >= self.batch:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        """Analyse the frames waiting for a full batch. The clip's own colours are rendered on every
        OWN_COLOUR_EVERY-th analysed frame (from the first)."""
        n = len(self.pending)
        if not n:
            return
        own = None
        if self.own_colours:
            first = (-self.acc.frames) % OWN_COLOUR_EVERY
            own = slice(first, None, OWN_COLOUR_EVERY) if first < n else None
        if own is not None or self.styled:
            frames = self.pending + [self.pending[-1]] * (self.batch - n)
            self.engine._analyze_frames(frames, self.styles, self.acc, own, self.styled, n)
        self.acc.frames += n
        self.pending = []

    def finish(self, *, source: str = "", frame_range: tuple[int, int] = (0, 0), interval: int = 8,
               sampled: Sequence[int] = (), settings: dict | None = None) -> GlobalFeatures:
        if self.size is None:
            raise VstError("no frames to analyse (empty clip or range)")
        eng = self.engine
        self.flush()
        if self.acc.frames == 0:  # only flat frames: their statistics are all there is
            self.pending = [self._flat_fallback]
            self.flush()
        if self.lean is not None:
            return self._complete(self.lean)
        return self.acc.finish(self.styles.targets, model_id=eng.model.model_id, styles=list(self.styles.refs),
                               source=source, frame_range=tuple(frame_range), interval=interval,
                               sampled=list(sampled), process_size=self.size,
                               settings=dict(settings or {}, style_size=eng.style_size),
                               extra={"frames_analysed": self.acc.frames, "flat_frames_skipped": self.flat_skipped,
                                      "own_colours": self.acc.own_colours})

    def _complete(self, lean: GlobalFeatures) -> GlobalFeatures:
        """`lean` with the own-colour slot analysed here, after checking these were its frames."""
        seen = {"frames_analysed": self.acc.frames, "flat_frames_skipped": self.flat_skipped}
        if self.size != tuple(lean.process_size) or any(lean.extra.get(k) != v for k, v in seen.items()):
            raise VstError("these frames are not the ones the global features were analysed from "
                           "(another clip, range or size): analyze again")
        own = self.acc.finish(self.styles.targets, model_id=lean.model_id, styles=lean.styles, source=lean.source,
                              frame_range=lean.frame_range, interval=lean.interval, sampled=lean.sampled,
                              process_size=lean.process_size, settings=lean.settings)
        return lean.with_own_colours(own)
