"""Running bake plans: synchronously (renders, scripts) or as a background job polled by a timer (UI).

Progress is the number of expected PNGs present in the look folder: the engine writes each
frame atomically, so a present file is a finished frame, whatever the engine prints.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

from . import engine_cli
from .engine_cli import EngineError
from .plan import BakePlan, Run

ProgressFn = Callable[[int, int, str], None]


def _start(run: Run) -> tuple[subprocess.Popen, Any]:
    log = tempfile.TemporaryFile(mode="w+b")
    try:
        proc = subprocess.Popen(run.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=engine_cli.subprocess_env(), **engine_cli.popen_flags())
    except OSError as exc:
        log.close()
        raise EngineError(f"cannot start the engine ({run.cmd[0]}): {exc.strerror or exc}") from None
    return proc, log


def _read_log(log: Any) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")


def _stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Interrupt the engine (it discards partial output on SIGINT), then kill if it lingers."""
    if proc.poll() is not None:
        return
    try:
        if os.name == "nt":
            proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            os.killpg(proc.pid, signal.SIGINT)
    except OSError:
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _check_written(plan: BakePlan, run: Run) -> None:
    missing = plan.missing(run.frames)
    if missing:
        raise EngineError(f"the engine finished but frame {missing[0]} is missing in {plan.frames_dir}")


def bake_sync(plan: BakePlan, media_frames: Optional[list[int]] = None, progress: Optional[ProgressFn] = None,
              poll_s: float = 0.25) -> int:
    """Bake the missing frames among `media_frames` (default: the whole strip); returns how many.

    EngineError on any failure; frames finished before the failure stay in the cache.
    """
    plan.prepare()
    todo = plan.missing(media_frames)
    runs = plan.runs(todo)
    total = len(todo)
    for run in runs:
        _run_sync(plan, run, progress, todo, poll_s)
    if progress:
        progress(total, total, "done")
    return total


def _run_sync(plan: BakePlan, run: Run, progress: Optional[ProgressFn], todo: list[int], poll_s: float) -> None:
    proc, log = _start(run)
    try:
        while proc.poll() is None:
            if progress:
                progress(len(todo) - len(plan.missing(todo)), len(todo), run.label)
            time.sleep(poll_s)
        if proc.returncode != 0:
            raise EngineError(engine_cli.failure_message(proc.returncode, _read_log(log),
                                                         f"{run.label} of '{plan.effect_name}'"))
    except BaseException:
        _stop(proc)
        raise
    finally:
        log.close()
    _check_written(plan, run)


def analyze_sync(plan: BakePlan) -> bool:
    """Compute the strip's global features now if missing (a farm's pre-step). True if it ran."""
    plan.prepare()
    run = plan.analysis_run()
    if run is not None:
        _run_sync(plan, run, None, [], 0.25)
    return run is not None


class BakeJob:
    """A bake running in the background; `poll()` from a timer advances it without blocking."""

    def __init__(self, plan: BakePlan, media_frames: Optional[list[int]] = None) -> None:
        self.plan = plan
        plan.prepare()
        self.todo = plan.missing(media_frames)
        self.runs = plan.runs(self.todo)
        self.total = len(self.todo)
        self.done = 0
        self.state = "running" if self.runs else "done"
        self.message = "" if self.runs else "all frames were already baked"
        self._proc: Optional[subprocess.Popen] = None
        self._log: Any = None
        self._run: Optional[Run] = None
        self.started = time.monotonic()

    @property
    def key(self) -> tuple[str, str]:
        return self.plan.scene_name, self.plan.effect_name

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def poll(self) -> bool:
        """Advance; True while still running."""
        if self.state != "running":
            return False
        try:
            if self._proc is not None and self._proc.poll() is not None:
                rc, out = self._proc.returncode, _read_log(self._log)
                self._log.close()
                self._proc = None
                if rc != 0:
                    raise EngineError(engine_cli.failure_message(rc, out, f"{self._run.label} of "  # type: ignore[union-attr]
                                                                 f"'{self.plan.effect_name}'"))
                _check_written(self.plan, self._run)  # type: ignore[arg-type]
            if self._proc is None:
                if not self.runs:
                    self.state, self.message = "done", f"baked {self.total} frame(s)"
                    self.done = self.total
                    return False
                self._run = self.runs.pop(0)
                self._proc, self._log = _start(self._run)
            self.done = self.total - len(self.plan.missing(self.todo))
        except EngineError as exc:
            self.state, self.message = "failed", str(exc)
            return False
        return True

    def cancel(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._log.close()
            self._proc = None
        if self.state == "running":
            self.done = self.total - len(self.plan.missing(self.todo))
            self.state, self.message = "cancelled", f"cancelled after {self.done} of {self.total} frame(s)"

    def status_line(self) -> str:
        label = self._run.label if self._run else ""
        return f"{self.done}/{self.total} frames ({label})" if self.state == "running" else self.message


def log(msg: str) -> None:
    print(f"vst: {msg}", file=sys.stderr, flush=True)
