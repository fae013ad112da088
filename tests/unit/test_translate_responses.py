"""Responses ⇄ Chat Completions (and the Anthropic extras): pure translation, and the stream translator
checked event by event against the openai SDK's types."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import (
    Response,
    ResponseOutputItem,
    ResponseStreamEvent,
    ResponseUsage,
)
from pydantic import TypeAdapter

from cascadeflow.dialects.sse import SSEDecoder, encode_event
from cascadeflow.dialects.translate import openai_to_anthropic_request
from cascadeflow.dialects.translate_responses import (
    ChatToResponsesStream,
    ToolNames,
    anthropic_cache_breakpoints,
    chat_to_responses_response,
    responses_to_chat_request,
)
from cascadeflow.dialects.translate_stream import AnthropicToOpenAIStream
from cascadeflow.dialects.web_search import SearchingStream, SearchResults

EVENT = TypeAdapter(ResponseStreamEvent)
OUTPUT = TypeAdapter(list[ResponseOutputItem])

CODEX_LIKE = {
    "model": "gpt-5.4", "stream": True, "store": False, "parallel_tool_calls": True, "tool_choice": "auto",
    "reasoning": {"summary": "auto"}, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "thread-1",
    "client_metadata": {"x": "y"},
    "tools": [
        {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
        {"type": "custom", "name": "apply_patch", "description": "Patch files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"}},
        {"type": "namespace", "name": "goals", "description": "Goal tools",
         "tools": [{"type": "function", "name": "set_goal", "parameters": {"type": "object", "properties": {}}}]},
        {"type": "web_search"},
    ],
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Look:"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-secret"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running it."}]},
        {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
        {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "function_call", "call_id": "call_3", "namespace": "goals", "name": "set_goal", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
        {"type": "custom_tool_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "ok"}]},
        {"type": "function_call_output", "call_id": "call_3", "output": "set"},
    ],
}


def test_codex_request_as_chat():
    chat, dropped, names = responses_to_chat_request(CODEX_LIKE)
    messages = chat["messages"]
    assert messages[0] == {"role": "system", "content": "You are Codex."}
    assert messages[1]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                                            "detail": "high"}}
    assistant = messages[2]
    assert assistant["content"] == "Running it."
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["exec_command", "apply_patch", "goals__set_goal"]
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {"input": "*** Begin Patch"}
    assert [m["role"] for m in messages[3:]] == ["tool", "tool", "tool"] and messages[4]["content"] == "ok"
    assert "gAAAA-secret" not in orjson.dumps(chat).decode()
    assert {t["function"]["name"] for t in chat["tools"]} == {"exec_command", "apply_patch", "goals__set_goal"}
    patch = next(t["function"] for t in chat["tools"] if t["function"]["name"] == "apply_patch")
    assert patch["parameters"]["required"] == ["input"] and "start: begin_patch" in patch["description"]
    assert chat["parallel_tool_calls"] is True and chat["tool_choice"] == "auto"
    assert chat["stream_options"] == {"include_usage": True} and "reasoning_effort" not in chat  # no effort given
    assert "input.reasoning" in dropped and "tools.web_search" in dropped and "client_metadata" in dropped
    assert names.custom == {"apply_patch"} and names.split("goals__set_goal") == ("set_goal", "goals")


def test_chat_answer_as_response_with_custom_and_namespaced_calls():
    _, _, names = responses_to_chat_request(CODEX_LIKE)
    completion = {"id": "c1", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Patching.", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\\n\"}"}},
            {"id": "t2", "type": "function", "function": {"name": "goals__set_goal", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 60},
                  "completion_tokens_details": {"reasoning_tokens": 5}}}
    data = chat_to_responses_response(completion, CODEX_LIKE, "gpt-5.4", names)
    response = Response.model_validate(data)
    message, patch, goal = response.output
    assert message.content[0].text == "Patching."
    assert patch.type == "custom_tool_call" and patch.input == "*** Begin Patch\n" and patch.call_id == "t1"
    assert goal.type == "function_call" and goal.name == "set_goal" and goal.namespace == "goals"
    usage = response.usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens,
            usage.output_tokens_details.reasoning_tokens) == (100, 60, 20, 5)


def test_length_is_incomplete():
    completion = {"choices": [{"finish_reason": "length", "message": {"content": "cut"}}], "usage": {}}
    data = chat_to_responses_response(completion, {"model": "m"}, "m", responses_to_chat_request({"input": "x"})[2])
    assert data["status"] == "incomplete" and data["incomplete_details"] == {"reason": "max_output_tokens"}


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return encode_event(orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))


def _events(out: bytes) -> list[dict]:
    events = [orjson.loads(e.data) for e in SSEDecoder().feed(out)]
    for event in events:
        EVENT.validate_python(event)
    return events


def test_stream_translation_event_by_event():
    _, _, names = responses_to_chat_request(CODEX_LIKE)
    translator = ChatToResponsesStream(CODEX_LIKE, "gpt-5.4", names)
    stream = b"".join([
        _chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hi "}), _chunk({"content": "there."}),
        _chunk({"tool_calls": [{"index": 0, "id": "t1", "type": "function", "function": {"name": "apply_patch", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"input\":\"*** Be"}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "gin Patch\"}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "t2", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\""}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": ":\"ls\"}"}}]}),
        _chunk({}, "tool_calls"),
        encode_event(b'{"id":"c","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":4}}'),
        b"data: [DONE]\n\n",
    ])
    out = b"".join(translator.feed(stream[i:i + 7]) for i in range(0, len(stream), 7)) + translator.finish()
    events = _events(out)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed" and translator.complete
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hi there."
    done = [e for e in events if e["type"] == "response.custom_tool_call_input.done"]
    assert done[0]["input"] == "*** Begin Patch"
    args = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert args[0]["arguments"] == "{\"cmd\":\"ls\"}"
    final = Response.model_validate(events[-1]["response"])
    assert [o.type for o in final.output] == ["message", "custom_tool_call", "function_call"]
    assert final.usage.input_tokens == 10 and final.usage.output_tokens == 4


def test_cut_stream_ends_with_an_error_event():
    translator = ChatToResponsesStream({"model": "m"}, "m", responses_to_chat_request({"input": "x"})[2])
    out = translator.feed(_chunk({"content": "half"})) + translator.finish()
    events = _events(out)
    assert events[-1]["type"] == "error" and translator.error and not translator.complete


def test_anthropic_breakpoints_mark_the_system_prompt_or_the_tools_and_the_last_two_turns():
    """The system prompt's breakpoint caches the tools before it, so the tools are marked only without one: one of
    Anthropic's four breakpoints stays free for the cascade's bridge."""
    chat, _, _ = responses_to_chat_request(CODEX_LIKE)
    body, _ = openai_to_anthropic_request(chat)
    anthropic_cache_breakpoints(body)
    marks = orjson.dumps(body).decode().count('"cache_control"')
    assert marks == 3
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body["tools"][-1]
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert all(isinstance(m["content"], list) for m in body["messages"])
    chat, _, _ = responses_to_chat_request({**CODEX_LIKE, "input": CODEX_LIKE["input"][1:]})  # no developer message
    body, _ = openai_to_anthropic_request(chat)
    anthropic_cache_breakpoints(body)
    assert "system" not in body and body["tools"][-1]["cache_control"] == {"type": "ephemeral"}


_KEYS = ["type", "role", "content", "name", "call_id", "arguments", "output", "input", "tools", "format", "schema",
         "text", "image_url", "namespace", "file_data", "definition", "parameters", "mode", "effort"]
_WORDS = ["message", "function_call", "custom_tool_call", "function_call_output", "custom_tool_call_output",
          "reasoning", "namespace", "function", "custom", "input_text", "input_image", "input_file", "json_schema",
          "grammar", "user", "assistant", "developer", "system", "required", "auto", "x"]
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 5) | st.sampled_from(_WORDS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["input", "instructions", "tools", "tool_choice", "text", "reasoning",
                                             "max_output_tokens", "parallel_tool_calls", "stream", "model"]), _VALUES))
def test_any_body_translates_both_ways_without_crashing(body):
    """Whatever a client sends, translation yields a request (or the upstream's 400), never an exception."""
    chat, _, names = responses_to_chat_request(body)
    anthropic, _ = openai_to_anthropic_request(chat)
    anthropic_cache_breakpoints(anthropic)
    orjson.dumps(anthropic)
    completion = {"choices": [{"message": {"content": "x", "tool_calls": [
        {"id": "1", "function": {"name": n, "arguments": "{}"}} for n in list(names.custom)[:2]]}}]}
    data = chat_to_responses_response(completion, body, "m", names)
    OUTPUT.validate_python(data["output"])
    ResponseUsage.model_validate(data["usage"])
    orjson.dumps(data)


def _anthropic(name: str, payload: dict) -> bytes:
    return encode_event(orjson.dumps({"type": name, **payload}), name)


def _search_stream(error: bool = False) -> list[bytes]:
    """An Anthropic stream: text, a web search (or its error), cited text, the end."""
    result = ({"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"} if error else
              [{"type": "web_search_result", "url": "https://a.example/1", "title": "A", "encrypted_content": "e"}])
    citation = {"type": "web_search_result_location", "url": "https://a.example/1", "title": "A",
                "encrypted_index": "i", "cited_text": "a"}
    return [
        _anthropic("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                                 "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        _anthropic("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        _anthropic("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Let me look. "}}),
        _anthropic("content_block_stop", {"index": 0}),
        _anthropic("content_block_start", {"index": 1, "content_block": {"type": "server_tool_use", "id": "srv_1",
                                                                         "name": "web_search", "input": {}}}),
        _anthropic("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"query":'}}),
        _anthropic("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '"kelp"}'}}),
        _anthropic("content_block_stop", {"index": 1}),
        _anthropic("content_block_start", {"index": 2, "content_block": {"type": "web_search_tool_result",
                                                                         "tool_use_id": "srv_1", "content": result}}),
        _anthropic("content_block_stop", {"index": 2}),
        _anthropic("content_block_start", {"index": 3, "content_block": {"type": "text", "text": ""}}),
        _anthropic("content_block_delta", {"index": 3, "delta": {"type": "citations_delta", "citation": citation}}),
        _anthropic("content_block_delta", {"index": 3, "delta": {"type": "text_delta", "text": "Kelp grows."}}),
        _anthropic("content_block_stop", {"index": 3}),
        _anthropic("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 12}}),
        _anthropic("message_stop", {}),
    ]


def _searching(request: dict) -> SearchingStream:
    names = responses_to_chat_request(request)[2]
    return SearchingStream(AnthropicToOpenAIStream("m", include_usage=True), ChatToResponsesStream(request, "m", names))


def test_a_claude_web_search_streams_as_a_web_search_call_with_citations():
    request = {"model": "m", "input": "search kelp", "tools": [{"type": "web_search"}], "stream": True}
    for error in (False, True):
        translator = _searching(request)
        stream = b"".join(_search_stream(error))
        out = b"".join(translator.feed(stream[i:i + 11]) for i in range(0, len(stream), 11)) + translator.finish()
        events = _events(out)
        assert [e["sequence_number"] for e in events] == list(range(len(events))) and translator.complete
        final = Response.model_validate(events[-1]["response"])
        first, search, second = final.output
        assert first.content[0].text == "Let me look. " and first.content[0].annotations == []
        assert search.type == "web_search_call" and search.action.query == "kelp"
        assert search.status == ("failed" if error else "completed")
        assert [s.url for s in search.action.sources or ()] == ([] if error else ["https://a.example/1"])
        [citation] = second.content[0].annotations
        assert (citation.start_index, citation.end_index, citation.url) == (0, len("Kelp grows."), "https://a.example/1")
        added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
        assert len(added) == 1 and added[0]["output_index"] == 2
    cut = _searching(request)
    out = cut.feed(b"".join(_search_stream()[:9]) + b"event: content_block_start\ndata: {\"ty") + cut.finish()
    assert _events(out)[-1]["type"] == "error" and not cut.complete


def test_a_claude_web_search_as_json():
    blocks = [{"type": "text", "text": "Look: "},
              {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"query": "kelp"}},
              {"type": "web_search_tool_result", "tool_use_id": "s1",
               "content": [{"type": "web_search_result", "url": "https://a.example/1", "title": "A", "encrypted_content": "e"}]},
              {"type": "text", "text": "Kelp.", "citations": [{"type": "web_search_result_location", "url": "https://a.example/1",
                                                                "title": "A", "encrypted_index": "i", "cited_text": "k"}]}]
    found = SearchResults({"content": blocks})
    assert found.calls == [("kelp", [{"type": "url", "url": "https://a.example/1"}], False)]
    assert found.annotations == [{"type": "url_citation", "start_index": 6, "end_index": 11, "url": "https://a.example/1",
                                  "title": "A"}]
    chat = {"choices": [{"message": {"role": "assistant", "content": "Look: Kelp."}, "finish_reason": "stop"}]}
    response = Response.model_validate(chat_to_responses_response(chat, {"model": "m"}, "m", ToolNames(), found))
    assert [o.type for o in response.output] == ["web_search_call", "message"]
    assert response.output[1].content[0].annotations[0].start_index == 6


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["input", "instructions", "tools", "tool_choice", "text", "reasoning",
                                             "max_output_tokens", "stream", "model"]), _VALUES))
def test_any_thread_asking_for_a_claude_model_is_remembered_or_left_without_a_memory(body):
    """Whatever a Codex-like client sends in a thread to a Claude model, its turn is priced on the translated prompt
    (shape, economics, baseline, record) without an exception, or has no memory (no items)."""
    import asyncio

    from cascadeflow import ModelRegistry, Usage
    from cascadeflow.cascade.session import SessionBook
    from cascadeflow.config import CascadeRule
    from cascadeflow.sessions import MemorySessions

    opus, haiku = "claude-opus-5-5", "claude-haiku-5-5"
    usage = Usage(40, 20, 1200, 2_000)

    async def turns() -> None:
        book = SessionBook(MemorySessions(), ModelRegistry(use_genai_prices=False), clock=lambda: 100.0)
        for _ in range(2):
            turn = await book.begin(CascadeRule(request_model=opus, draft_model=haiku), body, "responses", "thread",
                                    opus, lambda model: "anthropic")
            if turn is None:
                assert not isinstance(body.get("input"), (list, str))
                break
            assert turn.prompt is not None and turn.shape(opus) is turn.shape(haiku)
            turn.signal()
            turn.economics([(haiku, 0, 0)], opus)
            turn.baseline(usage, 20)
            turn.end([(haiku, usage)], drafted=True, accepted=True, served=usage, tool_ids=["c1"])
            book.settle(turn)
        await book.aclose()

    asyncio.run(turns())
