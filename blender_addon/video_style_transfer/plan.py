"""A bake plan: which engine calls produce which cached frames for an effect strip.

Cache layout (under the cache root, by default //vst_cache next to the .blend):

    <clip key>/global_features.pt     global features of the WHOLE strip (analysed once)...
    <clip key>/global_features_full_strength.pt   ...or, while no frame has a strength below 1,
                                      those for full strength only (a third less analysis);
                                      a strength below 1 later adds the clip's own colours to them
    <clip key>/info.json              what the key stands for (for people)
    <clip key>/<look key>/NNNNNN.png  stylized frames, NNNNNN = the engine's input frame number
    <clip key>/<look key>/keys.json   the per-frame style weights and strength given to the engine
    inputs/<key>/                     ordered links to an image strip's files

clip key = source media + shown frame range + styles' content + model id + processing size,
consistency, deflicker, per-shot analysis, device and the engine's precision there; look key = clip key + per-frame weights and strength + colour option.
Frames present in the look folder are final (the engine writes them atomically), so an
interrupted bake resumes by baking only the missing ones. A new look takes over (hard-links) the
frames of earlier looks of the same clip whose weights, strength and colour option are equal, so
changing a key re-bakes only the frames whose values changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import bpy

from . import compat, engine_cli, prefs, source_clip
from .engine_cli import EngineError
from .props import MAX_STYLES, WEIGHT_PROPS

CACHE_VERSION = 1
FEATURES = "global_features.pt"
FULL_STRENGTH_FEATURES = "global_features_full_strength.pt"
_digests: dict[tuple[str, int, int], str] = {}


@dataclass
class Run:
    """One engine call."""
    label: str
    cmd: list[str]
    frames: list[int] = field(default_factory=list)  # media frames it writes (none for analysis)


@dataclass
class BakePlan:
    scene_name: str
    effect_name: str
    source_name: str
    python: str
    model: str
    device: str
    max_side: int
    consistency: bool
    preserve_color: bool
    deflicker: bool  # recorded in the features: the stylization then applies it
    per_shot: bool  # the features hold each shot's statistics: the stylization picks a frame's shot
    clip: source_clip.SourceClip
    styles: list[str]
    weights: dict[int, list[float]]  # media frame -> normalized style weights
    strength: dict[int, float]       # media frame -> strength
    cache_root: str
    clip_dir: str
    frames_dir: str
    clip_info: dict = field(default_factory=dict)

    @property
    def needs_own_colours(self) -> bool:
        """Whether some frame blends towards the clip's own colours (a strength below 1)."""
        return any(s < 1 for s in self.strength.values())

    @property
    def features_path(self) -> Optional[str]:
        """The features the frames are stylized with: the complete ones where they exist or are
        needed, else those for full strength only (both render strength 1 the same)."""
        if not self.consistency:
            return None
        complete = os.path.join(self.clip_dir, FEATURES)
        if self.needs_own_colours or os.path.isfile(complete):
            return complete
        return os.path.join(self.clip_dir, FULL_STRENGTH_FEATURES)

    @property
    def keys_path(self) -> str:
        return os.path.join(self.frames_dir, "keys.json")

    def frame_file(self, media_frame: int) -> str:
        return os.path.join(self.frames_dir, f"{media_frame:06d}.png")

    def all_frames(self) -> list[int]:
        return list(range(*self.clip.media_range))

    def frames_for_scene(self, frames: Iterable[int]) -> list[int]:
        """Media frames needed to show these scene frames (those outside the strip are ignored)."""
        a, b = self.clip.visible
        return sorted({self.clip.media_index(f) for f in frames if a <= f < b})

    def missing(self, media_frames: Optional[Iterable[int]] = None) -> list[int]:
        frames = self.all_frames() if media_frames is None else media_frames
        try:
            present = set(os.listdir(self.frames_dir))
        except OSError:
            present = set()
        return [m for m in frames if f"{m:06d}.png" not in present]

    def needs_analysis(self) -> bool:
        return bool(self.features_path) and not os.path.isfile(self.features_path)  # type: ignore[arg-type]

    def engine_input(self) -> str:
        return source_clip.engine_input(self.clip, self.cache_root) if self.clip.kind == 'IMAGE' else self.clip.files[0]

    def analysis_run(self) -> Optional[Run]:
        """The call computing the global features of the whole strip, if they are not cached yet."""
        if not self.needs_analysis():
            return None
        lean = os.path.join(self.clip_dir, FULL_STRENGTH_FEATURES)
        if self.needs_own_colours and os.path.isfile(lean):  # analyse only what the lean file lacks
            return Run("add own colours", engine_cli.complete_command(
                self.python, self.engine_input(), self.styles, self.model, self.device, lean,
                self.features_path))  # type: ignore[arg-type]
        return Run("analyse", engine_cli.analyze_command(
            self.python, self.engine_input(), self.styles, self.clip.media_range, self.max_side, self.model,
            self.device, self.features_path, full_strength=not self.needs_own_colours,  # type: ignore[arg-type]
            deflicker=self.deflicker, per_shot=self.per_shot))

    def runs(self, media_frames: Optional[Iterable[int]] = None) -> list[Run]:
        """Engine calls that fill the missing frames among `media_frames` (default: the whole strip)."""
        todo = self.missing(media_frames)
        if not todo:
            return []
        inp = self.engine_input()
        analysis = self.analysis_run()
        runs = [analysis] if analysis else []
        # Weights and strength are keyed per frame in keys.json: each contiguous run is one call.
        groups: list[list[int]] = []
        for m in todo:
            if groups and m == groups[-1][-1] + 1:
                groups[-1].append(m)
            else:
                groups.append([m])
        for g in groups:
            runs.append(Run(f"stylize {g[0]}-{g[-1]}", engine_cli.stylize_command(
                self.python, inp, self.styles, (g[0], g[-1] + 1), self.max_side, self.model, self.device,
                self.frames_dir, weights_file=self.keys_path, preserve_color=self.preserve_color,
                features=self.features_path), g))
        return runs

    def keys_document(self) -> dict:
        """The engine's weights file; `preserve_color` is ours (the engine ignores it) for reuse."""
        return {"weights": [{str(m): w[i] for m, w in sorted(self.weights.items())} for i in range(len(self.styles))],
                "strength": {str(m): s for m, s in sorted(self.strength.items())},
                "preserve_color": self.preserve_color}

    def prepare(self) -> None:
        """Create the cache folders and the weights file (atomically); EngineError if not writable."""
        try:
            os.makedirs(self.frames_dir, exist_ok=True)
            atomic_write(self.keys_path, json.dumps(self.keys_document()).encode())
            info = os.path.join(self.clip_dir, "info.json")
            if not os.path.isfile(info):
                atomic_write(info, json.dumps(self.clip_info, indent=1).encode())
            self.reuse_frames()
        except OSError as exc:
            raise EngineError(f"cache folder {self.cache_root} is not writable: {exc.strerror or exc}") from None

    def reuse_frames(self) -> int:
        """Take over frames of this clip's other looks whose per-frame values equal ours; how many."""
        todo = set(self.missing())
        if not todo:
            return 0
        mine = self.keys_document()
        reused = 0
        for look in sorted(os.listdir(self.clip_dir)):
            folder = os.path.join(self.clip_dir, look)
            if folder == self.frames_dir or not os.path.isfile(os.path.join(folder, "keys.json")):
                continue
            try:
                with open(os.path.join(folder, "keys.json"), encoding="utf-8") as f:
                    theirs = json.load(f)
                if not isinstance(theirs, dict) or theirs.get("preserve_color") != mine["preserve_color"]:
                    continue
                for m in sorted(todo):
                    k = str(m)
                    same = (theirs["strength"].get(k) == mine["strength"][k]
                            and [w.get(k) for w in theirs["weights"]] == [w[k] for w in mine["weights"]])
                    src = os.path.join(folder, f"{m:06d}.png")
                    if same and os.path.isfile(src):
                        link_or_copy(src, self.frame_file(m))
                        todo.discard(m)
                        reused += 1
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # an older or foreign keys file: nothing to take over
        return reused


def atomic_write(path: str, data: bytes) -> None:
    """Write to a hidden temporary beside `path`, then rename. Created 0666 so the umask applies (mkstemp's
    0600 kept the cache's files from a render node running as another user)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def link_or_copy(src: str, dst: str) -> None:
    """Put a finished frame under a new name atomically: a hard link, or a copy where links fail."""
    tmp = dst + ".link.tmp"
    try:
        os.unlink(tmp)
    except OSError:
        pass
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def file_digest(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _digests:
        with open(path, "rb") as f:
            _digests[key] = hashlib.sha256(f.read()).hexdigest()
    return _digests[key]


def _key(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def find_source(scene: Any, effect: Any) -> Optional[Any]:
    """The effect's source strip: by link id (survives renames), preferring the recorded name."""
    editor = scene.sequence_editor
    if editor is None:
        return None
    named = compat.find_strip(scene, effect.vst_source)
    if named is not None and not named.vst_is_effect and (not effect.vst_source_id
                                                           or named.vst_link_id == effect.vst_source_id):
        return named
    if effect.vst_source_id:
        linked = [s for s in compat.all_strips(editor)
                  if s.vst_link_id == effect.vst_source_id and not s.vst_is_effect]
        if linked:
            return min(linked, key=lambda s: abs(s.frame_start - effect.frame_start))
    return None


def style_paths(effect: Any) -> list[str]:
    return [os.path.normpath(bpy.path.abspath(s.path)) for s in effect.vst_styles]


def animated_value(strip: Any, prop: str, frame: int) -> float:
    fc = compat.find_fcurve(strip, prop)
    return float(fc.evaluate(frame)) if fc is not None else float(getattr(strip, prop))


def per_frame_values(effect: Any, clip: source_clip.SourceClip, n_styles: int) -> tuple[dict, dict]:
    """Evaluated weights (normalized) and strength per media frame, from the F-curves."""
    weights: dict[int, list[float]] = {}
    strength: dict[int, float] = {}
    curves = [compat.find_fcurve(effect, p) for p in WEIGHT_PROPS[:n_styles]]
    s_curve = compat.find_fcurve(effect, "vst_strength")
    for f in clip.scene_frames():
        m = clip.media_index(f)
        if m in weights:  # held frames beyond the content show the same media frame
            continue
        raw = [max(0.0, float(c.evaluate(f)) if c else float(getattr(effect, WEIGHT_PROPS[i])))
               for i, c in enumerate(curves)]
        total = sum(raw)
        if total <= 0:
            raise EngineError(f"effect '{effect.name}', frame {f}: all style weights are 0")
        weights[m] = [round(w / total, 6) for w in raw]
        s = float(s_curve.evaluate(f)) if s_curve else float(effect.vst_strength)
        strength[m] = round(min(1.0, max(0.0, s)), 6)
    return weights, strength


def make_plan(scene: Any, effect: Any, *, python: Optional[str] = None) -> BakePlan:
    """Validate everything the bake needs and derive the cache folders; EngineError on bad input."""
    if not effect.vst_is_effect:
        raise EngineError(f"strip '{effect.name}' is not a style-transfer strip")
    source = find_source(scene, effect)
    if source is None:
        raise EngineError(f"effect '{effect.name}': its source strip '{effect.vst_source}' is gone")
    clip = source_clip.describe_source(source)
    styles = style_paths(effect)
    if not styles:
        raise EngineError(f"effect '{effect.name}' has no style image")
    if len(styles) > MAX_STYLES:
        raise EngineError(f"effect '{effect.name}' has {len(styles)} styles; at most {MAX_STYLES} are supported")
    for path in styles:
        if not os.path.isfile(path):
            raise EngineError(f"effect '{effect.name}': style image not found: {path}")
    python = python or prefs.engine_python()
    model = effect.vst_model.strip() or prefs.default_model()
    info = engine_cli.engine_info(python, model, effect.vst_device)
    model_id = info.get("model_id", model)
    weights, strength = per_frame_values(effect, clip, len(styles))
    root = prefs.cache_root()
    clip_info = {
        "cache_version": CACHE_VERSION, "source": clip.files[0] if clip.kind == 'MOVIE' else clip.files[:1],
        "source_digest": clip.digest, "media_range": list(clip.media_range),
        "styles": [[p, file_digest(p)] for p in styles], "model": model, "model_id": model_id,
        "max_side": int(effect.vst_max_side), "consistency": bool(effect.vst_consistency),
        "device": effect.vst_device, "interval": 8,
        # The CPU's precision (bf16 or fp32) changes pixels by about a grey level: never mix them.
        "precision": info.get("precision", "fp32"),
    }
    deflicker = bool(effect.vst_deflicker) and bool(effect.vst_consistency)
    per_shot = bool(effect.vst_per_shot) and bool(effect.vst_consistency)
    # Recorded only when on: the caches of strips without them keep their keys.
    clip_info |= {name: True for name, on in (("deflicker", deflicker), ("per_shot", per_shot)) if on}
    # Paths stay out of the key (content digests only), so other machines find the same folders.
    clip_key = _key({k: v for k, v in clip_info.items() if k not in ("source", "styles")}
                    | {"styles": [d for _, d in clip_info["styles"]]})
    look_key = _key({"clip": clip_key, "w": sorted(weights.items()), "s": sorted(strength.items()),
                     "pc": bool(effect.vst_preserve_color)})
    clip_dir = os.path.join(root, clip_key)
    return BakePlan(scene.name, effect.name, source.name, python, model, effect.vst_device, int(effect.vst_max_side),
                    bool(effect.vst_consistency), bool(effect.vst_preserve_color), deflicker, per_shot, clip, styles,
                    weights, strength, root, clip_dir, os.path.join(clip_dir, look_key), clip_info)
