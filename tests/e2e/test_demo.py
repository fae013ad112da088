"""`cascadeflow demo` runs on a fresh machine and its figures agree with the gateway's /stats."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from cascadeflow.demo import SCRIPT, WORKLOAD, run_demo


def test_demo_table_matches_stats():
    out = io.StringIO()
    stats = run_demo(out)
    text = out.getvalue()
    rows = [line for line in text.splitlines() if re.match(r"\s*\d+\s{2}", line)]
    assert len(rows) == len(WORKLOAD) == stats["requests"]
    accepted_rows = [r for r in rows if " accepted " in r]
    assert len(accepted_rows) == stats["accepted"]
    # the script decides: every prompt the draft answers with usable text or a valid tool call is accepted
    assert 0 < stats["accepted"] < len(WORKLOAD)
    assert sum(stats["escalated_by_reason"].values()) == len(WORKLOAD) - stats["accepted"]
    assert stats["saving"] > 0 and stats["cost"] < stats["baseline_cost"]
    assert f"{stats['accepted']} of {stats['requests']} answered by the draft" in text
    assert f"saving {stats['saving_pct']:.1f}%" in text
    assert len(SCRIPT) >= len(WORKLOAD)


def test_demo_command_exits_cleanly():
    result = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "demo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "answered by the draft" in result.stdout
