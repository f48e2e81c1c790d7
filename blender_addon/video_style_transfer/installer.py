"""'Install Dependencies': a private Python environment with the engine and PyTorch.

The environment lives in the add-on's per-user folder (Blender's config folder for the legacy
add-on, the extension's user folder on 4.2+), is made with a Python found next to Blender's
own, and is filled by pip in a background process (progress and cancel in the preferences).
"""
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any, Optional

import bpy
from bpy.props import BoolProperty

from . import engine_cli, prefs
from .engine_cli import EngineError

POLL_S = 0.5


def _candidates() -> list[str]:
    """Interpreters to build the environment with: Blender's bundled Python first."""
    exe = "python.exe" if os.name == "nt" else f"python{sys.version_info[0]}.{sys.version_info[1]}"
    found = [sys.executable,
             os.path.join(sys.prefix, "bin", exe), os.path.join(sys.prefix, exe),
             os.path.join(sys.prefix, "bin", "python3"), shutil.which("python3") or "", shutil.which("python") or ""]
    seen, out = set(), []
    for c in found:
        if c and c not in seen and os.path.isfile(c) and os.access(c, os.X_OK):
            seen.add(c)
            out.append(c)
    return out


def base_python() -> tuple[str, bool]:
    """(interpreter, has ensurepip); EngineError if none can make environments."""
    for c in _candidates():
        try:
            r = subprocess.run([c, "-c", "import sys, venv; assert sys.version_info >= (3, 10); "
                                "import importlib.util as u; print(int(u.find_spec('ensurepip') is not None))"],
                               capture_output=True, text=True, timeout=60, env=engine_cli.subprocess_env())
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return c, r.stdout.strip().endswith("1")
    raise EngineError("no Python 3.10+ with the venv module was found next to Blender: install one and set "
                      "'Engine Python' in the preferences, or set VST_ENGINE_PYTHON")


def install_commands(env_dir: str, engine_source: str, torch_req: str, torch_index: str,
                     pip_args: str) -> list[tuple[str, list[str]]]:
    base, has_ensurepip = base_python()
    py = str(engine_cli.venv_python(env_dir))
    extra = shlex.split(pip_args)
    steps = [("create environment", [base, "-m", "venv", env_dir] + ([] if has_ensurepip else ["--without-pip"]))]
    # Without ensurepip (Debian's python3-venv missing), the base pip installs into the environment.
    pip = [py, "-m", "pip"] if has_ensurepip else [base, "-m", "pip", "--python", py]
    index = ["--extra-index-url", torch_index] if torch_index else []
    if torch_req:
        steps.append(("install PyTorch", pip + ["install", "--disable-pip-version-check"] + index + extra + [torch_req]))
    source = os.path.expanduser(engine_source)
    steps.append(("install the engine", pip + ["install", "--disable-pip-version-check"] + extra + [source]))
    steps.append(("check the engine", [py, "-m", "vst_engine", "info"]))
    return steps


class Installer:
    def __init__(self, steps: list[tuple[str, list[str]]], log_path: str) -> None:
        self.steps = list(steps)
        self.count = len(steps)
        self.log_path = log_path
        self.state, self.message = "running", ""
        self.label = ""
        self._proc: Optional[subprocess.Popen] = None
        self._log: Any = open(log_path, "w", encoding="utf-8")

    def poll(self) -> bool:
        if self.state != "running":
            return False
        if self._proc is not None:
            rc = self._proc.poll()
            if rc is None:
                return True
            self._proc = None
            if rc != 0:
                self._finish("failed", f"{self.label} failed (exit code {rc}): {self.tail()} (log: {self.log_path})")
                return False
        if not self.steps:
            engine_cli.clear_info_cache()
            self._finish("done", "dependencies installed")
            return False
        self.label, cmd = self.steps.pop(0)
        self._log.write(f"\n$ {engine_cli.describe(cmd)}\n")
        self._log.flush()
        try:
            self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=engine_cli.subprocess_env(), **engine_cli.popen_flags())
        except OSError as exc:
            self._finish("failed", f"{self.label}: cannot run {cmd[0]}: {exc.strerror or exc}")
            return False
        return True

    def tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                lines = [ln.strip() for ln in f.read()[-4000:].splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._finish("cancelled", "installation cancelled")

    def _finish(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        self._log.write(f"\n{state}: {message}\n")
        self._log.close()

    @property
    def progress_text(self) -> str:
        done = self.count - len(self.steps) - (1 if self._proc is not None else 0)
        return f"step {done + 1}/{self.count}: {self.label} - {self.tail()[:80]}"


current: Optional[Installer] = None


def draw_status(layout: Any) -> None:
    if current is not None and current.state == "running":
        layout.label(text=current.progress_text, icon='TIME')
        layout.operator("vst.install_cancel", icon='CANCEL')
        return
    if current is not None:
        layout.label(text=current.message, icon='ERROR' if current.state == "failed" else 'INFO')
    layout.operator("vst.install_dependencies", icon='IMPORT')


def _tick() -> Optional[float]:
    if current is None or not current.poll():
        print(f"vst: {current.message if current else ''}", flush=True)
        _redraw()
        return None
    _redraw()
    return POLL_S


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            if area.type == 'PREFERENCES':
                area.tag_redraw()


class VST_OT_install_dependencies(bpy.types.Operator):
    """Create a private Python environment and install PyTorch and the engine into it (several minutes)"""
    bl_idname = "vst.install_dependencies"
    bl_label = "Install Dependencies"

    wait: BoolProperty(default=False, options={'SKIP_SAVE'},  # type: ignore[valid-type]
                       description="Block until done (scripts, batch mode)")

    def execute(self, context: Any) -> set[str]:
        global current
        if current is not None and current.state == "running":
            self.report({'WARNING'}, "an installation is already running")
            return {'CANCELLED'}
        p = prefs.prefs()
        env_dir = prefs.private_env_dir()
        try:
            steps = install_commands(env_dir, p.engine_source if p else "vst-engine",
                                     p.torch_requirement if p else "torch", prefs.TORCH_INDEXES[p.torch_variant if p
                                                                                              else 'DEFAULT'],
                                     p.pip_args if p else "")
            os.makedirs(os.path.dirname(env_dir), exist_ok=True)
            current = Installer(steps, os.path.join(os.path.dirname(env_dir), "install.log"))
        except (EngineError, OSError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        if self.wait or bpy.app.background:
            import time
            while current.poll():
                time.sleep(POLL_S)
                print(f"vst: {current.progress_text}", flush=True)
            level = {'INFO'} if current.state == "done" else {'ERROR'}
            self.report(level, current.message)
            return {'FINISHED'} if current.state == "done" else {'CANCELLED'}
        bpy.app.timers.register(_tick, first_interval=0.1)
        self.report({'INFO'}, f"installing into {env_dir} (progress in the preferences)")
        return {'FINISHED'}


class VST_OT_install_cancel(bpy.types.Operator):
    """Stop the running installation"""
    bl_idname = "vst.install_cancel"
    bl_label = "Cancel Installation"

    def execute(self, context: Any) -> set[str]:
        if current is not None:
            current.cancel()
        return {'FINISHED'}


def classes() -> tuple[type, ...]:
    return (VST_OT_install_dependencies, VST_OT_install_cancel)


def unregister() -> None:
    if current is not None and current.state == "running":
        current.cancel()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
