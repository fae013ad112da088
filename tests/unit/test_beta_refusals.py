"""Reading an upstream's beta refusal, and the bounded memory of what each draft model refused."""

from __future__ import annotations

import asyncio

import orjson

from cascadeflow.cascade.beta_refusals import BetaRefusals, RedisBetaRefusals, refused_betas, requested_betas
from cascadeflow.errors import ProxyTransportError, ProxyUpstreamError
from tests.unit.redis_db import require_redis

SENT = ["claude-code-20250219", "context-1m-2025-08-07", "advisor-tool-2026-03-01"]
LIVE = ("Unexpected value(s) `context-1m-2025-08-07`, `advisor-tool-2026-03-01` for the `anthropic-beta` header. "
        "Please consult our documentation at docs.claude.com or try again without the header.")


def refusal(message: str, status: int = 400) -> ProxyUpstreamError:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    return ProxyUpstreamError("upstream 'anthropic' answered 400", status=status, payload=orjson.dumps(body))


def test_both_known_shapes_are_read():
    assert refused_betas(refusal(LIVE), SENT) == ["context-1m-2025-08-07", "advisor-tool-2026-03-01"]
    documented = refusal("Unsupported beta header: context-1m-2025-08-07")  # the Beta headers page's example
    assert refused_betas(documented, SENT) == ["context-1m-2025-08-07"]


def test_only_what_the_draft_carried_is_learned():
    assert refused_betas(refusal(LIVE), ["claude-code-20250219", "advisor-tool-2026-03-01"]) == ["advisor-tool-2026-03-01"]
    assert refused_betas(refusal(LIVE), []) == []


def test_other_errors_teach_nothing():
    assert refused_betas(refusal("max_tokens: 128000 > 64000, which is the maximum"), SENT) == []
    assert refused_betas(refusal(LIVE, status=429), SENT) == []
    assert refused_betas(ProxyTransportError("timed out"), SENT) == []
    garbled = ProxyUpstreamError("x", status=400, payload=b"<html>" + LIVE.encode())  # not JSON: the text is read
    assert refused_betas(garbled, SENT) == ["context-1m-2025-08-07", "advisor-tool-2026-03-01"]


def test_requested_betas():
    assert requested_betas({"anthropic-beta": " a-1 , ,b-2,"}) == ["a-1", "b-2"]
    assert requested_betas({}) == []


async def test_the_memory_is_per_model_bounded_and_forgets():
    now = [0.0]
    memory = BetaRefusals(max_entries=2, ttl=60, clock=lambda: now[0])
    headers = {"anthropic-beta": ",".join(SENT)}
    assert memory.refused("claude-haiku-5-5", headers) is None
    assert await memory.learn("claude-haiku-5-5", headers, refusal(LIVE)) == ["context-1m-2025-08-07", "advisor-tool-2026-03-01"]
    assert memory.refused("claude-haiku-5-5", headers) == "context-1m-2025-08-07"
    assert memory.refused("claude-sonnet-5-5", headers) is None, "another model is not judged by Haiku's refusal"
    assert memory.refused("claude-haiku-5-5", {"anthropic-beta": "claude-code-20250219"}) is None
    await memory.learn("claude-sonnet-5-5", headers, refusal("Unsupported beta header: claude-code-20250219"))
    assert len(memory) == 2, "the oldest pair made room"
    assert memory.refused("claude-haiku-5-5", {"anthropic-beta": "context-1m-2025-08-07"}) is None
    assert memory.refused("claude-haiku-5-5", headers) == "advisor-tool-2026-03-01"
    now[0] = 61.0
    assert memory.refused("claude-haiku-5-5", headers) is None, "after ttl the draft finds out again"
    assert len(memory) == 1


HAIKU_HEADERS = {"anthropic-beta": ",".join(SENT)}


async def test_refusals_are_shared_through_redis_and_read_at_most_every_refresh():
    url = await require_redis()
    now = [1000.0]
    one, two = (RedisBetaRefusals(url, max_entries=2, ttl=60, refresh=5, clock=lambda: now[0]) for _ in range(2))
    await one.client.delete("cf:beta-refusals")
    try:
        await two.ready(HAIKU_HEADERS)  # read once, before anything was learned
        assert await one.learn("claude-haiku-5-5", HAIKU_HEADERS, refusal(LIVE)) == [
            "context-1m-2025-08-07", "advisor-tool-2026-03-01"]
        await two.ready(HAIKU_HEADERS)
        assert two.refused("claude-haiku-5-5", HAIKU_HEADERS) is None, "read less than refresh seconds ago: not again"
        now[0] += 5
        await two.ready({"anthropic-version": "2023-06-01"})
        assert two.refused("claude-haiku-5-5", HAIKU_HEADERS) is None, "a request with no beta reads nothing"
        await asyncio.gather(*(two.ready(HAIKU_HEADERS) for _ in range(3)))
        assert two.refused("claude-haiku-5-5", HAIKU_HEADERS) == "context-1m-2025-08-07", "learned by the other"
        assert two.refused("claude-sonnet-5-5", HAIKU_HEADERS) is None
        await one.learn("claude-sonnet-5-5", HAIKU_HEADERS, refusal("Unsupported beta header: claude-code-20250219"))
        assert await one.client.zcard("cf:beta-refusals") == 2, "bounded: the soonest forgotten went"
        assert 0 < await one.client.ttl("cf:beta-refusals") <= 61, "the key itself expires"
        now[0] += 61
        fresh = RedisBetaRefusals(url, ttl=60, clock=lambda: now[0])
        await fresh.ready(HAIKU_HEADERS)
        assert fresh.refused("claude-haiku-5-5", HAIKU_HEADERS) is None, "forgotten after ttl, in Redis too"
        await fresh.aclose()
    finally:
        await one.client.delete("cf:beta-refusals")
        await one.aclose()
        await two.aclose()


async def test_a_redis_that_is_down_leaves_each_process_its_own_refusals():
    down = RedisBetaRefusals("redis://127.0.0.1:1/0", refresh=5)  # nothing listens there
    await down.ready(HAIKU_HEADERS)
    assert await down.learn("claude-haiku-5-5", HAIKU_HEADERS, refusal(LIVE)) == [
        "context-1m-2025-08-07", "advisor-tool-2026-03-01"]
    await down.ready(HAIKU_HEADERS)
    assert down.refused("claude-haiku-5-5", HAIKU_HEADERS) == "context-1m-2025-08-07"
    await down.aclose()
