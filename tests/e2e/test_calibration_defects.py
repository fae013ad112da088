"""Regression tests for the evaluation defects of issue 13, each driven over real HTTP.

1. a rule that no threshold can make meet its target never drafts (never "threshold 1.0", which accepts
   every draft scoring exactly 1.0); 2. files sharing a strong model but not a draft each draft with their
   own model, and a replay miss is an error, never a synthetic answer; 4. confidences and check scores
   travel exactly (a threshold fitted on rounded values decides differently in the gateway);
5. unpriced models make savings "unknown", never a saving on $0.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import openai
import orjson
import pytest

from cascadeflow import ProxyConfig
from cascadeflow.evaluation import metrics
from cascadeflow.evaluation.runner import EvalSetup, replay_outcomes, replay_registry
from cascadeflow.pricing import ModelRegistry
from cascadeflow.sim import SimulatedProvider
from cascadeflow.sim.replay import ReplayTable, load_records
from cascadeflow.usage import Usage
from tests.conftest import sim_routes
from tests.shared_data import REPLAY_DATA, require

REPLAY = REPLAY_DATA


def lines(name: str, n: int) -> list[dict]:
    source = REPLAY / f"{name}.calib.jsonl"
    require(source)
    return [orjson.loads(line) for line in source.read_bytes().splitlines()[:n]]


def write(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


# -- 1. never draft ---------------------------------------------------------------------------------


def test_a_never_draft_rule_sends_every_request_straight_to_the_verifier(fresh_sim, start_gateway):
    fresh_sim.set_script([{"match": {"model": "gpt-5.4-mini"}, "text": "A fluent draft that every check scores 1.0."}])
    config = ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim, openai_key="k"),
        "cascade_rules": [{"request_model": "gpt-5.4", "draft_model": "gpt-5.4-mini", "quality_threshold": 1.0,
                           "never_draft": True}],
    })
    gateway = start_gateway(config)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="caller", max_retries=0)
    for stream in (False, True):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-5.4", messages=[{"role": "user", "content": "What is 2 + 2?"}], stream=stream)
        assert raw.headers["x-cascadeflow-decision"] == "skipped:never_draft"
        assert raw.headers["x-cascadeflow-draft-accepted"] == "false"
    assert [r["body"]["model"] for r in fresh_sim.requests if r["path"].endswith("/completions")] == ["gpt-5.4", "gpt-5.4"]


def test_calibrate_that_cannot_reach_its_target_writes_a_rule_that_never_drafts(tmp_path):
    # structural checks only: every fluent draft scores exactly 1.0, so no threshold separates good from bad
    data = write(tmp_path / "arc.jsonl", lines("routerbench0shot_arc_challenge", 120))
    config = tmp_path / "cascadeflow-proxy.yaml"
    config.write_text("cascade_rules:\n  - {name: arc, request_model: gpt-4-1106-preview, draft_model: gpt-3.5-turbo-1106}\n")
    result = subprocess.run(
        [sys.executable, "-m", "cascadeflow.cli", "calibrate", "--data", str(data), "--target-quality", "0.999",
         "--config", str(config), "--folds", "3"],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "NEVER DRAFT" in result.stdout
    rule = ProxyConfig.from_yaml(config).cascade_rules[0]
    assert rule.never_draft is True
    # what the written rule does: nothing accepted, no draft paid, the strong model's quality exactly
    outcomes = replay_outcomes(EvalSetup([data], rule.model_dump(mode="json", exclude_none=True), concurrency=8), progress=None)
    summary = metrics.summarize(outcomes)
    assert summary["escalation_rate"] == 1.0 and summary["quality_retained"] == 1.0
    assert summary["saving"] == pytest.approx(0.0) and all(not o.drafted for o in outcomes)


# -- 2. one draft per pair; a replay miss is an error --------------------------------------------------


def test_files_sharing_a_strong_model_each_draft_with_their_own_model(tmp_path):
    # the same questions, ids and strong model; only the draft differs (the llama file's strong renamed)
    qwen = lines("zellinger_mmlu_qwen_oai", 25)
    llama = lines("zellinger_mmlu_llama", 25)
    for record in llama:
        record["strong"]["model"] = qwen[0]["strong"]["model"]
        record["dataset"] += "-llama"
    files = [write(tmp_path / "qwen.jsonl", qwen), write(tmp_path / "llama.jsonl", llama)]
    outcomes = replay_outcomes(EvalSetup(files, {"quality_threshold": 0.5}, concurrency=8), progress=None)
    own = {(r["dataset"], r["id"]): r["draft"]["answer_logprob"] for r in load_records(files)}
    assert len(outcomes) == 50
    for outcome in outcomes:
        assert outcome.features["logprobs"] == pytest.approx(math.exp(own[(outcome.dataset, outcome.id)]), rel=1e-9)


def test_a_replay_miss_is_an_error_not_a_synthetic_answer():
    records = lines("zellinger_mmlu_qwen_oai", 3)
    with SimulatedProvider(replay=ReplayTable(records), record=False) as sim:
        client = openai.OpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0)
        served = client.chat.completions.create(model=records[0]["draft"]["model"], messages=records[0]["messages"])
        assert served.choices[0].message.content == records[0]["draft"]["text"]
        with pytest.raises(openai.NotFoundError, match="no recorded answer"):
            client.chat.completions.create(model="some-other-model", messages=records[0]["messages"])
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=records[0]["draft"]["model"], messages=[{"role": "user", "content": "new"}])
        assert len(sim.replay_misses) == 2


# -- 4. exact values --------------------------------------------------------------------------------


def test_confidences_and_check_scores_reach_calibration_exactly(tmp_path):
    data = write(tmp_path / "mmlu.jsonl", lines("zellinger_mmlu_qwen_oai", 40))
    outcomes = replay_outcomes(EvalSetup([data], {"quality_threshold": 0.5}, concurrency=8), progress=None)
    by_id = {r["id"]: r for r in load_records([data])}
    inexact = 0
    for outcome in outcomes:
        expected = math.exp(by_id[outcome.id]["draft"]["answer_logprob"])
        assert outcome.features["logprobs"] == pytest.approx(expected, rel=1e-12, abs=0)
        assert outcome.confidence == min(outcome.features.values())  # exactly what the gateway compared
        inexact += round(expected, 4) != expected
    assert inexact > 10  # the data has values that 4 decimals would have changed


# -- 5. unpriced models ------------------------------------------------------------------------------


def test_unpriced_models_make_the_saving_unknown(tmp_path):
    records = lines("routellm_gsm8k", 20)
    for record in records:
        for side in ("draft", "strong"):
            record[side].update(model=f"unpriced-{side}-model", cost_usd=None, input_tokens=None, output_tokens=None)
    data = write(tmp_path / "unpriced.jsonl", records)
    outcomes = replay_outcomes(EvalSetup([data], {"quality_threshold": 0.5}, concurrency=8), progress=None)
    assert all(not o.priced for o in outcomes)
    summary = metrics.summarize(outcomes)
    assert summary["saving"] is None and summary["baselines"]["random"]["saving"] is None
    assert summary["quality_retained"] is not None  # quality is still measured
    result = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "eval", "--data", str(data)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[1], result.stdout.splitlines()[3]
    end = header.index("saving") + len("saving")  # columns are right-aligned under their header
    assert row[:end].split()[-1] == "unknown"


def test_mixtral_replay_records_are_priced_at_mistral_list_price(tmp_path):
    """RouteLLM's draft is a Hugging Face id no price list names: it is priced as Mistral's own API sells the
    same weights (open-mixtral-8x7b, $0.70/$0.70 per Mtok), so routellm savings are real figures, not unknown."""
    records = lines("routellm_gsm8k", 12)
    assert {r["draft"]["model"] for r in records} == {"mistralai/Mixtral-8x7B-Instruct-v0.1"}
    assert ModelRegistry().info("mistralai/Mixtral-8x7B-Instruct-v0.1") is None  # the gateway's registry: unchanged
    data = write(tmp_path / "mixtral.jsonl", records)
    outcomes = replay_outcomes(EvalSetup([data], {"quality_threshold": 0.5}, concurrency=4), progress=None)
    registry = replay_registry()
    for record, outcome in zip(records, outcomes, strict=True):
        assert outcome.priced
        tokens_in = sum(len(m["content"]) for m in record["messages"]) // 4 + 4 * len(record["messages"])
        tokens_out = max(1, len(record["draft"]["text"]) // 4)
        assert outcome.draft_cost == pytest.approx((tokens_in + tokens_out) * 0.70 / 1e6, rel=1e-12)
        assert outcome.strong_cost == registry.cost("gpt-4-1106-preview", Usage(tokens_in, max(1, len(record["strong"]["text"]) // 4)))
        assert 0 < outcome.draft_cost < outcome.strong_cost
    assert metrics.summarize(outcomes)["saving"] is not None
