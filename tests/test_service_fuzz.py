"""Protocol fuzzing: malformed, truncated, mutated and oversized messages never crash, hang or bloat the service.

Property-based (hypothesis), derandomized and bounded so CI runs the same examples every time.
"""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vst_engine.service import protocol as P
from vst_engine.service.client import Client, shared_image

from test_service import rgba, start_service

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory, cli_env, style_paths):
    root = tmp_path_factory.mktemp("fuzz")
    sock = root / "run" / "s.sock"
    proc = start_service(sock, root / "features", cli_env)
    style = str(style_paths["dots"])
    seeds = {
        P.HELLO: P.Writer().str("fuzz").bytes(),
        P.SAMPLE_PLAN: P.Writer().pack("<iiI", 0, 11, 4).bytes(),
        P.ANALYZE_BEGIN: P.analyze_begin(0, 11, 4, 0, [style], "clip"),
        P.ANALYZE_FRAME: P.ImageDesc(64, 48, 1).write(P.Writer().pack("<Ii", 1, 0)).bytes(),
        P.ANALYZE_END: P.Writer().pack("<I", 1).bytes(),
        P.STYLIZE: P.stylize(P.ImageDesc(64, 48, 1), [(style, 1.0)], max_side=16),
        P.PING: b"",
    }
    yield {"socket": sock, "proc": proc, "seeds": seeds}
    proc.terminate()
    proc.wait(timeout=20)


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def exchange(path, message: bytes, fd: int | None) -> bytes:
    """Send one message (optionally with a descriptor), hang up our side, read everything back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)  # a hang fails the test with a timeout
        s.connect(str(path))
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, np.array([fd], np.int32).tobytes())] if fd is not None else []
        try:
            s.sendmsg([message], anc)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service may close as soon as it has seen a bad header
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def check_reply(reply: bytes) -> None:
    """Whatever came back is a well-formed sequence of replies (possibly none)."""
    pos = 0
    while pos < len(reply):
        header = P.parse_header(reply[pos:pos + P.HEADER.size])
        assert header.type == P.ERROR or header.type & P.REPLY
        pos += P.HEADER.size + header.length
    assert pos == len(reply)


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in ops:
        at = pos % (len(buf) + 1)
        if kind == 0 and buf:  # overwrite a byte
            buf[at % len(buf)] = value
        elif kind == 1:  # insert a byte
            buf.insert(at, value)
        elif kind == 2 and buf:  # delete a byte
            del buf[at % len(buf)]
        elif kind == 3:  # truncate
            del buf[at:]
        elif kind == 4:  # a large 32-bit value (lengths, sizes, counts)
            buf[at:at + 4] = (0xFFFFFF00 | value).to_bytes(4, "little")
    return bytes(buf)


ops = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6)


@FUZZ
@given(mtype=st.sampled_from(sorted(P.NAMES)), edits=ops, attach=st.booleans(), honest_length=st.booleans())
def test_mutated_requests(fuzz_service, mtype, edits, attach, honest_length):
    payload = mutate(fuzz_service["seeds"][mtype], edits)
    length = len(payload) if honest_length else (len(payload) + edits[0][2]) % (P.MAX_PAYLOAD + 2)
    message = P.HEADER.pack(P.MAGIC, P.VERSION, mtype, 7, length) + payload
    fd = shared_image(rgba(0))[0] if attach else None
    try:
        check_reply(exchange(fuzz_service["socket"], message, fd))
    finally:
        if fd is not None:
            os.close(fd)


@FUZZ
@given(data=st.binary(max_size=300), mtype=st.integers(0, 0xFFFF), rid=st.integers(0, 0xFFFFFFFF))
def test_random_payloads_and_raw_bytes(fuzz_service, data, mtype, rid):
    framed = P.HEADER.pack(P.MAGIC, P.VERSION, mtype, rid, len(data)) + data
    check_reply(exchange(fuzz_service["socket"], framed, None))
    check_reply(exchange(fuzz_service["socket"], data, None))


def test_service_survived_with_bounded_memory(fuzz_service):
    """Runs after the fuzzers (file order): the service answers and has not grown without bound."""
    proc = fuzz_service["proc"]
    assert proc.poll() is None, proc.stderr.read()
    before = rss_kib(proc.pid)
    for _ in range(3):
        with Client(fuzz_service["socket"], timeout=20) as c:
            c.request(P.PING)
    oversized = P.HEADER.pack(P.MAGIC, P.VERSION, P.HELLO, 1, 0xFFFFFFFF)
    for _ in range(50):
        check_reply(exchange(fuzz_service["socket"], oversized, None))
    assert rss_kib(proc.pid) - before < 50 * 1024
    assert rss_kib(proc.pid) < 2 * 1024 * 1024  # the untrained engine, styles and caches: well under 2 GiB
