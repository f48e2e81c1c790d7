"""Minimal reader for Qt binary resource bundles (``.rcc`` files).

Only what the training-data assembler needs: list the files in a bundle and
return their (decompressed) bytes.  Format summary (Qt's ``rcc`` tool, binary
mode; all integers big-endian):

header   ``b"qres"``, u32 format version (1, 2 or 3), u32 tree offset,
         u32 data offset, u32 names offset, and for version >= 3 a u32 of
         "overall flags" (which compression algorithms occur in the file).
tree     fixed-size nodes, node 0 being the root directory.  Each node is
         u32 name offset, u16 flags, then either (directory) u32 child count +
         u32 index of the first child, or (file) u16 territory + u16 language
         + u32 data offset; version >= 2 appends a u64 modification time.
names    u16 length (UTF-16 code units), u32 hash, UTF-16BE text.
data     u32 size followed by ``size`` bytes.  Flag 0x01 means zlib payload
         prefixed by a u32 uncompressed size (``qCompress`` layout); flag 0x04
         means a zstd frame (format version 3 only).
"""

from __future__ import annotations

import pathlib
import struct
import zlib
from dataclasses import dataclass
from typing import Iterator

__all__ = ["RccEntry", "RccError", "RccFile", "FLAG_COMPRESSED", "FLAG_DIRECTORY", "FLAG_ZSTD", "qt_hash"]

FLAG_COMPRESSED = 0x01  # zlib (qCompress layout)
FLAG_DIRECTORY = 0x02
FLAG_ZSTD = 0x04

_MAGIC = b"qres"


class RccError(ValueError):
    """Raised for malformed or unsupported ``.rcc`` data."""


def qt_hash(name: str) -> int:
    """Qt's resource-name hash (``qt_hash`` over UTF-16 code units); stored beside each name."""
    h = 0
    units = name.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (h << 4) + ((units[i] << 8) | units[i + 1])
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


@dataclass(frozen=True)
class RccEntry:
    """One file inside a bundle (``path`` uses '/' and has no leading slash)."""

    path: str
    flags: int
    data_offset: int  # relative to the bundle's data section
    territory: int = 0
    language: int = 0

    @property
    def compression(self) -> str:
        if self.flags & FLAG_ZSTD:
            return "zstd"
        if self.flags & FLAG_COMPRESSED:
            return "zlib"
        return "none"


class RccFile:
    """Parsed ``.rcc`` bundle held in memory.

    >>> rcc = RccFile.open("paintings.rcc")      # doctest: +SKIP
    >>> rcc.read("gcompris/src/activities/paintings/resource/Paintings.qml")  # doctest: +SKIP
    """

    def __init__(self, blob: bytes) -> None:
        self._blob = blob
        if len(blob) < 20 or blob[:4] != _MAGIC:
            raise RccError("not a Qt resource bundle (missing 'qres' magic)")
        self.version, self.tree_offset, self.data_offset, self.names_offset = struct.unpack_from(">IIII", blob, 4)
        if self.version not in (1, 2, 3):
            raise RccError(f"unsupported rcc format version {self.version}")
        self.overall_flags = struct.unpack_from(">I", blob, 20)[0] if self.version >= 3 else 0
        self._node_size = 14 if self.version == 1 else 22
        self.entries: dict[str, RccEntry] = {}
        self._walk(0, "", depth=0)

    @classmethod
    def open(cls, path: str | pathlib.Path) -> "RccFile":
        return cls(pathlib.Path(path).read_bytes())

    # -- tree walking -----------------------------------------------------
    def _name(self, name_offset: int) -> str:
        pos = self.names_offset + name_offset
        if pos + 6 > len(self._blob):
            raise RccError("name offset out of range")
        (length,) = struct.unpack_from(">H", self._blob, pos)
        raw = self._blob[pos + 6 : pos + 6 + 2 * length]
        if len(raw) != 2 * length:
            raise RccError("truncated name")
        return raw.decode("utf-16-be")

    def _node(self, index: int) -> tuple[int, int, int, int]:
        pos = self.tree_offset + index * self._node_size
        if pos + 14 > len(self._blob):
            raise RccError("tree node out of range")
        name_off, flags = struct.unpack_from(">IH", self._blob, pos)
        a, b = struct.unpack_from(">II", self._blob, pos + 6)  # dir: count, first child / file: territory|lang, data
        return name_off, flags, a, b

    def _walk(self, index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise RccError("resource tree too deep (corrupt file?)")
        _, flags, count, first = self._node(index)
        if not flags & FLAG_DIRECTORY:
            raise RccError("root of resource tree is not a directory")
        for child in range(first, first + count):
            name_off, cflags, a, b = self._node(child)
            path = prefix + self._name(name_off)
            if cflags & FLAG_DIRECTORY:
                self._walk(child, path + "/", depth + 1)
            else:
                self.entries[path] = RccEntry(path, cflags, b, territory=a >> 16, language=a & 0xFFFF)

    # -- public API -------------------------------------------------------
    def names(self) -> list[str]:
        """All file paths, sorted."""
        return sorted(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, path: str) -> bool:
        return path.lstrip("/") in self.entries

    def raw(self, path: str) -> bytes:
        """Stored bytes of ``path`` (still compressed if the entry is)."""
        entry = self.entries[path.lstrip("/")]
        pos = self.data_offset + entry.data_offset
        if pos + 4 > len(self._blob):
            raise RccError(f"data offset out of range for {path}")
        (size,) = struct.unpack_from(">I", self._blob, pos)
        data = self._blob[pos + 4 : pos + 4 + size]
        if len(data) != size:
            raise RccError(f"truncated data for {path}")
        return data

    def read(self, path: str) -> bytes:
        """Decompressed bytes of ``path``."""
        entry = self.entries[path.lstrip("/")]
        data = self.raw(path)
        if entry.flags & FLAG_ZSTD:
            try:
                import zstandard  # optional; only needed for zstd-compressed bundles
            except ImportError as exc:  # pragma: no cover - depends on environment
                raise RccError(f"{path} is zstd-compressed; install the 'zstandard' package") from exc
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 30)
        if entry.flags & FLAG_COMPRESSED:
            if len(data) < 4:
                raise RccError(f"truncated zlib data for {path}")
            (expected,) = struct.unpack_from(">I", data, 0)
            out = zlib.decompress(data[4:])
            if len(out) != expected:
                raise RccError(f"{path}: size {len(out)} != declared {expected}")
            return out
        return data
