"""The pre-generation router end to end: a router trained on labelled records sends a request it predicts the
draft fails straight to the verifier (the simulator sees no draft call) and lets an easy one draft; the gateway
refuses to start with a missing or altered router file."""

from __future__ import annotations

import httpx
import openai
import pytest

from cascadeflow import ProxyConfig, create_app
from cascadeflow.cascade.router import load_router, save_router
from cascadeflow.errors import ConfigError
from cascadeflow.evaluation import routing
from cascadeflow.evaluation.metrics import Outcome
from tests.conftest import sim_routes

DRAFT, VERIFIER = "gpt-5.4-mini", "gpt-5.4"
CITIES = ["France", "Japan", "Peru", "Kenya", "Norway", "Chile", "Egypt", "Spain", "Italy", "Ghana", "Nepal", "Cuba"]


def _records() -> list[dict]:
    """Capital-city questions the draft gets right; multi-step arithmetic word problems it gets wrong."""
    easy = [f"What is the capital of {c}?" for c in CITIES]
    hard = [f"A shop sells {n} boxes of {n + 7} pencils at ${n}.{n % 10}5 each and then {n * 3} more boxes. "
            f"How many pencils were sold in total, and how much money, if {n % 4} boxes were returned? "
            f"Calculate step by step: {n} * {n + 7} + {n * 3} * {n + 7} - {n % 4} * {n + 7} = ?" for n in range(3, 15)]
    return ([{"id": f"e{i}", "dataset": "t", "messages": [{"role": "user", "content": p}], "good": True} for i, p in enumerate(easy)]
            + [{"id": f"h{i}", "dataset": "t", "messages": [{"role": "user", "content": p}], "good": False} for i, p in enumerate(hard)])


@pytest.fixture(scope="module")
def router_file(tmp_path_factory):
    records = _records()
    features = routing.request_features(records)
    outcomes = [Outcome(r["id"], "t", None, False, 1.0 if r["good"] else 0.0, 1.0, 0.001, 0.01) for r in records]
    router = routing.train_router(outcomes, features)
    path = tmp_path_factory.mktemp("router") / "rule.router.json"
    return path, save_router(router, path)


def _config(sim, path, sha256, threshold=0.5) -> ProxyConfig:
    return ProxyConfig.from_dict({
        "routes": sim_routes(sim, openai_key="k"),
        "cascade_rules": [{"name": "routed", "request_model": VERIFIER, "draft_model": DRAFT, "quality_threshold": 0.5,
                           "router": {"path": str(path), "sha256": sha256, "threshold": threshold}}],
    })


def test_a_trained_router_sends_a_predicted_hard_request_straight_to_the_verifier(fresh_sim, start_gateway, router_file):
    path, digest = router_file
    gateway = start_gateway(_config(fresh_sim, path, digest))
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="caller", max_retries=0)
    hard = ("A farm has 17 rows of 23 apple trees and sells 4 crates of 12 apples from each tree at $3.75 a crate. "
            "How many apples were sold in total, and how much money did it make? Calculate: 17 * 23 * 4 * 12 = ?")
    easy = "What is the capital of Portugal?"
    before = httpx.get(gateway.url + "/stats").json()["cascade"].get("routed", {})
    for stream in (False, True):
        fresh_sim.clear()
        raw = client.chat.completions.with_raw_response.create(
            model=VERIFIER, messages=[{"role": "user", "content": hard}], stream=stream)
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        else:
            assert raw.parse().choices[0].message.content
        assert raw.headers["x-cascadeflow-decision"] == "skipped:router"
        assert float(raw.headers["x-cascadeflow-router-confidence"]) < 0.5
        assert [r["body"]["model"] for r in fresh_sim.requests if r["path"].endswith("/completions")] == [VERIFIER]

        fresh_sim.clear()
        raw = client.chat.completions.with_raw_response.create(
            model=VERIFIER, messages=[{"role": "user", "content": easy}], stream=stream)
        list(raw.parse()) if stream else raw.parse()
        assert raw.headers["x-cascadeflow-decision"] == "accepted"
        assert float(raw.headers["x-cascadeflow-router-confidence"]) >= 0.5
        assert [r["body"]["model"] for r in fresh_sim.requests if r["path"].endswith("/completions")] == [DRAFT]
    after = httpx.get(gateway.url + "/stats").json()["cascade"]["routed"]
    assert after["skipped_by_policy"]["router"] - before.get("skipped_by_policy", {}).get("router", 0) == 2
    # the router's scores are the ones calibration computes from the same text
    router = load_router(path, digest)
    features = routing.request_features([{"id": "x", "dataset": "t", "messages": [{"role": "user", "content": hard}]}])
    assert router.score({"messages": [{"role": "user", "content": hard}]}) == router.probability(features[("t", "x")])


def test_the_gateway_refuses_to_start_with_a_missing_altered_or_foreign_router_file(sim, router_file, tmp_path):
    path, digest = router_file
    with pytest.raises(ConfigError, match="does not match the config"):
        create_app(_config(sim, path, "0" * 64))
    with pytest.raises(ConfigError, match="cannot be read"):
        create_app(_config(sim, tmp_path / "gone.json", None))
    foreign = tmp_path / "foreign.json"
    foreign.write_bytes(path.read_bytes().replace(b'"prompt_chars"', b'"other"'))
    with pytest.raises(ConfigError, match="other features"):
        create_app(_config(sim, foreign, None))


COUNTRIES = ["France", "Japan", "Peru", "Kenya", "Norway", "Chile", "Egypt", "Spain", "Italy", "Ghana", "Nepal", "Cuba",
             "Chad", "Fiji", "Iran", "Iraq", "Laos", "Mali", "Oman", "Togo", "Benin", "Gabon", "Haiti", "India", "Italy",
             "Libya", "Malta", "Nauru", "Niger", "Palau", "Qatar", "Samoa", "Sudan", "Syria", "Tonga", "Yemen", "Zambia",
             "Brazil", "Canada", "Mexico"]
THEMES = ["capital", "largest city", "official language", "currency", "highest mountain"]


def _replay_records() -> list[dict]:
    """Short factual questions the draft answers well; arithmetic word problems it gets wrong. Every draft is
    fluent (the structural check scores all 1.0), and there are no log-probabilities: no check ranks them."""
    out = []
    for i in range(100):
        easy = f"What is the {THEMES[i % len(THEMES)]} of {COUNTRIES[i % len(COUNTRIES)]}?"
        n = i + 3
        hard = (f"A warehouse ships {n * 7} crates of {n + 11} units at ${n}.{n % 10}5 per unit, then {n * 2} more "
                f"crates. How many units in total, and how much money? Calculate {n * 7} * {n + 11} + {n * 2} * {n + 11}.")
        for kind, prompt, good in (("e", easy, True), ("h", hard, False)):
            side = {"input_tokens": 40, "output_tokens": 60, "answer_logprob": None, "self_verify_logprob": None}
            out.append({
                "id": f"{kind}{i}", "dataset": "synthetic/router", "task_type": "short_answer",
                "messages": [{"role": "user", "content": prompt}], "reference": None, "license_note": "test",
                "draft": {**side, "model": "gpt-4o-mini", "text": f"Here is the answer to question {kind}{i}: see above.",
                          "score": 1.0 if good else 0.0, "correct": good, "cost_usd": 0.0004},
                "strong": {**side, "model": "gpt-4o", "text": f"The answer to {kind}{i}.", "score": 1.0, "correct": True,
                           "cost_usd": 0.004},
            })
    return out


def test_calibrate_keeps_a_router_that_pays_and_eval_shows_what_it_routed(tmp_path):
    import subprocess
    import sys

    import orjson
    import yaml

    data = tmp_path / "routed.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(r) for r in _replay_records()) + b"\n")
    config = tmp_path / "cascadeflow-proxy.yaml"
    config.write_text("cascade_rules:\n  - {name: mini, request_model: gpt-4o, draft_model: gpt-4o-mini}\n")
    result = subprocess.run(
        [sys.executable, "-m", "cascadeflow.cli", "calibrate", "--data", str(data), "--target-quality", "0.95",
         "--config", str(config), "--folds", "3", "--no-scorer"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = {line.strip().split(":")[0]: line for line in result.stdout.splitlines()}
    assert "no better than random" in lines["threshold on the combined check score"]  # every draft scores 1.0
    router_line = next(line for line in result.stdout.splitlines() if "pre-generation router" in line)
    assert router_line.endswith("<- chosen"), result.stdout
    rule = yaml.safe_load(config.read_text())["cascade_rules"][0]
    assert not rule.get("never_draft") and set(rule["router"]) == {"path", "sha256", "threshold"}
    assert (tmp_path / rule["router"]["path"]).is_file() and rule["router"]["path"].endswith(".router.json")

    shown = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "eval", "--data", str(data), "--config", str(config)],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    row = shown.stdout.split("pre-generation router:")[1].splitlines()[2].split()
    assert row[0] == "synthetic/router" and row[1] == "50.0%" and row[2] == "0.0%"  # the hard half, no good draft lost
    assert row[3] == "5.0%"  # its drafts (10% of the strong price) not paid
