"""What the CPU can do fast: decides bf16 and memory layout for training and inference."""
from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True where the CPU has bf16 units (AMX or AVX512-BF16).

    There, bf16 autocast with channels-last tensors trains about 1.8x faster than fp32 (measured on
    a 2-core AMX machine); on AVX2-only CPUs PyTorch emulates bf16 and it was about 60x slower.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False
