"""Talking to the engine: its command line run as a subprocess (no bpy here).

Torch and the model never load inside Blender: a crash, a CUDA problem or a multiprocessing
quirk of Blender's embedded Python then cannot take Blender down, and any Python with the
engine installed can serve (preferences, VST_ENGINE_PYTHON, or the private environment).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Optional, Sequence

ENV_VAR = "VST_ENGINE_PYTHON"
_info_cache: dict[tuple[str, str, str], dict[str, str]] = {}


class EngineError(Exception):
    """A user-facing problem: the message is shown as is (UI report / stderr)."""


def venv_python(env_dir: str | Path) -> Path:
    env_dir = Path(env_dir)
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def resolve_python(pref_path: str = "", private_env: str | Path | None = None) -> str:
    """The engine's Python: preferences, else $VST_ENGINE_PYTHON, else the private environment.

    A path that is set but wrong is an error (not skipped): the user asked for that one.
    """
    for origin, candidate in (("the add-on preferences' Engine Python", pref_path),
                              (ENV_VAR, os.environ.get(ENV_VAR, ""))):
        if candidate:
            path = os.path.expanduser(candidate)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
            raise EngineError(f"no engine Python found: {origin} is {path}, which is not an executable file")
    if private_env:
        path = str(venv_python(private_env))
        if os.path.isfile(path):
            return path
    raise EngineError("no engine Python found: set 'Engine Python' in the add-on preferences, set "
                      f"{ENV_VAR}, or press 'Install Dependencies' in the preferences")


def subprocess_env() -> dict[str, str]:
    """Environment for engine processes: Blender's own Python settings must not leak into them."""
    env = dict(os.environ)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TQDM_MININTERVAL", "0.5")
    return env


def popen_flags() -> dict:
    """Start engine processes in their own group so cancelling one never signals Blender."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
    return {"start_new_session": True}


def last_error(text: str) -> Optional[str]:
    """The engine's one-line user error (`vst: error: ...`), if the output has one."""
    found = None
    for line in re.split(r"[\r\n]+", text):
        if line.startswith("vst: error:"):
            found = line[len("vst: error:"):].strip()
    return found


def failure_message(returncode: int, output: str, what: str) -> str:
    err = last_error(output)
    if err:
        return f"{what} failed: {err}"
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", output) if ln.strip()]
    tail = lines[-1] if lines else "no output"
    return f"{what} failed (engine exit code {returncode}): {tail}"


def device_args(device: str) -> list[str]:
    """The engine options for an effect's Device: "cpu_int8" is the CPU with `--precision int8`."""
    return ["--device", "cpu", "--precision", "int8"] if device == "cpu_int8" else ["--device", device]


def engine_info(python: str, model: str = "default", device: str = "auto", timeout: float = 300.0) -> dict[str, str]:
    """`vst info` as a dict (model, model_id, trained, device, precision), cached per process."""
    key = (python, model, device)
    if key in _info_cache:
        return _info_cache[key]
    cmd = [python, "-m", "vst_engine", "info", "--model", model, *device_args(device)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env(),
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"cannot run the engine ({python}): {exc}") from None
    if proc.returncode != 0:
        output = proc.stderr + proc.stdout
        if "No module named vst_engine" in output:
            raise EngineError(f"the Python {python} has no vst_engine installed")
        raise EngineError(failure_message(proc.returncode, output, "engine check"))
    info: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            info[name.strip()] = value.strip()
    match = re.match(r"(.*)\((.*)\)\s*$", info.get("model", ""))
    info["model_id"] = match.group(2).strip() if match else info.get("model", model)
    _info_cache[key] = info
    return info


def cached_info(python: str, model: str, device: str = "auto") -> Optional[dict[str, str]]:
    return _info_cache.get((python, model, device))


def clear_info_cache() -> None:
    _info_cache.clear()


def analyze_command(python: str, source: str, styles: Sequence[str], frames: tuple[int, int], max_side: int,
                    model: str, device: str, output: str, *, full_strength: bool = False,
                    deflicker: bool = False, per_shot: bool = False) -> list[str]:
    cmd = [python, "-m", "vst_engine", "analyze", source]
    for s in styles:
        cmd += ["-s", s]
    cmd += ["--full-strength"] if full_strength else []
    cmd += ["--deflicker"] if deflicker else []
    cmd += ["--per-shot"] if per_shot else []
    return cmd + ["--frames", f"{frames[0]}:{frames[1]}", "--max-side", str(max_side), "--model", model,
                  *device_args(device), "-o", output]


def complete_command(python: str, source: str, styles: Sequence[str], model: str, device: str, lean: str,
                     output: str) -> list[str]:
    """Add the clip's own colours to full-strength-only features (their frames and size are reused)."""
    cmd = [python, "-m", "vst_engine", "analyze", source]
    for s in styles:
        cmd += ["-s", s]
    return cmd + ["--complete", lean, "--model", model, *device_args(device), "-o", output]


def stylize_command(python: str, source: str, styles: Sequence[str], frames: tuple[int, int], max_side: int,
                    model: str, device: str, out_dir: str, *, weights_file: str,
                    preserve_color: bool, features: Optional[str]) -> list[str]:
    cmd = [python, "-m", "vst_engine", "stylize", source]
    for s in styles:
        cmd += ["-s", s]
    cmd += ["--weights-file", weights_file, "--frames",
            f"{frames[0]}:{frames[1]}", "--max-side", str(max_side), "--model", model, *device_args(device)]
    if preserve_color:
        cmd.append("--preserve-color")
    cmd += ["--features", features] if features else ["--no-global"]
    # A trailing separator makes the engine write a folder of {index:06d}.png.
    return cmd + ["-o", out_dir.rstrip("/\\") + os.sep]


def describe(cmd: Sequence[str]) -> str:
    return " ".join(f'"{c}"' if " " in c else c for c in cmd)
