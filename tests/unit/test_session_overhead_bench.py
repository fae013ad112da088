"""benchmarks/session_overhead.py runs in each of its modes and prints a row of figures per size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKOUT / "benchmarks" / "session_overhead.py"), "--sizes", "10",
                           "--last", "2", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(CHECKOUT / "src"),
                                                                            os.environ.get("PYTHONPATH", "")])})


@pytest.mark.parametrize("mode", [("--conversations", "1"), ("--interleave", "3", "--conversations", "1"),
                                  ("--bytecode", "--conversations", "1")])
def test_each_mode_prints_a_row_of_figures(mode):
    done = run(*mode)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 10 |")]
    assert len(rows) == 1
    figures = [int(n) for n in re.findall(r"\d+", rows[0].split("|", 4)[4])]  # min / median / p90, four columns
    assert len(figures) == 12 and all(n > 0 for n in figures)
    if "--bytecode" in mode:  # deterministic: a next turn runs thousands of instructions, the same before and after
        assert 1_000 < figures[1] <= figures[4]


def test_interleaving_more_conversations_than_a_process_keeps_is_refused():
    done = run("--interleave", "999")
    assert done.returncode == 2 and "at most 256" in done.stderr
