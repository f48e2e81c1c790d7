"""Application handlers: bake missing frames before a render needs them; keep effects aligned.

Aborting a render: an exception raised in a handler is only printed and the render goes on
(with the unprocessed source frame showing through the missing stylized one). SystemExit is
the exception CPython does not just print: Blender's handler caller prints errors with
PyErr_Print, which exits the process on SystemExit. In background mode (`blender -b ... -a`,
farms) a failure therefore prints `vst: error: ...` on stderr and exits with status 1 before the
frame is written. In the UI, exiting would kill the user's session: instead the output path is
pointed somewhere unwritable, so the frame cannot be saved and Blender stops the animation
render; the path is restored when the render ends (Blender 3.4 has no Python call to cancel a
UI render). A still render (F12) shows the unprocessed frame with the error in the panel.
"""
from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, Iterable

import bpy
from bpy.app.handlers import persistent

from . import bake, effect as fx, jobs, plan
from .engine_cli import EngineError

ui_errors: dict[str, str] = {}  # effect name -> last render-time failure (shown in the panel)
_saved_output: dict[str, str] = {}  # scene name -> output path replaced by abort_render (UI)
_aligning = False


def _single_frame_command_line() -> bool:
    """`blender -b f.blend -f N`: render_init must not bake the whole frame range."""
    args = sys.argv[sys.argv.index("--") if "--" in sys.argv else len(sys.argv):]
    argv = sys.argv[: len(sys.argv) - len(args)]
    anim = any(a in ("-a", "--render-anim") for a in argv)
    return not anim and any(a in ("-f", "--render-frame") for a in argv)


def _unwritable_output() -> str:
    """An output path that cannot be written: its parent 'folder' is a regular file."""
    blocker = os.path.join(tempfile.gettempdir(), "vst-render-aborted")
    if not os.path.isfile(blocker):
        with open(blocker, "w") as f:
            f.write("style transfer failed: see the console\n")
    return os.path.join(blocker, "frame_")


def abort_render(scene: Any, message: str) -> None:
    print(f"vst: error: {message}", file=sys.stderr, flush=True)
    if bpy.app.background:
        print("vst: error: render aborted: no unprocessed frame is written", file=sys.stderr, flush=True)
        sys.stdout.flush()
        raise SystemExit(1)  # see the module docstring: this really ends the render process
    # UI: the frame about to render cannot be saved, which stops an image-sequence animation render
    # (Blender stops when a frame fails to save); the path is restored when the render ends.
    if scene.name not in _saved_output:
        _saved_output[scene.name] = scene.render.filepath
        scene.render.filepath = _unwritable_output()


def _render_effects(scene: Any) -> list[Any]:
    if not scene.render.use_sequencer or scene.sequence_editor is None:
        return []
    return [e for e in fx.effect_effects(scene) if not e.mute]


def ensure_frames(scene: Any, frames: Iterable[int]) -> None:
    """Bake (synchronously) every missing stylized frame the given scene frames show."""
    frames = list(frames)
    if scene.name in _saved_output:  # this UI render already failed; it stops at the next save
        return
    for effect in _render_effects(scene):
        if effect.frame_final_end <= min(frames) or effect.frame_final_start > max(frames):
            continue
        try:
            p = plan.make_plan(scene, effect)
            fx.align(scene, effect)
            fx.set_frames_dir(effect, p.frames_dir)
            p.prepare()  # also takes over the unchanged frames of earlier looks
            needed = p.missing(p.frames_for_scene(frames))
            if needed:
                bake.log(f"{effect.name}: baking {len(needed)} frame(s) into {p.frames_dir}")
                bake.bake_sync(p, needed)
                effect.invalidate_cache('RAW')
                fx.align(scene, effect)  # the frame size is known now
            ui_errors.pop(effect.name, None)
        except Exception as exc:  # any failure, bugs included: never render the raw frame silently
            text = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            ui_errors[effect.name] = text
            abort_render(scene, f"style transfer strip '{effect.name}': {text}")


@persistent
def on_render_init(scene: Any, *_: Any) -> None:
    if bpy.app.background and _single_frame_command_line():
        return
    ensure_frames(scene, range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))


@persistent
def on_render_pre(scene: Any, *_: Any) -> None:
    ensure_frames(scene, [scene.frame_current])


@persistent
def on_render_end(scene: Any, *_: Any) -> None:
    """render_complete / render_cancel: undo abort_render's output path."""
    path = _saved_output.pop(scene.name, None)
    if path is not None:
        scene.render.filepath = path


@persistent
def on_depsgraph_update(scene: Any, *_: Any) -> None:
    global _aligning
    if _aligning:
        return
    _aligning = True
    try:
        fx.align_all(scene)
    finally:
        _aligning = False


@persistent
def on_load_pre(*_: Any) -> None:
    jobs.cancel_all()
    ui_errors.clear()


@persistent
def on_load_post(*_: Any) -> None:
    for scene in bpy.data.scenes:
        fx.align_all(scene)


HANDLERS = (
    ("render_init", on_render_init),
    ("render_pre", on_render_pre),
    ("render_complete", on_render_end),
    ("render_cancel", on_render_end),
    ("depsgraph_update_post", on_depsgraph_update),
    ("load_pre", on_load_pre),
    ("load_post", on_load_post),
)


def register() -> None:
    for name, fn in HANDLERS:
        lst = getattr(bpy.app.handlers, name)
        if fn not in lst:
            lst.append(fn)


def unregister() -> None:
    for name, fn in HANDLERS:
        lst = getattr(bpy.app.handlers, name)
        while fn in lst:
            lst.remove(fn)
