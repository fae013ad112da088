"""benchmarks/gc_pauses.py drives its load through a real gateway and prints its three tables from what the
gateway's collector recorded."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def test_a_short_run_prints_collections_latency_and_population():
    done = subprocess.run([sys.executable, str(CHECKOUT / "benchmarks" / "gc_pauses.py"), "--requests", "40",
                           "--users", "2", "--plain", "1", "--freeze-after-start"],
                          capture_output=True, text=True, timeout=180, cwd=CHECKOUT / "benchmarks",
                          env={**os.environ, "PYTHONPATH": str(CHECKOUT / "src")})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    gen0 = re.search(r"^\| 0 \| (\d+) \|", out, re.MULTILINE)
    assert gen0 and int(gen0.group(1)) > 0, "40 requests make young collections, and the gateway reported them"
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert rows["all"].split("|")[2].strip() == "40" and rows["all"].split("|")[3].strip() == "0", "40 answered, 0 errors"
    assert rows["turn"] and rows["plain"]
    frozen = [int(rows[when].split("|")[5].replace(",", "")) for when in ("after start-up", "after round 2")]
    assert all(n > 50_000 for n in frozen), "--freeze-after-start froze the gateway's start-up"


def test_kept_conversations_are_counted_and_collected():
    done = subprocess.run([sys.executable, str(CHECKOUT / "benchmarks" / "gc_pauses.py"), "--kept", "40"],
                          capture_output=True, text=True, timeout=120, cwd=CHECKOUT / "benchmarks",
                          env={**os.environ, "PYTHONPATH": str(CHECKOUT / "src")})
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| 40 |"))
    assert row.split("|")[2].strip() == "40", "all 40 kept: the store's bound is far"
    per_conversation = float(row.split("|")[4])
    assert 1 <= per_conversation < 100, "each remembered conversation leaves a few tracked objects"
    assert len(row.split("|")[5].split(",")) == 3, "a full collection timed three times"
