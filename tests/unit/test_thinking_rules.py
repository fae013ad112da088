"""The simulator refuses what Anthropic's API refuses about thinking blocks in tool loops.

Driven with the official SDK over HTTP: a gateway's thinking handling is only tested
by the simulator if the simulator is at least as strict as the real API.
"""

from __future__ import annotations

import anthropic
import pytest

OPUS, SONNET = "claude-opus-5-5", "claude-sonnet-5-5"
TOOL = {"name": "Write", "description": "Write a file", "input_schema": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
SYSTEM = [{"type": "text", "text": "You are a coding agent."}, {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
ADAPTIVE = {"type": "adaptive"}
FIRST = [{"role": "user", "content": "Create hello.txt"}]


@pytest.fixture()
def client(fresh_sim):
    fresh_sim.set_script([{"match": {"prompt_contains": "Create"}, "thinking": True, "tool_calls": [{"name": "Write", "input": {"path": "hello.txt"}}]}])
    return anthropic.Anthropic(base_url=fresh_sim.url, api_key="x", max_retries=0)


def turn(client, messages, model=OPUS, thinking=ADAPTIVE):
    return client.messages.create(model=model, max_tokens=1000, system=SYSTEM, tools=[TOOL], thinking=thinking,
                                  messages=messages)


def loop(first, content=None):
    """The tool loop's second request: the assistant turn (as given) and its tool result."""
    blocks = content if content is not None else [b.model_dump(exclude_none=True) for b in first.content]
    tool_use = next(b for b in blocks if b["type"] == "tool_use")
    return [*FIRST, {"role": "assistant", "content": blocks},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "ok"}]}]


def refused(call) -> str:
    with pytest.raises(anthropic.BadRequestError) as info:
        call()
    return info.value.body["error"]["message"]


def test_an_echoed_tool_loop_continues(client):
    first = turn(client, FIRST)
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    second = turn(client, loop(first))
    assert second.content[0].type == "thinking"
    # the cache markers move each turn and text may be spelled as a string or as blocks: still the same prefix
    messages = loop(first)
    messages[0] = {"role": "user", "content": [{"type": "text", "text": "Create hello.txt", "cache_control": {"type": "ephemeral"}}]}
    assert turn(client, messages).content


def test_dropped_thinking_breaks_the_tool_loop(client):
    first = turn(client, FIRST)
    without = [b.model_dump(exclude_none=True) for b in first.content if b.type != "thinking"]
    message = refused(lambda: turn(client, loop(first, without)))
    assert "Expected `thinking` or `redacted_thinking`, but found `tool_use`" in message
    assert message.startswith("messages.1.content.0.type")
    # the same conversation with thinking off is accepted (Sonnet may turn it off; Opus 5.5 may not)
    assert turn(client, loop(first, without), model=SONNET, thinking={"type": "disabled"}).content


def test_an_altered_or_forged_block_is_refused(client):
    first = turn(client, FIRST)
    blocks = [b.model_dump(exclude_none=True) for b in first.content]
    altered = [{**blocks[0], "thinking": blocks[0]["thinking"] + " (edited)"}, blocks[1]]
    assert "Invalid `signature` in `thinking` block" in refused(lambda: turn(client, loop(first, altered)))
    forged = [{**blocks[0], "signature": "c2lnbmVkLWJ5LWEtZ2F0ZXdheQ=="}, blocks[1]]
    assert "Invalid `signature`" in refused(lambda: turn(client, loop(first, forged)))


def test_another_models_block_is_dropped_and_then_the_loop_breaks(client, fresh_sim):
    first = turn(client, FIRST, model=SONNET)
    # Opus cannot read Sonnet's block: dropped, so the final assistant turn no longer starts with thinking
    assert "Expected `thinking`" in refused(lambda: turn(client, loop(first), model=OPUS))
    # earlier in the conversation the dropped block does no harm
    finished = [*loop(first), {"role": "assistant", "content": "Done."}, {"role": "user", "content": "Thanks"}]
    assert turn(client, finished, model=OPUS).content


def test_a_block_is_bound_to_its_prefix(client):
    first = turn(client, FIRST)
    changed = loop(first)
    changed[0] = {"role": "user", "content": "Create hello.txt, please"}
    assert "bound to a different conversation" in refused(lambda: turn(client, changed))
    other_system = lambda: client.messages.create(  # noqa: E731
        model=OPUS, max_tokens=1000, system="Another prompt", tools=[TOOL], thinking=ADAPTIVE, messages=loop(first))
    assert "bound to a different conversation" in refused(other_system)
    # dropping instead of refusing, when asked: the loop then lacks its thinking
    drop = {"type": "adaptive", "block_binding": {"prefix_mismatch_behavior": "drop"}}
    assert "Expected `thinking`" in refused(lambda: turn(client, changed, thinking=drop))


def test_tool_results_pair_with_tool_uses(client):
    first = turn(client, FIRST)
    messages = loop(first)
    messages[2]["content"].append({"type": "tool_result", "tool_use_id": "toolu_unknown", "content": "?"})
    assert "unexpected `tool_use_id` found in `tool_result` blocks: toolu_unknown" in refused(lambda: turn(client, messages))
    unanswered = [*loop(first)[:2], {"role": "user", "content": "never mind"}]
    assert "`tool_use` ids were found without `tool_result` blocks immediately after" in refused(lambda: turn(client, unanswered))


def test_opus_5_5_always_thinks_adaptively(client):
    for setting in ({"type": "disabled"}, {"type": "enabled", "budget_tokens": 1024}):
        message = refused(lambda: turn(client, FIRST, thinking=setting))  # noqa: B023 (called at once)
        assert f'"thinking.type.{setting["type"]}" is not supported for this model' in message
    assert turn(client, FIRST, model=SONNET, thinking={"type": "enabled", "budget_tokens": 1024}).content
