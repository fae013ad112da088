"""The evaluation path in a fresh clone: `cascadeflow eval` on the project's own synthetic replay file.

The real replay data (``../shared/data/replay``) is not redistributed; this file
(``tests/data/synthetic_replay.jsonl``, made by ``tests/data/make_synthetic_replay.py``)
has the same schema, so eval, the replay upstream and the metrics run everywhere.
"""

from __future__ import annotations

import math
import subprocess
import sys

import orjson
import pytest

from cascadeflow.evaluation import metrics
from cascadeflow.evaluation.runner import EvalSetup, replay_outcomes
from tests.shared_data import SYNTHETIC_REPLAY

THRESHOLD = 0.8


@pytest.fixture(scope="module")
def by_id() -> dict[str, dict]:
    return {r["id"]: r for r in map(orjson.loads, SYNTHETIC_REPLAY.read_text().splitlines())}


def test_the_file_is_what_its_generator_writes(by_id):
    sys.path.insert(0, str(SYNTHETIC_REPLAY.parent))
    try:
        from make_synthetic_replay import records
    finally:
        sys.path.pop(0)
    assert list(by_id.values()) == orjson.loads(orjson.dumps(records()))


def test_eval_scores_every_record_and_the_figures_hold(by_id):
    outcomes = replay_outcomes(EvalSetup([SYNTHETIC_REPLAY], {"quality_threshold": THRESHOLD}, concurrency=8), progress=None)
    assert len(outcomes) == len(by_id) == 48
    for outcome in outcomes:
        draft = by_id[outcome.id]["draft"]
        assert outcome.features["logprobs"] == pytest.approx(math.exp(draft["answer_logprob"]), abs=1e-3)
        assert outcome.confidence == pytest.approx(min(outcome.features.values()), abs=1e-4)
        assert outcome.accepted == (outcome.confidence >= THRESHOLD)
    accepted = [o for o in outcomes if o.accepted]
    assert 0 < len(accepted) < len(outcomes)  # the threshold splits the set: both paths are exercised
    summary = metrics.summarize(outcomes)
    cost = sum(by_id[o.id]["draft"]["cost_usd"] + o.extra_cost + (0 if o.accepted else by_id[o.id]["strong"]["cost_usd"])
               for o in outcomes)
    always_strong = sum(r["strong"]["cost_usd"] for r in by_id.values())
    quality = sum(by_id[o.id]["draft" if o.accepted else "strong"]["score"] for o in outcomes) / len(outcomes)
    strong_quality = sum(r["strong"]["score"] for r in by_id.values()) / len(by_id)
    assert summary["saving"] == pytest.approx(1 - cost / always_strong)
    assert summary["quality_retained"] == pytest.approx(quality / strong_quality)
    assert summary["escalation_rate"] == pytest.approx(1 - len(accepted) / len(outcomes))


def test_the_eval_command_runs_on_it(tmp_path):
    markdown = tmp_path / "table.md"
    result = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "eval", "--data", str(SYNTHETIC_REPLAY),
                             "--markdown", str(markdown)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "synthetic/arithmetic  48" in result.stdout and "check contributions" in result.stdout
    assert "synthetic/arithmetic" in markdown.read_text()
