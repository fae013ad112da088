"""The response cache's pure parts: the request digest, the memory store's bounds, entries, what may be stored."""

from __future__ import annotations

from cascadeflow.cache import CachedAnswer, MemoryStore, cacheable, request_digest, tenant_of


def test_the_digest_ignores_key_order_stream_and_labels_but_not_what_changes_the_answer():
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    same = {"messages": [{"content": "hi", "role": "user"}], "max_tokens": 10, "model": "m", "stream": True,
            "metadata": {"user_id": "u"}}
    digest = request_digest("/v1/messages", "-", {}, body)
    assert digest == request_digest("/v1/messages", "-", {}, same)
    assert digest != request_digest("/v1/chat/completions", "-", {}, body)  # another dialect
    assert digest != request_digest("/v1/messages", "k:other", {}, body)  # another tenant
    assert digest != request_digest("/v1/messages", "-", {"anthropic-beta": "x"}, body)  # a beta changes answers
    assert digest != request_digest("/v1/messages", "-", {}, {**body, "max_tokens": 11})
    assert request_digest("/v1/messages", "-", {}, {**body, "seed": 2**70}) is None  # not canonical: not cached


def test_tenants_are_keys_or_a_digest_of_the_callers_credential():
    assert tenant_of("abc", {"x-api-key": "sk-1"}) == "k:abc"
    one, two = tenant_of(None, {"x-api-key": "sk-1"}), tenant_of(None, {"authorization": "Bearer sk-2"})
    assert one != two and "sk-1" not in one and tenant_of(None, {}) == "-"


async def test_the_memory_store_is_bounded_in_entries_and_bytes_and_forgets_the_least_recently_used():
    now = [0.0]
    store = MemoryStore(ttl_seconds=10, max_entries=3, max_bytes=2048, max_entry_bytes=1024, clock=lambda: now[0])
    for key in "abc":
        assert await store.set(key, b"x" * 100)
    await store.get("a")  # a is used again: b is now the oldest
    await store.set("d", b"x" * 100)
    assert [await store.get(k) is not None for k in "abcd"] == [True, False, True, True]
    assert not await store.set("big", b"x" * 1025)  # over max_entry_bytes: refused
    for key in "efg":
        await store.set(key, b"x" * 1000)
    assert store.bytes <= 2048 and len(store) == 2
    now[0] = 10.0
    assert await store.get("g") is None and len(store) == 1  # expired


def test_an_entry_round_trips_and_foreign_bytes_are_a_miss():
    answer = CachedAnswer(b'{"a":1}', b"event: x\ndata: {}\n\n", "m", 0.25, 100.0)
    assert CachedAnswer.decode(answer.encode()) == answer
    assert CachedAnswer.decode(b"garbage") is None and CachedAnswer.decode(b'{"v":2}\n{}') is None


def test_what_may_be_stored():
    message = {"type": "message", "stop_reason": "end_turn", "content": []}
    assert cacheable("anthropic", message, tools=False)
    assert not cacheable("anthropic", {**message, "stop_reason": "refusal"}, tools=False)
    assert not cacheable("anthropic", {**message, "stop_reason": "pause_turn"}, tools=False)
    assert not cacheable("anthropic", {**message, "stop_reason": "tool_use"}, tools=False)
    assert cacheable("anthropic", {**message, "stop_reason": "tool_use"}, tools=True)
    assert not cacheable("anthropic", {"type": "error", "error": {}}, tools=True)
    completion = {"choices": [{"finish_reason": "stop", "message": {"content": "x"}}]}
    assert cacheable("openai", completion, tools=False)
    assert not cacheable("openai", {"choices": [{"finish_reason": "content_filter", "message": {}}]}, tools=True)
    assert not cacheable("openai", {"choices": [{"finish_reason": "stop", "message": {"refusal": "no"}}]}, tools=True)
    response = {"status": "completed", "output": [{"type": "message", "content": [{"type": "output_text"}]}]}
    assert cacheable("responses", response, tools=False)
    assert not cacheable("responses", {**response, "status": "incomplete"}, tools=False)
    assert not cacheable("responses", {"status": "completed", "output": [{"type": "function_call"}]}, tools=False)


def test_a_rule_or_key_that_opts_in_turns_the_cache_on_and_redis_needs_a_url():
    import pytest

    from cascadeflow import ProxyConfig
    from cascadeflow.errors import ConfigError

    assert ProxyConfig.from_dict({}).cache is None  # off: no work for it on any request
    rule = {"request_model": "claude-opus-*", "draft_model": "claude-sonnet-5-5", "cache": True}
    assert ProxyConfig.from_dict({"cascade_rules": [rule]}).cache is not None
    assert ProxyConfig.from_dict({"auth": {"keys": [{"key": "k", "cache": True}]}}).cache is not None
    with pytest.raises(ConfigError, match="redis_url"):
        ProxyConfig.from_dict({"cache": {"store": "redis"}})
