"""The gateway (``cascadeflow.cli``'s arguments), with the CPU time its session bookkeeping takes counted.

    python benchmarks/_timed_gateway.py COUNTER_FILE proxy start --config ...

For ``overhead.py --sessions --attribute``: every public method of ``SessionBook`` and ``Turn`` (the
bookkeeping's entry points, whatever the engine calls: the state, the prompt's shape, the economics, the
baseline, the record) is timed in CPU nanoseconds of the thread that runs it, calls made inside another
counted once, and the running total is kept in the first 8 bytes of ``COUNTER_FILE`` (memory-mapped), which
the load generator reads before and after each request as it reads the process's CPU time. So the whole
path's difference with and without a session splits into the bookkeeping, as it runs in the gateway, and
the rest. The timers cost a few µs per request, counted on the side with a session.
"""

from __future__ import annotations

import functools
import inspect
import mmap
import struct
import sys
import time
from collections.abc import Callable
from typing import Any


def count_into(counter: mmap.mmap, classes: tuple[type, ...]) -> None:
    """Wrap the public methods of ``classes`` to add their CPU nanoseconds to ``counter`` (outermost calls only)."""
    depth = [0]
    total = [0]
    clock = time.thread_time_ns

    def counted(ns: int) -> None:
        total[0] += ns
        struct.pack_into("<q", counter, 0, total[0])

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                depth[0] += 1
                started = clock()
                try:
                    return await method(*args, **kwargs)  # the in-memory store never suspends here
                finally:
                    depth[0] -= 1
                    if not depth[0]:
                        counted(clock() - started)

            return run_async

        @functools.wraps(method)
        def run(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            started = clock()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                if not depth[0]:
                    counted(clock() - started)

        return run

    for cls in classes:
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(value) and name != "aclose":
                setattr(cls, name, timed(value))


def main() -> int:
    path, argv = sys.argv[1], sys.argv[2:]
    with open(path, "r+b") as file:
        counter = mmap.mmap(file.fileno(), 8)
    from cascadeflow.cascade.session import SessionBook, Turn
    from cascadeflow.cli import main as cli

    count_into(counter, (SessionBook, Turn))
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
