"""The suite's xdist set-up (tests/parallel.py): workers never share a Redis database, and work goes out by file
(the docs test by page)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from tests.e2e.test_docs import BLOCKS
from tests.parallel import (
    HEAVY,
    POOL,
    REDIS_VARIABLES,
    database_of,
    most_workers,
    next_scope,
    pytest_xdist_auto_num_workers,
    redis_urls,
    scope_of,
)

CHECKOUT = Path(__file__).resolve().parents[2]


def databases(worker: int, environ: dict[str, str]) -> set[int]:
    return {database_of(url) for url in redis_urls(worker, environ).values()}


def test_the_first_worker_uses_the_documented_databases_the_second_one_its_own():
    assert redis_urls(0, {}) == REDIS_VARIABLES
    assert databases(0, {}) == {7, 8}
    assert databases(1, {}) == {11}


@pytest.mark.parametrize("environ", [
    {},
    {"CASCADEFLOW_TEST_REDIS": "redis://127.0.0.1:6379/11", "CASCADEFLOW_TEST_REDIS_UNIT": "redis://127.0.0.1:6379/13"},
    {"CASCADEFLOW_TEST_REDIS": "redis://127.0.0.1:6379", "CASCADEFLOW_TEST_REDIS_CONTAINER": "redis://127.0.0.1:6379/11"},
    {"CASCADEFLOW_TEST_REDIS_WORKERS": "3, 7, 4"},
])
def test_no_two_workers_share_a_database(environ):
    workers = most_workers(environ)
    assert workers >= 3, "enough for -n auto on a small machine"
    seen: dict[int, int] = {}
    container = database_of(environ.get("CASCADEFLOW_TEST_REDIS_CONTAINER") or "redis://127.0.0.1:6379/10")
    for worker in range(workers):
        mine = databases(worker, environ)
        assert not mine & seen.keys(), f"gw{worker} shares {mine & seen.keys()} with an earlier worker"
        seen.update(dict.fromkeys(mine, worker))
        if worker:
            assert len(mine) == 1 and not mine & {0, 9, container}, "one of its own, never 0, 9 or the container's"
            listed = environ.get("CASCADEFLOW_TEST_REDIS_WORKERS")
            assert mine <= ({int(db) for db in listed.split(",")} if listed else set(POOL))
    with pytest.raises(pytest.UsageError, match="fewer workers"):
        redis_urls(workers, environ)


def test_a_url_keeps_its_host_and_options_only_the_database_changes():
    urls = redis_urls(1, {"CASCADEFLOW_TEST_REDIS": "redis://user:pw@redis.internal:6380/7"})
    assert urls["CASCADEFLOW_TEST_REDIS"] == "redis://user:pw@redis.internal:6380/11"


def test_files_are_scopes_and_the_docs_test_is_split_by_page():
    assert scope_of("tests/e2e/test_cli.py::test_bad_config_file_exits_2_with_a_message") == "tests/e2e/test_cli.py"
    assert scope_of("tests/unit/test_checks.py::test_x[a::b]") == "tests/unit/test_checks.py"
    assert scope_of("tests/e2e/test_docs.py::test_every_block_is_marked") == "tests/e2e/test_docs.py"
    pages = {scope_of(f"tests/e2e/test_docs.py::test_doc_block[{block.id}]") for block in BLOCKS}
    assert pages == {f"tests/e2e/test_docs.py::{block.file}" for block in BLOCKS}
    assert len(pages) > 5


def test_the_heavy_scopes_go_out_first_longest_first_then_collection_order():
    waiting = ["tests/e2e/test_agents.py", HEAVY[3], "tests/unit/test_a.py", HEAVY[1]]
    order = []
    while waiting:
        order.append(next_scope(waiting))
        waiting.remove(order[-1])
    assert order == [HEAVY[1], HEAVY[3], "tests/e2e/test_agents.py", "tests/unit/test_a.py"]


def test_every_heavy_scope_names_a_test_file_or_a_docs_page():
    """A renamed file or page would silently lose its place at the front."""
    pages = {f"tests/e2e/test_docs.py::{block.file}" for block in BLOCKS}
    assert len(set(HEAVY)) == len(HEAVY)
    for scope in HEAVY:
        assert scope in pages if "::" in scope else (CHECKOUT / scope).is_file(), scope


def test_the_suite_runs_on_workers_by_file():
    """The README's one command (``python -m pytest -q``) gets its workers from addopts."""
    options = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "--dist loadfile" in options and "-n auto" in options


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 0), (3, 0), (4, 2), (5, 2), (8, 4), (16, 8), (64, 12)])
def test_auto_is_one_worker_per_two_cpus_and_none_on_a_small_machine(monkeypatch, cpus, workers):
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    for name in ("CASCADEFLOW_TEST_REDIS", "CASCADEFLOW_TEST_REDIS_UNIT", "CASCADEFLOW_TEST_REDIS_CONTAINER",
                 "CASCADEFLOW_TEST_REDIS_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert pytest_xdist_auto_num_workers(None) == workers
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")
    assert pytest_xdist_auto_num_workers(None) == 3
