"""`cascadeflow eval` / `calibrate` end to end on slices of the replay data, checked independently."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from cascadeflow import ProxyConfig
from cascadeflow.evaluation import metrics
from cascadeflow.evaluation.runner import EvalSetup, replay_outcomes
from tests.shared_data import REPLAY_DATA, require

REPLAY = REPLAY_DATA  # ../shared beside the checkout; not in the repository (third-party outputs)
THRESHOLD = 0.8


def slice_file(tmp_path: Path, name: str, n: int) -> Path:
    source = require(REPLAY / f"{name}.calib.jsonl")
    target = tmp_path / f"{name}.jsonl"
    target.write_text("".join(source.read_text().splitlines(keepends=True)[:n]))
    return target


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("replay")
    return [slice_file(folder, "zellinger_mmlu_qwen_oai", 60), slice_file(folder, "zellinger_triviaqa_qwen_oai", 60)]


@pytest.fixture(scope="module")
def outcomes(slices):
    rule = {"quality_threshold": THRESHOLD, "self_verify": {}}
    return replay_outcomes(EvalSetup(slices, rule, concurrency=8), progress=None)


def records(paths: list[Path]) -> dict[str, dict]:
    return {r["id"]: r for path in paths for r in map(orjson.loads, path.read_text().splitlines())}


def test_the_gateway_scored_each_record_from_its_recorded_signals(outcomes, slices):
    by_id = records(slices)
    assert len(outcomes) == len(by_id) == 120
    for outcome in outcomes:
        draft = by_id[outcome.id]["draft"]
        if draft["answer_logprob"] is not None:  # MCQ: the answer letter's log-probability
            assert outcome.features["logprobs"] == pytest.approx(math.exp(draft["answer_logprob"]), abs=1e-3)
        if draft["self_verify_logprob"] is not None:  # free-form: P("Y") when asked to verify
            assert outcome.features["self_verify"] == pytest.approx(math.exp(max(draft["self_verify_logprob"], -100)), abs=1e-3)
        assert outcome.confidence == pytest.approx(min(outcome.features.values()), abs=1e-4)
        assert outcome.accepted == (outcome.confidence >= THRESHOLD)


def test_summary_figures_match_an_independent_computation(outcomes, slices):
    by_id = records(slices)
    summary = metrics.summarize(outcomes)
    cost = sum(
        by_id[o.id]["draft"]["cost_usd"] + o.extra_cost + (0 if o.accepted else by_id[o.id]["strong"]["cost_usd"])
        for o in outcomes
    )
    always_strong = sum(r["strong"]["cost_usd"] for r in by_id.values())
    quality = sum(by_id[o.id]["draft" if o.accepted else "strong"]["score"] for o in outcomes) / len(outcomes)
    strong_quality = sum(r["strong"]["score"] for r in by_id.values()) / len(by_id)
    assert summary["saving"] == pytest.approx(1 - cost / always_strong)
    assert summary["quality_retained"] == pytest.approx(quality / strong_quality)
    assert summary["escalation_rate"] == pytest.approx(sum(not o.accepted for o in outcomes) / 120)
    # self-verification is paid for (priced on the draft's tokens) wherever it ran
    assert all(o.extra_cost > 0 for o in outcomes if "self_verify" in o.features)
    assert summary["baselines"]["random"]["apgr"] == pytest.approx(0.5)
    assert summary["baselines"]["oracle"]["apgr"] >= 1.0  # some drafts beat the strong model here
    assert summary["apgr"] > summary["baselines"]["random"]["apgr"]


def test_eval_command_prints_table_and_writes_reports(slices, tmp_path):
    html, markdown = tmp_path / "report.html", tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, "-m", "cascadeflow.cli", "eval", "--data", *map(str, slices), "--report", str(html),
         "--markdown", str(markdown)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "zellinger/mmlu" in result.stdout and "pooled" in result.stdout
    assert "check contributions" in result.stdout and "self_verify" in result.stdout
    page = html.read_text()
    assert "Operating point: threshold 0.7;" in page and "chosen t=0.7" in page  # the rule's point is marked
    assert page.count("<svg") >= 4 and "http" not in page.split("<body", 1)[1].split("xmlns")[0]
    assert "zellinger/triviaqa" in markdown.read_text()


def test_calibrate_writes_a_threshold_that_the_gateway_loads(slices, tmp_path):
    config = tmp_path / "cascadeflow-proxy.yaml"
    config.write_text("cascade_rules:\n  - {name: mini, request_model: gpt-4o, draft_model: gpt-4o-mini, self_verify: {}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "cascadeflow.cli", "calibrate", "--data", *map(str, slices), "--target-quality", "0.97",
         "--config", str(config), "--folds", "4"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "held-out saving" in result.stdout
    rule = ProxyConfig.from_yaml(config).cascade_rules[0]
    assert rule.quality_threshold != 0.7 and rule.self_verify is not None
    assert (tmp_path / "cascadeflow-proxy.yaml.bak").exists()


def test_eval_refuses_files_without_records(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "eval", "--data", str(empty)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no evaluation records" in result.stderr


def test_sample_agreement_scores_the_recorded_samples(tmp_path):
    from cascadeflow.cascade.agreement import final_answer

    path = slice_file(tmp_path, "mot_date", 30)
    rule = {"quality_threshold": 0.7, "sample_agreement": {"samples": 5}}
    outcomes = replay_outcomes(EvalSetup([path], rule, concurrency=8), progress=None)
    by_id = records([path])
    varied = 0
    for outcome in outcomes:
        draft = by_id[outcome.id]["draft"]
        samples = draft["samples"][:5]
        expected = sum(final_answer(s) == final_answer(draft["text"]) for s in samples) / 5
        assert outcome.features["agreement"] == pytest.approx(expected)
        assert outcome.extra_cost == pytest.approx(5 * outcome.draft_cost)  # five extra draft calls, paid
        varied += expected < 1
    assert varied > 0, "the slice must contain disagreeing samples for the test to mean anything"
