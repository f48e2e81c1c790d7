"""A compact, portable copy of the training data, for a training machine without registry access.

The assembled data (`data.assemble`) is about 220 MB, mostly the uint8 content array. The bundle
stores each content crop as a JPEG and each artwork as a high-quality JPEG in one uncompressed
tar (about 20 MB), with the manifests for provenance; `unbundle` turns it back into the layout
the trainer reads. Re-encoding costs a little fidelity (JPEG quality 85 / 95), nothing else.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import cv2
import numpy as np

CONTENT_QUALITY = 85
STYLE_QUALITY = 95
STYLE_DIRS = ("styles_train", "styles_heldout")
CONTENT_ARRAYS = ("content_train", "content_heldout")


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def bundle(data_dir: Path, out: Path) -> int:
    """Write the bundle of `data_dir` to `out` (atomically); returns its size in bytes."""
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, "w") as tar:
        for name in CONTENT_ARRAYS:
            arr = np.load(data_dir / f"{name}.npy", mmap_mode="r")
            for i in range(arr.shape[0]):
                _add(tar, f"{name}/{i:05d}.jpg", _jpeg(np.asarray(arr[i]), CONTENT_QUALITY))
        for folder in STYLE_DIRS:
            for p in sorted((data_dir / folder).iterdir()):
                img = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if img is None:
                    raise RuntimeError(f"cannot read {p}")
                _add(tar, f"{folder}/{p.stem}.jpg", _jpeg(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), STYLE_QUALITY))
        for extra in ("MANIFEST.md", "manifest.json"):
            if (data_dir / extra).is_file():
                tar.add(data_dir / extra, arcname=extra)
    os.replace(tmp, out)
    return out.stat().st_size


def unbundle(path: Path, data_dir: Path) -> dict[str, int]:
    """Rebuild the trainer's layout from a bundle; returns the item count per part."""
    frames: dict[str, list[tuple[str, np.ndarray]]] = {n: [] for n in CONTENT_ARRAYS}
    counts: dict[str, int] = {}
    data_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            part, _, name = member.name.partition("/")
            data = tar.extractfile(member).read()
            if part in frames:
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                frames[part].append((name, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)))
            elif part in STYLE_DIRS and name and "/" not in name:
                (data_dir / part).mkdir(exist_ok=True)
                (data_dir / part / name).write_bytes(data)
                counts[part] = counts.get(part, 0) + 1
            elif member.name in ("MANIFEST.md", "manifest.json"):
                (data_dir / member.name).write_bytes(data)
    for part, items in frames.items():
        items.sort()
        np.save(data_dir / f"{part}.npy", np.stack([img for _, img in items]))
        counts[part] = len(items)
    return counts
