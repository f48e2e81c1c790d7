"""Running the real Blender in background mode for the add-on tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Optional, Sequence

# Every test script starts with this. Debian's Blender 3.4 segfaults at exit after a --python
# script if multiprocessing's __mp_main__ alias is left in sys.modules.
PRELUDE = """
import sys, os, json
sys.modules.pop("__mp_main__", None)
import bpy, addon_utils
addon_utils.enable("video_style_transfer", default_set=True)
import video_style_transfer.api as vst
from video_style_transfer import compat

def result(obj):
    print("RESULT:" + json.dumps(obj), flush=True)

def movie_scene(clip, max_side=64):
    sc = bpy.context.scene
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = 64, 36, 100
    sc.render.fps = 24
    sc.frame_start, sc.frame_end = 1, 6
    sc.view_settings.view_transform = 'Standard'   # pixels pass through unchanged
    sc.render.image_settings.file_format = 'PNG'
    sc.render.image_settings.color_mode = 'RGB'
    ed = sc.sequence_editor_create()
    return sc, compat.new_movie_strip(ed, "clip", str(clip), 1, 1)

def linear_keys(strip):
    for fc in compat._action_fcurves(strip.id_data):
        for kp in fc.keyframe_points:
            kp.interpolation = 'LINEAR'
"""


def engine_python() -> str:
    """The Python with vst_engine: $VST_ENGINE_PYTHON, else the one running pytest (the repo's .venv)."""
    return os.environ.get("VST_ENGINE_PYTHON") or sys.executable


class Run:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.proc = proc
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.results = [json.loads(line[len("RESULT:"):]) for line in proc.stdout.splitlines()
                        if line.startswith("RESULT:")]

    @property
    def result(self) -> Any:
        assert self.results, f"no RESULT from Blender (rc {self.rc})\nstdout:\n{self.out[-4000:]}\nstderr:\n{self.err[-4000:]}"
        return self.results[-1]

    def check(self) -> "Run":
        assert self.rc == 0, f"Blender exited {self.rc}\nstdout:\n{self.out[-4000:]}\nstderr:\n{self.err[-4000:]}"
        return self


def blender(args: Sequence[str], env: dict, cwd: Optional[Path] = None, timeout: float = 600) -> Run:
    cmd = ["blender", "-b", "--factory-startup", *args]
    return Run(subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout))


def script(code: str, env: dict, tmp: Path, blend: Optional[Path] = None, extra: Sequence[str] = (),
           prelude: bool = True, timeout: float = 600) -> Run:
    """Run `code` (after PRELUDE) in Blender; a Python error makes the run fail (exit code 1)."""
    path = tmp / f"script_{abs(hash(code)) % 10**8}.py"
    path.write_text((PRELUDE if prelude else "") + "\n" + textwrap.dedent(code))
    args = ([str(blend)] if blend else []) + ["--python-exit-code", "1", "--python", str(path), *extra]
    return blender(args, env, cwd=tmp, timeout=timeout)


def render(blend: Path, out_pattern: Path, env: dict, frames: Optional[tuple[int, int]] = None,
           single: Optional[int] = None) -> Run:
    """`blender -b file.blend --addons video_style_transfer -o OUT [-s A -e B] -a` (or -f N)."""
    args = [str(blend), "--addons", "video_style_transfer", "-o", str(out_pattern), "-F", "PNG"]
    if single is not None:
        args += ["-f", str(single)]
    else:
        if frames:
            args += ["-s", str(frames[0]), "-e", str(frames[1])]
        args.append("-a")
    return blender(args, env, cwd=blend.parent)


def read_png(path: Path):
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"cannot read {path}"
    return img
