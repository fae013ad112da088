"""Pass-through fidelity, checked with requests Claude Code really sent (../shared/fixtures)."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest

from tests.shared_data import CLAUDE_CODE_FIXTURES, require

FIXTURES = CLAUDE_CODE_FIXTURES  # ../shared beside the checkout
HOP_BY_HOP = {"connection", "host", "content-length", "accept-encoding", "keep-alive", "transfer-encoding"}


def recorded(name: str) -> list[dict]:
    path = require(FIXTURES / name)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def direct_answer(sim, record: dict, body: bytes) -> httpx.Response:
    """What the upstream itself answers to the same request."""
    with httpx.Client(base_url=sim.url) as direct:
        return replay(direct, record, body)


def replay(http: httpx.Client, record: dict, body: bytes) -> httpx.Response:
    headers = [(k, v) for k, v in record["headers"] if k.lower() not in HOP_BY_HOP]
    query = "&".join(f"{k}={v}" for k, values in record["query"].items() for v in values)
    return http.post(f"{record['path']}?{query}", content=body, headers=headers)


@pytest.mark.parametrize("fixture", ["thinking_block.requests.jsonl", "write_acceptedits.requests.jsonl", "reject_system_role.requests.jsonl"])
def test_claude_code_requests_are_forwarded_byte_for_byte(http, sim, fixture):
    for record in recorded(fixture)[:3]:
        if record["path"] != "/v1/messages":
            continue
        sim.clear()
        body = json.dumps(record["body"], indent=1).encode()  # odd formatting must survive too
        response = replay(http, record, body)
        received = sim.requests[-1]
        assert received["raw"] == body, "the body must reach the upstream exactly as sent"
        assert received["query"] in ("beta=true", {"beta": "true"}, {"beta": ["true"]})
        sent_headers = {k.lower(): v for k, v in record["headers"]}
        for name in ("anthropic-beta", "anthropic-version", "x-claude-code-session-id", "user-agent", "x-app", "x-stainless-retry-count"):
            assert received["headers"][name] == sent_headers[name]
        assert received["headers"]["x-api-key"] == "sk-ant-route-key"  # the route's key, not the caller's
        assert "connection" not in received["headers"] or received["headers"]["connection"].lower() == "keep-alive"
        # the upstream's verdict is relayed: these recordings were answered by a lenient logging server, so
        # some break Anthropic's thinking rules and the simulator refuses them as the real API would
        direct = direct_answer(sim, record, body)
        assert response.status_code == direct.status_code, response.text
        if direct.status_code == 200:  # streams come back as Anthropic events
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "event: message_stop" in response.text
        else:
            assert response.json()["error"] == direct.json()["error"]


def test_thinking_signatures_and_system_role_entries_survive(http, sim):
    records = recorded("thinking_block.requests.jsonl")
    follow_up = next(r for r in records if any(
        isinstance(m.get("content"), list) and any(b.get("type") == "thinking" for b in m["content"])
        for m in r["body"]["messages"]
    ))
    body = orjson.dumps(follow_up["body"])
    response = replay(http, follow_up, body)
    received = sim.requests[-1]["body"]
    # the recorded signature came from a logging server: the upstream refuses it, and the refusal is relayed
    assert response.status_code == 400 and "Invalid `signature`" in response.json()["error"]["message"]
    assert received == follow_up["body"]
    thinking = [b for m in received["messages"] if isinstance(m.get("content"), list) for b in m["content"] if b.get("type") == "thinking"]
    assert thinking and all(b["signature"] for b in thinking)
    assert received["system"] == follow_up["body"]["system"]  # cache_control blocks intact


def test_model_rewrite_changes_nothing_else(http, sim):
    record = recorded("write_acceptedits.requests.jsonl")[0]
    body = {**record["body"], "model": "anthropic/claude-opus-5-5", "stream": False}
    assert replay(http, record, orjson.dumps(body)).status_code == 200
    received = sim.requests[-1]["body"]
    assert received["model"] == "claude-opus-5-5"
    assert {**received, "model": None} == {**body, "model": None}


def test_caller_key_is_forwarded_only_on_pass_through_routes(sim, start_gateway):
    from tests.conftest import sim_config

    config = sim_config(sim)
    routes = [config.routes[0].model_copy(update={"pass_through_auth": True}), config.routes[1].model_copy(update={"api_key": None})]
    gw = start_gateway(config.model_copy(update={"routes": routes}))
    body = {"model": "claude-haiku-5-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=gw.url) as http:
        http.post("/v1/messages", json=body, headers={"x-api-key": "sk-ant-callers-own"})
        assert sim.requests[-1]["headers"]["x-api-key"] == "sk-ant-callers-own"
        assert "authorization" not in sim.requests[-1]["headers"]
        # an OAuth token (Claude Code's ANTHROPIC_AUTH_TOKEN) travels as the bearer it is
        http.post("/v1/messages", json=body, headers={"authorization": "Bearer oauth-token-123"})
        assert sim.requests[-1]["headers"]["authorization"] == "Bearer oauth-token-123"
        assert "x-api-key" not in sim.requests[-1]["headers"]
        # a route without a key of its own forwards the caller's
        http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
                  headers={"authorization": "Bearer sk-callers-openai"})
        assert sim.requests[-1]["headers"]["authorization"] == "Bearer sk-callers-openai"


def test_upstream_headers_come_back_but_hop_by_hop_do_not(http, sim):
    response = http.post("/v1/messages", json={"model": "claude-haiku-5-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert response.headers["x-cascadeflow-route"] == "anthropic"
    assert float(response.headers["x-cascadeflow-cost-usd"]) > 0
    assert "transfer-encoding" not in response.headers or response.headers.get("content-length") is None
