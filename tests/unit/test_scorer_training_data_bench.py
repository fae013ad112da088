"""benchmarks/scorer_training_data.py: a row per file without log-probabilities, each training set's AUROC."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import orjson

CHECKOUT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(CHECKOUT / "benchmarks"))
import scorer_training_data as bench  # noqa: E402


def run(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKOUT / "benchmarks" / "scorer_training_data.py"), "--data", str(folder),
                           "--seeds", "1"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(CHECKOUT / "src"),
                                                                            os.environ.get("PYTHONPATH", "")])})


def _write(folder: Path, name: str, task: str, rng: random.Random) -> None:
    lines = []
    for i in range(16):
        good = rng.random() < 0.6  # a long answer marks a bad draft here, so the scorer has something to learn
        lines.append(orjson.dumps({
            "id": f"{name}-{i}", "dataset": name, "task_type": task,
            "messages": [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}],
            "draft": {"model": "d", "text": str(2 * i) if good else "I am not sure. " * rng.randint(5, 20), "score": float(good)},
            "strong": {"model": "s", "text": str(2 * i), "score": 1.0}}))
    (folder / f"{name}.calib.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def test_prints_a_row_per_file_with_an_auroc_per_training_set(tmp_path):
    rng = random.Random(7)
    for name in (*bench.WITHOUT_LOGPROBS, bench.EXTRA):
        _write(tmp_path, name, "math", rng)
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines()[2:]]
    assert [r[0].strip() for r in rows] == list(bench.WITHOUT_LOGPROBS)
    for row in rows:
        assert row[1].strip() == "16"
        aurocs = [float(cell.split()[0]) for cell in row[2:]]
        assert len(aurocs) == 4 and all(a > 0.9 for a in aurocs)  # the length tells good from bad in every file
        assert row[4].strip().endswith("(16)")  # the extra records of the same task type: all of them


def test_missing_files_are_named_and_refused(tmp_path):
    done = run(tmp_path)
    assert done.returncode == 2 and str(tmp_path) in done.stderr
