"""Properties registered directly on the strip type.

They live on the strip itself (not in a nested PropertyGroup) so that the I key, the key
decorators and the graph editor work on them: Blender cannot keyframe a property inside a
PropertyGroup held in a collection on a strip.
"""
import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import compat

MAX_STYLES = 8
WEIGHT_PROPS = tuple(f"vst_weight_{i}" for i in range(1, MAX_STYLES + 1))
DEVICES = (
    ('auto', "Auto", "CUDA when available, else CPU"),
    ('cpu', "CPU", "Always the CPU"),
    ('cpu_int8', "CPU, int8", "The CPU, the default model's wide convolutions in int8 where it has AVX-512 VNNI: "
     "about twice as fast, a little less steady (most on contrasted styles)"),
    ('cuda', "CUDA", "An NVIDIA GPU (half precision)"),
)


class VST_StylePath(bpy.types.PropertyGroup):
    """One style artwork of an effect strip (slot i uses the weight vst_weight_{i+1})."""
    path: StringProperty(name="Style", subtype='FILE_PATH', description="Artwork image file")  # type: ignore[valid-type]
    title: StringProperty(name="Title", description="Display name")  # type: ignore[valid-type]


def _strip_props() -> dict[str, object]:
    props: dict[str, object] = {
        "vst_is_effect": BoolProperty(name="Style Transfer Strip", default=False,
                                      description="This strip shows baked style-transfer frames"),
        "vst_source": StringProperty(name="Source Strip", description="Name of the stylized strip"),
        "vst_link_id": StringProperty(name="Link ID", description="Identifies a source strip across renames"),
        "vst_source_id": StringProperty(name="Source Link ID", description="Link ID of the source strip"),
        "vst_styles": CollectionProperty(type=VST_StylePath, name="Styles"),
        "vst_style_index": IntProperty(name="Active Style", default=0, min=0),
        "vst_strength": FloatProperty(name="Strength", default=1.0, min=0.0, max=1.0, subtype='FACTOR',
                                      description="0 keeps the clip, 1 applies the full style (animatable)"),
        "vst_preserve_color": BoolProperty(name="Preserve Colour", default=False,
                                           description="Keep the clip's own colours (transfer luminance only)"),
        "vst_max_side": IntProperty(name="Processing Size", default=512, min=8, max=8192, subtype='PIXEL',
                                    description="Longer side of the processing resolution (frames are "
                                                "scaled back up to the strip's size)"),
        "vst_consistency": BoolProperty(name="Global Consistency", default=True,
                                        description="Share statistics over the whole strip (no flicker); off "
                                                    "processes every frame on its own"),
        "vst_deflicker": BoolProperty(name="Deflicker", default=False,
                                      description="Even out a flickering exposure (time-lapses, lights on mains "
                                                  "power) before stylizing; with Global Consistency only"),
        "vst_per_shot": BoolProperty(name="Per Shot", default=False,
                                     description="Find the cuts in the strip and share statistics within each "
                                                 "shot only (a strip holding several shots); with Global "
                                                 "Consistency only"),
        "vst_device": EnumProperty(name="Device", items=DEVICES, default='auto'),
        "vst_model": StringProperty(name="Model", default="",
                                    description="Engine model name or file (empty: the preferences' model)"),
    }
    for i, name in enumerate(WEIGHT_PROPS, start=1):
        props[name] = FloatProperty(name=f"Weight {i}", default=1.0 if i == 1 else 0.0, min=0.0, max=1.0,
                                    subtype='FACTOR', description=f"Blend weight of style {i} (animatable; "
                                    "weights are normalized per frame)")
    return props


def register() -> None:
    bpy.utils.register_class(VST_StylePath)
    for name, prop in _strip_props().items():
        setattr(compat.STRIP_TYPE, name, prop)


def unregister() -> None:
    for name in _strip_props():
        if hasattr(compat.STRIP_TYPE, name):
            delattr(compat.STRIP_TYPE, name)
    bpy.utils.unregister_class(VST_StylePath)
