"""Frames to and from the device.

On CUDA the copies go through pinned (page-locked) host memory on streams of their own: a pageable
copy waits for the GPU's earlier work and stalls it in turn. With `Engine.submit`, the last frame's
download and the host's work on the next frame then run while the network works on the current one:
1920x1080 on an H200, 111.3 -> 128.5 frames/s end to end, 99% of the network alone (129.9). On a CPU
the same calls are plain tensor conversions.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .imageops import frames_to_tensor, quantize, unit_nchw

_PINNED = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32}  # frame dtypes copied pinned


class Pending:
    """Frames on their way back from the device; `result()` waits for them (and only for them)."""

    def __init__(self, host: torch.Tensor, done: torch.cuda.Event | None = None) -> None:
        self._host = host
        self._done = done

    def result(self) -> list[np.ndarray]:
        """H x W x 3 frames, uint8 or float32 as asked for. On CUDA they live in pinned memory."""
        if self._done is not None:
            self._done.synchronize()
        return list(self._host.numpy())


class Transfers:
    """Uploads and downloads of frames for one device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        cuda = device.type == "cuda"
        self._up = torch.cuda.Stream(device) if cuda else None
        self._down = torch.cuda.Stream(device) if cuda else None

    def upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """H x W x 3 frames of one size (uint8, or float32 in [0, 1]) -> N x 3 x H x W float32 in [0, 1]
        on the device, ready for the current stream."""
        if self._up is None or frames[0].dtype not in _PINNED:
            return frames_to_tensor(frames, self.device)
        host = torch.empty((len(frames), *frames[0].shape), dtype=_PINNED[frames[0].dtype], pin_memory=True)
        np.stack(frames, out=host.numpy())
        compute = torch.cuda.current_stream(self.device)
        # Queued behind the compute stream's earlier work, as measured. (Its allocations come from the
        # upload stream's own pool, so starting the copy during the last pass looks safe: unmeasured.)
        self._up.wait_stream(compute)
        with torch.cuda.stream(self._up):
            x = host.to(self.device, non_blocking=True)  # the host block is reused only after this copy
        compute.wait_stream(self._up)
        x.record_stream(compute)
        return unit_nchw(x)

    def download(self, img: torch.Tensor, as_float: bool = False) -> Pending:
        """N x 3 x H x W float images in [0, 1] -> H x W x 3 frames: uint8 (rounded), or float32 with
        `as_float`. The copy is queued behind the work that makes `img`; `Pending.result()` waits."""
        out = img.float().clamp(0, 1).permute(0, 2, 3, 1).contiguous() if as_float else quantize(img)
        if self._down is None:
            return Pending(out)
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        self._down.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._down):
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        out.record_stream(self._down)  # not reused by the compute stream before the copy is done
        return Pending(host, done)
