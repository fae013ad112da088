"""The static checks CI runs, as tests, so the README's single test command covers them.

- ruff: the rule set in ``[tool.ruff]`` (pyflakes, pycodestyle, isort, bugbear, pyupgrade);
- mypy on ``src/cascadeflow`` (the package ships ``py.typed``), as configured in ``[tool.mypy]``,
  which also lists the modules that are not strict yet;
- import-linter: the layers of ``../shared/DESIGN.md`` and the imports they forbid, in
  ``[tool.importlinter]``.

Each runs on this checkout's sources (``src/`` first on the path), in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests import needs
from tests.prestart import Early, Runner

ROOT = Path(__file__).resolve().parents[2]


def run_tool(module: str, *args: str, timeout: float = 120, runner: Runner | None = None) -> subprocess.CompletedProcess:
    """``python -m <module> args`` at the repository root (``python args`` when ``module`` is empty)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT),
                                                                     os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, *args] if module == "" else [sys.executable, "-m", module, *args]
    if runner is not None:
        return runner.run(command, cwd=ROOT, env=env, timeout=timeout)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def mypy_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where mypy keeps its incremental cache for this test: ``$MYPY_CACHE_DIR`` (mypy's own variable) if set, else
    a folder of the user's cache, not the checkout's ``.mypy_cache``.

    A fresh clone (``.ci/run``) had no cache, so every run checked all the sources cold (~45 s of CPU; on four workers
    sharing two CPUs, 88 s); with the user's, a run checks again only what changed since the last one (~2 s). mypy
    validates each cached module against its source (size, then hash) and its own version and options, so a changed
    file is checked again wherever the cache came from: the cache saves time, never an error (a type error put into
    a module checked warm is reported).
    """
    if environ.get("MYPY_CACHE_DIR"):
        return Path(environ["MYPY_CACHE_DIR"])
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cascadeflow-tests" / "mypy"


def _mypy(runner: Runner) -> subprocess.CompletedProcess | None:
    """mypy over the sources (None: not installed); started early (tests/prestart.py) for a cold cache."""
    if importlib.util.find_spec("mypy") is None:
        return None
    # files, plugins and strictness: [tool.mypy] in pyproject.toml
    return run_tool("mypy", "--cache-dir", str(mypy_cache_dir(os.environ)), timeout=850, runner=runner)


MYPY = Early("mypy", _mypy, frozenset({"test_mypy_finds_nothing"}))


def need(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(needs.package(package))


def report(done: subprocess.CompletedProcess) -> str:
    return (done.stdout + done.stderr)[-6000:]


def test_ruff_finds_nothing():
    need("ruff", "ruff")
    done = run_tool("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, "ruff check . (`ruff check --fix .` repairs most):\n" + report(done)


@pytest.mark.timeout(900)
def test_mypy_finds_nothing(request):
    need("mypy", "mypy")
    done = MYPY.result(request.config)
    assert done is not None
    assert done.returncode == 0, "mypy:\n" + report(done)


def test_the_layers_hold():
    need("importlinter", "import-linter")
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    done = run_tool("", "-c", code, "--no-cache")
    assert done.returncode == 0, "lint-imports (contracts: [tool.importlinter] in pyproject.toml):\n" + report(done)
    kept = re.search(r"Contracts: (\d+) kept, 0 broken", done.stdout)
    assert kept and int(kept.group(1)) >= 4, report(done)


def test_mypy_keeps_its_cache_where_mypy_cache_dir_says_else_in_the_users_cache(tmp_path):
    assert mypy_cache_dir({"MYPY_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert mypy_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "cascadeflow-tests" / "mypy"
    assert mypy_cache_dir({}) == Path.home() / ".cache" / "cascadeflow-tests" / "mypy"
    assert ROOT not in mypy_cache_dir({}).parents, "not in the checkout: a fresh clone would start cold"
