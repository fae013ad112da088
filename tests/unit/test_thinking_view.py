"""Each model's view of a conversation several models wrote (pure), and where the writers are remembered."""

from __future__ import annotations

import asyncio
import json
import uuid

import orjson

from cascadeflow.cascade import thinking
from cascadeflow.cascade.thinking import ThinkingThreads, ThreadView, readable, signatures_in, view_for
from cascadeflow.sessions import MemoryThinkingOrigins, RedisThinkingOrigins
from tests.unit.redis_db import REDIS, require_redis

OPUS, SONNET = "claude-opus-5-5", "claude-sonnet-5-5"
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def conversation() -> list:
    return [
        {"role": "user", "content": "Fix the bug"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "s1", "signature": "sig-sonnet"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "a.py"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                                      "content": [{"type": "text", "text": "no such file"}, IMAGE],
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "o1", "signature": "sig-opus"},
                                          {"type": "text", "text": "Done."}]},
    ]


def writer(signature: str) -> str:
    return {"sig-sonnet": SONNET}.get(signature, OPUS)


def test_a_model_keeps_what_it_can_read_and_reads_the_rest_as_text():
    messages = conversation()
    for_sonnet = view_for(messages, SONNET, writer, thinking=True)
    assert for_sonnet is not None and (for_sonnet.dropped, for_sonnet.rendered) == (1, 0)
    assert for_sonnet.messages[:3] == messages[:3]  # its own turn, byte for byte
    assert for_sonnet.messages[3]["content"] == [{"type": "text", "text": "Done."}]
    for_opus = view_for(messages, OPUS, writer, thinking=True)
    assert (for_opus.dropped, for_opus.rendered) == (1, 1)
    assert for_opus.messages[1]["content"] == [{"type": "text", "text": '[tool call toolu_1: Read {"path":"a.py"}]'}]
    result = for_opus.messages[2]["content"]
    assert result[0] == {"type": "text", "text": "[result of tool call toolu_1 (error): no such file]",
                         "cache_control": {"type": "ephemeral"}}
    assert result[1] == IMAGE, "images in a tool result stay images"
    assert for_opus.messages[3] == messages[3]
    assert messages == conversation(), "the caller's messages are never changed in place"


def test_without_thinking_tool_calls_stay_tool_calls():
    view = view_for(conversation(), OPUS, writer, thinking=False)
    assert view.rendered == 0 and view.messages[1]["content"][0]["type"] == "tool_use"


def test_nothing_to_change_is_no_copy():
    mine = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "o", "signature": "sig-opus"}, {"type": "text", "text": "hello"}]}]
    assert view_for(mine, OPUS, writer, thinking=True) is None
    assert signatures_in(mine) == ["sig-opus"] and signatures_in("junk") == []


def test_the_view_does_not_depend_on_what_follows():
    """The prefix a model saw when it wrote a block is the prefix it sees again later (blocks stay valid)."""
    messages = conversation()
    longer = [*messages, {"role": "user", "content": "and now?"}]
    assert view_for(longer, OPUS, writer, True).messages[:4] == view_for(messages, OPUS, writer, True).messages


def test_reading_other_models_follows_the_documented_table():
    assert readable(OPUS, "claude-opus-5-5-20260922") and not readable(OPUS, SONNET)
    assert readable("claude-fable-5-1", OPUS) and not readable(OPUS, "claude-fable-5-1")


async def test_each_model_gets_its_own_view_and_models_that_read_the_same_share_one():
    """A request's draft and verifier views: built once when both read the same blocks (always, without any)."""
    origins = MemoryThinkingOrigins()
    await origins.record(["sig-sonnet"], SONNET)
    threads = ThinkingThreads(origins)
    body = {"model": OPUS, "thinking": {"type": "adaptive"}, "messages": conversation()}
    talk = await threads.view(body, "anthropic", OPUS)
    assert talk is not None and talk.written_by == {SONNET, OPUS}
    views: dict[str, str] = {}
    for model in (SONNET, OPUS, "claude-opus-5-5-20260922", SONNET):  # alternating: no view leaks to another
        expected = view_for(body["messages"], model, writer, True)
        assert talk.body_for(body, model, views)["messages"] == expected.messages
        assert views[model] == f"dropped={expected.dropped},rendered={expected.rendered}"
    assert talk.body_for(body, OPUS, views)["messages"] is talk.body_for(body, "claude-opus-5-5-20260922", views)["messages"]
    other = {**body, "messages": conversation()[:3]}  # another conversation is never answered from the last view
    assert talk.body_for(other, OPUS, views)["messages"] == view_for(other["messages"], OPUS, writer, True).messages

    # no thinking block yet (Claude Code's tool loop with adaptive thinking): tool calls read as text by any model,
    # the same view for the draft and the verifier, built once
    plain = [m if m["role"] == "user" else {**m, "content": m["content"][1:]} for m in conversation()]
    body = {"model": OPUS, "thinking": {"type": "adaptive"}, "messages": plain}
    talk = await threads.view(body, "anthropic", OPUS)
    assert talk is not None and talk.written_by == frozenset()
    draft = talk.body_for({**body, "model": "claude-haiku-5-5"}, "claude-haiku-5-5", views)
    assert draft["messages"] == view_for(plain, OPUS, writer, True).messages and views["claude-haiku-5-5"] == "dropped=0,rendered=1"
    assert talk.body_for(body, OPUS, views)["messages"] is draft["messages"]
    unknown = ThreadView({}, OPUS, True)  # who wrote the blocks not known: every view built for its model
    assert unknown.body_for(body, OPUS, views)["messages"] == draft["messages"]
    assert await threads.view({**body, "thinking": {"type": "disabled"}}, "anthropic", OPUS) is None


async def test_memory_origins_are_bounded_and_expire():
    origins = MemoryThinkingOrigins(max_entries=2, ttl_seconds=60)
    await origins.record(["a", "b"], SONNET)
    await origins.record(["c"], "claude-haiku-5-5")
    assert await origins.lookup(["a", "b", "c", "d"]) == {"b": SONNET, "c": "claude-haiku-5-5"}
    expiring = MemoryThinkingOrigins(ttl_seconds=0.01)
    await expiring.record(["a"], SONNET)
    await asyncio.sleep(0.02)
    assert await expiring.lookup(["a"]) == {}


async def test_redis_origins_are_shared_between_processes():
    await require_redis()
    one, other = RedisThinkingOrigins(REDIS), RedisThinkingOrigins(REDIS)
    signature = f"sig-{uuid.uuid4()}"
    try:
        await one.record([signature], SONNET)
        assert await other.lookup([signature, "unknown"]) == {signature: SONNET}
    finally:
        await one.client.delete("cf:thinking:" + __import__("hashlib").blake2b(signature.encode(), digest_size=16).hexdigest())
        await one.aclose()
        await other.aclose()
    down = RedisThinkingOrigins("redis://127.0.0.1:1/0", timeout=0.2)
    assert await down.lookup([signature]) == {}, "Redis down: the blocks count as the verifier's, no error"
    await down.record([signature], SONNET)
    await down.aclose()


class CountingOrigins(MemoryThinkingOrigins):
    """Origins that note every signature looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_up: list[str] = []

    async def lookup(self, signatures: list[str]) -> dict[str, str]:
        self.looked_up.extend(signatures)
        return await super().lookup(signatures)


def grown_session(turns: int) -> list[dict]:
    """Claude Code's tool loop, turn by turn: the breakpoint on the newest block, a thinking block on odd turns
    (written by Sonnet on every third), adaptive thinking on."""
    bodies, messages = [], [{"role": "user", "content": [{"type": "text", "text": "Fix the bug"}]}]
    for n in range(turns):
        for message in messages:
            for block in message["content"]:
                block.pop("cache_control", None)
        thinking = [{"type": "thinking", "thinking": f"t{n}", "signature": f"sig-{'sonnet' if n % 3 == 0 else 'opus'}-{n}"}]
        messages.append({"role": "assistant", "content": [
            *(thinking if n % 2 else []), {"type": "tool_use", "id": f"toolu_{n}", "name": "Bash", "input": {"n": n}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{n}",
                                                      "content": f"output {n}", "cache_control": {"type": "ephemeral"}}]})
        bodies.append(orjson.loads(orjson.dumps({"model": OPUS, "thinking": {"type": "adaptive"}, "messages": messages})))
    return bodies


def session_writer(signature: str) -> str:
    return SONNET if signature.startswith("sig-sonnet") else OPUS


async def test_a_next_request_reuses_the_previous_views_and_gets_the_same_ones():
    """Each turn's views equal a fresh walk's, while the repeated messages' views are the previous request's."""
    origins = CountingOrigins()
    await origins.record([f"sig-sonnet-{n}" for n in range(0, 12, 3)], SONNET)
    threads = ThinkingThreads(origins)
    previous: dict[str, list] = {}
    for n, body in enumerate(grown_session(12)):
        raw = orjson.dumps(body)
        origins.looked_up.clear()
        talk = await threads.view(body, "anthropic", OPUS, "conversation", raw)
        assert talk is not None and talk.kept == (len(body["messages"]) - 3 if n else 0)
        fresh = {*{session_writer(sig) for sig in signatures_in(body["messages"])}}
        assert talk.written_by == fresh
        assert len(origins.looked_up) == (n % 2), "only the new turn's signature is looked up"
        views: dict[str, str] = {}
        for model in (SONNET, OPUS):
            expected = view_for(body["messages"], model, session_writer, True)
            got = talk.body_for(body, model, views)["messages"]
            assert got == expected.messages and views[model] == f"dropped={expected.dropped},rendered={expected.rendered}"
            if n >= {OPUS: 2, SONNET: 4}[model]:  # the writers it reads unchanged since the previous request: what
                # this one repeats is the previous request's view, not walked again
                assert all(a is b for a, b in zip(got[:talk.kept], previous[model], strict=False))
            previous[model] = got


async def test_the_previous_views_are_reused_only_where_the_bytes_say_the_request_repeats_them():
    origins = MemoryThinkingOrigins()
    await origins.record(["sig-sonnet-3"], SONNET)
    threads = ThinkingThreads(origins)
    bodies = grown_session(6)
    first, later = bodies[2], bodies[4]
    views: dict[str, str] = {}
    await threads.view(first, "anthropic", OPUS, "c", orjson.dumps(first))
    # an edited history: the first messages differ, nothing is reused and the view is still right
    edited = orjson.loads(orjson.dumps(later))
    edited["messages"][0]["content"][0]["text"] = "Fix the other bug"
    talk = await threads.view(edited, "anthropic", OPUS, "c", orjson.dumps(edited))
    assert talk.kept == 0
    assert talk.body_for(edited, OPUS, views)["messages"] == view_for(edited["messages"], OPUS, session_writer, True).messages
    # bytes that are not compact JSON (a pretty-printing client): every view walked afresh, none kept
    pretty = json.dumps(later, indent=1).encode()
    talk = await threads.view(later, "anthropic", OPUS, "c", pretty)
    assert talk.memo is None and not threads._memos
    assert talk.body_for(later, OPUS, views)["messages"] == view_for(later["messages"], OPUS, session_writer, True).messages
    # another default writer (a rule whose verifier changed): the previous views are not this request's
    await threads.view(first, "anthropic", OPUS, "c", orjson.dumps(first))
    talk = await threads.view(later, "anthropic", SONNET, "c", orjson.dumps(later))
    assert talk.kept == 0


async def test_the_kept_requests_are_bounded(monkeypatch):
    monkeypatch.setattr(thinking, "_MEMOS", 3)
    threads = ThinkingThreads(MemoryThinkingOrigins())
    body = grown_session(2)[-1]
    raw = orjson.dumps(body)
    for n in range(5):
        await threads.view(body, "anthropic", OPUS, f"c{n}", raw)
    assert list(threads._memos) == ["c2", "c3", "c4"] and threads._memo_bytes == 3 * len(raw)
    monkeypatch.setattr(thinking, "_MEMO_BYTES", 2 * len(raw))
    await threads.view(body, "anthropic", OPUS, "c5", raw)
    assert list(threads._memos) == ["c4", "c5"] and threads._memo_bytes == 2 * len(raw)
