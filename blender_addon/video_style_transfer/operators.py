"""Operators: add the effect, edit its style list, bake / cancel, re-align, check the engine."""
import os
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import compat, effect as fx, engine_cli, jobs, plan, prefs, presets
from .engine_cli import EngineError
from .props import MAX_STYLES, WEIGHT_PROPS


def _active(context: Any) -> Any:
    return compat.active_strip(context)


def _active_effect(context: Any) -> Any:
    strip = _active(context)
    return strip if strip is not None and strip.vst_is_effect else None


class VST_OT_add_effect(bpy.types.Operator):
    """Add a style-transfer strip above the active movie or image strip"""
    bl_idname = "vst.add_effect"
    bl_label = "Add Style Transfer"
    bl_options = {'REGISTER', 'UNDO'}

    preset: EnumProperty(name="Style", items=presets.enum_items)  # type: ignore[valid-type]
    style_path: StringProperty(name="Style Image", subtype='FILE_PATH',  # type: ignore[valid-type]
                               description="An artwork image (overrides the preset)")

    @classmethod
    def poll(cls, context: Any) -> bool:
        strip = _active(context)
        return strip is not None and strip.type in {'MOVIE', 'IMAGE'} and not strip.vst_is_effect

    def execute(self, context: Any) -> set[str]:
        scene, source = context.scene, _active(context)
        if self.style_path:
            styles, titles = [self.style_path], []
        else:
            p = presets.find(self.preset)
            if p is None:
                self.report({'ERROR'}, "choose a style preset or an image")
                return {'CANCELLED'}
            styles, titles = [p.path], [p.title]
        try:
            effect = fx.add_effect(scene, source, styles, titles=titles)
        except EngineError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        for s in compat.all_strips(scene.sequence_editor):
            s.select = False
        effect.select = True
        scene.sequence_editor.active_strip = effect
        self.report({'INFO'}, f"added '{effect.name}': press Bake in the Style Transfer panel")
        return {'FINISHED'}


class VST_OT_style_add_preset(bpy.types.Operator):
    """Add a bundled artwork as another style of the active style-transfer strip"""
    bl_idname = "vst.style_add_preset"
    bl_label = "Add Preset Style"
    bl_options = {'REGISTER', 'UNDO'}

    preset: EnumProperty(name="Style", items=presets.enum_items)  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        e = _active_effect(context)
        return e is not None and len(e.vst_styles) < MAX_STYLES

    def execute(self, context: Any) -> set[str]:
        p = presets.find(self.preset)
        if p is None:
            self.report({'ERROR'}, "no such preset")
            return {'CANCELLED'}
        _append_style(_active_effect(context), p.path, p.title)
        return {'FINISHED'}


class VST_OT_style_add_file(bpy.types.Operator):
    """Add an image file as another style of the active style-transfer strip"""
    bl_idname = "vst.style_add_file"
    bl_label = "Add Style Image"
    bl_options = {'REGISTER', 'UNDO'}

    filepath: StringProperty(subtype='FILE_PATH')  # type: ignore[valid-type]
    filter_image: BoolProperty(default=True, options={'HIDDEN', 'SKIP_SAVE'})  # type: ignore[valid-type]
    filter_folder: BoolProperty(default=True, options={'HIDDEN', 'SKIP_SAVE'})  # type: ignore[valid-type]

    poll = VST_OT_style_add_preset.poll

    def invoke(self, context: Any, event: Any) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {'RUNNING_MODAL'}

    def execute(self, context: Any) -> set[str]:
        if not os.path.isfile(bpy.path.abspath(self.filepath)):
            self.report({'ERROR'}, f"style image not found: {self.filepath}")
            return {'CANCELLED'}
        _append_style(_active_effect(context), self.filepath, "")
        return {'FINISHED'}


def _append_style(effect: Any, path: str, title: str) -> None:
    item = effect.vst_styles.add()
    item.path = path
    item.title = title or os.path.splitext(os.path.basename(path))[0]
    setattr(effect, WEIGHT_PROPS[len(effect.vst_styles) - 1], 1.0)
    effect.vst_style_index = len(effect.vst_styles) - 1


class VST_OT_style_remove(bpy.types.Operator):
    """Remove a style; the weights (and their animation) of later styles move up one slot"""
    bl_idname = "vst.style_remove"
    bl_label = "Remove Style"
    bl_options = {'REGISTER', 'UNDO'}

    index: IntProperty(default=0)  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        e = _active_effect(context)
        return e is not None and len(e.vst_styles) > 1

    def execute(self, context: Any) -> set[str]:
        effect = _active_effect(context)
        n = len(effect.vst_styles)
        if not 0 <= self.index < n:
            return {'CANCELLED'}
        curves = compat.fcurve_collection(effect.id_data)
        gone = compat.find_fcurve(effect, WEIGHT_PROPS[self.index])
        if gone is not None and curves is not None:
            curves.remove(gone)
        for j in range(self.index, n - 1):
            setattr(effect, WEIGHT_PROPS[j], getattr(effect, WEIGHT_PROPS[j + 1]))
            fc = compat.find_fcurve(effect, WEIGHT_PROPS[j + 1])
            if fc is not None:
                fc.data_path = effect.path_from_id(WEIGHT_PROPS[j])
        last = compat.find_fcurve(effect, WEIGHT_PROPS[n - 1])
        if last is not None and curves is not None:
            curves.remove(last)
        setattr(effect, WEIGHT_PROPS[n - 1], 0.0)
        effect.vst_styles.remove(self.index)
        effect.vst_style_index = min(effect.vst_style_index, n - 2)
        return {'FINISHED'}


class VST_OT_bake(bpy.types.Operator):
    """Bake the missing stylized frames of the active style-transfer strip in the background"""
    bl_idname = "vst.bake"
    bl_label = "Bake Style Transfer"

    all_effects: BoolProperty(name="All Strips", default=False,  # type: ignore[valid-type]
                              description="Bake every style-transfer strip of the scene")

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.scene is not None and context.scene.sequence_editor is not None

    def execute(self, context: Any) -> set[str]:
        scene = context.scene
        targets = fx.effect_effects(scene) if self.all_effects else [_active_effect(context)]
        targets = [t for t in targets if t is not None]
        if not targets:
            self.report({'ERROR'}, "select a style-transfer strip")
            return {'CANCELLED'}
        started = 0
        for effect in targets:
            if jobs.job_for(scene, effect):
                continue
            try:
                p = plan.make_plan(scene, effect)
                fx.align(scene, effect)
                fx.set_frames_dir(effect, p.frames_dir)
                job = jobs.start(p)
            except EngineError as exc:
                self.report({'ERROR'}, str(exc))
                return {'CANCELLED'}
            started += job.state == "running"
        self.report({'INFO'}, f"baking {started} strip(s) in the background" if started else "nothing to bake")
        return {'FINISHED'}


class VST_OT_bake_cancel(bpy.types.Operator):
    """Stop the background bake of the active style-transfer strip (finished frames are kept)"""
    bl_idname = "vst.bake_cancel"
    bl_label = "Cancel Bake"

    def execute(self, context: Any) -> set[str]:
        effect = _active_effect(context)
        if effect is None:
            jobs.cancel_all()
        else:
            jobs.cancel((context.scene.name, effect.name))
        return {'FINISHED'}


class VST_OT_align(bpy.types.Operator):
    """Move every style-transfer strip back onto its source strip"""
    bl_idname = "vst.align"
    bl_label = "Re-align Style Transfer Strips"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context: Any) -> set[str]:
        fx.align_all(context.scene)
        return {'FINISHED'}


class VST_OT_check_engine(bpy.types.Operator):
    """Run the engine once and show its model, training state and device"""
    bl_idname = "vst.check_engine"
    bl_label = "Check Engine"

    def execute(self, context: Any) -> set[str]:
        try:
            python = prefs.engine_python()
            engine_cli.clear_info_cache()
            info = engine_cli.engine_info(python, prefs.default_model())
        except EngineError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        trained = info.get("trained", "?")
        self.report({'INFO'} if trained.startswith("yes") else {'WARNING'},
                    f"engine {python}: model {info.get('model', '?')}, trained: {trained}, "
                    f"device: {info.get('device', '?')}")
        return {'FINISHED'}


def classes() -> tuple[type, ...]:
    return (VST_OT_add_effect, VST_OT_style_add_preset, VST_OT_style_add_file, VST_OT_style_remove, VST_OT_bake,
            VST_OT_bake_cancel, VST_OT_align, VST_OT_check_engine)
