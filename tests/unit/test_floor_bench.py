"""benchmarks/floor.py measures the gateway and a bare pass-through on the same upstream and prints their ratio;
benchmarks/stream_taps.py prints each tap's cost per event."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHECKOUT / "src"), os.environ.get("PYTHONPATH", "")])}


def bench(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(CHECKOUT / "benchmarks" / name), *args], capture_output=True,
                          text=True, timeout=240, env=ENV)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_floor_measures_both_proxies_on_json_and_spaced_streams_without_errors():
    # gpt-5.4: a model whose price is tiered (priced in closed form, cascadeflow.tiered_prices)
    # prompts of 50 KB: a long session's requests, which the gateway parses and the floor relays
    out = bench("floor.py", "--requests", "40", "--rounds", "1", "--dialect", "openai", "--model", "gpt-5.4",
                "--words", "30", "--chunk-delay", "0.2", "--prompt-kb", "50")
    assert "prompts of 50 KB" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| openai")}
    assert set(rows) == {"openai json", "openai stream"}
    for row in rows.values():
        floor_cpu, gateway_cpu, ratio, share, floor_rps, gateway_rps, errors = (
            cell.strip() for cell in row.strip("|").split("|")[1:])
        assert errors == "0"  # every request answered 200, through the floor and through the gateway
        assert float(floor_cpu) > 0 and float(gateway_cpu) > 0 and float(floor_rps) > 0 and float(gateway_rps) > 0
        assert abs(float(ratio.rstrip("×")) - float(gateway_cpu) / float(floor_cpu)) < 0.02
        # the share is computed before the CPU figures are rounded for printing: equal to a point
        assert abs(float(share.rstrip("%")) / 100 - float(floor_cpu) / float(gateway_cpu)) <= 0.011, row


def test_floor_names_another_model_only_for_one_dialect():
    done = subprocess.run([sys.executable, str(CHECKOUT / "benchmarks" / "floor.py"), "--model", "gpt-5.4"],
                          capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 2 and "--model needs --dialect" in done.stderr


def test_stream_taps_prints_a_cost_per_event_for_each_dialect_and_chunking():
    out = bench("stream_taps.py", "--events", "20")
    rows = [line for line in out.splitlines() if re.match(r"\| (anthropic|openai|responses) \|", line)]
    assert len(rows) == 3
    for row in rows:
        figures = [float(cell) for cell in row.strip("|").split("|")[1:]]
        assert len(figures) == 3 and all(0 < figure < 1_000 for figure in figures)
