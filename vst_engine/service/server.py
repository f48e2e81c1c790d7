"""`vst serve`: the engine as a local service on a user-only Unix socket (docs/PROTOCOL.md)."""
from __future__ import annotations

import array
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from pathlib import Path

from ..errors import VstError
from . import protocol as P
from .handlers import Handlers

MAX_CONNECTIONS = 16
MAX_FDS = 4  # descriptors accepted with one message; extra ones are closed and the request refused
MESSAGE_TIMEOUT_S = 30.0  # a message, once started, must arrive completely within this time


def default_socket_path() -> Path:
    env = os.environ.get("VST_SERVICE_SOCKET")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "vst-engine" / "engine.sock"
    return Path("/tmp") / f"vst-engine-{os.getuid()}" / "engine.sock"


def _private_dir(path: Path) -> None:
    """Create the socket's folder for this user only, and refuse one that others can enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise VstError(f"{path} is not a folder owned by this user: refusing to put the engine socket there")
    if info.st_mode & 0o077:
        raise VstError(f"{path} is accessible to other users (mode {oct(info.st_mode & 0o777)}): "
                       "refusing to put the engine socket there")


def _peer_uid(conn: socket.socket) -> int | None:
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None  # no peer credentials here; the 0700 folder still keeps others out
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i")))
    return uid


class _Closed(Exception):
    """The peer closed the connection (between messages: a normal end)."""


class Connection:
    def __init__(self, conn: socket.socket, handlers: Handlers) -> None:
        self.conn, self.handlers = conn, handlers

    def serve(self) -> None:
        try:
            while True:
                if not self._one_message():
                    self._drain()
                    return
        except (_Closed, ConnectionError, TimeoutError, OSError):
            return
        finally:
            self.conn.close()
            self.handlers.release(id(self))

    def _drain(self, limit: int = 1 << 20) -> None:
        """Read what the peer still sends (briefly, bounded) so that closing does not reset the
        connection before the peer has read our ERROR reply."""
        self.conn.shutdown(socket.SHUT_WR)
        self.conn.settimeout(0.5)
        seen = 0
        while seen < limit and (chunk := self.conn.recv(65536)):
            seen += len(chunk)

    def _read_header(self) -> tuple[bytes, list[int], bool]:
        """Header bytes and attached descriptors; waits without limit for a message to start."""
        self.conn.settimeout(None)
        data, anc, flags, _ = self.conn.recvmsg(P.HEADER.size, socket.CMSG_SPACE(MAX_FDS * 4))
        if not data:
            raise _Closed()
        fds, truncated = [], bool(flags & socket.MSG_CTRUNC)
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(raw[:len(raw) - len(raw) % arr.itemsize])
                fds.extend(arr)
        if len(data) < P.HEADER.size:
            self.conn.settimeout(MESSAGE_TIMEOUT_S)
            data += self._read_exact(P.HEADER.size - len(data))
        return data, fds, truncated

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.conn.recv(min(n - len(buf), 65536))
            if not chunk:
                raise _Closed()
            buf += chunk
        return bytes(buf)

    def _reply(self, mtype: int, rid: int, payload: bytes) -> None:
        self.conn.settimeout(MESSAGE_TIMEOUT_S)
        self.conn.sendall(P.frame(mtype, rid, payload))

    def _one_message(self) -> bool:
        """Serve one request; False when the connection must close."""
        header_bytes, fds, truncated = self._read_header()
        rid = 0
        try:
            header = P.parse_header(header_bytes)
            rid = header.request_id
            self.conn.settimeout(MESSAGE_TIMEOUT_S)
            payload = self._read_exact(header.length) if header.length else b""
            if truncated or len(fds) > 1:
                raise P.ProtocolError(P.E_INVALID, f"at most one file descriptor per message (got {len(fds)} or more)")
            if header.type not in P.NAMES:
                raise P.ProtocolError(P.E_INVALID, f"unknown message type {header.type}")
            if (header.type in P.WITH_IMAGE) != bool(fds):
                need = "needs" if header.type in P.WITH_IMAGE else "must not carry"
                raise P.ProtocolError(P.E_INVALID, f"{P.NAMES[header.type]} {need} a shared-memory descriptor")
            reply_type, reply = self.handlers.handle(header.type, payload, fds[0] if fds else None, id(self))
            self._reply(reply_type, rid, reply)
            return True
        except P.ProtocolError as exc:
            self._reply(P.ERROR, rid, P.error_payload(exc.code, str(exc)))
            return exc.code != P.E_MALFORMED
        except VstError as exc:
            self._reply(P.ERROR, rid, P.error_payload(P.E_ENGINE, str(exc)))
            return True
        except (_Closed, ConnectionError, TimeoutError):
            raise
        except Exception as exc:  # a bug must not take the service down; report it and go on
            traceback.print_exc(file=sys.stderr)
            self._reply(P.ERROR, rid, P.error_payload(P.E_INTERNAL, f"internal error: {type(exc).__name__}: {exc}"))
            return True
        finally:
            for fd in fds:
                os.close(fd)


class Server:
    def __init__(self, path: Path, handlers: Handlers, idle_timeout: float) -> None:
        self.path, self.handlers, self.idle_timeout = path, handlers, idle_timeout
        self.active = 0
        self.guard = threading.Lock()
        self.last_activity = time.monotonic()
        self.stopping = False

    def bind(self) -> socket.socket:
        _private_dir(self.path.parent)
        if self.path.exists() or self.path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.path))
                raise VstError(f"an engine service is already listening on {self.path}")
            except (ConnectionRefusedError, FileNotFoundError):
                self.path.unlink()  # stale socket of a service that died
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600, with no window where others could connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(MAX_CONNECTIONS)
        return sock

    def serve_forever(self, sock: socket.socket) -> None:
        sock.settimeout(1.0)
        try:
            while not self.stopping:
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    with self.guard:
                        idle = self.active == 0 and time.monotonic() - self.last_activity > self.idle_timeout
                    if idle:
                        print("vst-engine service: idle, exiting", file=sys.stderr, flush=True)
                        return
                    continue
                self._accept(conn)
        finally:
            sock.close()
            try:
                self.path.unlink()
            except OSError:
                pass

    def _accept(self, conn: socket.socket) -> None:
        uid = _peer_uid(conn)
        if uid is not None and uid != os.getuid():
            conn.close()
            return
        with self.guard:
            if self.active >= MAX_CONNECTIONS:
                busy = True
            else:
                busy = False
                self.active += 1
        if busy:
            try:
                conn.settimeout(1.0)
                conn.sendall(P.frame(P.ERROR, 0, P.error_payload(P.E_LIMIT, "too many connections")))
            except OSError:
                pass
            conn.close()
            return
        threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            Connection(conn, self.handlers).serve()
        finally:
            with self.guard:
                self.active -= 1
                self.last_activity = time.monotonic()


def serve(path: Path, handlers: Handlers, idle_timeout: float) -> int:
    server = Server(path, handlers, idle_timeout)
    sock = server.bind()

    def stop(_signum, _frame):
        server.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"vst-engine service listening on {path}", flush=True)
    server.serve_forever(sock)
    return 0
