"""Bundled public-domain artworks (presets/) and their thumbnails for an icon enum."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import bpy

PRESET_DIR = os.path.join(os.path.dirname(__file__), "presets")
_previews: Any = None
_items: list[tuple] = []


@dataclass(frozen=True)
class Preset:
    id: str
    title: str
    author: str
    path: str
    thumb: str


def available() -> list[Preset]:
    try:
        with open(os.path.join(PRESET_DIR, "presets.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    return [Preset(d["id"], d["title"], d["author"], os.path.join(PRESET_DIR, d["file"]),
                   os.path.join(PRESET_DIR, d["thumb"])) for d in data]


def find(preset_id: str) -> Optional[Preset]:
    return next((p for p in available() if p.id == preset_id), None)


def enum_items(_self: Any = None, _context: Any = None) -> list[tuple]:
    """Items for an EnumProperty with thumbnails; Python must keep the list alive (Blender quirk)."""
    global _items
    if _items:
        return _items
    items = []
    for i, p in enumerate(available()):
        icon = 0
        if _previews is not None and not bpy.app.background:
            thumb = _previews.get(p.id) or _previews.load(p.id, p.thumb, 'IMAGE')
            icon = thumb.icon_id
        items.append((p.id, p.title, f"{p.title}, {p.author}", icon, i))
    _items = items or [("NONE", "No presets", "", 0, 0)]
    return _items


def register() -> None:
    global _previews
    import bpy.utils.previews
    _previews = bpy.utils.previews.new()


def unregister() -> None:
    global _previews, _items
    if _previews is not None:
        bpy.utils.previews.remove(_previews)
    _previews = None
    _items = []
