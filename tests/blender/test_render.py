"""Headless renders (`blender -b file.blend --addons video_style_transfer -a`): output equals the engine's,
chunks equal one full render, interrupted bakes resume, and failures abort the render."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from blender_run import engine_python, read_png, render, script

FRAMES = range(1, 7)


def _project(src_blend: Path, folder: Path) -> Path:
    """A copy of the .blend in its own folder, hence its own //vst_cache."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src_blend, folder / src_blend.name))


def _look_dirs(project: Path) -> list[Path]:
    return [p for p in (project.parent / "vst_cache").glob("*/*") if p.is_dir()]


@pytest.fixture(scope="module")
def blend(bl_env, media, tmp_path_factory) -> Path:
    """Movie strip + effect with two styles, weights keyed linearly 1->0 / 0->1 over frames 1..5, strength 0.8."""
    d = tmp_path_factory.mktemp("proj")
    script(f"""
        sc, src = movie_scene({str(media['clip'])!r})
        e = vst.add_effect(sc, src, styles=[{str(media['style_a'])!r}, {str(media['style_b'])!r}], max_side=64)
        vst.set_weight(e, 0, 1.0, frame=1); vst.set_weight(e, 0, 0.0, frame=5)
        vst.set_weight(e, 1, 0.0, frame=1); vst.set_weight(e, 1, 1.0, frame=5)
        vst.set_strength(e, 0.8)
        linear_keys(e)
        # Absolute media paths: the tests copy the .blend to folders at other depths.
        bpy.ops.wm.save_as_mainfile(filepath={str(d / 'v.blend')!r}, relative_remap=False)
    """, bl_env, d).check()
    return d / "v.blend"


@pytest.fixture(scope="module")
def full(blend, bl_env, tmp_path_factory) -> dict:
    """Frames 1-6 rendered in one process (fresh cache)."""
    proj = _project(blend, tmp_path_factory.mktemp("full"))
    r = render(proj, proj.parent / "out" / "f_####", bl_env)
    assert r.rc == 0, r.err[-3000:] + r.out[-3000:]
    return {"proj": proj, "frames": {f: read_png(proj.parent / "out" / f"f_{f:04d}.png") for f in FRAMES}}


def test_render_equals_engine_output(full, media, tmp_path):
    # The engine's own run: keys given at the two key poses only (the engine interpolates linearly in
    # its input numbering, frame 1 -> input 0), its own whole-clip analysis.
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"0": 1.0, "4": 0.0}, {"0": 0.0, "4": 1.0}]))
    subprocess.run([engine_python(), "-m", "vst_engine", "stylize", str(media["clip"]), "-s", str(media["style_a"]),
                    "-s", str(media["style_b"]), "--weights-file", str(keys), "--strength", "0.8", "--max-side", "64",
                    "-o", str(tmp_path / "ref") + "/"], check=True, capture_output=True)
    src = read_png(full["proj"].parent / "out" / "f_0001.png")
    for f in FRAMES:
        ref = read_png(tmp_path / "ref" / f"{f - 1:06d}.png")
        assert ref.shape == full["frames"][f].shape == (36, 64, 3)
        assert np.array_equal(full["frames"][f], ref), f"frame {f} differs from the engine's output"
    # And it is not the unprocessed clip.
    assert not np.array_equal(src, read_png(media["frames"] / "img_001.png"))


def test_chunks_equal_one_render(full, blend, bl_env, tmp_path):
    """Frames 1-3 and 4-6 rendered by separate processes, each with its own empty cache (two farm
    workers without shared storage), equal the single render; so does a single `-f 5`."""
    a = _project(blend, tmp_path / "worker_a")
    b = _project(blend, tmp_path / "worker_b")
    # Worker b gets the farm pre-step (analysis only); its render then reuses those features.
    pre = script("result([vst.analyze(e) for e in vst.effects(bpy.context.scene)])", bl_env, b.parent, blend=b)
    assert pre.check().result == [True]
    (features,) = (b.parent / "vst_cache").glob("*/global_features.pt")
    stamp = features.stat().st_mtime_ns
    ra = render(a, a.parent / "out" / "f_####", bl_env, frames=(1, 3))
    rb = render(b, b.parent / "out" / "f_####", bl_env, frames=(4, 6))
    assert ra.rc == 0 and rb.rc == 0, ra.err[-2000:] + rb.err[-2000:]
    assert features.stat().st_mtime_ns == stamp
    for f in FRAMES:
        proj = a if f <= 3 else b
        assert np.array_equal(read_png(proj.parent / "out" / f"f_{f:04d}.png"), full["frames"][f]), f"frame {f}"
    # Worker a baked only its chunk...
    (look,) = _look_dirs(a)
    assert sorted(p.name for p in look.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]
    # ...and a single-frame render bakes that frame only.
    rs = render(a, a.parent / "single" / "f_####", bl_env, single=5)
    assert rs.rc == 0, rs.err[-2000:]
    assert sorted(p.name for p in look.glob("*.png")) == ["000000.png", "000001.png", "000002.png", "000004.png"]
    assert np.array_equal(read_png(a.parent / "single" / "f_0005.png"), full["frames"][5])


def test_interrupted_bake_resumes(full, bl_env):
    """A frame missing from the cache (an interrupted bake) is baked again; the others are kept."""
    proj = full["proj"]
    (look,) = _look_dirs(proj)
    (look / "000002.png").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in look.glob("*.png")}
    r = render(proj, proj.parent / "again" / "f_####", bl_env)
    assert r.rc == 0, r.err[-2000:]
    assert "baking 1 frame(s)" in r.err
    after = {p.name: p.stat().st_mtime_ns for p in look.glob("*.png")}
    assert set(after) == set(before) | {"000002.png"}
    assert all(after[n] == t for n, t in before.items())
    for f in FRAMES:
        assert np.array_equal(read_png(proj.parent / "again" / f"f_{f:04d}.png"), full["frames"][f])


def test_changed_key_rebakes_only_changed_frames(full, bl_env, tmp_path):
    """Animating the strength over frames 5-6 only re-bakes those two frames, in one engine call;
    frames 1-4 of the new look are the earlier look's files (hard links), not new renders."""
    proj = _project(full["proj"], tmp_path / "rekey")
    shutil.copytree(full["proj"].parent / "vst_cache", proj.parent / "vst_cache")
    script("""
        e = [s for s in compat.all_strips(bpy.context.scene.sequence_editor) if s.vst_is_effect][0]
        vst.set_strength(e, 0.8, frame=4); vst.set_strength(e, 0.3, frame=5)
        linear_keys(e)
        bpy.ops.wm.save_mainfile(relative_remap=False)
    """, bl_env, proj.parent, blend=proj).check()
    (old,) = _look_dirs(proj)
    r = render(proj, proj.parent / "out" / "f_####", bl_env)
    assert r.rc == 0, r.err[-2000:]
    assert "baking 2 frame(s)" in r.err
    (new,) = [d for d in _look_dirs(proj) if d != old]
    keys = json.loads((new / "keys.json").read_text())
    assert keys["strength"] == {"0": 0.8, "1": 0.8, "2": 0.8, "3": 0.8, "4": 0.3, "5": 0.3}
    for f in FRAMES:
        out = read_png(proj.parent / "out" / f"f_{f:04d}.png")
        name = f"{f - 1:06d}.png"
        if f <= 4:
            assert (new / name).stat().st_ino == (old / name).stat().st_ino
            assert np.array_equal(out, full["frames"][f])
        else:
            assert (new / name).stat().st_ino != (old / name).stat().st_ino
            assert not np.array_equal(out, full["frames"][f])


def _broken_project(blend: Path, folder: Path, bl_env: dict, style_text: bytes | None) -> Path:
    """A copy whose second style is a file in `folder`: missing (None) or with the given bytes."""
    proj = _project(blend, folder)
    style = folder / "art.png"
    script(f"""
        e = [s for s in compat.all_strips(bpy.context.scene.sequence_editor) if s.vst_is_effect][0]
        e.vst_styles[1].path = {str(style)!r}
        bpy.ops.wm.save_mainfile(relative_remap=False)
    """, bl_env, folder, blend=proj).check()
    if style_text is not None:
        style.write_bytes(style_text)
    return proj


def _assert_aborted(r, proj: Path, message: str) -> None:
    assert r.rc == 1, f"render did not fail (rc {r.rc})\n{r.err[-2000:]}"
    assert "vst: error:" in r.err and message in r.err, r.err[-2000:]
    assert not list((proj.parent / "out").glob("*.png")) if (proj.parent / "out").exists() else True


def test_missing_style_aborts_render(blend, bl_env, tmp_path):
    proj = _broken_project(blend, tmp_path / "p", bl_env, None)
    r = render(proj, proj.parent / "out" / "f_####", bl_env)
    _assert_aborted(r, proj, "style image not found")
    # The .blend is untouched and still loads with its effect strip.
    ok = script("""
        result(len(vst.effects(bpy.context.scene)))
    """, bl_env, tmp_path, blend=proj).check()
    assert ok.result == 1


def test_engine_error_aborts_render(blend, bl_env, tmp_path):
    proj = _broken_project(blend, tmp_path / "p", bl_env, b"this is not an image")
    r = render(proj, proj.parent / "out" / "f_####", bl_env)
    _assert_aborted(r, proj, "art.png")
    assert "analyse of" in r.err  # the engine's own one-line error is passed on


def test_missing_engine_and_unwritable_cache_abort_render(blend, bl_env, tmp_path):
    proj = _project(blend, tmp_path / "p")
    r = render(proj, proj.parent / "out" / "f_####", dict(bl_env, VST_ENGINE_PYTHON="/nonexistent/python"))
    _assert_aborted(r, proj, "no engine Python found")
    (proj.parent / "vst_cache").write_text("a file where the cache folder should be")
    r = render(proj, proj.parent / "out" / "f_####", bl_env)
    _assert_aborted(r, proj, "not writable")
