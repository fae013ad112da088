"""The learned scorer end to end: calibrate trains it and writes it beside the config, the gateway loads it
once at start (refusing a missing or altered file) and scores live drafts exactly as calibration did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import orjson
import pytest
import yaml

from cascadeflow import ProxyConfig, create_app
from cascadeflow.cascade.scorer import FEATURES, Scorer, load_scorer, save_scorer, text_features
from cascadeflow.errors import ConfigError
from cascadeflow.evaluation import learned, metrics
from cascadeflow.evaluation.metrics import Outcome
from cascadeflow.evaluation.runner import EvalSetup, load_eval_records, replay_outcomes, rule_template
from tests.conftest import sim_routes
from tests.shared_data import REPLAY_DATA, require

REPLAY = REPLAY_DATA


def replay_file(name: str) -> Path:
    path = REPLAY / f"{name}.calib.jsonl"
    require(path)
    return path


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """mot_date (no log-probabilities): calibrate picks the learned scorer and writes it beside the config."""
    folder = tmp_path_factory.mktemp("scorer")
    config = folder / "cascadeflow-proxy.yaml"
    config.write_text("cascade_rules:\n  - {name: dates, request_model: gpt-4, draft_model: gpt-3.5-turbo}\n")
    data = replay_file("mot_date")
    result = subprocess.run(
        [sys.executable, "-m", "cascadeflow.cli", "calibrate", "--data", str(data), "--target-quality", "0.9",
         "--config", str(config)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return config, data, result.stdout


def test_calibrate_writes_the_scorer_beside_the_config_and_the_gateway_scores_exactly_as_calibration(calibrated):
    config, data, stdout = calibrated
    assert "learned scorer" in stdout and "<- chosen" in stdout.split("learned scorer")[1]
    rule = ProxyConfig.from_yaml(config).cascade_rules[0]
    assert rule.scorer is not None and not Path(rule.scorer.path).is_absolute()
    assert (config.parent / rule.scorer.path).exists() and not rule.never_draft
    scorer = load_scorer(config.parent / rule.scorer.path, rule.scorer.sha256)
    outcomes = replay_outcomes(EvalSetup([data], rule_template(str(config), None), concurrency=8), progress=None)
    by_id = {r["id"]: r for r in load_eval_records([data])}
    for outcome in outcomes:
        record = by_id[outcome.id]
        expected = scorer.score({"messages": record["messages"]}, record["draft"]["text"])
        assert outcome.features["learned"] == pytest.approx(expected, rel=1e-12)
        assert outcome.accepted == (outcome.confidence >= rule.quality_threshold)
    assert 0 < sum(o.accepted for o in outcomes) < len(outcomes)  # it separates: some accepted, some escalated


def test_the_gateway_refuses_to_start_with_a_missing_or_altered_scorer_file(calibrated, tmp_path):
    config, _, _ = calibrated
    data = yaml.safe_load(config.read_text())
    model_file = config.parent / data["cascade_rules"][0]["scorer"]["path"]
    altered = dict(data, cascade_rules=[{**data["cascade_rules"][0], "scorer": {**data["cascade_rules"][0]["scorer"], "sha256": "0" * 64}}])
    missing = dict(data, cascade_rules=[{**data["cascade_rules"][0], "scorer": {"path": str(tmp_path / "gone.json")}}])
    for bad, message in ((altered, "does not match the config"), (missing, "cannot be read")):
        path = config.parent / f"bad-{message[:4]}.yaml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=message):
            create_app(ProxyConfig.from_yaml(path))
        result = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "proxy", "start", "-c", str(path), "--port", "0"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and message in result.stderr
    foreign = tmp_path / "foreign.json"
    foreign.write_bytes(orjson.dumps({**orjson.loads(model_file.read_bytes()), "features": ["other"]}))
    with pytest.raises(ConfigError, match="other features"):
        load_scorer(foreign, None)


def test_a_live_draft_is_scored_through_the_sdk(calibrated, fresh_sim, start_gateway):
    config, _, _ = calibrated
    rule = ProxyConfig.from_yaml(config).cascade_rules[0]
    scorer = load_scorer(config.parent / rule.scorer.path, rule.scorer.sha256)
    answer = "Let's think step by step. Today is 03/12/2001, so yesterday was 03/11/2001. The answer is 03/11/2001."
    fresh_sim.set_script([{"match": {"model": "gpt-3.5-turbo"}, "text": answer}])
    gateway = start_gateway(ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim, openai_key="k"),
        "cascade_rules": [{**rule.model_dump(mode="json", exclude_none=True), "scorer": {
            "path": str(config.parent / rule.scorer.path), "sha256": rule.scorer.sha256}}],
    }))  # fmt: skip
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="caller", max_retries=0)
    messages = [{"role": "user", "content": "Today is 3/12/2001. What was the date yesterday in MM/DD/YYYY?"}]
    for stream in (False, True):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4", messages=messages, stream=stream)
        checks = dict(pair.split("=") for pair in raw.headers["x-cascadeflow-checks"].split(","))
        expected = scorer.score({"messages": messages}, answer)
        assert float(checks["learned"]) == pytest.approx(expected, rel=1e-12)
        assert raw.headers["x-cascadeflow-draft-accepted"] == ("true" if expected >= rule.quality_threshold else "false")


def test_out_of_fold_scores_beat_random_escalation_on_data_without_logprobs():
    data = replay_file("mot_date")
    records = load_eval_records([data])
    outcomes = replay_outcomes(EvalSetup([data], {"quality_threshold": 0.0}, concurrency=8), progress=None)
    assert all("logprobs" not in o.features and "self_verify" not in o.features for o in outcomes)
    comparison = learned.versus_random(learned.out_of_fold_scores(outcomes, learned.record_features(records)), resamples=200)
    assert comparison["apgr_ci"][0] > 0.5  # the whole 95% interval above random escalation
    assert comparison["gain_ci"][0] > 0.0


def test_the_false_equation_signal_lifts_out_of_fold_ranking_on_math_drafts():
    """RouteLLM's Mixtral gsm8k drafts with a false equation in their working are mostly wrong: with that feature
    the scorer's out-of-fold AUROC is 0.69 (0.62 without; 95% interval 0.63–0.74)."""
    records = load_eval_records([replay_file("routellm_gsm8k")])
    outcomes = [Outcome(str(r["id"]), r["dataset"], None, False, float(r["draft"]["score"]), float(r["strong"]["score"]),
                        0.0, 0.0) for r in records]
    features = learned.record_features(records)
    column = FEATURES.index("false_equation")
    flagged = [o for o in outcomes if features[(o.dataset, o.id)][column] == 1.0]
    rest = [o for o in outcomes if features[(o.dataset, o.id)][column] == 0.0]
    assert len(flagged) >= 15
    assert sum(o.draft_score for o in flagged) / len(flagged) < 0.5 * sum(o.draft_score for o in rest) / len(rest)
    without = {k: [*v[:column], 0.0, *v[column + 1:]] for k, v in features.items()}
    with_signal = metrics.auroc(learned.out_of_fold_scores(outcomes, features))
    assert with_signal > metrics.auroc(learned.out_of_fold_scores(outcomes, without)) + 0.03


def test_a_model_file_from_an_older_feature_list_is_a_start_up_error(tmp_path):
    scorer = Scorer(tuple(0.1 for _ in FEATURES), 0.2, tuple(0.0 for _ in FEATURES), tuple(1.0 for _ in FEATURES), {})
    doc = orjson.loads(scorer.to_json())
    doc.update(format="cascadeflow-scorer/1", features=doc["features"][:-1], weights=doc["weights"][:-1],
               mean=doc["mean"][:-1], scale=doc["scale"][:-1])
    (tmp_path / "old.json").write_bytes(orjson.dumps(doc))
    with pytest.raises(ConfigError, match="other features"):
        load_scorer(tmp_path / "old.json", None)


def test_features_and_model_file_round_trip(tmp_path):
    features = text_features("Question: 2 + 2?\nA) 3\nB) 4", "B", 1)
    assert len(features) == len(FEATURES) and all(isinstance(x, float) for x in features)
    assert features[FEATURES.index("prompt_options")] == 1.0 and features[FEATURES.index("answer_is_letter")] == 1.0
    hedged = text_features("Who wrote Hamlet?", "I'm not sure, maybe Marlowe? Perhaps Shakespeare.", 1)
    assert hedged[FEATURES.index("hedging")] == 1.0 and hedged[FEATURES.index("hedge_words")] > 0
    scorer = Scorer(tuple(0.1 for _ in FEATURES), 0.2, tuple(0.0 for _ in FEATURES), tuple(1.0 for _ in FEATURES), {})
    digest = save_scorer(scorer, tmp_path / "s.json")
    loaded = load_scorer(tmp_path / "s.json", digest)
    assert loaded.probability(features) == pytest.approx(scorer.probability(features))


def test_a_huge_draft_is_scored_on_a_bounded_sample():
    scorer = Scorer(tuple(0.1 for _ in FEATURES), 0.0, tuple(0.0 for _ in FEATURES), tuple(1.0 for _ in FEATURES), {})
    huge = "All work and no play makes a dull answer. " * 50_000  # 2 MB
    features = text_features("Write something long.", huge, 1)
    assert features[FEATURES.index("answer_chars")] > features[FEATURES.index("prompt_chars")] + 10  # full length counted
    assert 0.0 < scorer.score({"messages": [{"role": "user", "content": "Write something long."}]}, huge) < 1.0
