"""Build the add-on zip (plain Python, no bpy): one file installable both ways.

- Blender 3.4-4.1 "Install add-on" and 4.2+ "Install legacy add-on" take a zip holding the package
  folder `video_style_transfer/` (with `bl_info` in its `__init__.py`);
- Blender 4.2+ "Install from Disk" takes an extension zip whose files may sit inside one
  top-level folder, found by its `blender_manifest.toml` (id `video_style_transfer`).

So the zip holds exactly `video_style_transfer/...` with both `bl_info` and the manifest.
"""
from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

PACKAGE = "video_style_transfer"
SOURCE = Path(__file__).resolve().parent / PACKAGE
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo", ".blend1", ".orig", ".rej"}
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # reproducible archives


def _files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix not in _SKIP_SUFFIXES:
            out.append(p)
    return out


def versions(root: Path = SOURCE) -> tuple[str, str]:
    """(bl_info version, manifest version): they must agree."""
    init = (root / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'"version":\s*\((\d+),\s*(\d+),\s*(\d+)\)', init)
    manifest = (root / "blender_manifest.toml").read_text(encoding="utf-8")
    n = re.search(r'^version\s*=\s*"([^"]+)"', manifest, re.M)
    if not m or not n:
        raise ValueError("version missing in bl_info or blender_manifest.toml")
    return ".".join(m.groups()), n.group(1)


def build_zip(out_path: str | Path) -> Path:
    """Write the add-on zip to `out_path` (parent folders created) and return its path."""
    a, b = versions()
    if a != b:
        raise ValueError(f"bl_info version {a} differs from blender_manifest.toml version {b}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in _files(SOURCE):
            info = zipfile.ZipInfo(f"{PACKAGE}/{p.relative_to(SOURCE).as_posix()}", date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if p.suffix in {".jpg", ".png"} else zipfile.ZIP_DEFLATED
            zf.writestr(info, p.read_bytes())
    tmp.replace(out)
    return out


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else f"dist/{PACKAGE}-{versions()[0]}.zip"
    print(build_zip(target))
