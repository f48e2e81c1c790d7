"""Keyframes for a render: per-style weights and, optionally, strength (frame -> value),
linearly interpolated per frame and held outside the keys."""
from __future__ import annotations

import json
from bisect import bisect_right
from pathlib import Path

import numpy as np

from .errors import VstError


def _interpolate(keys: list[tuple[int, float]], frame: int) -> float:
    frames = [f for f, _ in keys]
    j = bisect_right(frames, frame)
    if j == 0:
        return keys[0][1]
    if j == len(keys):
        return keys[-1][1]
    (f0, v0), (f1, v1) = keys[j - 1], keys[j]
    return v0 + (v1 - v0) * (frame - f0) / (f1 - f0)


class WeightKeys:
    """Keyframed style weights (`keys[i]`: frame -> weight for style i) and optional strength keys."""

    def __init__(self, keys: list[dict[int, float]], strength: dict[int, float] | None = None) -> None:
        self.keys = [sorted(k.items()) for k in keys]
        for i, k in enumerate(self.keys):
            if not k:
                raise VstError(f"style {i + 1} has no keyframes")
            for frame, value in k:
                if not np.isfinite(value) or value < 0:
                    raise VstError(f"style {i + 1}, frame {frame}: weight must be a non-negative number, got {value}")
        self.strength = sorted(strength.items()) if strength else None
        for frame, value in self.strength or []:
            if not (np.isfinite(value) and 0.0 <= value <= 1.0):
                raise VstError(f"strength at frame {frame} must be between 0 and 1, got {value}")

    def __len__(self) -> int:
        return len(self.keys)

    def at(self, frame: int) -> list[float]:
        return [_interpolate(k, frame) for k in self.keys]

    def strength_at(self, frame: int, default: float = 1.0) -> float:
        return _interpolate(self.strength, frame) if self.strength else default

    @classmethod
    def constant(cls, weights: list[float]) -> "WeightKeys":
        return cls([{0: float(w)} for w in weights])

    @classmethod
    def load(cls, path: str | Path, styles: int) -> "WeightKeys":
        """JSON: a list with one {"frame": weight} object per style (in -s order), or an object
        mapping the style's 0-based index to such an object, or {"weights": either of those,
        "strength": {"frame": strength}}."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise VstError(f"weights file not found: {path}") from None
        except IsADirectoryError:
            raise VstError(f"{path} is a folder, not a weights file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VstError(f"cannot read weights file {path}: {exc}") from None
        strength = None
        if isinstance(data, dict) and "weights" in data:
            strength = data.get("strength")
            if strength is not None:
                if not isinstance(strength, dict) or not strength:
                    raise VstError(f"weights file {path}: strength must be a non-empty object of frame: strength")
                try:
                    strength = {int(f): float(v) for f, v in strength.items()}
                except (TypeError, ValueError):
                    raise VstError(f"weights file {path}: strength has a non-numeric frame or value") from None
            data = data["weights"]
        if isinstance(data, dict):
            try:
                data = [data[str(i)] for i in range(styles)]
            except KeyError as exc:
                raise VstError(f"weights file {path} has no keys for style index {exc}") from None
        if not isinstance(data, list) or len(data) != styles:
            raise VstError(f"weights file {path} must give keyframes for each of the {styles} style(s)")
        parsed = []
        for i, entry in enumerate(data):
            if not isinstance(entry, dict):
                raise VstError(f"weights file {path}: style {i + 1} must be an object of frame: weight")
            try:
                parsed.append({int(f): float(v) for f, v in entry.items()})
            except (TypeError, ValueError):
                raise VstError(f"weights file {path}: style {i + 1} has a non-numeric frame or weight") from None
        return cls(parsed, strength)


def parse_weights(text: str, styles: int) -> list[float]:
    """'0.3,0.7' -> [0.3, 0.7]; validated count."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise VstError(f"--weights must be comma-separated numbers, got '{text}'") from None
    if len(values) != styles:
        raise VstError(f"--weights gives {len(values)} value(s) for {styles} style(s)")
    return values
