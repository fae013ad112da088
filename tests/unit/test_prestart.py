"""tests/prestart.py: early work starts once, beside the run, and its tests get exactly what running it would give."""

from __future__ import annotations

import sys
import threading
import time
from types import ModuleType, SimpleNamespace

import pytest

from tests.prestart import RUNNING, STARTED, Early, Runner, last_the_early, start_selected, stop_running


def config(**extra) -> SimpleNamespace:
    return SimpleNamespace(stash=pytest.Stash(), option=SimpleNamespace(collectonly=False), **extra)


def item(module: ModuleType, name: str) -> SimpleNamespace:
    return SimpleNamespace(module=module, name=name, originalname=name.split("[")[0])


def module_with(*works: Early) -> ModuleType:
    module = ModuleType("test_fake")
    for number, work in enumerate(works):
        setattr(module, f"WORK{number}", work)
    return module


def test_the_work_starts_once_in_the_background_and_its_tests_get_its_result():
    runs: list[str] = []

    def work(runner: Runner) -> str:
        runs.append(threading.current_thread().name)
        return "result"

    early = Early("fake", work, frozenset({"test_a"}))
    module = module_with(early)
    run = config()
    start_selected(run, [item(module, "test_a[1]"), item(module, "test_a[2]"), item(module, "test_other")])
    assert early.result(run) == "result" and early.result(run) == "result"
    assert runs == ["early-fake"]  # once, in its own thread


def test_work_no_selected_test_needs_is_not_started():
    early = Early("fake", lambda runner: pytest.fail("started"), frozenset({"test_a"}))
    run = config()
    start_selected(run, [item(module_with(early), "test_b")])
    assert run.stash[STARTED] == {}


def test_what_the_work_raises_the_test_raises():
    def work(runner: Runner) -> None:
        raise AssertionError("mypy: 1 error")

    early = Early("failing", work)
    run = config()
    start_selected(run, [item(module_with(early), "test_anything")])
    with pytest.raises(AssertionError, match="mypy: 1 error"):
        early.result(run)


def test_an_xdist_worker_starts_nothing_and_the_test_runs_the_work_itself():
    threads: list[str] = []
    early = Early("fake", lambda runner: threads.append(threading.current_thread().name) or runner.background)
    run = config(workerinput={"workerid": "gw1"})
    start_selected(run, [item(module_with(early), "test_a")])
    assert STARTED not in run.stash or not run.stash[STARTED]
    assert early.result(run) is False and threads == [threading.current_thread().name]


def test_the_tests_with_early_work_run_last_in_their_order():
    early = Early("fake", lambda runner: None, frozenset({"test_slow"}))
    module, plain = module_with(early), module_with()
    items = [item(module, "test_slow"), item(plain, "test_1"), item(module, "test_quick"), item(plain, "test_2")]
    order = list(items)
    last_the_early(config(), order)
    assert [i.name for i in order] == ["test_1", "test_quick", "test_2", "test_slow"]
    on_worker = list(items)
    last_the_early(config(workerinput={"workerid": "gw0"}), on_worker)
    assert on_worker == items


def test_background_commands_run_at_a_lower_priority():
    niceness = [sys.executable, "-c", "import os; print(os.nice(0))"]
    here = int(Runner(None, background=False).run(niceness, timeout=30).stdout)
    behind = int(Runner(None, background=True).run(niceness, timeout=30).stdout)
    assert behind == min(here + 10, 19)


def test_a_command_still_running_when_the_session_ends_is_terminated():
    early = Early("endless", lambda runner: runner.run([sys.executable, "-c", "import time; time.sleep(60)"],
                                                       timeout=120))
    run = config()
    start_selected(run, [item(module_with(early), "test_a")])
    started = time.monotonic()
    while not run.stash.get(RUNNING, set()):
        assert time.monotonic() - started < 10, "the command never started"
        time.sleep(0.01)
    stop_running(run)
    done = early.result(run)
    assert done.returncode == -15 and time.monotonic() - started < 30  # SIGTERM, long before its 60 s
