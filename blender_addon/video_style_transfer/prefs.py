"""Add-on preferences and the settings derived from them (engine Python, model, cache folder)."""
import os
import tempfile

import bpy
from bpy.props import EnumProperty, StringProperty

from . import compat, engine_cli

TORCH_INDEXES = {
    'DEFAULT': "",
    'CPU': "https://download.pytorch.org/whl/cpu",
    'CUDA': "https://download.pytorch.org/whl/cu128",
}


def private_env_dir() -> str:
    return os.path.join(compat.user_data_dir(), "engine_env")


class VST_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = compat.PACKAGE

    python_path: StringProperty(  # type: ignore[valid-type]
        name="Engine Python", subtype='FILE_PATH',
        description="Python interpreter with vst_engine installed (empty: $VST_ENGINE_PYTHON, then the "
                    "environment made by 'Install Dependencies')")
    model: StringProperty(name="Model", default="default",  # type: ignore[valid-type]
                          description="Engine model name (default; lite: about 4x faster on CPUs; baseline) or model file")
    cache_dir: StringProperty(  # type: ignore[valid-type]
        name="Cache Folder", subtype='DIR_PATH', default="",
        description="Where baked frames go (empty: 'vst_cache' next to the .blend file)")
    engine_source: StringProperty(  # type: ignore[valid-type]
        name="Engine Package", default="vst-engine",
        description="What pip installs for the engine: a PyPI name, a wheel file or a source folder")
    torch_requirement: StringProperty(name="Torch", default="torch==2.13.0",  # type: ignore[valid-type]
                                      description="pip requirement for PyTorch")
    torch_variant: EnumProperty(  # type: ignore[valid-type]
        name="Torch Build", default='DEFAULT',
        items=(('DEFAULT', "Default Index", "Whatever pip's configured index gives"),
               ('CPU', "CPU", "CPU-only build from download.pytorch.org (small)"),
               ('CUDA', "CUDA 12.8", "NVIDIA build from download.pytorch.org (large)")))
    pip_args: StringProperty(name="Extra pip Arguments", default="",  # type: ignore[valid-type]
                             description="Added to every pip call (e.g. --proxy ...)")

    def draw(self, context: bpy.types.Context) -> None:
        from . import installer  # late: avoids an import cycle at registration
        layout = self.layout
        col = layout.column()
        col.prop(self, "python_path")
        col.prop(self, "model")
        col.prop(self, "cache_dir")
        try:
            col.label(text=f"Engine: {engine_python()}", icon='CHECKMARK')
        except engine_cli.EngineError:
            col.label(text="No engine Python yet: install the dependencies or set one above", icon='ERROR')
        box = layout.box()
        box.label(text=f"Private environment: {private_env_dir()}")
        box.prop(self, "engine_source")
        row = box.row()
        row.prop(self, "torch_requirement")
        row.prop(self, "torch_variant", text="")
        box.prop(self, "pip_args")
        installer.draw_status(box)
        layout.operator("vst.check_engine", icon='INFO')


def prefs() -> VST_AddonPreferences | None:
    return compat.addon_preferences()  # type: ignore[return-value]


def engine_python() -> str:
    p = prefs()
    return engine_cli.resolve_python(bpy.path.abspath(p.python_path) if p and p.python_path else "",
                                     private_env_dir())


def default_model() -> str:
    p = prefs()
    return (p.model if p and p.model else "default").strip()


def cache_root() -> str:
    """Absolute cache folder: preferences, else //vst_cache next to the .blend, else a temp folder."""
    p = prefs()
    if p and p.cache_dir:
        return os.path.normpath(bpy.path.abspath(p.cache_dir))
    if bpy.data.filepath:
        return os.path.normpath(bpy.path.abspath("//vst_cache"))
    return os.path.join(tempfile.gettempdir(), "vst_cache_unsaved")


def classes() -> tuple[type, ...]:
    return (VST_AddonPreferences,)
