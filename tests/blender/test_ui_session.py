"""Blender with its UI (under Xvfb): the panel draws, Bake runs in the background with progress while
the UI keeps running timers, an interactive animation render bakes first, and a failing one stops
without saving unprocessed frames. Skipped without `xvfb-run` (apt-get install xvfb)."""
from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from blender_run import PRELUDE, read_png, script

pytestmark = pytest.mark.skipif(not shutil.which("xvfb-run"), reason="xvfb-run is not installed")

# Runs in the UI session: steps are chained with timers (the UI must keep running between them).
UI_PRELUDE = PRELUDE + """
import time, traceback
from video_style_transfer import ui, jobs
# Draw our panel in the sequencer side bar's default tab, so that the session really draws it.
bpy.utils.unregister_class(ui.VST_PT_style_transfer)
ui.VST_PT_style_transfer.bl_category = "Strip"
bpy.utils.register_class(ui.VST_PT_style_transfer)
T0 = time.time()
rendered = {"done": False}
def _end(scene, *a):
    rendered["done"] = True
bpy.app.handlers.render_complete.append(_end)
bpy.app.handlers.render_cancel.append(_end)

def sequencer_area():
    win = bpy.context.window_manager.windows[0]
    area = max(win.screen.areas, key=lambda a: a.width * a.height)
    area.type = 'SEQUENCE_EDITOR'
    area.spaces.active.view_type = 'SEQUENCER_PREVIEW'
    area.spaces.active.show_region_ui = True
    return win, area

def finish(obj):
    result(obj)
    bpy.ops.wm.quit_blender()

def step(fn, delay=0.5):
    def run():
        try:
            return fn()
        except Exception:
            traceback.print_exc()
            finish({"error": traceback.format_exc()})
    bpy.app.timers.register(run, first_interval=delay)
"""


def ui_session(code: str, blend: Path, env: dict, tmp: Path, timeout: float = 600):
    path = tmp / "ui_script.py"
    path.write_text(UI_PRELUDE + "\n" + textwrap.dedent(code))
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "blender", "--factory-startup",
                           str(blend), "--python", str(path)], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=timeout)
    return proc


def _results(proc) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT:")]
    assert lines, proc.stdout[-4000:] + proc.stderr[-4000:]
    import json
    return json.loads(lines[-1][len("RESULT:"):])


@pytest.fixture()
def ui_blend(bl_env, media, tmp_path) -> Path:
    script(f"""
        sc, src = movie_scene({str(media['clip'])!r})
        sc.frame_end = 4
        sc.render.filepath = {str(tmp_path / 'out' / 'f_')!r}
        e = vst.add_effect(sc, src, styles=[{str(media['style_a'])!r}], max_side=64)
        sc.sequence_editor.active_strip = e
        bpy.ops.wm.save_as_mainfile(filepath={str(tmp_path / 'ui.blend')!r}, relative_remap=False)
    """, bl_env, tmp_path).check()
    return tmp_path / "ui.blend"


def test_ui_bake_with_progress_then_interactive_render(ui_blend, bl_env, tmp_path):
    proc = ui_session("""
        seen = []
        def start():
            win, area = sequencer_area()
            with bpy.context.temp_override(window=win, area=area):
                bpy.ops.vst.bake()
            step(watch)
        def watch():
            for job in jobs.active.values():
                seen.append(job.done)
            if jobs.active and time.time() - T0 < 400:
                return 0.5
            step(render)
        def render():
            job = list(jobs.finished.values())[0]
            summary.update(state=job.state, total=job.total, seen=seen)
            bpy.ops.render.render('INVOKE_DEFAULT', animation=True)
            step(wait_render, 1.0)
        def wait_render():
            if not rendered["done"] and time.time() - T0 < 500:
                return 0.5
            e = vst.effects(bpy.context.scene)[0]
            summary.update(frames_dir=bpy.path.abspath(e.directory), rendered=rendered["done"])
            finish(summary)
        summary = {}
        step(start, 1.0)
    """, ui_blend, bl_env, tmp_path)
    res = _results(proc)
    assert "error" not in res, res["error"]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert res["state"] == "done" and res["total"] == 6 and res["rendered"]
    assert res["seen"] == sorted(res["seen"]) and len(res["seen"]) >= 2  # the UI kept ticking while baking
    frames = Path(res["frames_dir"])
    for f in range(1, 5):
        assert np.array_equal(read_png(tmp_path / "out" / f"f_{f:04d}.png"), read_png(frames / f"{f - 1:06d}.png"))


def test_failing_interactive_render_saves_nothing(ui_blend, bl_env, tmp_path):
    script(f"""
        e = vst.effects(bpy.context.scene)[0]
        e.vst_styles[0].path = {str(tmp_path / 'deleted.png')!r}
        bpy.ops.wm.save_mainfile(relative_remap=False)
    """, bl_env, tmp_path, blend=ui_blend).check()
    proc = ui_session("""
        def start():
            bpy.ops.render.render('INVOKE_DEFAULT', animation=True)
            step(wait_render, 1.0)
        def wait_render():
            if not rendered["done"] and time.time() - T0 < 300:
                return 0.5
            finish({"rendered": rendered["done"], "filepath": bpy.context.scene.render.filepath})
        step(start, 1.0)
    """, ui_blend, bl_env, tmp_path)
    res = _results(proc)
    assert res["rendered"] and res["filepath"] == str(tmp_path / "out" / "f_")  # output path restored
    assert "style image not found" in proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
