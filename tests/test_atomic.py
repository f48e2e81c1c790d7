"""Files written whole (`vst_engine.atomic`): no partial file under the final name, the umask's mode."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vst_engine.atomic import atomic_open, atomic_write_bytes, atomic_write_text


def test_atomic_open_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "content_train.npy"
    with pytest.raises(RuntimeError):
        with atomic_open(target, "wb") as fh:
            fh.write(b"half written")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # temp file cleaned up too

    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target, "wb") as fh:
            fh.write(b"new but incomplete")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_atomic_open_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "manifest.json"
    with atomic_open(target, "w") as fh:
        fh.write("{}")
    assert target.read_text() == "{}"
    assert [p.name for p in target.parent.iterdir()] == ["manifest.json"]


def test_text_is_written_as_utf8_whole(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.md"
    atomic_write_text(target, "Café – 1080p\n")
    assert target.read_bytes() == "Café – 1080p\n".encode("utf-8")
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.md"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_take_the_umask_mode_like_any_other(tmp_path: Path, umask: int) -> None:
    # mkstemp's 0600 made frames and features unreadable to a render node running as another user.
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.vstf", b"x")
        with atomic_open(tmp_path / "b.json", "w") as fh:
            fh.write("{}")
    finally:
        os.umask(old)
    for name in ("a.vstf", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
