"""A Python client of the engine service: for scripts, tests and hosts written in Python."""
from __future__ import annotations

import fcntl
import mmap
import os
import socket
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import VstError
from . import protocol as P


class ServiceError(VstError):
    """An ERROR reply: `code` is one of protocol.E_*."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def shared_image(pixels: np.ndarray) -> tuple[int, P.ImageDesc]:
    """A sealed memfd holding an H x W x 4 uint8 or float32 image, as the protocol asks."""
    if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.dtype not in (np.uint8, np.float32):
        raise ValueError("expected an H x W x 4 uint8 or float32 array")
    desc = P.ImageDesc(pixels.shape[1], pixels.shape[0], pixels.itemsize)
    fd = os.memfd_create("vst-frame", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, desc.nbytes)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    with mmap.mmap(fd, desc.nbytes) as m:
        m[:] = np.ascontiguousarray(pixels).tobytes()
    return fd, desc


def read_shared(fd: int, desc: P.ImageDesc) -> np.ndarray:
    dtype = np.uint8 if desc.depth == 1 else np.float32
    with mmap.mmap(fd, desc.nbytes, mmap.MAP_SHARED, mmap.PROT_READ) as m:
        return np.frombuffer(m, dtype=dtype).reshape(desc.height, desc.width, 4).copy()


class Client:
    def __init__(self, path: str | Path, timeout: float = 300.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise VstError(f"cannot reach the engine service at {path}: {exc.strerror or exc}") from None
        self.next_id = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- transport ---------------------------------------------------------------------
    def request(self, mtype: int, payload: bytes = b"", fd: int | None = None) -> P.Reader:
        rid, self.next_id = self.next_id, self.next_id + 1
        msg = P.frame(mtype, rid, payload)
        if fd is None:
            self.sock.sendall(msg)
        else:
            sent = self.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, np.array([fd], np.int32).tobytes())])
            if sent < len(msg):
                self.sock.sendall(msg[sent:])
        header = P.parse_header(self._read(P.HEADER.size))
        reply = P.Reader(self._read(header.length))
        if header.type == P.ERROR:
            code, message = reply.u32(), reply.str()
            raise ServiceError(code, message)
        if header.type != mtype | P.REPLY or header.request_id != rid:
            raise VstError(f"unexpected reply {header.type} to request {P.NAMES.get(mtype, mtype)}")
        return reply

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise VstError("the engine service closed the connection")
            buf += chunk
        return bytes(buf)

    # ----- messages ----------------------------------------------------------------------
    def hello(self, client: str = "python") -> dict:
        r = self.request(P.HELLO, P.Writer().str(client).bytes())
        return {"version": r.str(), "model_id": r.str(), "device": r.str(), "trained": bool(r.u8())}

    def sample_plan(self, first: int, last: int, interval: int = 0) -> list[int]:
        r = self.request(P.SAMPLE_PLAN, P.Writer().pack("<iiI", first, last, interval).bytes())
        return [r.i32() for _ in range(r.u32())]

    def analyze(self, first: int, last: int, styles: Sequence[str], frame_at: Callable[[int], np.ndarray],
                interval: int = 0, max_side: int = 0, label: str = "", flags: int = 0, base: str = "") -> str:
        """Run a whole analysis; `frame_at(n)` gives host frame n as H x W x 4. Returns the features id.
        `flags` P.FULL_STRENGTH skips the clip's own colours; `base` (a features id analysed so)
        adds them to those features; P.DEFLICKER and P.PER_SHOT send every frame (their exposure is
        measured; the shots are found)."""
        begin = P.analyze_begin(first, last, interval, max_side, [str(s) for s in styles], label, flags, base)
        session = self.request(P.ANALYZE_BEGIN, begin).u32()
        every = flags & (P.DEFLICKER | P.PER_SHOT)
        sends = range(first, last + 1) if every else self.sample_plan(first, last, interval)
        for n in sends:
            fd, desc = shared_image(frame_at(n))
            try:
                self.request(P.ANALYZE_FRAME, desc.write(P.Writer().pack("<Ii", session, n)).bytes(), fd)
            finally:
                os.close(fd)
        return self.request(P.ANALYZE_END, P.Writer().pack("<I", session).bytes()).str()

    def stylize(self, pixels: np.ndarray, styles: Sequence[str], weights: Sequence[float], strength: float = 1.0,
                preserve_colours: bool = False, features_id: str = "", max_side: int = 0, frame: int = 0) -> np.ndarray:
        """Stylize one H x W x 4 frame (host frame number `frame`); with a features id the clip's global
        features are used."""
        fd, desc = shared_image(pixels)
        try:
            payload = P.stylize(desc, [(str(s), wt) for s, wt in zip(styles, weights, strict=True)], strength,
                                int(preserve_colours), int(bool(features_id)), max_side, frame, features_id)
            self.request(P.STYLIZE, payload, fd)
            return read_shared(fd, desc)
        finally:
            os.close(fd)
