"""What the CPU can do fast: decides bf16, memory layout and allocation for training and inference."""
from __future__ import annotations

import ctypes
import functools
import sys
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (none where /proc/cpuinfo cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True where the CPU has AMX tiles for bf16: the CPUs where bf16 pays.

    There, bf16 autocast with channels-last tensors ran inference about 4x and training about 1.8x
    faster than fp32 (2-core AMX machine). With AVX512-BF16 alone bf16 was slower than fp32: on a
    2-core Xeon without AMX, lite model at 640x360, 0.33 against 0.23 s a frame; with oneDNN capped at
    AVX512_CORE_BF16 on the AMX machine, 640x360 stylization 1.54 against 1.31 s (lite 0.31 against
    0.23), a training step 3.4 against 2.7 s. On AVX2-only CPUs PyTorch emulates bf16 and it was
    about 60x slower.
    """
    return "amx_bf16" in cpu_flags()


def cpu_has_avx512() -> bool:
    """True where PyTorch's CPU kernels run with AVX-512 (oneDNN's convolutions then use its 512-bit
    units too): where fp32 convolutions take oneDNN, not NNPACK (`convs.winograd_preferred`)."""
    import torch
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


@functools.lru_cache(maxsize=1)
def reuse_large_allocations() -> bool:
    """Serve large tensors from the reused process heap instead of fresh mmap()s (glibc only).

    glibc maps every block above 32 MiB afresh and unmaps it on free, so each large activation paid
    one page fault per 4 KiB on first touch: at 1280x720 that was two thirds of the CPU stylize
    time (3.4 s a frame, 1.05 s with this), and half of the analysis time at 640x360. The price is
    that freed memory stays with the process: its peak grows (1280x720 stylize: 1.5 to 2.1 GiB) and
    is set by the largest frame, not by the clip's length.
    Returns whether the setting was applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2 ** 31 - 1))
