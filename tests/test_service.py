"""The engine service (`vst serve`): results equal the in-process engine, errors are replies, not crashes."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vst_engine.service import protocol as P
from vst_engine.service.client import Client, ServiceError, shared_image

from synthetic import bunny, starry_pan, synth_frame


FRAMES = 12
REPO = Path(__file__).resolve().parent.parent


def rgba(t: int) -> np.ndarray:
    rgb = synth_frame(t)
    alpha = np.full(rgb.shape[:2], 200, np.uint8)
    alpha[:, :8] = 17  # alpha must come back untouched
    return np.dstack([rgb, alpha])


def analyze_frame(client: Client, session: int, frame: int, pixels: np.ndarray) -> None:
    """One ANALYZE_FRAME request, `pixels` in fresh shared memory."""
    fd, desc = shared_image(pixels)
    try:
        client.request(P.ANALYZE_FRAME, desc.write(P.Writer().pack("<Ii", session, frame)).bytes(), fd)
    finally:
        os.close(fd)


def start_service(sock: Path, features: Path, env: dict, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "vst_engine", "serve", "--model", "untrained", "--device", "cpu",
                             "--socket", str(sock), "--features-dir", str(features), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # printed once the model is loaded and the socket listens
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"service did not start: {line} {proc.stderr.read()}")
    return proc


@pytest.fixture(scope="module")
def service(tmp_path_factory, cli_env):
    root = tmp_path_factory.mktemp("service")
    sock = root / "run" / "engine.sock"
    proc = start_service(sock, root / "features", cli_env)
    yield {"socket": sock, "features": root / "features", "proc": proc}
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def client(service):
    with Client(service["socket"], timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def analysed(service, style_paths):
    styles = [str(style_paths["stripes"]), str(style_paths["dots"])]
    with Client(service["socket"], timeout=120) as c:
        fid = c.analyze(0, FRAMES - 1, styles, rgba, interval=4)
    return fid, styles


def test_hello_and_sample_plan(client):
    info = client.hello()
    assert info["model_id"] == "untrained-seed0" and info["trained"] is False and info["device"] == "cpu"
    assert client.sample_plan(0, 11, 4) == [0, 4, 8, 11]
    assert client.sample_plan(100, 119, 8) == [100, 108, 116, 119]  # host frame numbers, any offset
    assert client.sample_plan(5, 5) == [5]


def test_socket_is_private(service):
    sock = service["socket"]
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700


def test_stylize_equals_engine(client, analysed, engine, service):
    fid, styles = analysed
    assert (service["features"] / f"{fid}.vstf").is_file()
    feats = engine.analyze([synth_frame(t) for t in (0, 4, 8, 11)], engine.load_styles(styles), sampled=[0, 4, 8, 11])
    for t, weights, strength in ((2, [1.0, 0.0], 1.0), (7, [0.3, 0.7], 0.6)):
        out = client.stylize(rgba(t), styles, weights, strength, features_id=fid)
        # The protocol sends strength as a float32 (weights are normalized to the same values either way).
        ref = engine.stylize(synth_frame(t), feats, weights, float(np.float32(strength)))
        np.testing.assert_array_equal(out[..., :3], ref)
        np.testing.assert_array_equal(out[..., 3], rgba(t)[..., 3])


def test_full_strength_analysis_and_its_completion(client, analysed, service):
    """A full-strength analysis serves strength 1 and refuses lower strengths with E_OWN_COLOURS;
    an analysis with it as the base adds the own colours: the complete analysis, byte for byte."""
    fid, styles = analysed
    lean = client.analyze(0, FRAMES - 1, styles, rgba, interval=4, flags=P.FULL_STRENGTH)
    assert lean != fid
    assert np.array_equal(client.stylize(rgba(6), styles, [0.3, 0.7], 1.0, features_id=lean),
                          client.stylize(rgba(6), styles, [0.3, 0.7], 1.0, features_id=fid))
    with pytest.raises(ServiceError) as e:
        client.stylize(rgba(6), styles, [0.3, 0.7], 0.5, features_id=lean)
    assert e.value.code == P.E_OWN_COLOURS and "full strength only" in str(e.value)
    bad = {"other range": dict(first=0, last=FRAMES - 2), "other max side": dict(max_side=32),
           "with flags": dict(flags=P.FULL_STRENGTH), "complete base": dict(base=fid), "short id": dict(base="ab")}
    for case, change in bad.items():
        args = dict(first=0, last=FRAMES - 1, styles=styles, frame_at=rgba, interval=4, base=lean) | change
        with pytest.raises(ServiceError) as e:
            client.analyze(**args)
        assert e.value.code in (P.E_INVALID, P.E_ENGINE), case
    done = client.analyze(0, FRAMES - 1, styles, rgba, interval=4, base=lean)
    assert done == fid and (service["features"] / f"{fid}.vstf").is_file()


def flickering(t: int) -> np.ndarray:
    """Host frame t of a still picture whose exposure alternates by +-5% (alpha as `rgba`)."""
    still = rgba(0)
    rgb = np.clip(still[..., :3] * (1 + 0.05 * (-1) ** t), 0, 255).round().astype(np.uint8)
    return np.dstack([rgb, still[..., 3]])


def test_deflicker_analysis(client, service, style_paths):
    """With DEFLICKER the host sends every frame; the features carry one correction per frame (those of
    `LevelTrack`), which STYLIZE applies by frame number; completing a full-strength analysis keeps them."""
    from vst_engine.deflicker import LevelTrack
    from vst_engine.features import GlobalFeatures
    styles = [str(style_paths["dots"])]
    plain = client.analyze(10, 21, styles, flickering, interval=4)
    fid = client.analyze(10, 21, styles, flickering, interval=4, flags=P.DEFLICKER)
    feats = GlobalFeatures.load(service["features"] / f"{fid}.vstf")
    track = LevelTrack()
    for t in range(10, 22):
        track.add(flickering(t)[..., :3])
    assert feats.deflickered and feats.extra["deflicker"] == track.corrections() and feats.sampled == [10, 14, 18, 21]

    def step(features_id: str) -> float:
        a, b = (client.stylize(flickering(t), styles, [1.0], features_id=features_id, frame=t) for t in (15, 16))
        return float(np.abs(a[..., :3].astype(np.int16) - b[..., :3]).mean())

    assert step(fid) < 0.25 * step(plain), (step(fid), step(plain))
    with pytest.raises(ServiceError) as e:
        client.stylize(flickering(9), styles, [1.0], features_id=fid, frame=9)
    assert e.value.code == P.E_INVALID and "outside the frames 10..21" in str(e.value)
    lean = client.analyze(10, 21, styles, flickering, interval=4, flags=P.FULL_STRENGTH | P.DEFLICKER)
    assert client.analyze(10, 21, styles, flickering, interval=4, base=lean) == fid
    session = client.request(P.ANALYZE_BEGIN, P.analyze_begin(10, 21, 4, 0, styles, "x", P.DEFLICKER)).u32()
    analyze_frame(client, session, 10, flickering(10))
    with pytest.raises(ServiceError) as e:  # every frame is expected, not only the sampled ones
        analyze_frame(client, session, 14, flickering(14))
    assert "expected frame 11, got 14" in str(e.value)
    with pytest.raises(ServiceError) as e:
        client.request(P.ANALYZE_END, P.Writer().pack("<I", session).bytes())
    assert "only 1 of 12 frames were sent" in str(e.value)


def test_per_shot_analysis(client, service, style_paths):
    """With PER_SHOT the host sends every frame; the service finds the cut and analyses each shot on its
    own: a shot's frames are stylized exactly as when it is analysed as a clip of its own. STYLIZE picks
    the shot by frame number; a full-strength analysis is completed shot by shot."""
    from vst_engine.features import GlobalFeatures, load_shots
    size = (64, 48)
    clip = [np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]) for f in bunny(0, 6, size) + starry_pan(6, size)]
    at = lambda t: clip[t - 10]  # noqa: E731  host frames 10..21, a cut at 16
    styles = [str(style_paths["dots"])]
    fid = client.analyze(10, 21, styles, at, interval=4, flags=P.PER_SHOT)
    shots = load_shots(service["features"] / f"{fid}.vstf")
    assert [(f.frame_range, f.sampled) for f in shots] == [((10, 16), [10, 14, 15]), ((16, 22), [16, 20, 21])]
    alone = client.analyze(16, 21, styles, at, interval=4)
    assert shots[1].to_bytes() == GlobalFeatures.load(service["features"] / f"{alone}.vstf").to_bytes()
    whole = client.analyze(10, 21, styles, at, interval=4)
    for t in (12, 18):
        out = client.stylize(at(t), styles, [1.0], 0.6, features_id=fid, frame=t)
        ref = client.stylize(at(t), styles, [1.0], 0.6, features_id=alone if t >= 16 else
                             client.analyze(10, 15, styles, at, interval=4), frame=t)
        assert np.array_equal(out, ref), t
    pooled = client.stylize(at(18), styles, [1.0], 0.6, features_id=whole, frame=18)
    assert np.abs(pooled[..., :3].astype(np.int16) - out[..., :3]).mean() > 2.0
    with pytest.raises(ServiceError) as e:
        client.stylize(at(10), styles, [1.0], features_id=fid, frame=22)
    assert e.value.code == P.E_INVALID
    assert "outside the frames 10..21 these features were analysed over (shot by shot)" in str(e.value)
    both = client.analyze(10, 21, styles, at, interval=4, flags=P.PER_SHOT | P.DEFLICKER)
    both = load_shots(service["features"] / f"{both}.vstf")
    assert [f.frame_range for f in both] == [(10, 16), (16, 22)] and all(f.deflickered for f in both)
    lean = client.analyze(10, 21, styles, at, interval=4, flags=P.PER_SHOT | P.FULL_STRENGTH)
    assert client.analyze(10, 21, styles, at, interval=4, flags=P.PER_SHOT, base=lean) == fid
    with pytest.raises(ServiceError) as e:  # its shots' frames are not the plan a host sends without the flag
        client.analyze(10, 21, styles, at, interval=4, base=lean)
    assert e.value.code == P.E_INVALID and "analysed shot by shot" in str(e.value)
    session = client.request(P.ANALYZE_BEGIN, P.analyze_begin(10, 21, 4, 0, styles, "x", P.PER_SHOT)).u32()
    analyze_frame(client, session, 10, at(10))
    with pytest.raises(ServiceError) as e:  # every frame is expected
        analyze_frame(client, session, 14, at(14))
    assert "expected frame 11, got 14" in str(e.value)
    with pytest.raises(ServiceError) as e:  # the cut test compares frames of one size (not an internal error)
        analyze_frame(client, session, 11, np.ascontiguousarray(at(11)[:40]))
    assert e.value.code == P.E_ENGINE and "frame 11 is 64x40, the first was 64x48" in str(e.value)
    with pytest.raises(ServiceError):
        client.request(P.ANALYZE_END, P.Writer().pack("<I", session).bytes())


def test_float_frames_and_preserve_colours(client, analysed, engine):
    fid, styles = analysed
    frame = rgba(3).astype(np.float32) / 255.0
    out = client.stylize(frame, styles, [1, 1], 1.0, preserve_colours=True, features_id=fid)
    assert out.dtype == np.float32
    feats = engine.analyze([synth_frame(t) for t in (0, 4, 8, 11)], engine.load_styles(styles), sampled=[0, 4, 8, 11])
    ref = engine.stylize(synth_frame(3), feats, [1, 1], 1.0, preserve_color=True, as_float=True)
    np.testing.assert_allclose(out[..., :3], ref, atol=2e-3)  # the float frame was rounded from 8-bit
    np.testing.assert_array_equal(out[..., 3], frame[..., 3])


def test_per_frame_mode_and_max_side(client, engine, style_paths):
    styles = [str(style_paths["checker"])]
    out = client.stylize(rgba(5), styles, [1.0], 0.8)
    strength = float(np.float32(0.8))  # what the service receives: the protocol sends a float32
    np.testing.assert_array_equal(out[..., :3], engine.stylize(synth_frame(5), engine.load_styles(styles), [1.0],
                                                               strength))
    small = client.stylize(rgba(5), styles, [1.0], 1.0, max_side=32)
    assert small.shape == (48, 64, 4)  # processed at 32x24, returned at the host's size
    assert not np.array_equal(small[..., :3], out[..., :3])


def test_features_are_checked(client, analysed, style_paths):
    fid, styles = analysed
    with pytest.raises(ServiceError) as e:
        client.stylize(rgba(1), [styles[1], styles[0]], [1, 1], features_id=fid)
    assert e.value.code == P.E_ENGINE and "other styles" in str(e.value)
    with pytest.raises(ServiceError) as e:
        client.stylize(rgba(1), styles, [1, 1], features_id="0" * 64)
    assert e.value.code == P.E_NOT_FOUND and "analyze" in str(e.value)
    with pytest.raises(ServiceError) as e:  # another aspect ratio: not the analysed clip
        client.stylize(np.ascontiguousarray(rgba(1)[:24]), styles, [1, 1], features_id=fid)
    assert e.value.code == P.E_ENGINE and "64x48" in str(e.value)
    # A proxy render (half size) is processed at the analysed size and returned at its own.
    proxy = client.stylize(np.ascontiguousarray(rgba(1)[::2, ::2]), styles, [1, 1], features_id=fid)
    assert proxy.shape == (24, 32, 4)
    assert client.hello()["model_id"]  # the connection is still usable after errors


def test_damaged_features_file_is_refused(service, analysed, style_paths):
    fid, styles = analysed
    with Client(service["socket"], timeout=120) as c:
        other = c.analyze(0, 3, styles, rgba, interval=2)
        path = service["features"] / f"{other}.vstf"
        assert path.is_file() and other != fid
    # A fresh service (no cache) must notice the damage.
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    sock = service["socket"].parent.parent / "second" / "s.sock"
    proc = start_service(sock, service["features"], env)
    try:
        with Client(sock, timeout=60) as c, pytest.raises(ServiceError) as e:
            c.stylize(rgba(0), styles, [1, 1], features_id=other)
        assert "damaged" in str(e.value)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("case, code, text", [
    ("missing style", P.E_NOT_FOUND, "style image not found"),
    ("zero weights", P.E_INVALID, "all zero"),
    ("strength", P.E_INVALID, "strength"),
    ("too many styles", P.E_INVALID, "exceed"),
    ("id without consistency", P.E_INVALID, "consistency off"),
])
def test_invalid_stylize_requests(client, style_paths, case, code, text):
    s = str(style_paths["dots"])
    fd, desc = shared_image(rgba(0))
    try:
        consistency, fid, strength, styles = 0, "", 1.0, [(s, 1.0)]
        if case == "missing style":
            styles = [("/nonexistent/style.png", 1.0)]
        elif case == "zero weights":
            styles = [(s, 0.0)]
        elif case == "strength":
            strength = 1.5
        elif case == "too many styles":
            styles = [(s, 1.0)] * 9
        elif case == "id without consistency":
            fid = "a" * 64
        payload = P.stylize(desc, styles, strength, consistency=consistency, features_id=fid)
        with pytest.raises(ServiceError) as e:
            client.request(P.STYLIZE, payload, fd)
    finally:
        os.close(fd)
    assert e.value.code == code and text in str(e.value)


def test_shared_memory_is_validated(client, style_paths):
    s = str(style_paths["dots"])

    def stylize_with(fd: int, desc: P.ImageDesc) -> ServiceError:
        with pytest.raises(ServiceError) as e:
            client.request(P.STYLIZE, P.stylize(desc, [(s, 1.0)]), fd)
        return e.value

    fd, desc = shared_image(rgba(0))
    try:
        err = stylize_with(fd, P.ImageDesc(640, 480, 1))  # larger than the memory
        assert err.code == P.E_INVALID and "needs" in str(err)
    finally:
        os.close(fd)
    unsealed = os.memfd_create("x")
    os.ftruncate(unsealed, desc.nbytes)
    try:
        assert "F_SEAL_SHRINK" in str(stylize_with(unsealed, desc))  # could be shrunk under the service: SIGBUS
    finally:
        os.close(unsealed)
    with pytest.raises(ServiceError) as e:  # an image request without a descriptor
        client.request(P.STYLIZE, P.stylize(desc, [(s, 1.0)]))
    assert e.value.code == P.E_INVALID and "descriptor" in str(e.value)


def test_analysis_protocol_errors(client, style_paths):
    s = str(style_paths["dots"])
    begin = P.analyze_begin(0, 11, 4, 0, [s], "clip")
    session = client.request(P.ANALYZE_BEGIN, begin).u32()
    with pytest.raises(ServiceError) as e:  # frame 0 must come first
        analyze_frame(client, session, 4, rgba(4))
    assert "expected sampled frame 0" in str(e.value)
    with pytest.raises(ServiceError) as e:
        client.request(P.ANALYZE_END, P.Writer().pack("<I", session).bytes())
    assert "only 0 of 4" in str(e.value)
    with pytest.raises(ServiceError) as e:  # the failed session is gone
        client.request(P.ANALYZE_END, P.Writer().pack("<I", session).bytes())
    assert e.value.code == P.E_NOT_FOUND
    sessions = [client.request(P.ANALYZE_BEGIN, begin).u32() for _ in range(4)]
    with pytest.raises(ServiceError) as e:
        client.request(P.ANALYZE_BEGIN, begin)
    assert e.value.code == P.E_LIMIT
    for sid in sessions:  # ending incomplete sessions frees them
        with pytest.raises(ServiceError):
            client.request(P.ANALYZE_END, P.Writer().pack("<I", sid).bytes())


def test_sessions_belong_to_their_connection(service, style_paths):
    begin = P.analyze_begin(0, 11, 4, 0, [str(style_paths["dots"])], "")
    with Client(service["socket"]) as a, Client(service["socket"]) as b:
        sid = a.request(P.ANALYZE_BEGIN, begin).u32()
        with pytest.raises(ServiceError) as e:
            b.request(P.ANALYZE_END, P.Writer().pack("<I", sid).bytes())
        assert e.value.code == P.E_NOT_FOUND
    # Both connections closed: the closing connection's thread drops the session (so it may take a
    # moment), and then the limit of 4 is free again.
    deadline = time.monotonic() + 10
    with Client(service["socket"]) as c:
        opened = 0
        while opened < 4:
            try:
                c.request(P.ANALYZE_BEGIN, begin)
                opened += 1
            except ServiceError as e:
                if e.code != P.E_LIMIT or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def raw_exchange(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def error_of(reply: bytes) -> tuple[int, str]:
    header = P.parse_header(reply[:P.HEADER.size])
    assert header.type == P.ERROR
    r = P.Reader(reply[P.HEADER.size:P.HEADER.size + header.length])
    return r.u32(), r.str()


def test_malformed_headers_close_the_connection(service):
    path = service["socket"]
    code, msg = error_of(raw_exchange(path, b"GET / HTTP/1.1\r\n\r\n"))
    assert code == P.E_MALFORMED and "magic" in msg
    code, msg = error_of(raw_exchange(path, P.HEADER.pack(P.MAGIC, P.VERSION + 1, P.PING, 1, 0)))
    assert f"version {P.VERSION + 1}" in msg
    code, msg = error_of(raw_exchange(path, P.HEADER.pack(P.MAGIC, P.VERSION, P.PING, 1, P.MAX_PAYLOAD + 1)))
    assert "exceeds" in msg
    # Truncated: the peer hangs up mid-message; nothing comes back and the service lives on.
    assert raw_exchange(path, P.frame(P.HELLO, 1, P.Writer().str("x").bytes())[:-1]) == b""
    assert error_of(raw_exchange(path, P.frame(99, 5)))[1] == "unknown message type 99"


def test_refuses_a_socket_folder_others_can_enter(tmp_path, cli_env):
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    r = subprocess.run([sys.executable, "-m", "vst_engine", "serve", "--model", "untrained", "--socket", str(d / "s.sock")],
                       capture_output=True, text=True, env=cli_env, timeout=120)
    assert r.returncode == 1 and r.stderr.strip().endswith("refusing to put the engine socket there")
    assert len(r.stderr.strip().splitlines()) == 2  # the untrained banner, then one error line
    assert not (d / "s.sock").exists()


def test_second_service_and_idle_exit(service, tmp_path, cli_env):
    r = subprocess.run([sys.executable, "-m", "vst_engine", "serve", "--model", "untrained",
                        "--socket", str(service["socket"])], capture_output=True, text=True, env=cli_env, timeout=120)
    assert r.returncode == 1 and "already listening" in r.stderr
    proc = start_service(tmp_path / "idle" / "s.sock", tmp_path / "f", cli_env, "--idle-timeout", "1")
    assert proc.wait(timeout=30) == 0
    assert not (tmp_path / "idle" / "s.sock").exists()


def test_each_analysed_clip_decides_whether_passes_compile(tmp_path, style_paths, monkeypatch):
    """The service asks the engine, at a clip's first analysed frame (its size known then), whether
    that clip's frames and analysis repay compiling, as `vst stylize` does for a render."""
    from vst_engine.engine import Engine
    from vst_engine.service.handlers import Handlers
    engine = Engine(model="untrained", device="cpu")
    asked = []
    monkeypatch.setattr(engine, "compile_for_render", lambda *args, **kw: asked.append((args, kw)))
    handlers = Handlers(engine, tmp_path)
    begin = P.analyze_begin(10, 109, 8, 32, [str(style_paths["dots"])], "clip")
    session = P.Reader(handlers.handle(P.ANALYZE_BEGIN, begin, None)[1]).u32()
    plan = handlers._plan(10, 109, 8)
    for n in plan:
        fd, desc = shared_image(rgba(n))
        try:
            mtype, _ = handlers.handle(P.ANALYZE_FRAME, desc.write(P.Writer().pack("<Ii", session, n)).bytes(), fd)
        finally:
            os.close(fd)
        assert mtype == P.ANALYZE_FRAME | P.REPLY
    # 100 frames of the clip at the processing size (64x48 within a longest side of 32: 32x24)
    assert asked == [((100, 32, 24), {"analysed": len(plan)})] and len(plan) == 14
