"""Sequencer side-bar panel ("Style Transfer" tab) and a menu entry."""
from __future__ import annotations

import os
import time
from typing import Any

import bpy
from bpy.props import EnumProperty

from . import compat, effect as fx, engine_cli, handlers, jobs, plan, prefs, presets
from .engine_cli import EngineError
from .props import WEIGHT_PROPS

_status: dict[tuple[str, str], tuple[float, str, str]] = {}  # (scene, strip) -> (time, icon, text)
STATUS_TTL_S = 1.0


def _bake_status(scene: Any, effect: Any) -> tuple[str, str]:
    """'Ready' / 'n of m frames missing', recomputed at most once a second (draw must stay cheap)."""
    key = (scene.name, effect.name)
    now = time.monotonic()
    hit = _status.get(key)
    if hit and now - hit[0] < STATUS_TTL_S:
        return hit[1], hit[2]
    try:
        python = prefs.engine_python()
        model = effect.vst_model.strip() or prefs.default_model()
        if engine_cli.cached_info(python, model, effect.vst_device) is None:
            icon, text = 'QUESTION', "Not checked yet: press Bake"
        else:
            p = plan.make_plan(scene, effect, python=python)
            missing, total = len(p.missing()), len(p.all_frames())
            if os.path.normpath(bpy.path.abspath(effect.directory)) != os.path.normpath(p.frames_dir):
                # Settings changed: show this look's frames (or the source where none are baked yet).
                # Data cannot be written while drawing, hence the timer.
                bpy.app.timers.register(lambda: _point_at(scene.name, effect.name, p.frames_dir), first_interval=0.0)
            icon, text = ('CHECKMARK', f"Ready: {total} frames baked") if not missing else \
                ('TIME', f"{missing} of {total} frames to bake")
    except EngineError as exc:
        icon, text = 'ERROR', str(exc)
    _status[key] = (now, icon, text)
    return icon, text


def _point_at(scene_name: str, strip_name: str, folder: str) -> None:
    scene = bpy.data.scenes.get(scene_name)
    strip = compat.find_strip(scene, strip_name) if scene else None
    if strip is not None:
        fx.set_frames_dir(strip, folder)
        strip.invalidate_cache('RAW')


def _wrapped(layout: Any, text: str, icon: str = 'NONE', width: int = 48) -> None:
    words, line, first = text.split(), "", True
    for w in words:
        if line and len(line) + len(w) > width:
            layout.label(text=line, icon=icon if first else 'BLANK1')
            line, first = "", False
        line = f"{line} {w}".strip()
    if line:
        layout.label(text=line, icon=icon if first else 'BLANK1')


class VST_PT_style_transfer(bpy.types.Panel):
    bl_space_type = 'SEQUENCE_EDITOR'
    bl_region_type = 'UI'
    bl_category = "Style Transfer"
    bl_label = "Style Transfer"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.scene is not None and context.scene.sequence_editor is not None

    def draw(self, context: Any) -> None:
        layout = self.layout
        strip = compat.active_strip(context)
        if strip is not None and strip.vst_is_effect:
            self._draw_effect(context, layout, strip)
        elif strip is not None and strip.type in {'MOVIE', 'IMAGE'}:
            layout.template_icon_view(context.window_manager, "vst_preset", show_labels=True, scale=5.0)
            op = layout.operator("vst.add_effect", icon='BRUSH_DATA')
            op.preset = context.window_manager.vst_preset
        else:
            layout.label(text="Select a movie or image strip", icon='INFO')
        if jobs.active:
            layout.operator("vst.bake_cancel", text="Cancel All Bakes", icon='CANCEL')

    def _draw_effect(self, context: Any, layout: Any, effect: Any) -> None:
        scene = context.scene
        layout.use_property_split = True
        layout.use_property_decorate = True  # key buttons next to animatable properties
        layout.label(text=f"Source: {effect.vst_source}", icon='SEQUENCE')
        box = layout.box()
        box.label(text="Styles (weights are normalized per frame)")
        for i, style in enumerate(effect.vst_styles):
            row = box.row(align=True)
            row.prop(effect, WEIGHT_PROPS[i], text=style.title or f"Style {i + 1}")
            rm = row.operator("vst.style_remove", text="", icon='X')
            rm.index = i
        row = box.row(align=True)
        row.operator("vst.style_add_preset", icon='ADD').preset = context.window_manager.vst_preset
        row.prop(context.window_manager, "vst_preset", text="")
        box.operator("vst.style_add_file", icon='FILE_IMAGE')
        col = layout.column()
        col.prop(effect, "vst_strength")
        col.prop(effect, "vst_preserve_color")
        col.prop(effect, "vst_consistency")
        row = col.row()
        row.active = effect.vst_consistency  # per-frame statistics even out the exposure anyway
        row.prop(effect, "vst_deflicker")
        row.prop(effect, "vst_per_shot")
        col.prop(effect, "vst_max_side")
        col.prop(effect, "vst_device")
        col.prop(effect, "vst_model")
        if scene.view_settings.view_transform != 'Standard':
            _wrapped(layout, "View transform is not 'Standard': rendered colours will differ from the "
                     "baked frames", 'INFO')

        bake_box = layout.box()
        job = jobs.job_for(scene, effect)
        if job is not None:
            if hasattr(bake_box, "progress"):  # 4.0+
                bake_box.progress(factor=job.fraction, type='BAR', text=job.status_line())
            else:
                bake_box.label(text=f"Baking {job.status_line()} {100 * job.fraction:.0f}%", icon='TIME')
            bake_box.operator("vst.bake_cancel", icon='CANCEL')
            return
        icon, text = _bake_status(scene, effect)
        _wrapped(bake_box, text, icon)
        last = jobs.last_result(scene, effect)
        if last is not None and last.state in {"failed", "cancelled"}:
            _wrapped(bake_box, last.message, 'ERROR' if last.state == "failed" else 'INFO')
        if effect.name in handlers.ui_errors:
            _wrapped(bake_box, "Render: " + handlers.ui_errors[effect.name], 'ERROR')
        bake_box.operator("vst.bake", icon='RENDER_ANIMATION')


def menu_entry(self: Any, context: Any) -> None:
    self.layout.separator()
    self.layout.operator("vst.add_effect", icon='BRUSH_DATA')


def register() -> None:
    bpy.types.WindowManager.vst_preset = EnumProperty(name="Style Preset", items=presets.enum_items)
    bpy.utils.register_class(VST_PT_style_transfer)
    bpy.types.SEQUENCER_MT_strip.append(menu_entry)


def unregister() -> None:
    bpy.types.SEQUENCER_MT_strip.remove(menu_entry)
    bpy.utils.unregister_class(VST_PT_style_transfer)
    del bpy.types.WindowManager.vst_preset
    _status.clear()
