"""How the suite runs on several pytest-xdist workers (``-n auto`` in pyproject's addopts; ``-n 0``: one process).

``auto`` is one worker per two CPUs (see ``pytest_xdist_auto_num_workers``): on two CPUs the
suite runs in one process, as before; a bigger machine shares the files out. What keeps
workers apart:

- **Scopes.** A test file runs whole on one worker, so its module fixtures (a gateway,
  a browser) start once. ``tests/e2e/test_docs.py`` is the exception: each page of the
  docs is a scope of its own (a page's blocks still run in order, in one folder), so
  the pages spread over the workers.
- **Redis.** The tests that use Redis flush their database. Worker ``gw0`` uses the
  databases the variables name (defaults 7 and 8); each further worker takes one database
  of its own for both (11 for ``gw1``, then 12-15 and 1-6; ``CASCADEFLOW_TEST_REDIS_WORKERS``
  lists others), never 0, 9 (the benchmarks') or one a variable names. One database is
  enough for a worker: its tests run one after another and each flushes what it uses.
  The container test's database is not split: that one file runs on a single worker.
- **Ports and folders** need nothing: every server binds a free port, and every worker
  has its own temporary folders (and so its own data directory and ledgers).
  PostgreSQL databases are already one per test.
- **Order.** Scopes go out in collection order, except the few that take a minute or more
  (``HEAVY``, longest first): they go out first. In collection order one of them could start
  last (the static checks are a unit file, among the last) and run alone while the other
  workers have finished: on two CPUs that tail was most of a minute.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import pytest

#: the variables whose database each worker needs of its own, with the defaults the tests use
REDIS_VARIABLES = {
    "CASCADEFLOW_TEST_REDIS": "redis://127.0.0.1:6379/7",
    "CASCADEFLOW_TEST_REDIS_UNIT": "redis://127.0.0.1:6379/8",
}
#: the container test's database (one file, so one worker: not split), kept out of the pool
CONTAINER_VARIABLE = ("CASCADEFLOW_TEST_REDIS_CONTAINER", "redis://127.0.0.1:6379/10")
#: databases further workers may take, in this order (0 is Redis's default, 9 the benchmarks')
POOL = (11, 12, 13, 14, 15, 1, 2, 3, 4, 5, 6)
#: names other databases for further workers (comma-separated), on a Redis that others use too
POOL_VARIABLE = "CASCADEFLOW_TEST_REDIS_WORKERS"
#: the one test file whose parametrized cases (``[README.md:85]``) are scoped by the page they name
PAGED = "tests/e2e/test_docs.py"
DATABASE = re.compile(r"/(\d+)$")
#: the scopes that take a minute or more (measured with ``--durations``, four workers on two CPUs), longest first:
#: they go out before the rest, so that none of them is what a worker still runs after the others are done
HEAVY = (
    "tests/e2e/test_container.py",
    "tests/e2e/test_shutdown_workers.py",
    "tests/e2e/test_docs.py::docs/operations.md",
    "tests/e2e/test_hardening_edges.py",
    "tests/e2e/test_shared_limits.py",
    "tests/unit/test_static_checks.py",
    "tests/e2e/test_first_run.py",
    "tests/e2e/test_docs.py::docs/configuration.md",
    "tests/e2e/test_metrics.py",
    "tests/unit/test_eval_metrics.py",
    "tests/e2e/test_docs.py::README.md",
    "tests/e2e/test_fault_matrix.py",
    "tests/e2e/test_schemathesis.py",
    "tests/e2e/test_provider_credentials.py",
)


def database_of(url: str) -> int:
    found = DATABASE.search(url)
    return int(found.group(1)) if found else 0


def free_databases(environ: dict[str, str]) -> list[int]:
    """The databases workers after ``gw0`` take, one each, in order."""
    taken = {database_of(environ.get(name) or default) for name, default in (*REDIS_VARIABLES.items(), CONTAINER_VARIABLE)}
    listed = environ.get(POOL_VARIABLE)
    pool = [int(db) for db in listed.split(",") if db.strip()] if listed else POOL
    return [db for db in pool if db not in taken]


def most_workers(environ: dict[str, str]) -> int:
    """How many workers the Redis databases allow."""
    return 1 + len(free_databases(environ))


def redis_urls(worker: int, environ: dict[str, str]) -> dict[str, str]:
    """The Redis URL each variable has on worker ``worker`` (0 for ``gw0`` or no xdist)."""
    named = {name: environ.get(name) or default for name, default in REDIS_VARIABLES.items()}
    if worker == 0:
        return named
    free = free_databases(environ)
    if worker > len(free):
        raise pytest.UsageError(f"Redis has no free database for worker gw{worker}: run fewer workers "
                                f"(at most {1 + len(free)}, `-n N`) or list more in ${POOL_VARIABLE}")
    db = free[worker - 1]
    return {name: DATABASE.sub(f"/{db}", url) if DATABASE.search(url) else f"{url.rstrip('/')}/{db}"
            for name, url in named.items()}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """On a worker, before any test module reads them: the Redis variables name this worker's databases."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        workers, most = getattr(config.option, "numprocesses", None), most_workers(dict(os.environ))
        if isinstance(workers, int) and workers > most:
            raise pytest.UsageError(f"-n {workers}: Redis has free databases for {most} workers "
                                    f"(tests/parallel.py; ${POOL_VARIABLE} lists more)")
        return
    worker = int(workerinput["workerid"].removeprefix("gw"))
    os.environ.update(redis_urls(worker, dict(os.environ)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per two CPUs, no more than the Redis databases allow; none below four CPUs.

    A worker is not one CPU's worth of work: each test drives servers and processes of its own
    (gateways, the simulator, CLIs), and the serial suite already keeps more than one CPU busy
    much of the time. Measured on two loaded CPUs, two workers ran the docs test slower than one
    process (249 s against 194 s), so a two-CPU machine runs the suite in one process, with no
    worker overhead. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` (xdist's own variable) sets the number.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cpus // 2, most_workers(dict(os.environ)))
    return workers if workers >= 2 else 0


def scope_of(nodeid: str) -> str:
    """The unit of work one worker gets: the test file, or for the docs test the page a case names."""
    path, _, rest = nodeid.partition("::")
    if path == PAGED and "[" in rest:
        case = rest.split("[", 1)[1].rstrip("]")
        return f"{path}::{case.rsplit(':', 1)[0]}"
    return path


def next_scope(waiting: Iterable[str]) -> str:
    """The scope a worker gets next from those still waiting (in collection order): the first ``HEAVY`` one
    left, else the first."""
    waiting = list(waiting)
    return next((scope for scope in HEAVY if scope in waiting), waiting[0])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile``, with the docs test split by page; scopes go out in collection order (the slow
    end-to-end files first, the quick unit files last fill the gaps), not reordered by their number of tests,
    the ``HEAVY`` ones first (:func:`next_scope`)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

        def _assign_work_unit(self, node) -> None:  # noqa: ANN001 (xdist's WorkerController)
            self.workqueue.move_to_end(next_scope(self.workqueue), last=False)
            super()._assign_work_unit(node)

    config.option.loadscopereorder = False
    return FileScheduling(config, log)
