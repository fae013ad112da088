"""Accumulating, replaying and synthesising draft streams, checked against the simulator
(which writes both dialects' streams and JSON bodies faithfully) and the official SDKs'
own stream accumulators."""

from __future__ import annotations

import copy

import anthropic
import httpx
import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from cascadeflow.dialects.accumulate import (
    AnthropicAccumulator,
    OpenAIAccumulator,
    answer_from_anthropic,
    answer_from_openai,
    replay_anthropic,
    replay_openai,
    rewrite_anthropic_message,
    rewrite_openai_completion,
    synthesize_anthropic_stream,
    synthesize_openai_stream,
)
from cascadeflow.dialects.sse import SSEDecoder, SSEEvent, encode_event
from cascadeflow.sim import SimulatedProvider
from cascadeflow.usage import Usage

CLAUDE, GPT = "claude-haiku-5-5", "gpt-4o-mini"
TOOLS2 = [
    {"name": "get_weather", "input": {"city": "Paris", "days": 3, "unit": "celsius"}},
    {"name": "lookup", "input": {"query": "tour eiffel — hauteur?", "filters": {"tags": ["a", "b"], "n": None}}},
]
SCRIPT = [
    {"match": {"prompt_contains": "#text"},
     "text": "Hello there! Ça va? 東京 is big 🚀 and so is the rest of this sentence."},
    {"match": {"prompt_contains": "#tools"}, "text": "Checking two things.", "tool_calls": TOOLS2},
    {"match": {"prompt_contains": "#think"}, "thinking": "Let me weigh this carefully, step by step.",
     "text": "Forty-two."},
    {"match": {"prompt_contains": "#empty"}, "text": ""},
    {"match": {"prompt_contains": "#filter"}, "text": "Nope.", "stop_reason": "content_filter"},
    {"match": {"prompt_contains": "#cache"}, "text": "Cached.",
     "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}},
]
EXPECTED_CALLS = [(t["name"], t["input"], True) for t in TOOLS2]
# "#long" matches no rule: the default answer (> 3 words), cut by max_tokens=3
CASES = ["#text", "#tools", "#think", "#empty", "#long", "#cache"]


@pytest.fixture(scope="module")
def sim():
    with SimulatedProvider() as provider:
        provider.set_script(SCRIPT)
        yield provider


@pytest.fixture(scope="module")
def http(sim):
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        yield client


def anthropic_body(tag: str, stream: bool) -> dict:
    return {"model": CLAUDE, "max_tokens": 3 if tag == "#long" else 1024, "stream": stream,
            "messages": [{"role": "user", "content": f"question {tag}"}]}


def openai_body(tag: str, stream: bool, logprobs: bool = True) -> dict:
    body = {"model": GPT, "stream": stream, "messages": [{"role": "user", "content": f"question {tag}"}],
            "logprobs": logprobs and tag != "#tools"}
    if tag == "#long":
        body["max_completion_tokens"] = 3
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def fetch(http: httpx.Client, path: str, body: dict) -> bytes:
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.content


def events_of(raw: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = decoder.feed(raw)
    assert decoder.pending == b""
    return events


def accumulate(acc_type, raw: bytes):
    acc = acc_type()
    for event in events_of(raw):
        acc.feed(event)
    return acc


def norm_anthropic(message: dict) -> dict:
    """Random ids out of the way."""
    message = copy.deepcopy(message)
    message["id"] = "msg"
    for i, block in enumerate(message["content"]):
        if "id" in block:
            block["id"] = f"tool{i}"
    return message


def norm_openai(completion: dict) -> dict:
    completion = copy.deepcopy(completion)
    completion["id"], completion["created"] = "chatcmpl", 0
    for choice in completion["choices"]:
        for i, call in enumerate(choice["message"].get("tool_calls") or ()):
            call["id"] = f"call{i}"
    return completion


def sdk_anthropic(raw: bytes) -> dict:
    """What the anthropic SDK's own stream accumulator makes of ``raw``."""
    snapshot, bufs = None, {}
    for event in events_of(raw):
        data = orjson.loads(event.data)
        if data["type"] in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    return anthropic.types.Message.model_validate(snapshot.to_dict()).model_dump(mode="json")


def sdk_openai(raw: bytes) -> dict:
    state = ChatCompletionStreamState()
    for event in events_of(raw):
        if event.data != b"[DONE]":
            state.handle_chunk(ChatCompletionChunk.model_validate(orjson.loads(event.data)))
    final = ChatCompletion.model_validate(state.current_completion_snapshot.to_dict()).model_dump(mode="json")
    for choice in final["choices"]:  # the SDK's snapshot leaves it None; non-streaming bodies say []
        choice["message"]["annotations"] = choice["message"]["annotations"] or []
        choice["message"].pop("parsed", None)  # the SDK's structured-output extras
        for call in choice["message"]["tool_calls"] or ():
            call["function"].pop("parsed_arguments", None)
            call.pop("index", None)  # a delta field the snapshot keeps
    return final


def sdk_dump(model, data: dict) -> dict:
    return model.model_validate(data).model_dump(mode="json")


# ---------------------------------------------------------------------------- Anthropic


@pytest.fixture(scope="module")
def anthropic_pairs(http):
    """tag -> (raw stream, non-streaming message) for the same request."""
    return {
        tag: (fetch(http, "/v1/messages", anthropic_body(tag, True)),
              orjson.loads(fetch(http, "/v1/messages", anthropic_body(tag, False))))
        for tag in CASES
    }


@pytest.mark.parametrize("tag", CASES)
def test_anthropic_stream_rebuilds_the_non_streaming_message(anthropic_pairs, tag):
    raw, message = anthropic_pairs[tag]
    acc = accumulate(AnthropicAccumulator, raw)
    assert acc.done and acc.error is None
    assert norm_anthropic(acc.message) == norm_anthropic(message)
    # the SDK types accept it, and the SDK's own accumulator agrees field by field
    assert sdk_dump(anthropic.types.Message, acc.message) == sdk_anthropic(raw)
    assert [e.raw for e in acc.events] == [e.raw for e in events_of(raw)]
    # the normalised answer is the same whichever way the draft was fetched
    streamed, whole = acc.answer(partial=False), answer_from_anthropic(message)
    for call in streamed.tool_calls + whole.tool_calls:
        call.id = ""
    assert streamed == whole


def test_anthropic_answer_values(anthropic_pairs):
    answer = accumulate(AnthropicAccumulator, anthropic_pairs["#tools"][0]).answer()
    assert answer.text == "Checking two things."
    assert [(c.name, c.input, c.valid_json) for c in answer.tool_calls] == EXPECTED_CALLS
    assert answer.tool_calls[1].arguments == orjson.dumps(TOOLS2[1]["input"]).decode()
    assert answer.stop_reason == "tool_use" and answer.model == CLAUDE and not answer.partial
    think = accumulate(AnthropicAccumulator, anthropic_pairs["#think"][0]).answer()
    assert (think.thinking, think.text) == ("Let me weigh this carefully, step by step.", "Forty-two.")
    assert accumulate(AnthropicAccumulator, anthropic_pairs["#long"][0]).answer().stop_reason == "max_tokens"
    cached = answer_from_anthropic(anthropic_pairs["#cache"][1])
    assert cached.usage == Usage(5, 1, 7, 100)


def test_anthropic_feed_reports_closed_blocks_and_partial_answers(anthropic_pairs):
    acc = AnthropicAccumulator()
    seen = []
    for event in events_of(anthropic_pairs["#tools"][0]):
        closed = acc.feed(event)
        if closed is not None:
            answer = acc.answer(partial=True)
            assert answer.partial
            block = acc.message["content"][closed]
            seen.append((closed, block["type"], [c.input for c in answer.tool_calls if c.id == block.get("id")]))
    assert seen == [(0, "text", []), (1, "tool_use", [TOOLS2[0]["input"]]), (2, "tool_use", [TOOLS2[1]["input"]])]
    assert acc.closed_blocks == [0, 1, 2]


def ev(name: str, payload: dict) -> SSEEvent:
    raw = encode_event(orjson.dumps({"type": name, **payload}), name)
    return events_of(raw)[0]


def test_anthropic_rare_blocks_and_broken_tool_json():
    """citations, redacted thinking, a tool call cut mid-JSON, message_delta usage merging."""
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3, "output_tokens": 1}
    citation = {"type": "char_location", "cited_text": "x", "document_index": 0, "document_title": None,
                "start_char_index": 0, "end_char_index": 1}
    acc = AnthropicAccumulator()
    for event in [
        ev("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
                                         "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}),
        ev("content_block_start", {"index": 0, "content_block": {"type": "redacted_thinking", "data": "abc"}}),
        ev("content_block_stop", {"index": 0}),
        ev("content_block_start", {"index": 1, "content_block": {"type": "text", "text": "", "citations": None}}),
        ev("content_block_delta", {"index": 1, "delta": {"type": "citations_delta", "citation": citation}}),
        ev("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "Cited."}}),
        ev("content_block_stop", {"index": 1}),
        ev("content_block_start",
           {"index": 2, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}),
        ev("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}),
        ev("content_block_stop", {"index": 2}),
        ev("message_delta", {"delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                             "usage": {"output_tokens": 9, "input_tokens": 12, "cache_read_input_tokens": None}}),
        ev("message_stop", {}),
    ]:
        acc.feed(event)
    message = acc.message
    assert message["content"] == [
        {"type": "redacted_thinking", "data": "abc"},
        {"type": "text", "text": "Cited.", "citations": [citation]},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
    ]
    assert message["usage"] == {**usage, "input_tokens": 12, "output_tokens": 9}
    anthropic.types.Message.model_validate(message)
    answer = acc.answer()
    assert answer.tool_calls[0].arguments == '{"a": '
    assert (answer.tool_calls[0].valid_json, answer.tool_calls[0].input) == (False, None)
    assert answer.text == "Cited." and answer.usage == Usage(12, 9, 0, 3)
    # synthesising this message back gives a stream that rebuilds it
    assert accumulate(AnthropicAccumulator, synthesize_anthropic_stream(message)).message == message


def test_anthropic_error_and_cut_streams(sim, http):
    sim.set_script([{"match": {"prompt_contains": "#err"}, "text": "one two three four", "error_event_after": 4},
                    {"match": {"prompt_contains": "#cut"}, "text": "one two three four", "cut_after": 5}])
    try:
        err = accumulate(AnthropicAccumulator, fetch(http, "/v1/messages", anthropic_body("#err", True)))
        cut = accumulate(AnthropicAccumulator, fetch(http, "/v1/messages", anthropic_body("#cut", True)))
    finally:
        sim.set_script(SCRIPT)
    assert not err.done and err.error["error"]["type"] == "overloaded_error"
    assert not cut.done and cut.error is None
    assert cut.message["stop_reason"] is None and cut.answer(partial=True).text.startswith("one")


@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30), tag=st.sampled_from(CASES))
@settings(max_examples=60, deadline=None)
def test_anthropic_chunking_independence(anthropic_pairs, cuts, tag):
    raw = anthropic_pairs[tag][0]
    expected = accumulate(AnthropicAccumulator, raw).message
    decoder, acc, last = SSEDecoder(), AnthropicAccumulator(), 0
    for cut in sorted({c % (len(raw) + 1) for c in cuts}) + [len(raw)]:
        for event in decoder.feed(raw[last:cut]):
            acc.feed(event)
        last = cut
    assert acc.message == expected and acc.done


@pytest.mark.parametrize("tag", CASES)
def test_replay_anthropic(anthropic_pairs, tag):
    raw = anthropic_pairs[tag][0]
    events = accumulate(AnthropicAccumulator, raw).events
    assert replay_anthropic(events, None) == raw
    assert replay_anthropic(events, CLAUDE) == raw  # same model: nothing re-serialised
    replayed = replay_anthropic(events, "claude-opus-5-5")
    out = events_of(replayed)
    assert [e.event for e in out] == [e.event for e in events]
    assert out[0].event == "message_start" and out[0].raw != events[0].raw
    assert [e.raw for e in out[1:]] == [e.raw for e in events[1:]]  # all else byte-identical
    start, original = orjson.loads(out[0].data), orjson.loads(events[0].data)
    assert start["message"].pop("model") == "claude-opus-5-5"
    original["message"].pop("model")
    assert start == original
    expected = {**accumulate(AnthropicAccumulator, raw).message, "model": "claude-opus-5-5"}
    assert accumulate(AnthropicAccumulator, replayed).message == expected
    assert sdk_anthropic(replayed) == sdk_dump(anthropic.types.Message, expected)
    assert rewrite_anthropic_message(anthropic_pairs[tag][1], "claude-opus-5-5")["model"] == "claude-opus-5-5"
    assert anthropic_pairs[tag][1]["model"] == CLAUDE  # a copy, not in place


@pytest.mark.parametrize("tag", CASES)
def test_synthesize_anthropic_round_trip(anthropic_pairs, tag):
    """Exact: every field of the non-streaming message comes back."""
    message = anthropic_pairs[tag][1]
    raw = synthesize_anthropic_stream(message)
    events = events_of(raw)
    names = [e.event for e in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("ping") == 1
    assert names.count("content_block_start") == names.count("content_block_stop") == len(message["content"])
    start = orjson.loads(events[0].data)["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["output_tokens"] == 1
    acc = accumulate(AnthropicAccumulator, raw)
    assert acc.done and acc.message == message
    assert sdk_anthropic(raw) == sdk_dump(anthropic.types.Message, message)


# ---------------------------------------------------------------------------- OpenAI

OPENAI_CASES = CASES + ["#filter"]


@pytest.fixture(scope="module")
def openai_pairs(http):
    return {
        tag: (fetch(http, "/v1/chat/completions", openai_body(tag, True)),
              orjson.loads(fetch(http, "/v1/chat/completions", openai_body(tag, False))))
        for tag in OPENAI_CASES
    }


@pytest.mark.parametrize("tag", OPENAI_CASES)
def test_openai_stream_rebuilds_the_non_streaming_completion(openai_pairs, tag):
    raw, completion = openai_pairs[tag]
    acc = accumulate(OpenAIAccumulator, raw)
    assert acc.done and acc.error is None
    if tag == "#empty":  # no output tokens, so no chunk carries logprobs
        completion = rewrite_openai_completion(completion, strip_logprobs=True)
    assert norm_openai(acc.completion) == norm_openai(completion)
    assert sdk_dump(ChatCompletion, acc.completion) == sdk_openai(raw)
    streamed, whole = acc.answer(), answer_from_openai(completion)
    for call in streamed.tool_calls + whole.tool_calls:
        call.id = ""
    assert streamed == whole


def test_openai_answer_values(openai_pairs):
    text = accumulate(OpenAIAccumulator, openai_pairs["#text"][0]).answer()
    assert text.text == SCRIPT[0]["text"] and text.stop_reason == "end_turn" and text.model == GPT
    entries = openai_pairs["#text"][1]["choices"][0]["logprobs"]["content"]
    assert text.logprobs == [e["logprob"] for e in entries] and len(text.logprobs) > 5
    tools = accumulate(OpenAIAccumulator, openai_pairs["#tools"][0]).answer()
    assert [(c.name, c.input, c.valid_json) for c in tools.tool_calls] == EXPECTED_CALLS
    assert tools.stop_reason == "tool_use" and tools.logprobs is None and tools.text == "Checking two things."
    assert accumulate(OpenAIAccumulator, openai_pairs["#long"][0]).answer().stop_reason == "max_tokens"
    assert accumulate(OpenAIAccumulator, openai_pairs["#filter"][0]).answer().stop_reason == "refusal"
    usage = answer_from_openai(openai_pairs["#cache"][1]).usage
    assert usage == Usage(input_tokens=5 + 7, output_tokens=1, cache_read_tokens=100)  # writes are not split out


def test_openai_feed_reports_complete_tool_calls(openai_pairs):
    acc = OpenAIAccumulator()
    reports = []
    for event in events_of(openai_pairs["#tools"][0]):
        closed = acc.feed(event)
        if closed is not None:
            reports.append((closed, [c.input for c in acc.answer(partial=True).tool_calls]))
    assert reports == [(0, [TOOLS2[0]["input"], None]), (1, [TOOLS2[0]["input"], TOOLS2[1]["input"]])]
    assert acc.closed_tool_calls == [0, 1]
    # every call in one chunk (as some compatible servers send them): all complete at the finish
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": GPT, "choices": [
        {"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
         "logprobs": None, "finish_reason": None}]}
    finish = {**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]}
    acc = OpenAIAccumulator()
    raw = encode_event(orjson.dumps(chunk)) + encode_event(orjson.dumps(finish))
    assert [acc.feed(e) for e in events_of(raw)] == [0, 1]
    assert acc.closed_tool_calls == [0, 1] and [c.name for c in acc.answer().tool_calls] == ["f", "g"]


def test_openai_error_chunk(sim, http):
    sim.set_script([{"match": {"prompt_contains": "#err"}, "text": "one two three", "error_event_after": 2}])
    try:
        acc = accumulate(OpenAIAccumulator, fetch(http, "/v1/chat/completions", openai_body("#err", True)))
    finally:
        sim.set_script(SCRIPT)
    assert not acc.done and acc.error["error"]["type"] == "server_error"
    assert acc.completion["choices"][0]["finish_reason"] is None


@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30), tag=st.sampled_from(OPENAI_CASES))
@settings(max_examples=60, deadline=None)
def test_openai_chunking_independence(openai_pairs, cuts, tag):
    raw = openai_pairs[tag][0].replace(b"\n", b"\r\n")  # CRLF too
    expected = accumulate(OpenAIAccumulator, openai_pairs[tag][0]).completion
    decoder, acc, last = SSEDecoder(), OpenAIAccumulator(), 0
    for cut in sorted({c % (len(raw) + 1) for c in cuts}) + [len(raw)]:
        for event in decoder.feed(raw[last:cut]):
            acc.feed(event)
        last = cut
    assert acc.completion == expected and acc.done


def chunks_of(raw: bytes) -> list:
    return [e.data if e.data == b"[DONE]" else orjson.loads(e.data) for e in events_of(raw)]


@pytest.mark.parametrize("tag", OPENAI_CASES)
def test_replay_openai(openai_pairs, tag):
    raw = openai_pairs[tag][0]
    acc = accumulate(OpenAIAccumulator, raw)
    events = acc.events
    assert replay_openai(events, None, False, False) == raw
    assert replay_openai(events, GPT, False, False) == raw  # nothing changes, nothing re-serialised
    original = chunks_of(raw)

    renamed = chunks_of(replay_openai(events, "gpt-5.4", False, False))
    assert [c if c == b"[DONE]" else {**c, "model": GPT} for c in renamed] == original
    assert all(c == b"[DONE]" or c["model"] == "gpt-5.4" for c in renamed)

    stripped_raw = replay_openai(events, None, True, True)
    stripped = chunks_of(stripped_raw)
    assert stripped[-1] == b"[DONE]"
    assert len(stripped) == len(original) - 1 and original[-2]["choices"] == []  # only the usage chunk went
    assert all(ch["logprobs"] is None for c in stripped[:-1] for ch in c["choices"])
    assert all(c.get("usage") is None for c in stripped[:-1])
    out = accumulate(OpenAIAccumulator, stripped_raw).completion
    expected = {k: v for k, v in acc.completion.items() if k != "usage"}
    expected["choices"] = [{**c, "logprobs": None} for c in expected["choices"]]
    assert out == expected
    assert sdk_openai(stripped_raw) == sdk_dump(ChatCompletion, expected)
    # unchanged chunks keep their bytes
    kept = [e.raw for e in events_of(replay_openai(events, None, False, True))]
    assert kept == [e.raw for e in events if b'"choices":[]' not in e.data]


def test_replay_openai_deletes_non_null_usage_on_a_choice_chunk():
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": GPT,
             "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
    events = events_of(encode_event(orjson.dumps(chunk)) + b"data: [DONE]\n\n")
    out = chunks_of(replay_openai(events, None, False, True))
    assert out == [{k: v for k, v in chunk.items() if k != "usage"}, b"[DONE]"]


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("tag", OPENAI_CASES)
def test_synthesize_openai_round_trip(openai_pairs, tag, include_usage):
    """Exact, except that without include_usage the stream carries no usage at all."""
    completion = openai_pairs[tag][1]
    raw = synthesize_openai_stream(completion, include_usage)
    chunks = chunks_of(raw)
    assert chunks[-1] == b"[DONE]" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finish = chunks[-3 if include_usage else -2]["choices"][0]
    assert (finish["delta"], finish["finish_reason"]) == ({}, completion["choices"][0]["finish_reason"])
    assert all(("usage" in c) == include_usage for c in chunks[:-1])
    expected = completion if include_usage else {k: v for k, v in completion.items() if k != "usage"}
    acc = accumulate(OpenAIAccumulator, raw)
    assert acc.done and acc.completion == expected
    assert sdk_openai(raw) == sdk_dump(ChatCompletion, expected)


def test_rewrite_openai_completion(openai_pairs):
    completion = openai_pairs["#text"][1]
    out = rewrite_openai_completion(completion, "gpt-5.4", strip_logprobs=True)
    assert out["model"] == "gpt-5.4" and out["choices"][0]["logprobs"] is None
    assert completion["model"] == GPT and completion["choices"][0]["logprobs"] is not None
    assert {**out, "model": GPT, "choices": completion["choices"]} == completion


# ---------------------------------------------------------------------------- answer_from_*


def test_answer_from_openai_broken_arguments_and_refusal_shapes():
    completion = {
        "id": "c", "object": "chat.completion", "created": 1, "model": GPT,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"a": '}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"b": [1]}'}},
            ]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
                  "prompt_tokens_details": {"cached_tokens": 6}},
    }
    answer = answer_from_openai(completion)
    assert [(c.id, c.name, c.arguments, c.input, c.valid_json) for c in answer.tool_calls] == [
        ("a", "f", '{"a": ', None, False), ("b", "g", '{"b": [1]}', {"b": [1]}, True)]
    assert answer.text == "" and answer.stop_reason == "tool_use" and answer.logprobs is None
    assert answer.usage == Usage(4, 4, 0, 6)
    # the streamed form of the same completion says the same
    assert accumulate(OpenAIAccumulator, synthesize_openai_stream(completion, True)).answer() == answer


@pytest.mark.parametrize(("finish", "stop"), [("stop", "end_turn"), ("length", "max_tokens"),
                                              ("tool_calls", "tool_use"), ("content_filter", "refusal"),
                                              ("function_call", "tool_use"), (None, None),
                                              ("something_new", "other")])
def test_openai_stop_reason_mapping(finish, stop):
    completion = {"model": GPT, "choices": [{"index": 0, "finish_reason": finish, "message": {"content": "x"},
                                             "logprobs": {"content": [{"token": "x", "logprob": -0.5}]}}]}
    answer = answer_from_openai(completion)
    assert (answer.stop_reason, answer.logprobs, answer.text) == (stop, [-0.5], "x")


def test_answer_from_anthropic_values():
    message = {"id": "m", "type": "message", "role": "assistant", "model": CLAUDE,
               "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                           {"type": "text", "text": "a"},
                           {"type": "server_tool_use", "id": "s", "name": "web", "input": {}},
                           {"type": "text", "text": "b"},
                           {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}}],
               "stop_reason": "tool_use", "stop_sequence": None,
               "usage": {"input_tokens": 3, "output_tokens": 2, "cache_creation_input_tokens": 1}}
    answer = answer_from_anthropic(message)
    assert (answer.text, answer.thinking, answer.stop_reason, answer.model) == ("ab", "hm", "tool_use", CLAUDE)
    assert [(c.id, c.name, c.arguments, c.input, c.valid_json) for c in answer.tool_calls] == [
        ("t", "f", '{"x":1}', {"x": 1}, True)]
    assert answer.usage == Usage(3, 2, 1, 0) and answer.logprobs is None and not answer.partial
