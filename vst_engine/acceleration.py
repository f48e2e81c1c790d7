"""Faster passes: compiled with torch.compile (CUDA, and CPUs where asked), replayed from captured
CUDA graphs.

One eager pass launches a few hundred small kernels, and at 640x360 a GPU spends most of its time
waiting for Python to launch them. A CUDA graph records the launches once and replays them in
one call. It reads and writes fixed addresses, so every tensor the pass reads (the frame, the clip
statistics, the style targets) must stay in place between replays: the frame is copied into a
static input, and the statistics are updated in place (`SharedNorm.set_alpha`).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Hashable

import torch

WARMUP = 2  # eager passes before capture: cuDNN picks its kernels on these (cudnn.benchmark)
MAX_GRAPHS = 2  # each graph keeps its own activation memory: keep few frame shapes


def compile_mode() -> str | None:
    """The torch.compile mode $VST_COMPILE_MODE names (None: the default mode; "max-autotune-no-cudagraphs"
    also tunes kernels, at a longer first frame)."""
    return os.environ.get("VST_COMPILE_MODE") or None


def compile_pass(fn: Callable) -> Callable:
    """torch.compile of one pass for fixed shapes, in `compile_mode()`.

    Inductor's kernels are kept under the user's cache (unless $TORCHINDUCTOR_CACHE_DIR says
    otherwise), not in /tmp, which a reboot empties: a CPU's first frame of a size took 60-96 s
    to compile and about 10 s from the cache (2-core AMX, 640x360)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "vst_engine" / "inductor"))
    return torch.compile(fn, dynamic=False, mode=compile_mode())


def _reason(exc: Exception) -> str:
    """The first line of an exception, for `failure` fields."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class Compiler:
    """Runs functions compiled with torch.compile when enabled, eager from the first failure on
    (no C compiler for Triton, an op inductor cannot lower), keeping the reason in `failure`.

    With `background`, a pass whose argument shapes have not been compiled yet runs eager while a
    thread compiles it, one pass at a time, and compiled once that is done: the engine service's
    hosts then never wait 20-90 s for a frame of a new size."""

    def __init__(self, enabled: bool, background: bool = False) -> None:
        self.enabled = enabled
        self.background = background
        self.failure: str | None = None
        self.eager_runs = 0  # passes that ran eager while their compilation was not ready
        self._compiled: dict[Callable, Callable] = {}
        self._ready: set[Hashable] = set()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.enabled and self.failure is None

    @property
    def compiling(self) -> bool:
        """Whether a background compilation is under way."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background compilation under way (tests, benchmarks)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def __call__(self, fn: Callable, *args):
        """fn(*args), compiled where that works."""
        if self.active:
            compiled = self._compiled.get(fn)
            if compiled is None:
                compiled = self._compiled[fn] = compile_pass(fn)
            key = (fn, _signature(args))
            if not self.background or key in self._ready:
                try:
                    return compiled(*args)
                except Exception as exc:  # any compilation error: the eager pass below is the same maths
                    self.failure = _reason(exc)
            else:
                self.eager_runs += 1
                if not self.compiling:
                    self._start(compiled, key, args)
        return fn(*args)

    def _start(self, compiled: Callable, key: Hashable, args: tuple) -> None:
        """Compile (and run once) `compiled` for these arguments in a thread, on a stream of its own
        on CUDA after the caller's stream has made them; the result is dropped. The thread takes the
        caller's grad mode: Dynamo guards on it."""
        tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
        made = None
        if tensor is not None and tensor.is_cuda:
            made = torch.cuda.Event()
            made.record()
        grad = torch.is_grad_enabled()

        def work() -> None:
            try:
                stream = torch.cuda.Stream(tensor.device) if made is not None else None
                with torch.set_grad_enabled(grad), torch.cuda.stream(stream) if stream else nullcontext():
                    if stream:
                        stream.wait_event(made)
                    compiled(*args)
                if stream:
                    stream.synchronize()  # before the arguments' memory can go back to the caller's stream
                    # The blocks this stream freed would serve only its own later allocations.
                    torch.cuda.empty_cache()
                self._ready.add(key)
            except Exception as exc:  # as in __call__: eager from now on, with the reason
                self.failure = _reason(exc)

        self._thread = threading.Thread(target=work, name="vst-compile", daemon=True)
        self._thread.start()


def _signature(args: tuple) -> tuple:
    """What a fixed-shape compilation is specialised on, as far as the engine's passes vary: the
    shapes, dtypes and devices of the tensor arguments (the others are the same objects' kinds)."""
    return tuple((tuple(a.shape), a.dtype, a.device) if isinstance(a, torch.Tensor) else type(a) for a in args)


class CapturedPass:
    """fn(x) captured for one input shape; calling it copies x in, replays, and copies the result (a
    tensor) out, or with `copy_out=False` returns the graph's own outputs (any structure of tensors),
    which the next replay overwrites: for callers that only queue more GPU work on them."""

    def __init__(self, fn: Callable[[torch.Tensor], Any], example: torch.Tensor, keep: object,
                 copy_out: bool = True) -> None:
        self.input = example.clone()
        self.keep = keep  # whatever the graph reads besides the input: kept alive with it
        self.copy_out = copy_out
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
            for _ in range(WARMUP):
                fn(self.input)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(self.input)

    def __call__(self, x: torch.Tensor) -> Any:
        self.input.copy_(x)
        self.graph.replay()
        return self.output.clone() if self.copy_out else self.output


class GraphCache:
    """Captured passes by key (input shape and the identity of what they read), least recently
    used first out. After a failed capture it stays off and says why in `failure`."""

    def __init__(self, enabled: bool, compiler: Compiler | None = None) -> None:
        self.enabled = enabled
        self.failure: str | None = None
        self.compiler = compiler  # whose passes the graphs capture
        self._passes: OrderedDict[Hashable, CapturedPass] = OrderedDict()

    @property
    def active(self) -> bool:
        return self.enabled and self.failure is None

    def clear(self) -> None:
        self._passes.clear()

    def keys(self) -> list[tuple[tuple[int, ...], Hashable]]:
        return list(self._passes)

    def captured_batch(self, shape: tuple[int, ...], tag: Hashable) -> int:
        """The largest batch captured for inputs of this shape (batch aside) and tag; 0 if none."""
        return max([s[0] for s, t in self._passes if s[1:] == tuple(shape[1:]) and t == tag], default=0)

    def run(self, tag: Hashable, fn: Callable[[torch.Tensor], Any], x: torch.Tensor,
            keep: object = None, copy_out: bool = True) -> Any:
        """fn(x), replayed from a graph when possible, else eager. Graphs are kept per input shape
        and `tag` (the identity of the tensors fn reads besides x); `copy_out` as `CapturedPass`."""
        key = (tuple(x.shape), tag)
        if not self.active:
            return fn(x)
        captured = self._passes.get(key)
        compiler = self.compiler
        if captured is None and compiler is not None and compiler.background and compiler.active:
            # A graph would keep a pass that still compiles in the background eager for good: it is
            # captured only after a run that was compiled throughout, and not beside the compiling
            # thread's own GPU work (capture forbids some of its calls, such as new allocations).
            runs = compiler.eager_runs
            out = fn(x)
            if compiler.eager_runs != runs or compiler.compiling:  # nor while a compilation runs
                return out
        if captured is None:
            try:
                captured = CapturedPass(fn, x, keep, copy_out)
            except RuntimeError as exc:  # e.g. an op that cannot be captured: eager from now on
                self.failure = _reason(exc)
                torch.cuda.synchronize()
                return fn(x)
            self._passes[key] = captured
            while len(self._passes) > MAX_GRAPHS:
                self._passes.popitem(last=False)
        self._passes.move_to_end(key)
        return captured(x)
