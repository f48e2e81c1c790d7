"""Every Blender API difference between 3.4, 4.2, 4.5 and 5.0 that the add-on touches, in one place.

- strip type: `bpy.types.Sequence` up to 4.3, `bpy.types.Strip` from 4.4 (no alias);
- strip collections: `sequences`/`sequences_all` up to 4.3, `strips`/`strips_all` from 4.4 (only name in 5.0);
- `new_image`/`new_movie` keyword arguments (`fit_method` may be absent in some versions);
- animation: `Action.fcurves` up to 4.4; 5.0 keeps F-curves in channel bags per action slot;
- per-user data folder: extensions (4.2+) get `extension_path_user`, legacy add-ons a config sub-folder.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import bpy

VERSION: tuple[int, int, int] = tuple(bpy.app.version)  # type: ignore[assignment]
# The add-on's root package: "video_style_transfer" (legacy) or "bl_ext.<repo>.video_style_transfer".
PACKAGE: str = __package__ or "video_style_transfer"
IS_EXTENSION: bool = PACKAGE.startswith("bl_ext.")

STRIP_TYPE: Any = getattr(bpy.types, "Strip", None) or bpy.types.Sequence


def strips(editor: Any) -> Any:
    """Top-level strip collection (has new_image/new_movie)."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(editor: Any) -> Iterable[Any]:
    """All strips, including those inside meta strips."""
    if editor is None:
        return []
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def find_strip(scene: Any, name: str) -> Optional[Any]:
    editor = scene.sequence_editor
    if editor is None or not name:
        return None
    return all_strips(editor).get(name)


def new_image_strip(editor: Any, name: str, filepath: str, channel: int, frame_start: int) -> Any:
    coll = strips(editor)
    try:
        return coll.new_image(name=name, filepath=filepath, channel=channel, frame_start=frame_start,
                              fit_method='ORIGINAL')
    except TypeError:  # a version without fit_method
        return coll.new_image(name=name, filepath=filepath, channel=channel, frame_start=frame_start)


def new_movie_strip(editor: Any, name: str, filepath: str, channel: int, frame_start: int) -> Any:
    coll = strips(editor)
    try:
        return coll.new_movie(name=name, filepath=filepath, channel=channel, frame_start=frame_start,
                              fit_method='ORIGINAL')
    except TypeError:
        return coll.new_movie(name=name, filepath=filepath, channel=channel, frame_start=frame_start)


def _action_fcurves(id_data: Any) -> Iterable[Any]:
    anim = getattr(id_data, "animation_data", None)
    action = anim.action if anim else None
    if action is None:
        return []
    if hasattr(action, "fcurves"):  # up to 4.4 (layered actions keep a legacy view until 5.0)
        return action.fcurves
    slot = getattr(anim, "action_slot", None)
    try:
        from bpy_extras import anim_utils
        bag = anim_utils.action_get_channelbag_for_slot(action, slot)
    except (ImportError, AttributeError):
        bag = None
        for layer in getattr(action, "layers", []):
            for strip in layer.strips:
                bag = strip.channelbag(slot) if slot is not None else None
                if bag:
                    break
    return bag.fcurves if bag else []


def fcurve_collection(id_data: Any) -> Optional[Any]:
    """The collection holding the ID's F-curves (supports .remove), or None when not animated."""
    curves = _action_fcurves(id_data)
    return curves if hasattr(curves, "remove") else None


def find_fcurve(owner: Any, prop: str, index: int = 0) -> Optional[Any]:
    """The F-curve animating `owner.prop` (a strip's property lives on the scene's action)."""
    try:
        path = owner.path_from_id(prop)
    except (ValueError, TypeError):
        return None
    for fc in _action_fcurves(owner.id_data):
        if fc.data_path == path and fc.array_index == index:
            return fc
    return None


def user_data_dir() -> str:
    """A writable per-user folder for the add-on's own files (the private engine environment)."""
    if IS_EXTENSION and hasattr(bpy.utils, "extension_path_user"):
        return bpy.utils.extension_path_user(PACKAGE, path="", create=True)
    path = bpy.utils.user_resource('CONFIG', path="video_style_transfer", create=True)
    return path or os.path.join(os.path.expanduser("~"), ".video_style_transfer")


def addon_preferences(context: Any = None) -> Optional[Any]:
    context = context or bpy.context
    addon = context.preferences.addons.get(PACKAGE)
    return addon.preferences if addon else None


def strip_media_size(strip: Any) -> Optional[tuple[int, int]]:
    """Pixel size of the strip's media as Blender read it (None until known)."""
    elements = getattr(strip, "elements", None)
    if elements and len(elements) and elements[0].orig_width > 0:
        return int(elements[0].orig_width), int(elements[0].orig_height)
    return None


def active_strip(context: Any) -> Optional[Any]:
    editor = context.scene.sequence_editor if context.scene else None
    return editor.active_strip if editor else None
