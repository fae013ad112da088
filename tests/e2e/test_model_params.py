"""Each model gets only the parameters it accepts: drafts, self-verification and samples on OpenAI's
reasoning models (GPT-5 family) carry no ``logprobs``, no sampling settings and no ``max_tokens``.

The simulator refuses those parameters for such models exactly as OpenAI does (400,
``unsupported_parameter``), so a draft sent with them would escalate after a wasted round trip.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from cascadeflow import ProxyConfig
from tests.conftest import sim_routes

GPT, MINI = "gpt-5.4", "gpt-5.4-mini"
SCRIPT = [
    {"match": {"model": MINI, "prompt_contains": "Is the answer above correct"}, "text": "Y"},
    {"match": {"model": MINI}, "text": "The answer is 4."},
]
REFUSED = ("logprobs", "top_logprobs", "max_tokens")


def gateway_config(sim, openai_api: str = "chat") -> ProxyConfig:
    routes = sim_routes(sim, anthropic_key="k", openai_key="k")
    for route in routes:
        if route["provider"] == "openai":
            route["openai_api"] = openai_api  # "responses": Responses callers reach it untranslated
    return ProxyConfig.from_dict({
        "routes": routes,
        "cascade_rules": [
            {"name": "plain", "request_model": GPT, "draft_model": MINI, "quality_threshold": 0.5},
            {"name": "verified", "request_model": "gpt-5.5", "draft_model": MINI, "quality_threshold": 0.5,
             "self_verify": {}},
            {"name": "sampled", "request_model": "sampled-gpt", "draft_model": MINI, "verifier_model": GPT,
             "quality_threshold": 0.5, "sample_agreement": {"samples": 2, "temperature": 0.7}},
        ],
    })


@pytest.fixture(scope="module")
def params_gw(sim, start_gateway):
    return start_gateway(gateway_config(sim))


@pytest.fixture(scope="module")
def native_responses_gw(sim, start_gateway):
    return start_gateway(gateway_config(sim, "responses"))


@pytest.fixture()
def gw(params_gw, fresh_sim):
    fresh_sim.set_script(SCRIPT)
    return params_gw


def ask_openai(gw, model: str, stream: bool):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="caller", max_retries=0)
    kwargs = {"model": model, "messages": [{"role": "user", "content": "What is 2 + 2?"}],
              "max_completion_tokens": 300}
    raw = client.chat.completions.with_raw_response.create(stream=stream, **kwargs)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].message.content
    return text, raw.headers


def checks(headers) -> dict[str, float]:
    return {name: float(score) for name, score in (p.split("=") for p in headers["x-cascadeflow-checks"].split(","))}


def assert_fitted(sim, *, calls: int) -> list[dict]:
    """Every call reached the draft model in a shape it accepts, and none was refused."""
    sent = [r for r in sim.requests if r["path"] == "/v1/chat/completions"]
    assert [r["body"]["model"] for r in sent] == [MINI] * calls, "the draft was accepted: no verifier call"
    for record in sent:
        assert record["usage"] is not None, "the simulator refused a call (400)"
        assert not set(REFUSED) & set(record["body"]), record["body"]
        assert record["body"].get("temperature", 1) == 1
    return [r["body"] for r in sent]


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_draft_is_sent_what_it_accepts(gw, fresh_sim, stream):
    text, headers = ask_openai(gw, GPT, stream)
    assert text == "The answer is 4." and headers["x-cascadeflow-draft-accepted"] == "true"
    (body,) = assert_fitted(fresh_sim, calls=1)
    assert body["max_completion_tokens"] == 300
    assert checks(headers) == {"structural": 1.0}, "no log-probabilities: that check does not apply"


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_self_verification_is_sent_what_it_accepts(gw, fresh_sim, stream):
    text, headers = ask_openai(gw, "gpt-5.5", stream)
    assert headers["x-cascadeflow-draft-accepted"] == "true", headers
    draft, verify = assert_fitted(fresh_sim, calls=2)
    assert verify["messages"][-1]["content"].startswith("Is the answer above correct")
    assert isinstance(verify["max_completion_tokens"], int)
    assert checks(headers) == {"structural": 1.0, "self_verify": 1.0}  # a "Y" without log-probabilities: P(yes)=1


def test_reasoning_samples_are_sent_without_temperature(gw, fresh_sim):
    text, headers = ask_openai(gw, "sampled-gpt", False)
    assert headers["x-cascadeflow-draft-accepted"] == "true", headers
    assert_fitted(fresh_sim, calls=3)
    assert checks(headers) == {"structural": 1.0, "agreement": 1.0}


@pytest.mark.parametrize("stream", [False, True])
def test_translated_reasoning_draft_gets_no_logprobs(gw, fresh_sim, stream):
    """An Anthropic caller of a GPT-5 model: the translated draft carries no ``logprobs`` either."""
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    kwargs = {"model": GPT, "max_tokens": 300, "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    raw = client.messages.with_raw_response.create(stream=stream, **kwargs)
    if stream:
        list(raw.parse())
    assert raw.headers["x-cascadeflow-draft-accepted"] == "true"
    (body,) = assert_fitted(fresh_sim, calls=1)
    assert body["max_completion_tokens"] == 300


@pytest.mark.parametrize("native", [False, True])
def test_responses_samples_on_a_reasoning_model_carry_no_temperature(gw, native_responses_gw, fresh_sim, native):
    """A Responses caller (Codex), translated to chat or not: the draft and its samples go out without a
    temperature (the caller's or the rule's)."""
    url = (native_responses_gw if native else gw).url
    client = openai.OpenAI(base_url=url + "/v1", api_key="caller", max_retries=0)
    raw = client.responses.with_raw_response.create(model="sampled-gpt", input="What is 2 + 2?", temperature=0.2)
    assert raw.parse().output_text == "The answer is 4." and raw.headers["x-cascadeflow-draft-accepted"] == "true"
    sent = [r for r in fresh_sim.requests if r["path"] in ("/v1/responses", "/v1/chat/completions")]
    assert [r["body"]["model"] for r in sent] == [MINI] * 3, [r["path"] for r in fresh_sim.requests]
    assert all(r["usage"] is not None and "temperature" not in r["body"] for r in sent), [r["body"] for r in sent]
    assert {r["path"] for r in sent} == {"/v1/responses" if native else "/v1/chat/completions"}
    assert checks(raw.headers) == {"structural": 1.0, "agreement": 1.0}
