"""What the engine must read for a source strip, and how scene frames map to its frame numbers.

Blender shows media frame `(scene_frame - frame_start) + animation_offset_start` of a movie or
image strip (clamped to its content); a reversed strip counts `scene_frame - frame_start` from
the other end of its content (checked with Blender 3.4, trimmed and offset). The engine numbers the frames of its INPUT from 0, so a
movie's INPUT is the file itself, and an image strip's INPUT is a folder of links named after
the strip's element order (the strip's elements need not be the folder's sorted contents).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import bpy

from .engine_cli import EngineError

# What the engine's image reader accepts (OpenCV); Blender also reads EXR, DPX, ... which it does not.
ENGINE_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


@dataclass
class SourceClip:
    kind: str                   # 'MOVIE' or 'IMAGE'
    files: list[str]            # absolute media paths (one movie, or the image elements in order)
    content_start: int          # scene frame showing media frame `media_offset`
    media_offset: int           # animation_offset_start: media frames hidden before the content
    content_len: int            # frame_duration
    visible: tuple[int, int]    # scene frames shown, [start, end)
    fps: float = 0.0
    reversed: bool = False      # Reverse Frames is on
    digest: str = field(default="", repr=False)

    def media_index(self, scene_frame: int) -> int:
        k = min(max(scene_frame - self.content_start, 0), self.content_len - 1)
        if self.reversed:
            k = self.content_len - 1 - k
        return k + self.media_offset

    @property
    def media_range(self) -> tuple[int, int]:
        """Media frames (engine numbering) the strip shows: analysed as a whole, baked on demand."""
        a, b = self.visible
        ends = (self.media_index(a), self.media_index(b - 1))
        return min(ends), max(ends) + 1

    def scene_frames(self) -> range:
        return range(*self.visible)


_digests: dict[tuple[str, int, int], str] = {}


def _quick_digest(path: str) -> str:
    """Size plus the first and last MiB: cheap on long movies, independent of copy times (farms)."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _digests:
        _digests[key] = _read_digest(path, st.st_size)
    return _digests[key]


def _read_digest(path: str, size: int) -> str:
    h = hashlib.sha256()
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()


def describe_source(strip: Any) -> SourceClip:
    """Validate a movie/image strip and describe its media; EngineError with a clear message if unusable."""
    kind = strip.type
    name = strip.name
    if kind not in {'MOVIE', 'IMAGE'}:
        raise EngineError(f"strip '{name}' is a {kind.lower()} strip: style transfer works on movie and "
                          "image-sequence strips")
    if strip.frame_final_end <= strip.frame_final_start or strip.frame_duration < 1:
        raise EngineError(f"strip '{name}' has no frames")
    if abs(getattr(strip, "speed_factor", 1.0) - 1.0) > 1e-6 or getattr(strip, "strobe", 1.0) > 1.0:
        raise EngineError(f"strip '{name}' is retimed (speed or strobe): not supported")
    if kind == 'MOVIE':
        path = bpy.path.abspath(strip.filepath)
        files = [os.path.normpath(path)]
    else:
        folder = bpy.path.abspath(strip.directory)
        files = [os.path.normpath(os.path.join(folder, e.filename)) for e in strip.elements]
        bad = sorted({os.path.splitext(f)[1].lower() for f in files} - set(ENGINE_IMAGE_EXTS))
        if bad:
            raise EngineError(f"strip '{name}': image type {', '.join(bad)} is not supported by the engine "
                              f"(use {', '.join(ENGINE_IMAGE_EXTS)})")
    visible = (int(strip.frame_final_start), int(strip.frame_final_end))
    clip = SourceClip(kind, files, int(round(strip.frame_start)), int(strip.animation_offset_start),
                      int(strip.frame_duration), visible, float(getattr(strip, "fps", 0.0) or 0.0),
                      bool(getattr(strip, "use_reverse_frames", False)))
    a, b = clip.media_range
    needed = files if kind == 'MOVIE' else files[a:b]
    missing = [f for f in needed if not os.path.isfile(f)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise EngineError(f"strip '{name}': source media not found: {missing[0]}{more}")
    # Content, not paths: a farm worker that mounts the media elsewhere finds the same cache.
    h = hashlib.sha256(kind.encode())
    if kind == 'MOVIE':
        h.update(_quick_digest(files[0]).encode())
    else:
        for f in needed:  # names and sizes of all, content of the first and last
            h.update(f"{os.path.basename(f)}\0{os.path.getsize(f)}\0".encode())
        h.update(_quick_digest(needed[0]).encode())
        h.update(_quick_digest(needed[-1]).encode())
    clip.digest = h.hexdigest()
    return clip


def engine_input(clip: SourceClip, cache_root: str) -> str:
    """The INPUT argument for the engine; image strips get a folder of ordered links (made once)."""
    if clip.kind == 'MOVIE':
        return clip.files[0]
    key = hashlib.sha256("\n".join(clip.files).encode()).hexdigest()[:16]
    folder = os.path.join(cache_root, "inputs", key)
    if os.path.isfile(os.path.join(folder, ".complete")):
        return folder
    tmp = folder + f".tmp{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for k, src in enumerate(clip.files):
            dst = os.path.join(tmp, f"{k:06d}{os.path.splitext(src)[1].lower()}")
            try:
                os.symlink(src, dst)
            except OSError:  # no symlinks (Windows without privilege, some shares): hard link, else copy
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
        open(os.path.join(tmp, ".complete"), "w").close()
        try:
            os.replace(tmp, folder)
        except OSError:
            if os.path.isfile(os.path.join(folder, ".complete")):  # another process made it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
                return folder
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete leftover
            os.replace(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EngineError(f"cannot prepare the image sequence in the cache folder {cache_root}: "
                          f"{exc.strerror or exc}") from None
    return folder
