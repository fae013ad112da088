"""Capability gates for parameters: a draft model never gets a Claude Code request it would refuse.

A request the Claude Code CLI really sent (``../shared/fixtures/claude-code/``: adaptive thinking,
``output_config.effort``, ``context_management``, a role-``system`` message with its own effort,
``max_tokens: 128000``, its ``anthropic-beta`` header) is sent with the Anthropic SDK through a
cascade whose draft model lacks some of those features. The simulator refuses what the real API
refuses for that model (:mod:`cascadeflow.model_features`), so a draft sent unfitted would fail.
"""

from __future__ import annotations

import copy
import uuid

import anthropic
import orjson
import pytest

from cascadeflow import ProxyConfig
from tests.conftest import sim_routes
from tests.shared_data import CLAUDE_CODE_FIXTURES, require

OPUS = "claude-opus-5-5"
#: accepts adaptive thinking and context editing; effort up to ``max`` (no ``xhigh``); 64k output tokens
SONNET_46 = "claude-sonnet-4-6"
#: no effort parameter, no adaptive thinking
HAIKU_45 = "claude-haiku-4-5"
_DROPPED = {"model", "messages", "system", "tools", "max_tokens", "thinking", "stream", "metadata"}


def claude_code_request() -> tuple[dict, dict]:
    """The first request of a recorded Claude Code session: its body and the headers that matter here."""
    path = require(CLAUDE_CODE_FIXTURES / "question_and_write.requests.jsonl")
    record = orjson.loads(path.read_text().splitlines()[0])
    headers = {name: value for name, value in record["headers"] if name.lower() in ("anthropic-beta", "x-app")}
    return copy.deepcopy(record["body"]), headers


def send(gw, body: dict, headers: dict):
    """``body`` as Claude Code sends it, through the SDK (fields the SDK has no argument for go in ``extra_body``)."""
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    extra = {k: v for k, v in body.items() if k not in _DROPPED}
    session = {"X-Claude-Code-Session-Id": str(uuid.uuid4()), **headers}
    raw = client.messages.with_raw_response.create(
        model=body["model"], max_tokens=body["max_tokens"], messages=body["messages"], system=body["system"],
        tools=body["tools"], thinking=body["thinking"], metadata=body["metadata"], stream=True, extra_body=extra,
        extra_headers=session)
    events = [event.type for event in raw.parse()]  # Claude Code streams every request
    assert events[0] == "message_start" and events[-1] == "message_stop", events
    return raw.headers


@pytest.fixture()
def gateway(sim, fresh_sim, start_gateway):
    def make(draft: str):
        rule = {"name": "opus", "request_model": OPUS, "draft_model": draft, "quality_threshold": 0.0,
                "policies": {"cache_economics": False}}  # the gates, not the prices, are under test
        return start_gateway(ProxyConfig.from_dict({"routes": sim_routes(sim), "cascade_rules": [rule]}))
    return make


def test_the_simulator_refuses_what_the_model_refuses(sim, fresh_sim):
    """Sent straight to the upstream, each feature the model lacks is a 400 in Anthropic's words."""
    body, _ = claude_code_request()
    client = anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=0)
    extra = {k: v for k, v in body.items() if k not in _DROPPED}

    def ask(model: str, **changes) -> None:
        fields = {"max_tokens": 1000, "messages": body["messages"], "thinking": body["thinking"], "extra_body": extra,
                  **changes}
        client.messages.create(model=model, **fields)

    with pytest.raises(anthropic.BadRequestError, match="This model does not support the effort parameter"):
        ask(HAIKU_45)
    with pytest.raises(anthropic.BadRequestError, match='"xhigh" is not supported'):
        ask(SONNET_46, extra_body={**extra, "output_config": {"effort": "xhigh"}})
    with pytest.raises(anthropic.BadRequestError, match="adaptive thinking is not supported"):
        ask(HAIKU_45, messages=body["messages"][:1], extra_body={})
    with pytest.raises(anthropic.BadRequestError, match="context editing"):
        ask("claude-3-7-sonnet-latest", messages=body["messages"][:1], thinking=anthropic.NOT_GIVEN,
            extra_body={"context_management": extra["context_management"]})
    ask(SONNET_46)  # what it supports, it serves
    assert [r["body"]["model"] for r in sim.requests][-1] == SONNET_46


def test_a_tuning_parameter_the_draft_lacks_is_left_out_of_the_draft(gateway, sim):
    """Claude Code at ``/effort xhigh``, drafted on a model without ``xhigh`` (and with a 64k output limit):
    the draft is sent without the effort and with ``max_tokens`` fitted, and serves the request; the
    verifier is never asked."""
    gw = gateway(SONNET_46)
    body, headers = claude_code_request()
    body["output_config"] = {"effort": "xhigh"}
    sim.set_script([{"match": {"model": SONNET_46}, "text": "4"}])
    response = send(gw, body, headers)
    assert response["x-cascadeflow-decision"] == "accepted", response.get("x-cascadeflow-decision")
    assert response["x-cascadeflow-served-model"] == SONNET_46
    [draft] = [r["body"] for r in sim.requests]
    assert draft["model"] == SONNET_46 and "output_config" not in draft and draft["max_tokens"] == 64_000
    assert draft["context_management"] == body["context_management"], "what the draft supports is kept"
    assert draft["messages"][1]["output_config"] == {"effort": "medium"}, "a level it has is kept"


def test_a_feature_the_draft_cannot_serve_sends_the_request_to_the_verifier(gateway, sim):
    """Drafted on Claude Haiku 4.5 (no effort, no adaptive thinking): the request goes straight to the
    verifier, no draft is paid for, and the reason is counted in /stats."""
    gw = gateway(HAIKU_45)
    body, headers = claude_code_request()
    response = send(gw, body, headers)
    assert response["x-cascadeflow-decision"] == "skipped:capability:message_effort"
    assert [r["body"]["model"] for r in sim.requests] == [OPUS], "no draft was sent to be refused"
    # without Claude Code's per-message effort: adaptive thinking is what Haiku 4.5 refuses
    for message in body["messages"]:
        message.pop("output_config", None)
    response = send(gw, body, headers)
    assert response["x-cascadeflow-decision"] == "skipped:capability:thinking"
    stats = anthropic.Anthropic(base_url=gw.url, api_key="x")._client.get(f"{gw.url}/stats").json()
    skipped = stats["cascade"]["opus"]["skipped_by_policy"]
    assert skipped["capability:message_effort"] == 1 and skipped["capability:thinking"] == 1
    # without thinking either, only the top-level effort is left: fitted, and the draft is tried
    body["thinking"] = {"type": "disabled"}
    sim.clear()
    sim.set_script([{"match": {"model": HAIKU_45}, "text": "4"}])
    response = send(gw, body, headers)
    assert response["x-cascadeflow-draft-model"] == HAIKU_45 and response["x-cascadeflow-decision"] == "accepted"
    assert "output_config" not in sim.requests[0]["body"]
