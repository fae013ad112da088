"""A client that leaves before its answer has started: a non-streaming call, or a streaming cascade
still reading its draft. The upstream call is closed at once (the simulator sees its connection
go), the verifier is never opened, and the ledger records the request as cancelled (499) with
the cost of what was used — a draft read partially priced as cut streams are.
"""

from __future__ import annotations

import time

import httpx
import pytest

from cascadeflow import ProxyConfig
from tests.conftest import ledger_rows, sim_routes

OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
SCRIPT = [
    {"match": {"prompt_contains": "slow answer"}, "latency": 5},
    {"match": {"model": HAIKU, "prompt_contains": "slow draft"}, "words": 600, "chunk_delay": 0.01},
]


@pytest.fixture()
def setup(fresh_sim, start_gateway, tmp_path):
    fresh_sim.set_script(SCRIPT)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = start_gateway(ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim, anthropic_key="k", openai_key="k"),
        "cascade_rules": [{"name": "opus", "request_model": OPUS, "draft_model": HAIKU},
                          {"name": "gpt", "request_model": "gpt-4o", "draft_model": "gpt-4o-mini"}],
        "database_url": url,
    }))
    return fresh_sim, gw, url


def leave_early(gw, prompt: str, model: str, *, stream: bool, after: float = 0.4) -> float:
    """Send the request and hang up after ``after`` seconds, before any byte of the answer; when we left."""
    body = {"model": model, "max_tokens": 1000, "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/messages", json=body, timeout=httpx.Timeout(10, read=after))
    return time.monotonic()


def wait_for(condition, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def upstream_models(sim) -> list[str]:
    return [r["body"]["model"] for r in sim.requests if r["path"] == "/v1/messages"]


@pytest.mark.parametrize(("model", "served"), [(SONNET, None), (OPUS, HAIKU)])
def test_non_streaming_call_is_cancelled_when_the_client_leaves(setup, model, served):
    sim, gw, url = setup
    left = leave_early(gw, "A slow answer, please", model, stream=False)
    wait_for(lambda: sim.disconnects)
    assert sim.disconnects, "the upstream call ran on after the client left"
    assert sim.disconnects[0]["at"] - left < 0.5
    time.sleep(0.3)
    assert upstream_models(sim) == [model if served is None else served], "no verifier after the client left"
    (row,) = ledger_rows(url, at_least=1)
    assert row["status"] == 499 and row["cancelled"]
    # the upstream read the prompt before the client left: its input is counted (no answer, no output)
    assert row["input_tokens"] > 0 and row["output_tokens"] == 0 and row["cost"] > 0
    if served is not None:
        assert row["draft_model"] == served


def test_streaming_cascade_cancelled_while_reading_its_draft(setup):
    sim, gw, url = setup
    left = leave_early(gw, "A slow draft, please", OPUS, stream=True, after=1.0)
    wait_for(lambda: sim.disconnects)
    assert sim.disconnects and sim.disconnects[0]["model"] == HAIKU
    assert sim.disconnects[0]["at"] - left < 0.5, "the draft's stream was closed when the client left"
    time.sleep(0.3)
    assert upstream_models(sim) == [HAIKU], "the verifier is never opened after the client left"
    (row,) = ledger_rows(url, at_least=1)
    assert row["status"] == 499 and row["cancelled"] and row["draft_model"] == HAIKU
    # the draft was read for about a second (≈100 of its 600 words): priced for what it generated
    assert 20 < row["output_tokens"] < 600 and row["cost"] > 0
    stats = httpx.get(gw.url + "/stats").json()
    assert stats["cancelled_streams"] == 1 and stats["errors"].get("499") == 1


def test_openai_cascade_json_call_cancelled_before_the_draft_answers(setup):
    sim, gw, url = setup
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "A slow answer, please"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(10, read=0.4))
    left = time.monotonic()
    wait_for(lambda: sim.disconnects)
    assert sim.disconnects and sim.disconnects[0]["model"] == "gpt-4o-mini" and sim.disconnects[0]["at"] - left < 0.5
    time.sleep(0.3)
    assert [r["body"]["model"] for r in sim.requests] == ["gpt-4o-mini"], "no verifier after the client left"
    (row,) = ledger_rows(url, at_least=1)
    assert row["status"] == 499 and row["cancelled"] and row["draft_model"] == "gpt-4o-mini" and row["cost"] > 0
    stats = httpx.get(gw.url + "/stats").json()
    assert stats["errors"].get("499") == 1
