"""Writing a file whole: into a hidden temporary beside it, then one rename.

Readers, and a run that is interrupted, never see a half-written file under the final name. The
temporary is created with mode 0666 so the user's umask applies, as for any other file
(`tempfile.mkstemp` makes 0600 files, which a render node running as another user cannot read).
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary beside `path` for writing ("wb" or "w"); it replaces `path` when the block
    ends without an exception, and is removed (leaving `path` untouched) when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` whole (see `atomic_open`)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` whole, as UTF-8 (see `atomic_open`)."""
    atomic_write_bytes(path, text.encode("utf-8"))
