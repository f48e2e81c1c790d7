"""The effect strip: an image strip of cached stylized frames kept aligned with its source strip.

Python cannot define a native effect-strip type, so the result is baked to files and shown by an
image strip in a channel above the source. It is linked (not grouped into a meta strip, which
would change how users select and edit the source) by a link id stored on both strips; `align`
re-applies the source's timing, channel order and placement whenever the scene changes.

Element k of the effect is `<media frame>.png` for the source's media frame
animation_offset_start + k, so with the same frame_start and handles both strips show the same
media frame at every scene frame.
"""
from __future__ import annotations

import os
import uuid
from typing import Any, Iterable, Optional, Sequence

import bpy

from . import compat, plan, prefs, source_clip
from .engine_cli import EngineError
from .props import MAX_STYLES, WEIGHT_PROPS


def process_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The engine's processing size (its rule: longer side scaled down to max_side)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def png_size(path: str) -> Optional[tuple[int, int]]:
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def container_of(editor: Any, strip: Any) -> Any:
    meta = strip.parent_meta() if hasattr(strip, "parent_meta") else None
    return meta if meta is not None else editor


def _siblings(editor: Any, strip: Any) -> Iterable[Any]:
    return compat.strips(container_of(editor, strip))


def free_channel_above(editor: Any, source: Any, ignore: Any = None) -> int:
    a, b = source.frame_final_start, source.frame_final_end
    busy = {s.channel for s in _siblings(editor, source)
            if s != ignore and s != source and s.frame_final_start < b and a < s.frame_final_end}
    ch = source.channel + 1
    while ch in busy and ch < 128:
        ch += 1
    return ch


def element_names(source: Any) -> list[str]:
    off = int(source.animation_offset_start)
    return [f"{m:06d}.png" for m in range(off, off + int(source.frame_duration))]


def effect_effects(scene: Any) -> list[Any]:
    editor = scene.sequence_editor
    return [s for s in compat.all_strips(editor) if s.vst_is_effect] if editor else []


def set_frames_dir(effect: Any, folder: str) -> None:
    """Point the effect at a look folder (relative to the .blend when possible)."""
    want = folder
    if bpy.data.filepath:
        try:
            want = bpy.path.relpath(folder)
        except ValueError:  # another drive on Windows
            pass
    want = want.rstrip("/\\") + "/"
    if os.path.normpath(bpy.path.abspath(effect.directory)) != os.path.normpath(folder):
        effect.directory = want


def _rebuild_elements(effect: Any, names: Sequence[str]) -> None:
    elems = effect.elements
    while len(elems) > 1:
        elems.pop()
    elems[0].filename = names[0]
    for n in names[1:]:
        elems.append(n)


_sizes: dict[str, Optional[tuple[int, int]]] = {}  # failures cached too: align runs on every update


def media_size(source: Any) -> Optional[tuple[int, int]]:
    """Pixel size of the source media: from the strip when Blender knows it, else by loading it once."""
    size = compat.strip_media_size(source)
    if size:
        return size
    try:
        clip = source_clip.describe_source(source)
    except EngineError:
        return None
    path = clip.files[clip.media_offset if clip.kind == 'IMAGE' else 0]
    if path not in _sizes:
        _sizes[path] = None
        try:
            img = bpy.data.images.load(path, check_existing=False)
        except RuntimeError:
            return None
        try:
            if img.size[0] > 0:
                _sizes[path] = (int(img.size[0]), int(img.size[1]))
        finally:
            bpy.data.images.remove(img)
    return _sizes[path]


def _sync_transform(effect: Any, source: Any) -> None:
    """Scale the (smaller) processed frames to cover exactly the area of the source."""
    size = media_size(source)
    if not size:
        return
    w, h = size
    first = os.path.join(bpy.path.abspath(effect.directory), effect.elements[0].filename) if len(effect.elements) else ""
    ow, oh = png_size(first) or process_size(w, h, int(effect.vst_max_side))
    st, et = source.transform, effect.transform
    want = {"scale_x": st.scale_x * w / ow, "scale_y": st.scale_y * h / oh, "offset_x": st.offset_x,
            "offset_y": st.offset_y, "rotation": st.rotation}
    for k, v in want.items():
        if abs(getattr(et, k) - v) > 1e-6:
            setattr(et, k, v)
    sc, ec = source.crop, effect.crop
    for k, f in (("min_x", ow / w), ("max_x", ow / w), ("min_y", oh / h), ("max_y", oh / h)):
        v = int(round(getattr(sc, k) * f))
        if getattr(ec, k) != v:
            setattr(ec, k, v)
    for k in ("use_flip_x", "use_flip_y", "use_reverse_frames"):  # the effect lists frames in media order
        if getattr(effect, k) != getattr(source, k):
            setattr(effect, k, getattr(source, k))


def align(scene: Any, effect: Any, source: Optional[Any] = None) -> bool:
    """Re-apply the source's timing, channel order and placement. False if the source is gone."""
    source = source or plan.find_source(scene, effect)
    if source is None:
        return False
    if effect.vst_source != source.name:
        effect.vst_source = source.name
    names = element_names(source)
    if [e.filename for e in effect.elements] != names:
        _rebuild_elements(effect, names)
    if effect.frame_start != source.frame_start:
        effect.frame_start = source.frame_start
    if effect.frame_final_start != source.frame_final_start:
        effect.frame_final_start = source.frame_final_start
    if effect.frame_final_end != source.frame_final_end:
        effect.frame_final_end = source.frame_final_end
    if effect.channel <= source.channel:
        effect.channel = free_channel_above(scene.sequence_editor, source, ignore=effect)
    _sync_transform(effect, source)
    return True


def align_all(scene: Any) -> None:
    for effect in effect_effects(scene):
        align(scene, effect)


def add_effect(scene: Any, source: Any, styles: Sequence[str], *, titles: Sequence[str] = (),
               name: Optional[str] = None, max_side: Optional[int] = None) -> Any:
    """Create the effect strip for `source`; EngineError (nothing created) on bad input."""
    if getattr(source, "vst_is_effect", False):
        raise EngineError(f"strip '{source.name}' is itself a style-transfer strip")
    source_clip.describe_source(source)
    if not styles:
        raise EngineError("give at least one style image")
    if len(styles) > MAX_STYLES:
        raise EngineError(f"at most {MAX_STYLES} styles are supported, got {len(styles)}")
    paths = [os.path.normpath(bpy.path.abspath(p)) for p in styles]
    for p in paths:
        if not os.path.isfile(p):
            raise EngineError(f"style image not found: {p}")
    editor = scene.sequence_editor
    if not source.vst_link_id:
        source.vst_link_id = uuid.uuid4().hex
    names = element_names(source)
    pending = os.path.join(prefs.cache_root(), "unbaked")
    effect = compat.new_image_strip(container_of(editor, source), name or f"{source.name} (styled)",
                                    os.path.join(pending, names[0]), free_channel_above(editor, source),
                                    int(round(source.frame_start)))
    try:
        for n in names[1:]:
            effect.elements.append(n)
        effect.vst_is_effect = True
        effect.vst_source = source.name
        effect.vst_source_id = source.vst_link_id
        if max_side:
            effect.vst_max_side = int(max_side)
        for i, p in enumerate(paths):
            item = effect.vst_styles.add()
            item.path = p
            item.title = titles[i] if i < len(titles) else os.path.splitext(os.path.basename(p))[0]
            setattr(effect, WEIGHT_PROPS[i], 1.0)
        align(scene, effect, source)
    except BaseException:
        compat.strips(container_of(editor, source)).remove(effect)
        raise
    return effect


def point_at_plan(scene: Any, effect: Any) -> Optional[plan.BakePlan]:
    """Align the effect and point it at its current look folder; None if the plan is not possible."""
    try:
        p = plan.make_plan(scene, effect)
    except EngineError:
        return None
    align(scene, effect)
    set_frames_dir(effect, p.frames_dir)
    return p
