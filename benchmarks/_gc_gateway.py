"""The gateway (``cascadeflow.cli``'s arguments), with every garbage collection it runs recorded.

    python benchmarks/_gc_gateway.py REPORT_PREFIX [--trace] [--freeze-on-usr2] [--threshold G0,G1,G2] \
        proxy start --config ...

For ``gc_pauses.py``: a ``gc.callbacks`` hook notes each collection's generation, start and end
and the CPU time it took (``time.thread_time_ns``: a pause longer than its CPU time was preempted), and the
wall clock (``time.monotonic_ns``: the system's monotonic clock, the one the load generator reads too, so a
request's span can be matched against the pauses) and what it freed, in ``array``s (untracked: the
record adds nothing for the collector to scan). On ``SIGUSR1`` the process writes
``REPORT_PREFIX.<n>.json`` (n = 0, 1, …): the collections so far, the tracked objects per generation
and frozen, and the commonest types among all tracked objects and among the long-lived ones (the
oldest generation). ``--trace`` also starts ``tracemalloc`` before the gateway is imported, and the
report then says which source lines allocated the long-lived objects (slower: for attribution only).
``--freeze-on-usr2``: on ``SIGUSR2``, ``gc.collect()`` then ``gc.freeze()`` (a freeze tried from outside);
``--threshold``: ``gc.set_threshold`` before the gateway is imported.
"""

from __future__ import annotations

import gc
import signal
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from types import FrameType

import orjson

#: tracemalloc frames kept per allocation under --trace (enough to get past the stdlib's json and copy)
_TRACE_DEPTH = 12


class GcRecorder:
    """What every collection did, kept in flat arrays, and the report ``SIGUSR1`` asks for."""

    def __init__(self, prefix: str, trace: bool) -> None:
        self.prefix = prefix
        self.trace = trace
        self.generation = array("b")
        self.started = array("q")
        self.ended = array("q")
        self.collected = array("q")
        self.cpu = array("q")
        self._began = self._began_cpu = 0
        self._reports = 0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began, self._began_cpu = time.monotonic_ns(), time.thread_time_ns()
            return
        self.ended.append(time.monotonic_ns())
        self.cpu.append(time.thread_time_ns() - self._began_cpu)
        self.started.append(self._began)
        self.generation.append(info["generation"])
        self.collected.append(info["collected"])

    def report(self, *_: object) -> None:
        """Write the collections so far and the tracked population (``SIGUSR1``)."""
        path = Path(f"{self.prefix}.{self._reports}.json")
        self._reports += 1
        generations = [gc.get_objects(g) for g in range(3)]
        counts = [len(objects) for objects in generations]
        every = Counter(type(o).__name__ for objects in generations for o in objects)
        old = Counter(type(o).__qualname__ if isinstance(o, type) else _type_name(o) for o in generations[2])
        body: dict = {
            "collections": {"generation": list(self.generation), "started": list(self.started),
                            "ended": list(self.ended), "collected": list(self.collected), "cpu": list(self.cpu)},
            "tracked": counts, "frozen": gc.get_freeze_count(), "threshold": gc.get_threshold(),
            "types": every.most_common(15), "old_types": old.most_common(15),
        }
        if self.trace:
            body["old_origins"] = _origins(generations[2])
        del generations
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(body))
        tmp.rename(path)  # the reader sees the whole file or none


def _type_name(obj: object) -> str:
    kind = type(obj)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _origins(objects: list) -> list:
    """Who allocated the long-lived objects, counted: ``import`` (a module's body, run by the import system)
    or ``run`` (everything else: building the app, loading data, serving), and the package whose code made
    the object (the innermost frame outside the standard library, else the innermost; cascadeflow's modules
    by name)."""
    import tracemalloc

    traces: Counter = Counter(tracemalloc.get_object_traceback(obj) for obj in objects)
    untraced = traces.pop(None, 0)
    where: Counter = Counter()
    for trace, count in traces.items():  # each distinct traceback once: the report runs under tracing too
        frames = list(trace)  # the oldest kept first, the allocation's own frame last
        when = "import" if any(f.filename.startswith("<frozen importlib") for f in frames) else "run"
        own = next((f for f in reversed(frames) if not _package(f.filename).startswith(("stdlib", "<"))), frames[-1])
        where[f"{when:<6} {_package(own.filename)}"] += count
    return [["(allocated before tracing began)", untraced], *where.most_common(25)]


def _package(filename: str) -> str:
    if "/site-packages/" in filename:
        return filename.split("/site-packages/")[1].split("/")[0].removesuffix(".py")
    if "/cascadeflow/" in filename:
        return "cascadeflow/" + filename.split("/cascadeflow/", 1)[1]
    if filename.startswith("<"):
        return filename
    return "stdlib " + filename.rsplit("/lib/python3", 1)[-1].split("/", 1)[-1]


def main() -> int:
    prefix, argv = sys.argv[1], sys.argv[2:]
    trace = freeze = False
    while argv and argv[0].startswith("--"):
        option = argv.pop(0)
        if option == "--trace":
            import tracemalloc

            trace = True
            tracemalloc.start(_TRACE_DEPTH)
        elif option == "--freeze-on-usr2":
            freeze = True
        elif option == "--threshold":
            gc.set_threshold(*(int(v) for v in argv.pop(0).split(",")))
        else:
            raise SystemExit(f"_gc_gateway.py: unknown option {option}")
    recorder = GcRecorder(prefix, trace)
    gc.callbacks.append(recorder)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        recorder.report()

    def on_freeze(signum: int, frame: FrameType | None) -> None:
        gc.collect()
        gc.freeze()

    signal.signal(signal.SIGUSR1, on_signal)
    if freeze:
        signal.signal(signal.SIGUSR2, on_freeze)
    from cascadeflow.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
