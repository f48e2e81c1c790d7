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
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable

import torch

# Weights as constants, not prepacked for oneDNN: Inductor cannot cache kernels that hold prepacked
# (mkldnn) weights, so every process compiled anew (57-60 s against 20 s from the cache, lite, 640x360);
# prepacking was no faster.
FREEZE = {"freezing": True, "cpp.weight_prepack": False}
WARMUP = 2  # eager passes before capture: cuDNN picks its kernels on these (cudnn.benchmark)
MAX_GRAPHS = 2  # each graph keeps its own activation memory: keep few frame shapes


def compile_mode() -> str | None:
    """The torch.compile mode $VST_COMPILE_MODE names (None: the default mode; "max-autotune-no-cudagraphs"
    also tunes kernels, at a longer first frame)."""
    return os.environ.get("VST_COMPILE_MODE") or None


def compile_pass(fn: Callable, freeze: bool = False) -> Callable:
    """torch.compile of one pass for fixed shapes, in `compile_mode()`.

    With `freeze` (inference on a CPU) Inductor takes the weights as constants and does the work
    that depends on them alone once, when compiling (2-core AMX, bf16, 640x360, processes
    alternated: lite stylization 53-63 -> 47-49 ms, analysed frame 76-84 -> 67-68 ms; default model
    183-195 -> 165-171 ms, 236-245 -> 204-219 ms). The weights must not change afterwards; the
    clip's statistics are inputs, updated in place as before.

    Inductor's kernels are kept under the user's cache (unless $TORCHINDUCTOR_CACHE_DIR says
    otherwise), not in /tmp, which a reboot empties: a CPU's first frame of a size took 60-96 s
    to compile and about 10 s from the cache (2-core AMX, 640x360)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "vst_engine" / "inductor"))
    compiled = torch.compile(fn, dynamic=False, mode=compile_mode())
    if not freeze:
        return compiled

    def frozen(*args):
        # Not torch.compile's options: Dynamo reads the global setting to hand Inductor the weights.
        with torch._inductor.config.patch(FREEZE):
            return compiled(*args)
    return frozen


def _reason(exc: Exception) -> str:
    """The first line of an exception, for `failure` fields."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class Compiler:
    """Runs functions compiled with torch.compile when enabled, eager from the first failure on
    (no C compiler for Triton, an op inductor cannot lower), keeping the reason in `failure`."""

    def __init__(self, enabled: bool, freeze: bool = False) -> None:
        self.enabled = enabled
        self.freeze = freeze  # `compile_pass`: the weights as constants
        self.failure: str | None = None
        self._compiled: dict[Callable, Callable] = {}

    @property
    def active(self) -> bool:
        return self.enabled and self.failure is None

    def __call__(self, fn: Callable, *args):
        """fn(*args), compiled where that works."""
        if self.active:
            compiled = self._compiled.get(fn)
            if compiled is None:
                compiled = self._compiled[fn] = compile_pass(fn, self.freeze)
            try:
                return compiled(*args)
            except Exception as exc:  # any compilation error: the eager pass below is the same maths
                self.failure = _reason(exc)
        return fn(*args)


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

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.failure: str | None = None
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
