"""Background bakes in the UI: started by operators, advanced by a `bpy.app.timers` timer.

Jobs are keyed by (scene name, strip name) and strips are looked up again on every tick:
Python references to strips do not survive undo.
"""
from __future__ import annotations

from typing import Any, Optional

import bpy

from . import compat, effect as fx
from .bake import BakeJob
from .plan import BakePlan

POLL_S = 0.5
active: dict[tuple[str, str], BakeJob] = {}
finished: dict[tuple[str, str], BakeJob] = {}  # last result per effect, for the panel


def job_for(scene: Any, strip: Any) -> Optional[BakeJob]:
    return active.get((scene.name, strip.name))


def last_result(scene: Any, strip: Any) -> Optional[BakeJob]:
    return finished.get((scene.name, strip.name))


def start(plan: BakePlan, media_frames: Optional[list[int]] = None) -> BakeJob:
    job = BakeJob(plan, media_frames)
    finished.pop(job.key, None)
    if job.state == "running":
        active[job.key] = job
        if not bpy.app.timers.is_registered(_tick):
            bpy.app.timers.register(_tick, first_interval=0.05)
    else:
        finished[job.key] = job
    return job


def cancel(key: tuple[str, str]) -> None:
    job = active.pop(key, None)
    if job:
        job.cancel()
        finished[key] = job
        _refresh(job)


def cancel_all() -> None:
    for key in list(active):
        cancel(key)


def _refresh(job: BakeJob) -> None:
    """Show newly finished frames: drop the sequencer's cached images of the strip, redraw."""
    scene = bpy.data.scenes.get(job.plan.scene_name)
    strip = compat.find_strip(scene, job.plan.effect_name) if scene else None
    if strip is not None:
        fx.align(scene, strip)
        strip.invalidate_cache('RAW')
    wm = bpy.context.window_manager
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            if area.type in {'SEQUENCE_EDITOR', 'PROPERTIES'}:
                area.tag_redraw()


def _tick() -> Optional[float]:
    for key, job in list(active.items()):
        before = job.done
        running = job.poll()
        if not running:
            active.pop(key, None)
            finished[key] = job
            print(f"vst: {job.plan.effect_name}: {job.message}", flush=True)
        if job.done != before or not running:
            _refresh(job)
    return POLL_S if active else None


def unregister() -> None:
    cancel_all()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
