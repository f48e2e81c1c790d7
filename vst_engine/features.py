"""Sequence-level global features: accumulated over a clip's sampled frames, stored in a file.

Layout of the statistics: "slots" are style sources. Slot 0 is the clip's own colours (what
strength < 1 blends towards), slots 1..N are the style images. Each IN layer keeps, per slot,
the channel mean and std pooled over all sampled pixels and the min/max of the normalized
activation; each Filter Predictor keeps the clip-mean content descriptor. A frame's statistics
are the convex blend of the slots with weights (1 - strength, strength * w_1, ...).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from .errors import VstError
from .atomic import atomic_write_bytes
from .deflicker import check_corrections
from .network import StyleTargets
from .norms import NUM_NORM_LAYERS, NUM_PREDICTORS, RecordLayout, SharedNorm, moments

FORMAT = "vst-global-features"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StyleRef:
    name: str
    sha256: str


def sample_indices(start: int, end: int, interval: int) -> list[int]:
    """Every `interval`-th frame of [start, end) plus the last one (the paper's sampling)."""
    if interval < 1:
        raise VstError(f"sampling interval must be at least 1, got {interval}")
    picks = list(range(start, end, interval))
    if picks and picks[-1] != end - 1:
        picks.append(end - 1)
    return picks


@dataclass
class GlobalFeatures:
    model_id: str
    styles: list[StyleRef]
    source: str
    frame_range: tuple[int, int]
    interval: int
    sampled: list[int]
    process_size: tuple[int, int]  # (width, height) the statistics were computed at
    settings: dict
    norm_mean: list[torch.Tensor]  # per IN layer: slots x C
    norm_std: list[torch.Tensor]
    norm_min: list[torch.Tensor]
    norm_max: list[torch.Tensor]
    content_desc: list[torch.Tensor]  # per Filter Predictor: 32
    style: StyleTargets  # slots x C / slots x 32
    extra: dict = field(default_factory=dict)

    @property
    def slots(self) -> int:
        return self.norm_mean[0].shape[0]

    @property
    def has_own_colours(self) -> bool:
        """False for features analysed for full strength only (without the clip's own colours)."""
        return bool(self.extra.get("own_colours", True))

    @property
    def deflickered(self) -> bool:
        """Whether the analysis measured every frame's exposure (`vst analyze --deflicker`)."""
        return "deflicker" in self.extra

    def with_deflicker(self, corrections: list[list[float]]) -> "GlobalFeatures":
        """These features with a deflicker correction for every frame of their range
        (`deflicker.frame_corrections`)."""
        if not check_corrections(corrections, self.frame_range[1] - self.frame_range[0]):
            raise ValueError(f"expected {self.frame_range[1] - self.frame_range[0]} corrections within range")
        return replace(self, extra=dict(self.extra, deflicker=corrections))

    def exposure_correction(self, index: int) -> list[float]:
        """What clip frame `index` is mapped by before stylization (`deflicker.apply_correction`): its
        deflicker [scale, offset], else the identity."""
        if not self.deflickered:
            return [1.0, 0.0]
        start, end = self.frame_range
        if not start <= index < end:
            raise VstError(f"frame {index} is outside the frames {start}:{end} the deflicker was analysed over: "
                           "analyze the whole clip")
        return self.extra["deflicker"][index - start]

    def shared_norm(self, alpha: torch.Tensor, device: torch.device | str = "cpu") -> SharedNorm:
        """The clip statistics blended with slot weights `alpha`, held on `device`."""
        return SharedNorm(self.norm_mean, self.norm_std, self.norm_min, self.norm_max, self.content_desc, alpha,
                          device)

    def check(self, model_id: str, styles: list[StyleRef] | None = None,
              process_size: tuple[int, int] | None = None, strength: float = 1.0) -> None:
        """Refuse features made for another model, other styles or another resolution, or made for
        full strength only when `strength` (the lowest to be used) is below 1."""
        if model_id != self.model_id:
            raise VstError(f"global features were made with model {self.model_id}, not {model_id}: analyze again")
        if styles is not None and [s.sha256 for s in styles] != [s.sha256 for s in self.styles]:
            have = ", ".join(s.name for s in self.styles)
            raise VstError(f"global features were made for other styles ({have}): analyze again with these styles")
        if process_size is not None and tuple(process_size) != tuple(self.process_size):
            w, h = self.process_size
            raise VstError(f"global features were made at {w}x{h}, not {process_size[0]}x{process_size[1]}: "
                           "use the same --max-side or analyze again")
        if strength < 1 and not self.has_own_colours:
            raise VstError("these global features were analysed for full strength only (without the clip's own "
                           "colours): add them (`vst analyze --complete`) to use a strength below 1")

    def with_own_colours(self, own: "GlobalFeatures") -> "GlobalFeatures":
        """These full-strength-only features completed with slot 0 (the clip's own colours) of
        `own`, an analysis of that slot alone over the same frames."""
        def row0(mine: list[torch.Tensor], theirs: list[torch.Tensor]) -> list[torch.Tensor]:
            return [torch.cat([t[:1], m[1:]]) for m, t in zip(mine, theirs)]
        style = StyleTargets.cat([own.style.pick(0), self.style.map(lambda t: t[1:])])
        return replace(self, norm_mean=row0(self.norm_mean, own.norm_mean), norm_std=row0(self.norm_std, own.norm_std),
                       norm_min=row0(self.norm_min, own.norm_min), norm_max=row0(self.norm_max, own.norm_max),
                       style=style, extra=dict(self.extra, own_colours=True))

    # ----- file format ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": FORMAT_VERSION,
            "meta": {"model_id": self.model_id, "styles": [[s.name, s.sha256] for s in self.styles],
                     "source": self.source, "frame_range": list(self.frame_range), "interval": self.interval,
                     "sampled": list(self.sampled), "process_size": list(self.process_size),
                     "settings": dict(self.settings), "extra": dict(self.extra)},
            "norm": {"mean": self.norm_mean, "std": self.norm_std, "min": self.norm_min, "max": self.norm_max},
            "content_desc": self.content_desc,
            "style": {"mean": self.style.mean, "std": self.style.std, "desc": self.style.desc},
        }

    def to_bytes(self) -> bytes:
        return _to_bytes(self.to_dict())

    def save(self, path: str | Path) -> None:
        _write(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "GlobalFeatures":
        d = _read(path)
        if "shots" in d:
            raise VstError(f"{path} holds the global features of {len(d['shots'])} shots (`--per-shot`): only `vst "
                           "stylize --features` and `vst analyze --complete` read such files")
        return cls._from_dict(d, path)

    @classmethod
    def _from_dict(cls, d: dict, path: str | Path) -> "GlobalFeatures":
        try:
            m = d["meta"]
            feats = cls(m["model_id"], [StyleRef(n, h) for n, h in m["styles"]], m["source"],
                        tuple(m["frame_range"]), m["interval"], list(m["sampled"]), tuple(m["process_size"]),
                        m["settings"], d["norm"]["mean"], d["norm"]["std"], d["norm"]["min"], d["norm"]["max"],
                        d["content_desc"], StyleTargets(d["style"]["mean"], d["style"]["std"], d["style"]["desc"]),
                        m.get("extra", {}))
            slots = 1 + len(feats.styles)
            norms = (feats.norm_mean, feats.norm_std, feats.norm_min, feats.norm_max)
            ok = (all(len(t) == NUM_NORM_LAYERS and all(x.shape[0] == slots for x in t) for t in norms)
                  and len(feats.content_desc) == NUM_PREDICTORS and len(feats.style.desc) == NUM_PREDICTORS
                  and all(x.shape[0] == slots for x in feats.style.mean + feats.style.std + feats.style.desc)
                  and (not feats.deflickered or check_corrections(feats.extra["deflicker"],
                                                                  feats.frame_range[1] - feats.frame_range[0])))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            ok = False
        if not ok:
            raise VstError(f"not a global features file (malformed contents): {path}")
        return feats


def shots_to_bytes(shots: Sequence[GlobalFeatures]) -> bytes:
    """The features of a clip's shots, in order (`--per-shot`), as one file; one shot as a plain file."""
    if len(shots) == 1:
        return shots[0].to_bytes()
    return _to_bytes({"format": FORMAT, "version": FORMAT_VERSION, "shots": [f.to_dict() for f in shots]})


def save_shots(shots: Sequence[GlobalFeatures], path: str | Path) -> None:
    _write(path, shots_to_bytes(shots))


def load_shots(path: str | Path) -> list[GlobalFeatures]:
    """The features of each shot a file holds, in clip order (one for a plain features file). Shots adjoin
    and share their model, styles and size."""
    d = _read(path)
    if "shots" not in d:
        return [GlobalFeatures._from_dict(d, path)]
    if not isinstance(d["shots"], list) or not d["shots"] or not all(isinstance(x, dict) for x in d["shots"]):
        raise VstError(f"not a global features file (malformed contents): {path}")
    shots = [GlobalFeatures._from_dict(x, path) for x in d["shots"]]
    for a, b in zip(shots, shots[1:]):
        if (a.frame_range[1] != b.frame_range[0] or a.model_id != b.model_id or a.styles != b.styles
                or a.process_size != b.process_size or a.has_own_colours != b.has_own_colours):
            raise VstError(f"not a global features file (shots that do not fit together): {path}")
    return shots


def _to_bytes(d: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(d, buf)
    return buf.getvalue()


def _write(path: str | Path, data: bytes) -> None:
    try:
        atomic_write_bytes(Path(path), data)
    except OSError as exc:
        raise VstError(f"cannot write global features to {path}: {exc.strerror or exc}") from None


def _read(path: str | Path) -> dict:
    """A features file's contents, checked for the format and version (weights only: no code runs)."""
    path = Path(path)
    if path.is_dir():
        raise VstError(f"{path} is a folder, not a global features file")
    if not path.is_file():
        raise VstError(f"global features file not found: {path}")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise VstError(f"not a global features file (unreadable): {path}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise VstError(f"not a global features file: {path}")
    if d.get("version") != FORMAT_VERSION:
        raise VstError(f"global features file {path} has version {d.get('version')}, expected {FORMAT_VERSION}")
    return d


class FeatureAccumulator:
    """Running sums over analysed frames (or tiles): memory independent of clip length.

    Each analysed frame is rendered once per style slot, so the network's sums have shape slots x C.
    Accumulation is in float64 to keep E[x^2] - E[x]^2 accurate, on the frames' device: copying
    each layer's sums to the host would stall a GPU about 90 times a frame."""

    def __init__(self, slots: int, own_colours: bool = True) -> None:
        self.slots = slots
        self.own_colours = own_colours
        # The network's records, packed as `RecordNorm.packed` gives them (channels of every layer side
        # by side): sums of x and x^2 (slots x 2 x C), normalized minimum and maximum (slots x C each).
        self.layout: tuple | None = None  # ((layer, channels) per record, descriptor sizes)
        self.sums: torch.Tensor | None = None
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.count: dict[int, list[int]] = {}  # pixels per layer and slot
        self.desc_sum: torch.Tensor | None = None
        self.desc_count = 0
        self.own_sum: list[torch.Tensor | None] = [None] * 4
        self.own_sumsq: list[torch.Tensor | None] = [None] * 4
        self.own_count = [0] * 4
        self.own_desc: list[torch.Tensor | None] = [None] * NUM_PREDICTORS
        self.own_desc_count = 0
        self.frames = 0

    def add_pass(self, slot: int, layout: RecordLayout, stats: torch.Tensor, descs: torch.Tensor,
                 primary: bool, rows: int = 1) -> None:
        """Fold the first `rows` frames of a pass for style `slot` (a `RecordNorm`'s packed records) into
        the sums. Pixels are counted per slot (the clip's own colours are rendered on fewer frames);
        the content descriptor, the same for every slot, is taken from the tile's `primary` pass.
        Nothing here keeps `stats` or `descs`: a replayed graph overwrites them."""
        key = (tuple((layer, channels) for layer, _, channels in layout.layers), layout.desc_sizes)
        if self.layout is None:
            self.layout = key
            channels, device = stats.shape[2], stats.device
            self.sums = torch.zeros((self.slots, 2, channels), dtype=torch.float64, device=device)
            self.min = torch.full((self.slots, channels), float("inf"), device=device)
            self.max = torch.full((self.slots, channels), float("-inf"), device=device)
            self.count = {layer: [0] * self.slots for layer, _ in key[0]}
            self.desc_sum = torch.zeros(descs.shape[1], dtype=torch.float64, device=device)
        elif key != self.layout:
            raise RuntimeError(f"analysis passes recorded different layers: {key} after {self.layout}")
        stats = stats[:rows]
        self.sums[slot] += stats[:, :2].double().sum(0)
        torch.minimum(self.min[slot], stats[:, 2].amin(0), out=self.min[slot])
        torch.maximum(self.max[slot], stats[:, 3].amax(0), out=self.max[slot])
        for layer, count, _ in layout.layers:
            self.count[layer][slot] += count * rows
        if primary:
            self.desc_sum += descs[:rows].double().sum(0)
            self.desc_count += rows

    def add_own_colours(self, sums: list[tuple[torch.Tensor, torch.Tensor]], counts: list[int],
                        descs: list[torch.Tensor], rows: int = 1) -> None:
        """Record the clip's own colour statistics of the first `rows` frames: channel sums of the
        colour frames' VGG taps (`channel_sums`, with a frame's pixel count per tap) and their style
        descriptors."""
        for i, (s, sq) in enumerate(sums):
            s, sq = s[:rows].double().sum(0), sq[:rows].double().sum(0)  # kept on the device until finish
            self.own_sum[i] = s if self.own_sum[i] is None else self.own_sum[i] + s
            self.own_sumsq[i] = sq if self.own_sumsq[i] is None else self.own_sumsq[i] + sq
            self.own_count[i] += counts[i] * rows
        for i, d in enumerate(descs):
            d = d[:rows].double().sum(0)
            self.own_desc[i] = d if self.own_desc[i] is None else self.own_desc[i] + d
        self.own_desc_count += rows

    def finish(self, style_targets: StyleTargets, **meta) -> GlobalFeatures:
        if not self.count:
            raise VstError("no frames were analysed")
        layers, desc_sizes = self.layout
        if sorted(layer for layer, _ in layers) != list(range(NUM_NORM_LAYERS)) or len(desc_sizes) != NUM_PREDICTORS:
            raise RuntimeError(f"the analysis recorded layers {layers} and descriptors {desc_sizes}")
        channels = [c for _, c in layers]
        sums, sumsq = (t.split(channels, dim=1) for t in self.sums.cpu().unbind(1))
        mins, maxs = self.min.cpu().split(channels, dim=1), self.max.cpu().split(channels, dim=1)
        at = {layer: i for i, (layer, _) in enumerate(layers)}
        mean, std, lo, hi = [], [], [], []
        for layer in range(NUM_NORM_LAYERS):
            i = at[layer]
            # A slot never rendered (slot 0 of a full-strength analysis) divides by 1: zeros, replaced below.
            count = torch.tensor(self.count[layer], dtype=torch.float64).clamp_min(1.0)[:, None]
            m, s = moments(sums[i], sumsq[i], count)
            mean.append(m.float())
            std.append(s.float())
            lo.append(mins[i].clone())
            hi.append(maxs[i].clone())
        content_desc = [d.float() for d in (self.desc_sum.cpu() / self.desc_count).split(desc_sizes)]
        styles = style_targets.map(lambda t: t.float().cpu())
        if not self.own_colours:
            # Analysed for full strength only: slot 0 (never weighted) repeats slot 1, so that
            # blends stay finite; `GlobalFeatures.has_own_colours` says so.
            for stats in (mean, std, lo, hi):
                for t in stats:
                    t[0] = t[1]
            return GlobalFeatures(norm_mean=mean, norm_std=std, norm_min=lo, norm_max=hi, content_desc=content_desc,
                                  style=StyleTargets.cat([styles.pick(0), styles]), **meta)
        own_mean, own_std = [], []
        for i in range(4):
            m, s = moments(self.own_sum[i].cpu(), self.own_sumsq[i].cpu(), self.own_count[i])
            own_mean.append(m.float()[None])
            own_std.append(s.float()[None])
        own_desc = [(d.cpu() / self.own_desc_count).float()[None] for d in self.own_desc]
        style = StyleTargets.cat([StyleTargets(own_mean, own_std, own_desc), styles])
        return GlobalFeatures(norm_mean=mean, norm_std=std, norm_min=lo, norm_max=hi,
                              content_desc=content_desc, style=style, **meta)
