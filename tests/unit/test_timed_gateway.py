"""``benchmarks/_timed_gateway.py``: the bookkeeping's CPU is counted once per outermost call, into the shared counter."""

from __future__ import annotations

import asyncio
import itertools
import mmap
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _timed_gateway  # noqa: E402


class Book:
    def outer(self) -> int:
        return self.inner() + self._private()

    def inner(self) -> int:
        return 1

    def _private(self) -> int:
        return 2

    async def begin(self) -> int:
        await asyncio.sleep(0)
        return self.inner()


def test_outermost_calls_are_counted_once_into_the_shared_counter(monkeypatch):
    ticks = itertools.count(0, 10)  # each reading of the clock 10 ns after the one before
    monkeypatch.setattr(_timed_gateway.time, "thread_time_ns", lambda: next(ticks))
    counter = mmap.mmap(-1, 8)
    _timed_gateway.count_into(counter, (Book,))
    book = Book()

    def total() -> int:
        return struct.unpack_from("<q", counter, 0)[0]

    assert book.outer() == 3
    assert total() == 20, "outer's start (0) to its end (20): inner, called inside it, read the clock once and added nothing"
    assert book.inner() == 1
    assert total() == 30, "inner alone: one interval of its own"
    assert asyncio.run(book.begin()) == 1
    assert total() == 50, "a coroutine method is counted from its start to its end, what it calls inside it"
    assert Book._private.__name__ == "_private" and not hasattr(Book._private, "__wrapped__"), "private ones untouched"
    assert Book.outer.__wrapped__ is not None
