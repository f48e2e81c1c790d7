"""Per-style weight keyframes (frame -> weight), linearly interpolated per frame."""
from __future__ import annotations

import json
from bisect import bisect_right
from pathlib import Path

import numpy as np

from .errors import VstError


class WeightKeys:
    """Keyframed style weights. `keys[i]` maps frame -> weight for style i (held outside the keys)."""

    def __init__(self, keys: list[dict[int, float]]) -> None:
        self.keys = [sorted(k.items()) for k in keys]
        for i, k in enumerate(self.keys):
            if not k:
                raise VstError(f"style {i + 1} has no keyframes")
            for frame, value in k:
                if not np.isfinite(value) or value < 0:
                    raise VstError(f"style {i + 1}, frame {frame}: weight must be a non-negative number, got {value}")

    def __len__(self) -> int:
        return len(self.keys)

    def at(self, frame: int) -> list[float]:
        out = []
        for k in self.keys:
            frames = [f for f, _ in k]
            j = bisect_right(frames, frame)
            if j == 0:
                out.append(k[0][1])
            elif j == len(k):
                out.append(k[-1][1])
            else:
                (f0, v0), (f1, v1) = k[j - 1], k[j]
                out.append(v0 + (v1 - v0) * (frame - f0) / (f1 - f0))
        return out

    @classmethod
    def constant(cls, weights: list[float]) -> "WeightKeys":
        return cls([{0: float(w)} for w in weights])

    @classmethod
    def load(cls, path: str | Path, styles: int) -> "WeightKeys":
        """JSON: a list with one {"frame": weight} object per style (in -s order), or an object
        mapping the style's 0-based index to such an object."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise VstError(f"weights file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VstError(f"cannot read weights file {path}: {exc}") from None
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
        return cls(parsed)


def parse_weights(text: str, styles: int) -> list[float]:
    """'0.3,0.7' -> [0.3, 0.7]; validated count."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise VstError(f"--weights must be comma-separated numbers, got '{text}'") from None
    if len(values) != styles:
        raise VstError(f"--weights gives {len(values)} value(s) for {styles} style(s)")
    return values
