"""Video Style Transfer: restyle sequencer strips after artworks without flicker.

Consistent video style transfer (Wang et al., AAAI 2020) for Blender's Video Sequence Editor.
The engine (PyTorch) runs in a separate Python process; this add-on maps strips, keyframed
style weights and renders to engine calls and shows the baked frames as an image strip.
Works as a legacy add-on (3.4+, `bl_info`) and as an extension (4.2+, blender_manifest.toml).
"""
from __future__ import annotations

bl_info = {
    "name": "Video Style Transfer",
    "author": "vst project",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Sequencer > Sidebar > Style Transfer; Strip menu > Add Style Transfer",
    "description": "Flicker-free style transfer of movie and image strips after artworks",
    "doc_url": "",
    "category": "Sequencer",
}

import bpy  # noqa: E402

from . import handlers, installer, jobs, operators, prefs, presets, props, ui  # noqa: E402


def _classes() -> tuple[type, ...]:
    return prefs.classes() + operators.classes() + installer.classes()


def register() -> None:
    props.register()
    presets.register()
    for cls in _classes():
        bpy.utils.register_class(cls)
    ui.register()
    handlers.register()


def unregister() -> None:
    handlers.unregister()
    jobs.unregister()
    installer.unregister()
    ui.unregister()
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
    presets.unregister()
    props.unregister()
