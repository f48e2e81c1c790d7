"""Registration and strip handling with the `bpy` module from PyPI (Blender 4.2 / 4.5 / 5.0 APIs).

Run with a Python that has `bpy` (e.g. a venv with `pip install "bpy==4.5.*" "numpy<2"`):

    python tests/blender/bpy_module_check.py CLIP STYLE
    BLENDER_USER_RESOURCES=$(mktemp -d) python tests/blender/bpy_module_check.py --extension ADDON.zip

Prints one JSON line `RESULT:{...}`; exits non-zero on failure. No engine calls.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import bpy  # noqa: E402


def main(clip: str, style: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "blender_addon"))
    import video_style_transfer as addon
    addon.register()
    from video_style_transfer import api as vst, compat, effect as fx, plan, source_clip
    out: dict = {"version": list(bpy.app.version), "strip_type": compat.STRIP_TYPE.__name__}
    sc = bpy.context.scene
    sc.render.fps = 24
    ed = sc.sequence_editor_create()
    src = compat.new_movie_strip(ed, "clip", clip, 1, 1)
    e = vst.add_effect(sc, src, styles=[style, style], max_side=32)
    out["effect"] = [e.channel, e.frame_final_start, e.frame_final_end, len(e.elements), e.transform.scale_x]
    vst.set_weight(e, 0, 1.0, frame=1)
    vst.set_weight(e, 0, 0.0, frame=5)
    vst.set_weight(e, 1, 0.0, frame=1)
    vst.set_weight(e, 1, 1.0, frame=5)
    out["fcurve_path"] = compat.find_fcurve(e, "vst_weight_1").data_path
    w, s = plan.per_frame_values(e, source_clip.describe_source(src), 2)
    out["weights"] = [w[0], w[4]]
    src.frame_start = 11
    fx.align(sc, e)
    out["moved"] = [e.frame_start, e.frame_final_start]
    out["operators"] = [hasattr(bpy.ops.vst, n) for n in ("add_effect", "bake", "install_dependencies")]
    addon.unregister()
    out["unregistered"] = "vst_weight_1" not in compat.STRIP_TYPE.bl_rna.properties
    return out


def install_extension(zip_path: str) -> dict:
    """Install the zip as an extension (4.2+ 'Install from Disk') and enable it."""
    ret = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    name = "bl_ext.user_default.video_style_transfer"
    compat = sys.modules.get(name + ".compat")
    return {"installed": list(ret), "enabled": name in bpy.context.preferences.addons.keys(),
            "extension": bool(compat and compat.IS_EXTENSION), "operators": hasattr(bpy.ops.vst, "add_effect")}


def _exit(code: int) -> None:
    # The bpy module sometimes hangs in its exit-time teardown after reading a movie (ffmpeg
    # threads); the checks are done, so leave without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    if sys.argv[1] == "--extension":  # run with BLENDER_USER_RESOURCES set to an empty folder
        res = install_extension(sys.argv[2])
        print("RESULT:" + json.dumps(res), flush=True)
        _exit(0 if res["enabled"] and res["extension"] and res["operators"] else 1)
    res = main(sys.argv[1], sys.argv[2])
    print("RESULT:" + json.dumps(res), flush=True)
    ok = (res["weights"] == [[1.0, 0.0], [0.0, 1.0]] and res["moved"] == [11.0, 11] and all(res["operators"])
          and res["unregistered"] and res["effect"][0] == 2)
    _exit(0 if ok else 1)
