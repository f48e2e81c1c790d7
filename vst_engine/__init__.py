"""vst_engine: consistent video style transfer (Wang et al., AAAI 2020).

Two passes: `Engine.analyze(frames, styles) -> GlobalFeatures` (streaming, storable), then
`Engine.stylize(frame, features, weights) -> frame` for any frame, in any order or process
(`Engine.stylize_batch` for several frames of one size in one pass).
"""
from .engine import Engine, StyleSet
from .errors import VstError
from .features import GlobalFeatures, sample_indices

__all__ = ["Engine", "StyleSet", "GlobalFeatures", "VstError", "sample_indices", "engine_version"]


def engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("vst-engine")
    except PackageNotFoundError:
        return "dev"
