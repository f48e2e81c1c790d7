"""Overlapping decode, compute and encode: frames are read ahead and written behind in threads.

Decoding and encoding run in C (OpenCV, ffmpeg pipes) and torch releases the GIL, so a reader
thread and a writer thread overlap with the model's work. Errors in either thread surface in
the caller's thread; an early exit of the caller stops the reader (no thread is left blocked).
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Hashable, Iterable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")
_POLL_S = 0.1


def _put(q: queue.Queue, item, stop: Callable[[], bool]) -> bool:
    """Put unless `stop()` becomes true while the queue is full; False if stopped."""
    while not stop():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def prefetch(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Iterate `items` in a background thread, at most `depth` ahead of the consumer."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for x in items:
                if not _put(q, ("item", x), stop.is_set):
                    return
            _put(q, ("end", None), stop.is_set)
        except BaseException as exc:  # handed to the consumer, raised there
            _put(q, ("error", exc), stop.is_set)

    thread = threading.Thread(target=produce, name="vst-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, x = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise x
            yield x
    finally:
        stop.set()
        thread.join()


def batched(items: Iterable[T], size: int, key: Callable[[T], Hashable]) -> Iterator[list[T]]:
    """Consecutive items in lists of at most `size` whose `key` is the same (frames that can share
    one pass of the network)."""
    group: list[T] = []
    group_key: Hashable = None
    for item in items:
        k = key(item)
        if group and (k != group_key or len(group) == size):
            yield group
            group = []
        group_key = k
        group.append(item)
    if group:
        yield group


class WriteBehind:
    """`write(index, frame)` queues the frame for `sink.write` in a writer thread; `close()`
    waits for the queue to drain and raises the writer's error, if any."""

    def __init__(self, write: Callable[[int, np.ndarray], None], depth: int = 4) -> None:
        self._write = write
        self._q: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vst-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._write(*item)
                except BaseException as exc:
                    self._error = exc  # later frames are dropped; the caller sees the error

    def write(self, index: int, frame: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        _put(self._q, (index, frame), lambda: self._error is not None)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller failed: stop the writer, keep the caller's exception
            self._error = self._error or RuntimeError("stopped")
            self._q.put(None)
            self._thread.join()
