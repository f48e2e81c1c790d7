"""Trained model files: where they live, how they are saved (half precision) and loaded.

A model file is a plain dict saved with `torch.save` and loaded with `weights_only=True`:
{"format": "vst-model", "version": 1, "state": {name: fp16 tensor}, "meta": {...}}.
When no trained file exists for a name, the engine uses a seeded, clearly labelled
untrained network so everything else keeps working.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_write_bytes
from .errors import VstError
from .network import ARCHS, StyleNet

FORMAT = "vst-model"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).parent / "weights"
BUILTIN = {"default": "default.pt", "baseline": "baseline.pt", "lite": "lite.pt"}
UNTRAINED_SEED = 0


@dataclass
class LoadedModel:
    net: StyleNet
    name: str
    model_id: str  # identifies the exact weights; recorded in GlobalFeatures files
    trained: bool
    meta: dict = field(default_factory=dict)


def model_path(name: str) -> Path:
    """Path of a built-in model name, or the given path itself."""
    return WEIGHTS_DIR / BUILTIN[name] if name in BUILTIN else Path(name)


def save_model(net: StyleNet, path: Path, meta: dict) -> None:
    meta = {**meta, "arch": net.arch}
    state = {k: v.detach().to("cpu", torch.float16) for k, v in net.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "state": state, "meta": meta}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def untrained_model(arch: str = "paper") -> LoadedModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        net = StyleNet(arch)
    model_id = f"untrained-seed{UNTRAINED_SEED}" if arch == "paper" else f"untrained-{arch}-seed{UNTRAINED_SEED}"
    return LoadedModel(net.eval(), "untrained", model_id, False,
                       {"note": "UNTRAINED: random decoder weights, output is not a stylization", "arch": arch})


def load_model(name: str = "default") -> LoadedModel:
    """Load a built-in model by name or a model file by path; "untrained" (or a built-in whose
    weights are not there) gives the seeded untrained network."""
    if name == "untrained":
        return untrained_model()
    path = model_path(name)
    if not path.is_file():
        if name in BUILTIN:
            return untrained_model(name if name in ARCHS else "paper")  # "lite" names its architecture
        raise VstError(f"model file not found: {path}")
    raw = path.read_bytes()
    try:
        blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise VstError(f"not a model file: {path} ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise VstError(f"not a vst model file: {path}")
    if blob.get("version") != FORMAT_VERSION:
        raise VstError(f"model file {path} has format version {blob.get('version')}, expected {FORMAT_VERSION}")
    meta = dict(blob.get("meta", {}))
    try:
        net = StyleNet(meta.get("arch", "paper"))
    except ValueError as exc:
        raise VstError(f"model file {path}: {exc}") from None
    try:
        net.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    except RuntimeError:
        raise VstError(f"model file {path} does not match this network architecture") from None
    model_id = f"{path.stem}-{hashlib.sha256(raw).hexdigest()[:16]}"
    return LoadedModel(net.eval(), path.stem, model_id, True, meta)
