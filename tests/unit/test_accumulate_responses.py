"""Buffering and judging Responses drafts: the accumulator, the answer the checks read, the replay,
and the checks reading a Responses request's tools, tool_choice and text.format."""

from __future__ import annotations

import orjson

from cascadeflow.cascade.answer import CheckResult
from cascadeflow.cascade.checks import FormatCheck, ToolUseCheck
from cascadeflow.dialects.accumulate_responses import ResponsesAccumulator, answer_from_response, replay_responses
from cascadeflow.dialects.responses_events import ResponseEmitter
from cascadeflow.dialects.sse import SSEDecoder
from cascadeflow.usage import Usage

REQUEST = {"model": "gpt-5.4", "input": "x", "tools": [
    {"type": "function", "name": "get_weather",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"type": "custom", "name": "apply_patch"},
    {"type": "namespace", "name": "goals", "tools": [{"type": "function", "name": "set_goal", "parameters": {}}]},
]}


def _stream() -> bytes:
    emitter = ResponseEmitter(REQUEST, "gpt-5.4-mini")
    emitter.text("Patching now.")
    emitter.tool("call_1", "apply_patch", custom=True)
    emitter.tool_input("*** Begin Patch")
    emitter.tool("call_2", "get_weather")
    emitter.tool_input('{"city":"Oslo"}')
    emitter.finish(Usage(10, 5, 0, 20))
    return emitter.take()


def test_accumulator_rebuilds_the_response_and_marks_closed_calls():
    accumulator = ResponsesAccumulator()
    closed = [accumulator.feed(e) for e in SSEDecoder().feed(_stream())]
    assert [c for c in closed if c is not None] == [1, 2]  # each tool call, when its item is done
    answer = accumulator.answer()
    assert answer.text == "Patching now." and answer.stop_reason == "tool_use"
    assert [(c.name, c.input) for c in answer.tool_calls] == [("apply_patch", {"input": "*** Begin Patch"}),
                                                              ("get_weather", {"city": "Oslo"})]
    assert (answer.usage.input_tokens, answer.usage.cache_read_tokens, answer.usage.output_tokens) == (10, 20, 5)


def test_partial_answer_from_a_cut_stream():
    accumulator = ResponsesAccumulator()
    raw = _stream()
    for event in SSEDecoder().feed(raw[: raw.index(b"response.output_text.done")]):
        accumulator.feed(event)
    answer = accumulator.answer(partial=True)
    assert answer.partial and answer.text == "Patching now." and not accumulator.done


def test_replay_renames_only_the_snapshot_events():
    events = SSEDecoder().feed(_stream())
    same = replay_responses(events)
    assert same == _join(events)
    renamed = replay_responses(events, "gpt-5.4")
    out = SSEDecoder().feed(renamed)
    assert len(out) == len(events)
    for before, after in zip(events, out):
        data = orjson.loads(after.data)
        if "response" in data:
            assert data["response"]["model"] == "gpt-5.4"
        else:
            assert after.raw == before.raw  # byte for byte


def _join(events) -> bytes:
    return b"".join(e.raw for e in events)


def test_checks_read_responses_tools_and_format():
    good = answer_from_response({"status": "completed", "output": [
        {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"type": "custom_tool_call", "call_id": "d", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "function_call", "call_id": "e", "name": "set_goal", "namespace": "goals", "arguments": "{}"}]})
    assert ToolUseCheck()(REQUEST, good, "responses") == CheckResult("tool_use", 1.0, "ok")
    bad = answer_from_response({"status": "completed", "output": [
        {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": '{"days": 2}'}]})
    assert ToolUseCheck()(REQUEST, bad, "responses").score == 0.0  # the schema came from `parameters`
    forced = {**REQUEST, "tool_choice": {"type": "custom", "name": "apply_patch"}}
    assert ToolUseCheck()(forced, bad, "responses").score == 0.0
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    asked = {**REQUEST, "text": {"format": {"type": "json_schema", "name": "n", "schema": schema}}}
    text = answer_from_response({"status": "completed", "output": [
        {"type": "message", "content": [{"type": "output_text", "text": '{"n": "x"}'}]}]})
    assert FormatCheck()(asked, text, "responses").score == 0.0


def test_codex_thread_is_the_conversation_key():
    from cascadeflow.cascade.policies import conversation_key

    by_body = conversation_key({}, {"prompt_cache_key": "thread-1", "input": "x"})
    by_header = conversation_key({"session-id": "thread-1"}, {"input": "x"})
    assert by_body == by_header and by_body.startswith("t:") and "thread-1" not in by_body
    assert conversation_key({}, {"prompt_cache_key": "thread-2"}) != by_body
    assert conversation_key({"x-claude-code-session-id": "s1"}, {"prompt_cache_key": "thread-1"}) == "s:s1"
