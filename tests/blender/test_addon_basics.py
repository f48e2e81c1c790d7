"""Registration, packaging, the effect strip, keyed weights and input validation (no engine calls)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from blender_run import blender, script

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "blender_addon"))
import package  # noqa: E402


def test_register_and_unregister(bl_env, tmp_path):
    r = script("""
        S = compat.STRIP_TYPE
        names = ["vst_weight_1", "vst_weight_8", "vst_strength", "vst_preserve_color", "vst_max_side",
                 "vst_consistency", "vst_deflicker", "vst_per_shot", "vst_device", "vst_styles"]
        before = {n: n in S.bl_rna.properties for n in names}
        ops = [hasattr(bpy.ops.vst, o) for o in ("add_effect", "bake", "bake_cancel", "install_dependencies")]
        anim = {n: S.bl_rna.properties[n].is_animatable for n in ("vst_weight_1", "vst_strength")}
        addon_utils.disable("video_style_transfer", default_set=True)
        after = {n: n in S.bl_rna.properties for n in names}
        handlers = [h.__name__ for h in bpy.app.handlers.render_init]
        addon_utils.enable("video_style_transfer", default_set=True)
        again = all(n in S.bl_rna.properties for n in names)
        result({"before": before, "ops": ops, "anim": anim, "after": after, "handlers": handlers, "again": again})
    """, bl_env, tmp_path).check()
    res = r.result
    assert all(res["before"].values()) and all(res["ops"]) and all(res["anim"].values())
    assert not any(res["after"].values())
    assert "on_render_init" not in res["handlers"]
    assert res["again"]


def test_zip_is_both_legacy_addon_and_extension(bl_env, tmp_path):
    z = package.build_zip(tmp_path / "dist" / "video_style_transfer.zip")
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        manifest = zf.read("video_style_transfer/blender_manifest.toml").decode()
        init = zf.read("video_style_transfer/__init__.py").decode()
    assert all(n.startswith("video_style_transfer/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert 'id = "video_style_transfer"' in manifest and 'type = "add-on"' in manifest
    assert "bl_info" in init and "video_style_transfer/presets/presets.json" in names
    presets = json.loads(zipfile.ZipFile(z).read("video_style_transfer/presets/presets.json"))
    assert len(presets) >= 8 and all(f"video_style_transfer/presets/{p['thumb']}" in names for p in presets)
    assert z.stat().st_size < 2_500_000
    # Install the zip the legacy way into a fresh scripts folder and enable it.
    env = dict(bl_env, BLENDER_USER_SCRIPTS=str(tmp_path / "fresh_scripts"))
    r = blender(["--python-exit-code", "1", "--python-expr",
                 "import sys, bpy, addon_utils, json\n"
                 f"bpy.ops.preferences.addon_install(filepath={str(z)!r})\n"
                 "m = addon_utils.enable('video_style_transfer', default_set=True)\n"
                 "print('RESULT:' + json.dumps({'file': m.__file__, 'op': hasattr(bpy.ops.vst, 'add_effect')}))\n"],
                env, cwd=tmp_path).check()
    assert r.result["op"] and "fresh_scripts" in r.result["file"]


def test_add_effect_keys_alignment_and_persistence(bl_env, media, tmp_path):
    r = script(f"""
        sc, src = movie_scene({str(media['clip'])!r})
        e = vst.add_effect(sc, src, styles=[{str(media['style_a'])!r}, {str(media['style_b'])!r}])
        info = dict(name=e.name, channel=e.channel, src_channel=src.channel, start=e.frame_start,
                    a=e.frame_final_start, b=e.frame_final_end, n=len(e.elements),
                    first=e.elements[0].filename, styles=[s.path for s in e.vst_styles])
        vst.set_weight(e, 0, 1.0, frame=1); vst.set_weight(e, 0, 0.0, frame=5)
        vst.set_weight(e, 1, 0.0, frame=1); vst.set_weight(e, 1, 1.0, frame=5)
        vst.set_strength(e, 0.5, frame=1); vst.set_strength(e, 1.0, frame=6)
        linear_keys(e)
        info["w3"] = vst.weights_at(e, 3)
        info["path"] = compat.find_fcurve(e, "vst_weight_2").data_path
        from video_style_transfer import plan, source_clip
        clip = source_clip.describe_source(src)
        w, s = plan.per_frame_values(e, clip, 2)
        info["weights"] = {{str(k): v for k, v in w.items()}}
        info["strength"] = {{str(k): v for k, v in s.items()}}
        # Moving or trimming the source moves the effect with it (depsgraph handler).
        src.frame_start = 11
        src.frame_final_start = 12
        bpy.context.view_layer.update()
        info["moved"] = [e.frame_start, e.frame_final_start, e.frame_final_end, src.frame_final_end, e.channel]
        src.name = "renamed"
        bpy.context.view_layer.update()
        info["link"] = e.vst_source
        # Processed at 32 px wide, shown scaled back to the source's 64 px.
        e.vst_max_side = 32
        from video_style_transfer import effect as fx
        fx.align(sc, e)
        info["scale"] = [e.transform.scale_x, e.transform.scale_y]
        bpy.ops.wm.save_as_mainfile(filepath={str(tmp_path / 'k.blend')!r})
        result(info)
    """, bl_env, tmp_path).check()
    info = r.result
    assert info["channel"] == info["src_channel"] + 1
    assert (info["start"], info["a"], info["b"], info["n"]) == (1.0, 1, 7, 6)
    assert info["first"] == "000000.png"
    assert info["w3"] == pytest.approx([0.5, 0.5])
    assert info["path"].endswith(".vst_weight_2") and "clip" in info["path"]
    assert [info["weights"][str(m)] for m in range(6)] == [[1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75],
                                                           [0.0, 1.0], [0.0, 1.0]]
    assert info["strength"]["0"] == 0.5 and info["strength"]["5"] == 1.0 and info["strength"]["2"] == pytest.approx(0.7)
    assert info["moved"][:4] == [11.0, 12, 17, 17]
    assert info["link"] == "renamed"
    assert info["scale"] == pytest.approx([2.0, 2.0])
    # Reload: the properties, styles and keys persist and the add-on finds the source again.
    r = script("""
        sc = bpy.context.scene
        e = [s for s in compat.all_strips(sc.sequence_editor) if s.vst_is_effect][0]
        from video_style_transfer import plan
        result(dict(styles=len(e.vst_styles), w=vst.weights_at(e, 13), src=plan.find_source(sc, e).name))
    """, bl_env, tmp_path, blend=tmp_path / "k.blend").check()
    assert r.result["styles"] == 2 and r.result["src"] == "renamed"
    # Blender offsets a strip's keys when its start moves: frame 13 is the old frame 3.
    assert r.result["w"] == pytest.approx([0.5, 0.5])


def test_image_sequence_strip_mapping(bl_env, media, tmp_path):
    """Image strips: engine input is a folder of links in element order; mapping matches Blender's."""
    frames = sorted(p.name for p in media["frames"].iterdir())
    r = script(f"""
        sc = bpy.context.scene
        ed = sc.sequence_editor_create()
        files = {frames!r}
        s = compat.new_image_strip(ed, "seq", os.path.join({str(media['frames'])!r}, files[0]), 1, 10)
        for f in files[1:]:
            s.elements.append(f)
        s.animation_offset_start = 1      # media frames 1.. shown from frame 10
        s.frame_final_end = s.frame_final_start + 3
        from video_style_transfer import source_clip
        clip = source_clip.describe_source(s)
        blender_says = [s.strip_elem_from_frame(f).filename for f in clip.scene_frames()]
        ours = [clip.files[clip.media_index(f)].rsplit("/", 1)[1] for f in clip.scene_frames()]
        folder = source_clip.engine_input(clip, {str(tmp_path / 'cache')!r})
        e = vst.add_effect(sc, s, styles=[{str(media['style_a'])!r}], max_side=16)
        res = dict(scale=e.transform.scale_x, blender=blender_says, ours=ours, range=list(clip.media_range), links=sorted(os.listdir(folder)),
                   effect_elems=[x.filename for x in e.elements], e_start=e.frame_final_start, e_end=e.frame_final_end,
                   effect_shows=[e.strip_elem_from_frame(f).filename for f in clip.scene_frames()])
        s.use_reverse_frames = True
        from video_style_transfer import effect as fx
        fx.align(sc, e)  # the effect follows the source's Reverse Frames
        clip = source_clip.describe_source(s)
        res["reversed"] = dict(blender=[s.strip_elem_from_frame(f).filename for f in clip.scene_frames()],
                               ours=[clip.files[clip.media_index(f)].rsplit("/", 1)[1] for f in clip.scene_frames()],
                               range=list(clip.media_range), effect_reversed=e.use_reverse_frames,
                               effect_shows=[e.strip_elem_from_frame(f).filename for f in clip.scene_frames()])
        result(res)
    """, bl_env, tmp_path).check()
    res = r.result
    rev = res["reversed"]
    assert rev["blender"] == rev["ours"] and rev["effect_reversed"]
    # 6 images, offset 1: the content is media 1..5, shown from its far end, trimmed to 3 frames.
    assert rev["ours"] == ["img_006.png", "img_005.png", "img_004.png"] and rev["range"] == [3, 6]
    assert rev["effect_shows"] == ["000005.png", "000004.png", "000003.png"]
    assert res["blender"] == res["ours"] == ["img_002.png", "img_003.png", "img_004.png"]
    assert res["range"] == [1, 4]
    assert res["scale"] == pytest.approx(4.0)
    assert res["links"] == [".complete"] + [f"{k:06d}.png" for k in range(6)]
    assert res["effect_shows"] == ["000001.png", "000002.png", "000003.png"]


def test_bad_input_is_reported_and_nothing_is_left_behind(bl_env, media, tmp_path):
    missing_movie = tmp_path / "gone.mp4"
    missing_movie.write_bytes((media["clip"]).read_bytes())
    r = script(f"""
        sc, src = movie_scene({str(media['clip'])!r})
        errors = {{}}
        def attempt(key, fn):
            try:
                fn()
                errors[key] = None
            except vst.EngineError as exc:
                errors[key] = str(exc)
        n0 = len(list(compat.all_strips(sc.sequence_editor)))
        attempt("style", lambda: vst.add_effect(sc, src, styles=["/nonexistent/art.png"]))
        attempt("none", lambda: vst.add_effect(sc, src, styles=[]))
        color = compat.strips(sc.sequence_editor).new_effect("col", 'COLOR', 3, 1, frame_end=5)
        attempt("type", lambda: vst.add_effect(sc, color, styles=[{str(media['style_a'])!r}]))
        gone = compat.new_movie_strip(sc.sequence_editor, "gone", {str(missing_movie)!r}, 5, 20)
        os.remove({str(missing_movie)!r})
        attempt("media", lambda: vst.add_effect(sc, gone, styles=[{str(media['style_a'])!r}]))
        n1 = len(list(compat.all_strips(sc.sequence_editor)))
        # The operator reports an error (a script calling it gets the report as RuntimeError).
        sc.sequence_editor.active_strip = src
        try:
            bpy.ops.vst.add_effect(style_path="/nonexistent/art.png")
            op = "no error"
        except RuntimeError as exc:
            op = str(exc)
        n2 = len(list(compat.all_strips(sc.sequence_editor)))
        result(dict(errors=errors, added=n1 - n0, op=op, op_added=n2 - n1))
    """, bl_env, tmp_path).check()
    res = r.result
    e = res["errors"]
    assert "style image not found" in e["style"]
    assert "at least one style" in e["none"]
    assert "color strip" in e["type"]
    assert "source media not found" in e["media"]
    assert res["added"] == 2  # the colour strip and the movie strip; no half-made effect strips
    assert "style image not found" in res["op"] and res["op_added"] == 0


# `build.py setup` makes one venv per supported bpy version under .venv-bpy/; VST_BPY_PYTHONS overrides.
_BPY_VENVS = Path(__file__).resolve().parents[2] / ".venv-bpy"
BPY_PYTHONS = os.environ.get("VST_BPY_PYTHONS", "").split() or [
    str(p) for p in sorted(_BPY_VENVS.glob("*/bin/python"))]


@pytest.mark.skipif(not BPY_PYTHONS, reason="set VST_BPY_PYTHONS to Pythons with the PyPI bpy module (4.2-5.0)")
@pytest.mark.parametrize("python", BPY_PYTHONS)
def test_newer_blender_apis_with_bpy_module(python, media, tmp_path):
    """The same add-on on Blender 4.x / 5.0 APIs (bpy wheels): legacy registration and extension install."""
    check = Path(__file__).with_name("bpy_module_check.py")
    r = subprocess.run([python, str(check), str(media["clip"]), str(media["style_a"])], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    z = package.build_zip(tmp_path / "vst.zip")
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "res"))
    r = subprocess.run([python, str(check), "--extension", str(z)], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_transparent_image_sequence_keeps_its_alpha(bl_env, media, tmp_path):
    """Baked frames of an image strip with alpha keep it: a render shows the channels below where
    the clip is transparent (the frames used to come out opaque there)."""
    import cv2
    import numpy as np
    seq = tmp_path / "rgba"
    seq.mkdir()
    alpha = np.zeros((36, 64), np.uint8)
    alpha[8:28, 16:48] = 255
    for i, f in enumerate(sorted(media["frames"].iterdir())[:3]):
        cv2.imwrite(str(seq / f"a_{i:03d}.png"), np.dstack([cv2.imread(str(f)), alpha]))
    r = script(f"""
        sc = bpy.context.scene
        sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = 64, 36, 100
        sc.frame_start, sc.frame_end = 1, 3
        sc.view_settings.view_transform = 'Standard'
        sc.render.image_settings.file_format = 'PNG'
        sc.render.image_settings.color_mode = 'RGB'
        bpy.ops.wm.save_as_mainfile(filepath={str(tmp_path / 'alpha.blend')!r})  # the cache goes beside it
        ed = sc.sequence_editor_create()
        bg = compat.strips(ed).new_effect("bg", 'COLOR', 1, 1, frame_end=4)
        bg.color = (0.0, 0.0, 1.0)
        s = compat.new_image_strip(ed, "seq", {str(seq / 'a_000.png')!r}, 2, 1)
        for f in ("a_001.png", "a_002.png"):
            s.elements.append(f)
        s.blend_type = 'ALPHA_OVER'
        e = vst.add_effect(sc, s, styles=[{str(media['style_a'])!r}])
        vst.bake(e)
        sc.render.filepath = {str(tmp_path / 'render.png')!r}
        sc.frame_set(2)
        bpy.ops.render.render(write_still=True)
        result(dict(baked=os.path.join(bpy.path.abspath(e.directory), e.elements[1].filename)))
    """, bl_env, tmp_path).check()
    assert r.result["baked"].startswith(str(tmp_path))
    baked = cv2.imread(r.result["baked"], cv2.IMREAD_UNCHANGED)
    assert baked.shape == (36, 64, 4)
    np.testing.assert_array_equal(baked[..., 3], alpha)
    shown = cv2.imread(str(tmp_path / "render.png"), cv2.IMREAD_COLOR)
    opaque = alpha == 255
    assert np.all(shown[~opaque] == (255, 0, 0))  # the blue colour strip below (BGR)
    np.testing.assert_array_equal(shown[opaque], baked[..., :3][opaque])
