"""benchmarks/ledger_writes.py writes real rows through the ledger in processes of their own and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def test_a_short_run_prints_cpu_per_row_for_both_columns():
    done = subprocess.run([sys.executable, str(CHECKOUT / "benchmarks" / "ledger_writes.py"), "--rows", "300",
                           "--batch", "50", "--runs", "2", "--baseline", str(CHECKOUT / "src")],
                          capture_output=True, text=True, timeout=120, cwd=CHECKOUT / "benchmarks",
                          env={**os.environ, "PYTHONPATH": str(CHECKOUT / "src")})
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| SQLite |"))
    medians = [float(cell.split()[0]) for cell in row.split("|")[2:4]]
    assert all(0 < median < 10_000 for median in medians), row  # each run wrote its rows (it asserts the count)
