"""Read-ahead and write-behind threads: order kept, errors surface in the caller, nothing hangs."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vst_engine.pipeline import WriteBehind, batched, prefetch


def test_prefetch_keeps_order_and_reads_ahead():
    produced = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    it = prefetch(items(), depth=3)
    assert next(it) == 0
    time.sleep(0.3)
    assert 3 <= len(produced) <= 5  # ahead of the consumer, but bounded by the depth
    assert list(it) == list(range(1, 20))


def test_prefetch_raises_the_readers_error_in_order():
    def items():
        yield 1
        yield 2
        raise ValueError("bad frame 3")

    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for x in prefetch(items()):
            got.append(x)
    assert got == [1, 2]


def test_prefetch_stops_the_reader_when_the_caller_stops():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    it = prefetch(endless(), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert threading.active_count() == before


def test_write_behind_writes_everything_in_order():
    written = []
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(10)]
    with WriteBehind(lambda i, f: written.append((i, int(f[0, 0, 0]))), depth=2) as out:
        for i, f in enumerate(frames):
            out.write(i, f)
    assert written == [(i, i) for i in range(10)]


def test_write_behind_raises_the_writers_error():
    def write(i, f):
        if i == 3:
            raise OSError("disk full")

    out = WriteBehind(write, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):  # the error surfaces at a later write or at close, never hangs
            out.write(i, np.zeros((1, 1, 3), np.uint8))
        out.close()


def test_write_behind_stops_when_the_caller_fails():
    written = []
    with pytest.raises(KeyError):
        with WriteBehind(lambda i, f: (time.sleep(0.01), written.append(i)), depth=8) as out:
            for i in range(5):
                out.write(i, np.zeros((1, 1, 3), np.uint8))
            raise KeyError("model failed")
    assert len(written) <= 5


def test_batched_groups_consecutive_items_with_one_key():
    items = [(0, "a"), (1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "a")]
    groups = list(batched(items, 2, key=lambda item: item[1]))
    assert [[i for i, _ in g] for g in groups] == [[0, 1], [2], [3], [4, 5]]
    assert list(batched([], 3, key=lambda item: item)) == []
    assert [len(g) for g in batched(range(7), 3, key=lambda item: 0)] == [3, 3, 1]
