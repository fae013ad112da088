"""Hardening (issue 15), continued: what reaches an upstream (only the caller's own headers; the replay-only
sample index only to a replay route), integers beyond 64 bits anywhere in a body, the event loop kept free
(start-up loading, count_tokens), bounded growth under client-chosen model names, a bounded wait for a pooled
connection, and requests that never finish arriving.

Every test drives the gateway over HTTP (the official SDKs, or raw HTTP and sockets where an SDK would not send
the input) against the simulated provider.
"""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from cascadeflow import ProxyConfig

HAIKU, SONNET = "claude-haiku-5-5", "claude-sonnet-5-5"
ASK = {"max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}


def _routes(sim, **anthropic_extra) -> list[dict]:
    return [{"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "k",
             "retry": {"attempts": 1}, **anthropic_extra},
            {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k",
             "retry": {"attempts": 1}}]


def _config(sim, route_extra: dict | None = None, **extra) -> ProxyConfig:
    return ProxyConfig.from_dict({"routes": _routes(sim, **(route_extra or {})), **extra})


def _claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)


def _gpt(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)


def _posts(sim) -> list[dict]:
    return [r for r in sim.requests if r["method"] == "POST"]


# -- 1. what reaches an upstream ----------------------------------------------------------------------

_AGREE = [{"name": "agree", "request_model": SONNET, "draft_model": HAIKU, "quality_threshold": 0.01,
           "sample_agreement": {"samples": 3}}]


@pytest.mark.parametrize("replay", [False, True])
def test_the_sample_index_goes_only_to_a_replay_route(fresh_sim, start_gateway, replay):
    """Sample agreement's extra samples carry ``x-sample-index`` only where the route says it is a replay."""
    fresh_sim.set_script([{"match": {"model": HAIKU}, "text": "The answer is 42."}])
    gw = start_gateway(_config(fresh_sim, {"replay": True} if replay else {}, cascade_rules=_AGREE))
    raw = _claude(gw).messages.with_raw_response.create(
        model=SONNET, **ASK, extra_headers={"x-caller-header": "mine"})
    assert raw.headers["x-cascadeflow-draft-accepted"] == "true", raw.headers.get("x-cascadeflow-decision")
    posts = _posts(fresh_sim)
    assert [p["body"]["model"] for p in posts] == [HAIKU] * 4  # the draft and three samples
    indexes = sorted(p["headers"].get("x-sample-index", "-") for p in posts)
    assert indexes == (["-", "0", "1", "2"] if replay else ["-"] * 4)
    for post in posts:  # the caller's own headers go on; nothing of the gateway's own does
        assert post["headers"]["x-caller-header"] == "mine"
        assert not [k for k in post["headers"] if k.startswith("x-cascadeflow")], post["headers"]


def test_a_callers_own_internal_looking_headers_do_not_reach_an_upstream(fresh_sim, start_gateway):
    """Pins what already held: ``x-cascadeflow-*`` never leaves, and a caller cannot ask for its key to be sent."""
    gw = start_gateway(_config(fresh_sim))
    _claude(gw).messages.create(model=HAIKU, **ASK, extra_headers={"x-cascadeflow-forward-credentials": "1"})
    _gpt(gw).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                     extra_headers={"x-cascadeflow-anything": "1"})
    for post in _posts(fresh_sim):
        assert not [k for k in post["headers"] if k.startswith("x-cascadeflow")], post["headers"]
        assert post["headers"].get("x-api-key", post["headers"].get("authorization", "")).endswith("k")
