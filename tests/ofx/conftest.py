"""Fixtures for the OpenFX plugin tests: the built bundle, the host shim, a running engine service.

The plugin and the shim are compiled with gcc into temporary folders; without gcc every test
here is skipped. The engine service runs the seeded untrained network single-threaded, like the
reference engine of tests/conftest.py, so its output can be compared exactly.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "ofx_bridge")]

SERVICE_START_S = 240.0  # torch import and model load on a busy 2-core machine


def require_gcc() -> None:
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed: the OpenFX plugin and the test host shim cannot be built")


@pytest.fixture(scope="session")
def ofx_build(tmp_path_factory) -> SimpleNamespace:
    """binary: the plugin's .ofx inside its bundle; shim: the host's variadic-function library."""
    require_gcc()
    from build_bundle import build_bundle
    from ofx_host import compile_shim
    d = tmp_path_factory.mktemp("ofx")
    return SimpleNamespace(binary=build_bundle(d / "bundle"), shim=compile_shim(d), dir=d)


def service_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))


def wait_for_socket(path: Path, proc: subprocess.Popen | None = None, timeout: float = SERVICE_START_S,
                    log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return
        except OSError:
            pass
        finally:
            s.close()
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    text = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
    pytest.fail(f"the engine service did not start listening on {path}\n{text}")


@pytest.fixture
def short_tmp():
    """A private (0700) folder with a short path: Unix socket paths are limited to 107 bytes."""
    d = Path(tempfile.mkdtemp(prefix="vst-ofx-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def service(ofx_build):
    """`python -m vst_engine serve --model untrained` on a private socket, for the whole session."""
    d = Path(tempfile.mkdtemp(prefix="vst-ofx-"))
    sock, log = d / "s.sock", d / "service.log"
    cmd = [sys.executable, "-m", "vst_engine", "serve", "--model", "untrained", "--device", "cpu",
           "--socket", str(sock), "--features-dir", str(d / "features"), "--idle-timeout", "1800"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=service_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_socket(sock, proc, log=log)
        yield SimpleNamespace(socket=sock, log=log, proc=proc, features=d / "features")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def use_service(service, monkeypatch):
    """Point the plugin at the session's service; never let it start another one."""
    monkeypatch.setenv("VST_SERVICE_SOCKET", str(service.socket))
    monkeypatch.setenv("VST_ENGINE_PYTHON", "/nonexistent/python-should-not-be-started")
    monkeypatch.setenv("VST_SERVICE_TIMEOUT", "120")
    return service


@pytest.fixture
def host(ofx_build):
    """A loaded and described plugin in a fresh host (Filter and General contexts)."""
    from ofx_host import FILTER, GENERAL, OK, OfxHost
    h = OfxHost(ofx_build.binary, ofx_build.shim)
    assert h.load() == OK
    h.describe()
    h.describe_in_context(FILTER)
    h.describe_in_context(GENERAL)
    yield h
    assert h.unload() == OK


@pytest.fixture(scope="session")
def clip_rgb(make_frame) -> list:
    """12 frames, 64x48 RGB uint8 (the engine tests' synthetic clip)."""
    return [make_frame(t) for t in range(12)]
