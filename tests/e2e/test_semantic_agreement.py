"""Semantic sample agreement through the gateway: free-form drafts whose samples say the same thing in other
words are accepted, samples that say something else escalate; exact final-answer agreement tells neither apart."""

from __future__ import annotations

import openai
import pytest

from cascadeflow import ProxyConfig
from tests.conftest import sim_routes

DRAFT, VERIFIER = "gpt-4o-mini", "gpt-4o"
ANSWER = ("Paris is the capital of France. It sits on the Seine and is known for the Eiffel Tower and the "
          "Louvre museum.")
SAME = "The capital of France is Paris, a city on the Seine famous for the Eiffel Tower and the Louvre."
OTHER = "Lyon is the capital of France. It lies where the Rhone meets the Saone and is known for its cuisine."


def _gateway(sim, start_gateway, mode: str):
    return start_gateway(ProxyConfig.from_dict({
        "routes": sim_routes(sim, openai_key="k"),
        "cascade_rules": [{"name": f"agree-{mode}", "request_model": VERIFIER, "draft_model": DRAFT,
                           "quality_threshold": 0.8, "checks": ["structural"],
                           "sample_agreement": {"samples": 2, "mode": mode}}],
    }))


@pytest.mark.parametrize("mode", ["semantic", "auto"])
def test_samples_that_mean_the_same_accept_a_free_form_draft_and_others_escalate(fresh_sim, start_gateway, mode):
    gateway = _gateway(fresh_sim, start_gateway, mode)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="caller", max_retries=0)
    ask = [{"role": "user", "content": "Tell me about the capital of France."}]
    for sample, accepted in ((SAME, True), (OTHER, False)):
        fresh_sim.clear()
        fresh_sim.set_script([{"match": {"model": DRAFT}, "times": 1, "text": ANSWER},
                              {"match": {"model": DRAFT}, "text": sample}])
        raw = client.chat.completions.with_raw_response.create(model=VERIFIER, messages=ask)
        checks = dict(pair.split("=") for pair in raw.headers["x-cascadeflow-checks"].split(","))
        score = float(checks["semantic_agreement"])
        assert (score > 0.9) if accepted else (score < 0.6)
        assert raw.headers["x-cascadeflow-draft-accepted"] == ("true" if accepted else "false")
        models = [r["body"]["model"] for r in fresh_sim.requests if r["path"].endswith("/completions")]
        assert models.count(DRAFT) == 3 and models.count(VERIFIER) == (0 if accepted else 1)  # 2 samples, paid
        if accepted:
            assert raw.parse().choices[0].message.content == ANSWER


def test_exact_agreement_cannot_tell_a_paraphrase_from_a_contradiction(fresh_sim, start_gateway):
    gateway = _gateway(fresh_sim, start_gateway, "exact")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="caller", max_retries=0)
    for sample in (SAME, OTHER):
        fresh_sim.clear()
        fresh_sim.set_script([{"match": {"model": DRAFT}, "times": 1, "text": ANSWER},
                              {"match": {"model": DRAFT}, "text": sample}])
        raw = client.chat.completions.with_raw_response.create(
            model=VERIFIER, messages=[{"role": "user", "content": "Tell me about the capital of France."}])
        assert "agreement=0.0" in raw.headers["x-cascadeflow-checks"]
        assert raw.headers["x-cascadeflow-draft-accepted"] == "false"


def test_auto_compares_short_final_answers_exactly(fresh_sim, start_gateway):
    gateway = _gateway(fresh_sim, start_gateway, "auto")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="caller", max_retries=0)
    fresh_sim.set_script([{"match": {"model": DRAFT}, "times": 1, "text": "Answer: 42"},
                          {"match": {"model": DRAFT}, "text": "Answer: 42"}])
    raw = client.chat.completions.with_raw_response.create(model=VERIFIER, messages=[{"role": "user", "content": "6*7?"}])
    assert "agreement=1.0" in raw.headers["x-cascadeflow-checks"].split(",")
    assert raw.headers["x-cascadeflow-draft-accepted"] == "true"
