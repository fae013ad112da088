"""A client that leaves before its answer has started: a non-streaming call, or a streaming cascade
still reading its draft. The upstream call is closed at once (the simulator sees its connection
go), the verifier is never opened, and the ledger records the request as cancelled (499) with
the cost of what was used — a draft read partially priced as cut streams are.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from cascadeflow import ProxyConfig
from tests import needs
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


def leave_early(gw, prompt: str, model: str, *, stream: bool, after: float = 0.4,
                until: Callable[[], object] = lambda: True) -> float:
    """Send the request, then hang up ``after`` seconds later — not before ``until()`` holds (the upstream has the
    call: a loaded machine may take longer than ``after`` to send it) — before any byte of the answer has come;
    when we left."""
    body = json.dumps({"model": model, "max_tokens": 1000, "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    address = httpx.URL(gw.url)
    with socket.create_connection((address.host, address.port), timeout=10) as connection:
        connection.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: %b\r\ncontent-type: application/json\r\n"
                           b"content-length: %d\r\n\r\n%b" % (address.host.encode(), len(body), body))
        time.sleep(after)
        wait_for(until, 10)
        assert until(), "the upstream never got the call"
        connection.setblocking(False)
        with pytest.raises(BlockingIOError):
            connection.recv(1)  # nothing of the answer has come
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
    left = leave_early(gw, "A slow answer, please", model, stream=False, until=lambda: upstream_models(sim))
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
    left = leave_early(gw, "A slow draft, please", OPUS, stream=True, after=1.0, until=lambda: upstream_models(sim))
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


def test_a_stream_whose_client_left_before_it_started_is_settled(fresh_sim, start_gateway, tmp_path):
    """The client leaves while the upstream's headers are still coming: the answer's body is never
    started by the server, yet the stream is counted closed, recorded, and its slot given back."""
    fresh_sim.set_script([{"match": {"prompt_contains": "late headers"}, "first_byte_delay": 1.0,
                           "words": 200, "chunk_delay": 0.05}])
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = start_gateway(ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim, anthropic_key="k", openai_key="k"), "database_url": url,
        "server": {"max_concurrent_streams": 1},
    }))
    leave_early(gw, "late headers, please", SONNET, stream=True, after=0.3, until=lambda: fresh_sim.requests)
    wait_for(lambda: httpx.get(gw.url + "/health").json()["active_streams"] == 0, 5)
    assert httpx.get(gw.url + "/health").json()["active_streams"] == 0, "the stream's slot was never given back"
    (row,) = ledger_rows(url, at_least=1)
    assert row["status"] == 499 and row["cancelled"] and row["input_tokens"] > 0
    body = {"model": SONNET, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(gw.url + "/v1/messages", json=body).status_code == 200  # not 429: no stream is open


def test_a_cascade_cancelled_during_self_verification_is_priced_counted_and_remembered(fresh_sim, start_gateway,
                                                                                        tmp_path):
    """The client leaves while the self-verification call is in flight: that call is priced on its input,
    the rule's /stats totals count the request, and the conversation records the models it called."""
    import redis

    from cascadeflow.sessions.state import _PREFIX, SessionState

    redis_url = os.environ.get("CASCADEFLOW_TEST_REDIS", "redis://127.0.0.1:6379/7")
    store = redis.Redis.from_url(redis_url)
    try:
        before = set(store.keys(_PREFIX + "*"))
    except redis.RedisError as exc:
        pytest.skip(needs.redis(redis_url, "CASCADEFLOW_TEST_REDIS", exc))
    fresh_sim.set_script([{"match": {"model": SONNET}, "latency": 5}])  # the verification model is slow
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = start_gateway(ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim, anthropic_key="k", openai_key="k"), "database_url": url,
        "redis_url": redis_url,
        "cascade_rules": [{"name": "opus", "request_model": OPUS, "draft_model": HAIKU,
                           "self_verify": {"model": SONNET}}],
    }))
    body = {"model": OPUS, "max_tokens": 200, "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    headers = {"x-claude-code-session-id": f"cancel-{uuid.uuid4()}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/messages", json=body, headers=headers, timeout=httpx.Timeout(10, read=1.0))
    wait_for(lambda: fresh_sim.disconnects, 3)
    assert [d["model"] for d in fresh_sim.disconnects] == [SONNET], "the verification call was closed"
    (row,) = ledger_rows(url, at_least=1)
    assert row["status"] == 499 and row["cancelled"] and row["draft_model"] == HAIKU
    stats = httpx.get(gw.url + "/stats").json()
    rule = stats["cascade"]["opus"]
    assert rule["cost"] > 0 and rule["cost"] == pytest.approx(row["cost"], rel=1e-6), "the rule's totals count it"
    assert rule["cancelled"] == 1 and rule["requests"] == 1
    assert stats["by_model"][SONNET]["requests"] == 1, "the cut verification call is counted"
    draft_only = stats["by_model"][HAIKU]["cost"]
    assert row["cost"] > draft_only, "the verification call's input is paid for too"
    wait_for(lambda: set(store.keys(_PREFIX + "*")) - before, 3)
    (key,) = set(store.keys(_PREFIX + "*")) - before
    state = SessionState.from_json(store.get(key))
    assert {HAIKU, SONNET} <= set(state.shadows), "the models called have the prompt in their caches"
    assert state.turns == 0 and state.drafts == 0, "a cancelled turn teaches nothing about drafting"
    store.delete(key)
    store.close()


def test_a_cascade_cancelled_while_sampling_pays_for_the_samples_in_flight(fresh_sim, start_gateway, tmp_path):
    """The draft answered at once; the agreement samples are slow and the client leaves: each sample call is
    closed and priced on its input, and the rule's totals count the request."""
    fresh_sim.set_script([{"match": {"model": HAIKU}, "times": 1, "text": "The answer is 4."},
                          {"match": {"model": HAIKU}, "latency": 5}])
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = start_gateway(ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim, anthropic_key="k", openai_key="k"), "database_url": url,
        "cascade_rules": [{"name": "opus", "request_model": OPUS, "draft_model": HAIKU,
                           "sample_agreement": {"samples": 2}}],
    }))
    leave_early(gw, "What is 2 + 2?", OPUS, stream=False, after=1.0,
                until=lambda: len(upstream_models(fresh_sim)) >= 3)  # the draft and both samples
    wait_for(lambda: len(fresh_sim.disconnects) == 2, 3)
    assert len(fresh_sim.disconnects) == 2, "both sample calls were closed"
    (row,) = ledger_rows(url, at_least=1)
    stats = httpx.get(gw.url + "/stats").json()
    assert stats["by_model"][HAIKU]["requests"] == 3, "the draft and the two cut samples are counted"
    rule = stats["cascade"]["opus"]
    assert rule["cost"] > 0 and rule["cost"] == pytest.approx(row["cost"], rel=1e-6)
    assert row["status"] == 499 and row["cancelled"] and row["cost"] > stats["by_model"][HAIKU]["cost"] / 3
    assert rule["cancelled"] == 1
