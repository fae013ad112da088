"""Rate limits, concurrency limits and budgets in one gateway process (in-memory counters)."""

from __future__ import annotations

import asyncio
import time

import anthropic
import httpx
import openai
import pytest

from cascadeflow import ModelRegistry, ProxyConfig, Usage
from cascadeflow.store import Ledger
from tests.conftest import sim_routes

ASK = {"max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]}


def _gateway(start_gateway, sim, tmp_path, keys: list[dict], **extra):
    config = ProxyConfig.from_dict({
        "routes": sim_routes(sim), "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
        "auth": {"mode": "api_key", "keys": keys}, **extra,
    })
    return start_gateway(config), config


async def _rows(url: str, expected: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while True:
        ledger = await Ledger(url).start()
        try:
            found = await ledger.rows()
        finally:
            await ledger.aclose()
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def test_requests_per_minute_refused_with_429_and_retry_after(fresh_sim, start_gateway, tmp_path):
    gw, config = _gateway(start_gateway, fresh_sim, tmp_path, [{"key": "k-rpm", "limits": {"rpm": 3}}])
    client = anthropic.Anthropic(base_url=gw.url, api_key="k-rpm", max_retries=0)
    for _ in range(3):
        client.messages.create(model="claude-haiku-5-5", **ASK)
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="claude-haiku-5-5", **ASK)
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert "3 requests per minute" in refused.value.message
    assert 15 <= int(refused.value.response.headers["retry-after"]) <= 20  # one request refills in 20 s
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key="k-rpm", max_retries=0)
    with pytest.raises(openai.RateLimitError) as refused_oa:
        oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert refused_oa.value.code == "rate_limit_exceeded"
    assert len(fresh_sim.requests) == 3
    rows = asyncio.run(_rows(config.database_url, 5))
    assert [r["status"] for r in rows] == [200, 200, 200, 429, 429]
    assert {r["error_type"] for r in rows[3:]} == {"rate_limit"}


def test_user_and_team_limits_span_their_keys(fresh_sim, start_gateway, tmp_path):
    gw, _ = _gateway(start_gateway, fresh_sim, tmp_path, [
        {"key": "frank-laptop", "user_id": "frank", "team": "web"},
        {"key": "frank-ci", "user_id": "frank", "team": "web"},
        {"key": "gina", "user_id": "gina", "team": "web"},
    ], limits={"users": {"frank": {"rpm": 2}}, "teams": {"web": {"rpm": 4}}})
    laptop, ci, gina = (anthropic.Anthropic(base_url=gw.url, api_key=k, max_retries=0) for k in ("frank-laptop", "frank-ci", "gina"))
    laptop.messages.create(model="claude-haiku-5-5", **ASK)
    ci.messages.create(model="claude-haiku-5-5", **ASK)
    with pytest.raises(anthropic.RateLimitError, match="user:frank"):
        ci.messages.create(model="claude-haiku-5-5", **ASK)
    gina.messages.create(model="claude-haiku-5-5", **ASK)
    gina.messages.create(model="claude-haiku-5-5", **ASK)
    with pytest.raises(anthropic.RateLimitError, match="team:web"):
        gina.messages.create(model="claude-haiku-5-5", **ASK)


async def test_concurrent_requests_are_capped_and_released_when_streams_end(fresh_sim, start_gateway, tmp_path):
    gw, _ = _gateway(start_gateway, fresh_sim, tmp_path, [{"key": "k-conc", "limits": {"max_concurrent": 2}}])
    fresh_sim.set_script([{"match": {"prompt_contains": "slow"}, "text": "one two three four", "chunk_delay": 0.15}])
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key="k-conc", max_retries=0)
    slow = {"max_tokens": 20, "messages": [{"role": "user", "content": "slow"}]}

    async def streamed() -> str:
        async with client.messages.stream(model="claude-haiku-5-5", **slow) as stream:
            return (await stream.get_final_message()).content[0].text

    held = [asyncio.create_task(streamed()) for _ in range(2)]
    await asyncio.sleep(0.2)  # both streams are open
    with pytest.raises(anthropic.RateLimitError, match="2 concurrent requests"):
        await client.messages.create(model="claude-haiku-5-5", **ASK)
    assert [await t for t in held] == ["one two three four"] * 2
    # the leases are given back before each stream's last byte: the next request is never refused
    assert (await client.messages.create(model="claude-haiku-5-5", **ASK)).content


def test_a_spent_budget_is_refused_with_402_in_both_dialects(fresh_sim, start_gateway, tmp_path):
    gw, config = _gateway(start_gateway, fresh_sim, tmp_path, [{"key": "k-budget", "limits": {"daily_budget_usd": 0.00001}}])
    client = anthropic.Anthropic(base_url=gw.url, api_key="k-budget")  # the SDK's default retries are on
    first = client.messages.with_raw_response.create(model="claude-sonnet-5-5", **ASK)
    assert float(first.headers["x-cascadeflow-cost-usd"]) > 0.00001  # admitted while under budget, then past it
    with pytest.raises(anthropic.APIStatusError) as refused:
        client.messages.create(model="claude-sonnet-5-5", **ASK)
    assert refused.value.status_code == 402 and refused.value.body["error"]["type"] == "billing_error"
    assert "daily budget of $1e-05 for key:" in refused.value.message
    with pytest.raises(openai.APIStatusError) as refused_oa:
        openai.OpenAI(base_url=gw.url + "/v1", api_key="k-budget").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert refused_oa.value.status_code == 402 and refused_oa.value.body["type"] == "insufficient_quota"
    rows = asyncio.run(_rows(config.database_url, 3))
    assert [r["status"] for r in rows] == [200, 402, 402]  # neither SDK retried a 402
    assert len(fresh_sim.requests) == 1


def test_budgets_resume_from_the_ledger_after_a_restart(fresh_sim, start_gateway, tmp_path):
    keys = [{"key": "k-restart", "limits": {"monthly_budget_usd": 0.00001}}]
    gw, _ = _gateway(start_gateway, fresh_sim, tmp_path, keys)
    anthropic.Anthropic(base_url=gw.url, api_key="k-restart", max_retries=0).messages.create(model="claude-sonnet-5-5", **ASK)
    gw.stop()  # a graceful stop writes the ledger
    again, _ = _gateway(start_gateway, fresh_sim, tmp_path, keys)  # same ledger file, fresh in-memory counters
    with pytest.raises(anthropic.APIStatusError, match="monthly budget"):
        anthropic.Anthropic(base_url=again.url, api_key="k-restart", max_retries=0).messages.create(
            model="claude-sonnet-5-5", **ASK)


def test_cache_tokens_are_priced_at_their_own_rates_streamed_or_not(fresh_sim, start_gateway, tmp_path):
    gw, config = _gateway(start_gateway, fresh_sim, tmp_path, [{"key": "k-cache", "user_id": "hal"}])
    usage = {"input_tokens": 40, "output_tokens": 12, "cache_read_input_tokens": 3000, "cache_creation_input_tokens": 800}
    fresh_sim.set_script([{"match": {"model": "claude-sonnet-5-5"}, "text": "cached answer", "usage": usage}])
    client = anthropic.Anthropic(base_url=gw.url, api_key="k-cache", max_retries=0)
    client.messages.create(model="claude-sonnet-5-5", **ASK)
    with client.messages.stream(model="claude-sonnet-5-5", **ASK) as stream:
        stream.get_final_message()
    rows = asyncio.run(_rows(config.database_url, 2))
    expected = ModelRegistry().cost("claude-sonnet-5-5", Usage(input_tokens=40, output_tokens=12,
                                                                cache_read_tokens=3000, cache_write_tokens=800))
    as_plain_input = ModelRegistry().cost("claude-sonnet-5-5", Usage(input_tokens=3840, output_tokens=12))
    for row in rows:
        assert (row["cache_read_tokens"], row["cache_write_tokens"], row["user_id"]) == (3000, 800, "hal")
        assert row["cost"] == pytest.approx(expected)
    assert expected != pytest.approx(as_plain_input)


def test_count_tokens_is_a_request_against_rpm_and_no_limit_means_no_counting(fresh_sim, start_gateway, tmp_path):
    """count_tokens counts against rpm (issue 15; it was never limited): see also test_hardening_edges.py."""
    gw, _ = _gateway(start_gateway, fresh_sim, tmp_path, [{"key": "k-one", "limits": {"rpm": 1}}, {"key": "k-free"}])
    client = anthropic.Anthropic(base_url=gw.url, api_key="k-one", max_retries=0)
    client.messages.count_tokens(model="claude-haiku-5-5", messages=ASK["messages"])
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="claude-haiku-5-5", **ASK)
    free = httpx.Client(base_url=gw.url, headers={"x-api-key": "k-free", "anthropic-version": "2023-06-01"})
    assert all(free.post("/v1/messages", json={"model": "claude-haiku-5-5", **ASK}).status_code == 200 for _ in range(5))


def test_a_stream_refused_for_the_gateways_stream_capacity_costs_no_rpm(fresh_sim, start_gateway, tmp_path):
    """``server.max_concurrent_streams`` refuses a stream before the key's limits are asked: the refusal is the
    gateway's, so it takes nothing of the key's ``rpm`` (issue 15: each such refusal used to take one)."""
    fresh_sim.set_script([{"match": {"prompt_contains": "slow"}, "words": 30, "chunk_delay": 0.05}])
    gw, _ = _gateway(start_gateway, fresh_sim, tmp_path, [{"key": "k-streams", "limits": {"rpm": 3}}],
                          server={"max_concurrent_streams": 1})
    slow = {"model": "claude-haiku-5-5", "max_tokens": 20, "stream": True,
            "messages": [{"role": "user", "content": "slow one"}]}
    with httpx.Client(base_url=gw.url, timeout=10, headers={"x-api-key": "k-streams"}) as http:
        with http.stream("POST", "/v1/messages", json=slow) as first:  # takes 1 of the 3 a minute
            chunks = first.iter_bytes()
            next(chunks)  # the one stream the gateway allows is open
            refused = [http.post("/v1/messages", json=slow) for _ in range(3)]
            assert [r.status_code for r in refused] == [429] * 3
            assert all("streams are open already" in r.json()["error"]["message"] for r in refused)
            b"".join(chunks)
        client = anthropic.Anthropic(base_url=gw.url, api_key="k-streams", max_retries=0)
        for _ in range(2):  # the two requests left of the minute
            assert client.messages.create(model="claude-haiku-5-5", **ASK).content
        with pytest.raises(anthropic.RateLimitError, match="3 requests per minute"):
            client.messages.create(model="claude-haiku-5-5", **ASK)
