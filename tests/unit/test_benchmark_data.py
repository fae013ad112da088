"""A benchmark run without its data says where it looked and what to do, in one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def run_quality(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECKOUT / "benchmarks" / "cascade_quality.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_cascade_quality_without_its_data_names_the_path_and_exits_2(tmp_path):
    missing = tmp_path / "no-replay-here"
    done = run_quality("--data", str(missing), "--out", str(tmp_path / "out.md"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(missing) in lines[0] and "Traceback" not in done.stderr
    assert "--data" in lines[0]  # what to do about it
    assert not (tmp_path / "out.md").exists()


def test_cascade_quality_with_a_folder_without_calibration_files(tmp_path):
    (tmp_path / "other.jsonl").write_text("{}\n")
    done = run_quality("--data", str(tmp_path), env={"CASCADEFLOW_REPLAY_DIR": str(tmp_path / "ignored")})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(tmp_path) in done.stderr and "*.calib.jsonl" in done.stderr


def test_cascade_quality_reads_the_data_dir_from_the_environment(tmp_path):
    missing = tmp_path / "from-env"
    done = run_quality(env={"CASCADEFLOW_REPLAY_DIR": str(missing)})
    assert done.returncode == 2 and str(missing) in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_signal_combination_without_its_data_names_the_path_and_exits_2(tmp_path):
    missing = tmp_path / "no-replay-here"
    done = subprocess.run(
        [
            sys.executable,
            str(CHECKOUT / "benchmarks" / "signal_combination.py"),
            "--data",
            str(missing),
            "--out",
            str(tmp_path / "out.md"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(missing) in done.stderr and "--data" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.md").exists()
