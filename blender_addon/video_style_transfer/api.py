"""Scripting API.

    import video_style_transfer.api as vst          # legacy add-on name; as an extension:
    # from bl_ext.user_default.video_style_transfer import api as vst
    effect = vst.add_effect(scene, strip, styles=["/art/a.jpg", "/art/b.jpg"])
    vst.set_weight(effect, 1, 0.0, frame=1)          # style 2 (0-based index 1) keyed at frame 1
    vst.set_weight(effect, 1, 1.0, frame=48)
    vst.set_strength(effect, 0.8)
    vst.bake(effect)                                  # synchronous; raises vst.EngineError on failure

Style indices are 0-based in this API (the UI shows them from 1).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Sequence

import bpy

from . import bake as _bake, effect as _fx, plan as _plan, presets
from .engine_cli import EngineError
from .props import MAX_STYLES, WEIGHT_PROPS

__all__ = ["EngineError", "add_effect", "set_weight", "set_strength", "bake", "analyze", "status", "weights_at",
           "preset_path", "effects"]


def _scene_of(strip: Any) -> Any:
    scene = strip.id_data
    if not isinstance(scene, bpy.types.Scene):
        raise EngineError("the strip does not belong to a scene")
    return scene


def add_effect(scene: Any, strip: Any, styles: Sequence[str], *, max_side: Optional[int] = None,
               name: Optional[str] = None) -> Any:
    """Add a style-transfer strip above `strip` (a movie or image strip) and return it.

    `styles` are image paths or preset ids (see `presets.available()`); nothing is baked yet.
    """
    paths = [preset_path(s) if os.path.sep not in s and presets.find(s) else s for s in styles]
    return _fx.add_effect(scene, strip, paths, name=name, max_side=max_side)


def preset_path(preset_id: str) -> str:
    p = presets.find(preset_id)
    if p is None:
        raise EngineError(f"no bundled style named '{preset_id}'")
    return p.path


def _check_index(effect: Any, style_index: int) -> str:
    if not effect.vst_is_effect:
        raise EngineError(f"strip '{effect.name}' is not a style-transfer strip")
    if not 0 <= style_index < min(len(effect.vst_styles), MAX_STYLES):
        raise EngineError(f"style index {style_index} out of range (the strip has {len(effect.vst_styles)} styles)")
    return WEIGHT_PROPS[style_index]


def set_weight(effect: Any, style_index: int, value: float, frame: Optional[int] = None) -> None:
    """Set a style's weight; with `frame`, insert a keyframe there (animated weight)."""
    prop = _check_index(effect, style_index)
    setattr(effect, prop, float(value))
    if frame is not None:
        effect.keyframe_insert(prop, frame=frame)


def set_strength(effect: Any, value: float, frame: Optional[int] = None) -> None:
    effect.vst_strength = float(value)
    if frame is not None:
        effect.keyframe_insert("vst_strength", frame=frame)


def weights_at(effect: Any, frame: int) -> list[float]:
    """Raw (not normalized) weights of the effect's styles evaluated at a scene frame."""
    return [_plan.animated_value(effect, p, frame) for p in WEIGHT_PROPS[:len(effect.vst_styles)]]


def bake(effect: Any, frames: Optional[Iterable[int]] = None, verbose: bool = False) -> int:
    """Bake the missing stylized frames now (scene frames; default the whole strip). Returns the count."""
    scene = _scene_of(effect)
    p = _plan.make_plan(scene, effect)
    _fx.align(scene, effect)
    _fx.set_frames_dir(effect, p.frames_dir)
    media = p.frames_for_scene(frames) if frames is not None else None
    progress = (lambda d, t, label: print(f"vst: {effect.name}: {d}/{t} {label}", flush=True)) if verbose else None
    count = _bake.bake_sync(p, media, progress)
    effect.invalidate_cache('RAW')
    _fx.align(scene, effect)
    return count


def analyze(effect: Any) -> bool:
    """Compute the global features of the whole strip now (if not cached); True if the engine ran.

    A render farm's pre-step: with the cache on shared storage, workers then only stylize.
    """
    scene = _scene_of(effect)
    p = _plan.make_plan(scene, effect)
    _fx.set_frames_dir(effect, p.frames_dir)
    return _bake.analyze_sync(p)


def status(effect: Any) -> dict:
    """{'frames_dir', 'total', 'missing'} for the effect's current settings."""
    p = _plan.make_plan(_scene_of(effect), effect)
    return {"frames_dir": p.frames_dir, "total": len(p.all_frames()), "missing": len(p.missing())}


def effects(scene: Any) -> list[Any]:
    return _fx.effect_effects(scene)
