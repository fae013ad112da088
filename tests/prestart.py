"""Slow preparations a test can have started at the beginning of the run, so they overlap the tests before it.

Some tests spend most of their time waiting on one outside command: mypy over the sources
(~45 s of CPU, cold in a fresh clone), the container image's build (minutes of downloads on
a machine without buildah's layer cache). In one process (``-n 0``, the suite on two CPUs),
everything before such a test runs one test at a time and rarely keeps both CPUs busy, so
that command can run beside it: a test module declares it as an :class:`Early` (the work,
and the tests that use it); when the run's selected tests include one of those, the work
starts in a background thread as collection ends (its commands at a lower CPU priority:
``nice``), and the test takes its result, waiting if it is not done yet. What the test then
asserts is unchanged; an exception the work raised (a failed assertion, a skip) is raised
in the test.

In one process those tests run last, to give their work the longest overlap. A worker of
``pytest-xdist`` starts nothing early and reorders nothing (it does not know yet which files it will
get): there, and when the work was not started for any other reason, the test runs it itself.
A command still running when the session ends (``-x`` stopped it early) is terminated.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest

#: the config's started works: name -> its future, and the commands still running
STARTED = pytest.StashKey[dict[str, Future]]()
RUNNING = pytest.StashKey[set[subprocess.Popen]]()


@dataclass(frozen=True)
class Early:
    """Work to start early for the tests named in ``tests`` (test function names of the declaring module;
    ``None``: all of its tests).

    ``work`` receives a :class:`Runner` and returns what the tests get from :meth:`result`.
    """

    name: str
    work: Callable[[Runner], Any]
    tests: frozenset[str] | None = None

    def result(self, config: pytest.Config) -> Any:
        """The work's result: from its early start, else done now, in the foreground."""
        started = config.stash.get(STARTED, {}).get(self.name)
        if started is None:
            return self.work(Runner(None, background=False))
        return started.result()


@dataclass(frozen=True)
class Runner:
    """Runs a work's commands: ``subprocess.run`` with ``capture_output`` and ``text``; niced in the background."""

    running: set[subprocess.Popen] | None
    background: bool

    def run(self, args: Sequence[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
        command = ["nice", "-n", "10", *args] if self.background and _has_nice() else list(args)
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as process:
            if self.running is not None:
                self.running.add(process)
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
            finally:
                if self.running is not None:
                    self.running.discard(process)
        return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def _has_nice() -> bool:
    return any(os.access(os.path.join(folder, "nice"), os.X_OK) for folder in os.get_exec_path())


def early_works(item: pytest.Item) -> list[Early]:
    """The :class:`Early` works the test uses (declared in its module)."""
    module = getattr(item, "module", None)
    name = getattr(item, "originalname", item.name)
    return [early for early in (vars(module).values() if module is not None else ())
            if isinstance(early, Early) and (early.tests is None or name in early.tests)]


def last_the_early(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In one process, the tests with early work run last (in their order), so their work overlaps the most."""
    if not hasattr(config, "workerinput"):
        items.sort(key=lambda item: bool(early_works(item)))


def start_selected(config: pytest.Config, items: Sequence[pytest.Item]) -> None:
    """Start, each once, the :class:`Early` works of the selected tests (not on an xdist worker)."""
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    started = config.stash.setdefault(STARTED, {})
    running = config.stash.setdefault(RUNNING, set())
    for item in items:
        for early in early_works(item):
            if early.name not in started:
                started[early.name] = _start(early, Runner(running, background=True))


def _start(early: Early, runner: Runner) -> Future:
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(early.work(runner))
        except BaseException as exc:  # a skip or a failed assertion too: the test raises it
            future.set_exception(exc)

    threading.Thread(target=run, name=f"early-{early.name}", daemon=True).start()
    return future


def stop_running(config: pytest.Config) -> None:
    """Terminate the early commands still running (the session ended before their tests ran)."""
    for process in list(config.stash.get(RUNNING, set())):
        process.terminate()
