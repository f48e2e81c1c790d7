"""Wire format of the engine service (docs/PROTOCOL.md): framing, primitives, message layouts.

Parsing is strict and bounded: every length is checked before anything is allocated, and a
payload must be consumed exactly.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

MAGIC = 0x31545356  # b"VST1" little-endian
# 2: ANALYZE_BEGIN carries flags and a base features id (full-strength analyses, completion).
# 3: the DEFLICKER flag, and STYLIZE carries the frame number (for the frame's deflicker correction).
VERSION = 3
HEADER = struct.Struct("<IHHII")  # magic, version, type, request id, payload length
MAX_PAYLOAD = 65536
MAX_STR = 4096
MAX_STYLES = 8
MAX_SIDE = 16384
MAX_PIXELS = 1 << 26  # 67 M pixels: above 8K UHD, and it bounds every buffer the service allocates
MAX_PLAN = 4096

HELLO, SAMPLE_PLAN, ANALYZE_BEGIN, ANALYZE_FRAME, ANALYZE_END, STYLIZE, PING = range(1, 8)
REPLY = 0x80  # reply type = request type | REPLY
ERROR = 0xFF
NAMES = {HELLO: "HELLO", SAMPLE_PLAN: "SAMPLE_PLAN", ANALYZE_BEGIN: "ANALYZE_BEGIN", ANALYZE_FRAME: "ANALYZE_FRAME",
         ANALYZE_END: "ANALYZE_END", STYLIZE: "STYLIZE", PING: "PING"}
WITH_IMAGE = {ANALYZE_FRAME, STYLIZE}

# Error codes. E_OWN_COLOURS: a strength below 1 with features analysed for full strength only;
# an analysis with those features as its base adds what is missing.
E_MALFORMED, E_INVALID, E_NOT_FOUND, E_ENGINE, E_LIMIT, E_INTERNAL, E_OWN_COLOURS = range(1, 8)

# ANALYZE_BEGIN flags
FULL_STRENGTH = 1  # skip the clip's own colours: the features then serve strength 1 only
DEFLICKER = 2  # every frame of the range is sent: its exposure is measured, the sampled ones analysed
# Every frame of the range is sent: the service finds the cuts and analyses each shot on its own (added
# within version 3: older services refuse the flag).
PER_SHOT = 4


class ProtocolError(Exception):
    """A request that breaks the protocol; `code` goes back in the ERROR reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Header:
    type: int
    request_id: int
    length: int


def parse_header(data: bytes) -> Header:
    magic, version, mtype, rid, length = HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(E_MALFORMED, "bad magic: not a vst-engine client")
    if version != VERSION:
        raise ProtocolError(E_MALFORMED, f"protocol version {version} not supported (this service speaks {VERSION})")
    if length > MAX_PAYLOAD:
        raise ProtocolError(E_MALFORMED, f"payload of {length} bytes exceeds {MAX_PAYLOAD}")
    return Header(mtype, rid, length)


def frame(mtype: int, request_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, VERSION, mtype, request_id, len(payload)) + payload


class Reader:
    """Reads primitives from a payload, raising ProtocolError(E_INVALID) on any overrun."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ProtocolError(E_INVALID, "payload too short")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def u8(self) -> int:
        return self._take("<B")[0]

    def u16(self) -> int:
        return self._take("<H")[0]

    def u32(self) -> int:
        return self._take("<I")[0]

    def i32(self) -> int:
        return self._take("<i")[0]

    def f32(self) -> float:
        value = self._take("<f")[0]
        if not math.isfinite(value):
            raise ProtocolError(E_INVALID, "non-finite number")
        return value

    def str(self) -> str:
        n = self.u32()
        if n > MAX_STR:
            raise ProtocolError(E_INVALID, f"string of {n} bytes exceeds {MAX_STR}")
        if self.pos + n > len(self.data):
            raise ProtocolError(E_INVALID, "payload too short")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(E_INVALID, "string is not UTF-8") from None
        if "\0" in text:
            raise ProtocolError(E_INVALID, "string contains NUL")
        return text

    def count(self, limit: int, what: str) -> int:
        n = self.u32()
        if n > limit:
            raise ProtocolError(E_INVALID, f"{n} {what} exceed the limit of {limit}")
        return n

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(E_INVALID, f"{len(self.data) - self.pos} unexpected trailing bytes")


class Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def pack(self, fmt: str, *values) -> "Writer":
        self.parts.append(struct.pack(fmt, *values))
        return self

    def str(self, text: str) -> "Writer":
        raw = text.encode("utf-8")[:MAX_STR]
        return self.pack("<I", len(raw)).raw(raw)

    def raw(self, data: bytes) -> "Writer":
        self.parts.append(data)
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)


@dataclass(frozen=True)
class ImageDesc:
    width: int
    height: int
    depth: int  # bytes per channel: 1 (uint8) or 4 (float32)

    @property
    def nbytes(self) -> int:
        return self.width * self.height * 4 * self.depth

    @classmethod
    def read(cls, r: Reader) -> "ImageDesc":
        width, height, depth = r.u32(), r.u32(), r.u8()
        r.u8(), r.u8(), r.u8()  # padding
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise ProtocolError(E_INVALID, f"image size {width}x{height} outside 1..{MAX_SIDE}")
        if width * height > MAX_PIXELS:
            raise ProtocolError(E_INVALID, f"image of {width}x{height} pixels exceeds {MAX_PIXELS} pixels")
        if depth not in (1, 4):
            raise ProtocolError(E_INVALID, f"image depth {depth} is not 1 (8-bit) or 4 (float)")
        return cls(width, height, depth)

    def write(self, w: Writer) -> Writer:
        return w.pack("<IIBBBB", self.width, self.height, self.depth, 0, 0, 0)


def read_styles(r: Reader, with_weights: bool) -> tuple[list[str], list[float]]:
    n = r.count(MAX_STYLES, "styles")
    if n == 0:
        raise ProtocolError(E_INVALID, "at least one style is needed")
    paths, weights = [], []
    for _ in range(n):
        path = r.str()
        if not path:
            raise ProtocolError(E_INVALID, "empty style path")
        paths.append(path)
        if with_weights:
            weight = r.f32()
            if weight < 0:
                raise ProtocolError(E_INVALID, f"negative style weight {weight}")
            weights.append(weight)
    if with_weights and sum(weights) <= 0:
        raise ProtocolError(E_INVALID, "style weights are all zero")
    return paths, weights


def read_range(r: Reader) -> tuple[int, int, int]:
    first, last, interval = r.i32(), r.i32(), r.u32()
    if last < first:
        raise ProtocolError(E_INVALID, f"frame range {first}..{last} is empty")
    if last - first + 1 > MAX_PLAN * 64:
        raise ProtocolError(E_INVALID, f"frame range {first}..{last} is too long")
    if interval > 1000:
        raise ProtocolError(E_INVALID, f"sampling interval {interval} is too large")
    return first, last, interval or 8


def read_max_side(r: Reader) -> int:
    value = r.u32()
    if value and not 8 <= value <= MAX_SIDE:
        raise ProtocolError(E_INVALID, f"max side {value} outside 8..{MAX_SIDE} (or 0 for full size)")
    return value


def error_payload(code: int, message: str) -> bytes:
    return Writer().pack("<I", code).str(message).bytes()


def analyze_begin(first: int, last: int, interval: int, max_side: int, styles: list[str], label: str,
                  flags: int = 0, base: str = "") -> bytes:
    """An ANALYZE_BEGIN payload (see `Handlers.analyze_begin` for its reading)."""
    w = Writer().pack("<iiII", first, last, interval, max_side).pack("<I", len(styles))
    for s in styles:
        w.str(s)
    return w.str(label).pack("<I", flags).str(base).bytes()


def stylize(desc: ImageDesc, styles: list[tuple[str, float]], strength: float = 1.0, preserve: int = 0,
            consistency: int = 0, max_side: int = 0, frame: int = 0, features_id: str = "") -> bytes:
    """A STYLIZE payload (see `Handlers.stylize` for its reading)."""
    w = desc.write(Writer()).pack("<fBBHIi", strength, preserve, consistency, 0, max_side, frame).str(features_id)
    w.pack("<I", len(styles))
    for path, weight in styles:
        w.str(path).pack("<f", weight)
    return w.bytes()
