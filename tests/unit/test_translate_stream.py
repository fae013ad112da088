"""Stream translation between the dialects, checked against the simulator and the official SDKs.

Each scripted answer is fetched from the simulated provider twice, streamed (the bytes
we translate) and not streamed (the reference, mapped to the other dialect by hand
here). The translation, fed in arbitrary pieces, must rebuild the reference, follow
the other dialect's event grammar exactly, and parse with the other dialect's SDK.
"""

from __future__ import annotations

import importlib
import json
import re

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from cascadeflow.dialects.accumulate import AnthropicAccumulator, OpenAIAccumulator
from cascadeflow.dialects.sse import SSEDecoder, SSEEvent, encode_event
from cascadeflow.dialects.translate_stream import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from cascadeflow.sim import SimulatedProvider

CLAUDE = "claude-sonnet-5-5"
GPT = "gpt-4o"
EVENT = TypeAdapter(RawMessageStreamEvent)

SCENARIOS: dict[str, dict] = {
    "plain": {"text": "Grüße, world — a plain answer ✓ with a few more words in it."},
    "text_tool": {"text": "Let me check.",
                  "tool_calls": [{"name": "get_weather", "input": {"city": "Paris", "days": 3}}]},
    "two_tools": {"tool_calls": [{"name": "get_weather", "input": {"city": "Paris"}},
                                 {"name": "get_time", "input": {"zone": "Europe/Paris", "nested": {"a": [1, 2]}}}]},
    "max_tokens": {"text": "one two three four five six", "stop_reason": "max_tokens"},
    "empty": {"text": ""},
    "thinking": {"thinking": "Let me think about this.", "text": "Answer."},  # thinking: Anthropic side only
    "cached": {"text": "Cached.", "usage": {"input_tokens": 10, "cache_read_input_tokens": 30,
                                            "cache_creation_input_tokens": 5, "output_tokens": 9}},
}
FAULTS: dict[str, dict] = {
    "rate_limited": {"status": 429, "error_event_after": 3, "error_message": "slow down"},
    "overloaded": {"status": 529, "error_event_after": 3},
    "server_error": {"status": 500, "error_event_after": 2, "error_message": "boom"},
    "cut": {"cut_after": 3},
}
RULES = [{"match": {"prompt_contains": f"[case:{name}]"}, **rule} for name, rule in SCENARIOS.items()]
RULES += [{"match": {"prompt_contains": f"[fault:{name}]"}, "text": "A longer answer that will not finish.", **fault}
          for name, fault in FAULTS.items()]
ID = re.compile(rb"(msg_|chatcmpl-)[0-9a-f]{24}")


@pytest.fixture(scope="module")
def sim():
    with SimulatedProvider(script=RULES) as provider:
        yield provider


def _messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def fetch_openai(sim, prompt: str, stream: bool) -> bytes:
    body: dict = {"model": GPT, "messages": _messages(prompt), "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return httpx.post(sim.url + "/v1/chat/completions", json=body, timeout=10).content


def fetch_anthropic(sim, prompt: str, stream: bool) -> bytes:
    body = {"model": CLAUDE, "max_tokens": 1000, "messages": _messages(prompt), "stream": stream}
    return httpx.post(sim.url + "/v1/messages", json=body, timeout=10).content


@pytest.fixture(scope="module")
def openai_answers(sim) -> dict[str, tuple[bytes, dict]]:
    return {name: (fetch_openai(sim, f"[case:{name}]", True), orjson.loads(fetch_openai(sim, f"[case:{name}]", False)))
            for name in SCENARIOS}


@pytest.fixture(scope="module")
def anthropic_answers(sim) -> dict[str, tuple[bytes, dict]]:
    return {name: (fetch_anthropic(sim, f"[case:{name}]", True),
                   orjson.loads(fetch_anthropic(sim, f"[case:{name}]", False))) for name in SCENARIOS}


def split(raw: bytes, size: int | None) -> list[bytes]:
    return [raw] if size is None else [raw[i : i + size] for i in range(0, len(raw), size)]


def translate(translator, pieces: list[bytes]) -> bytes:
    return b"".join(translator.feed(p) for p in pieces) + translator.finish()


def decode(data: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = decoder.feed(data)
    assert decoder.pending == b""
    return events


# ----------------------------------------------------------------------------- grammar checks


def check_anthropic_grammar(events: list[SSEEvent], *, ends_in_error: bool = False) -> list[dict]:
    """The Messages API's event order, strictly; returns the parsed events."""
    parsed = everything = [orjson.loads(e.data) for e in events]
    for event, data in zip(events, parsed, strict=True):
        assert data["type"] == event.event
        if event.event not in ("error", "ping"):  # the SDK skips pings; it raises on errors
            EVENT.validate_python(data)
    names = [e.event for e in events]
    if ends_in_error:
        assert names[-1] == "error" and names.count("error") == 1
        names, parsed = names[:-1], parsed[:-1]
        assert "message_stop" not in names and "message_delta" not in names
    else:
        assert names[0] == "message_start" and names[-1] == "message_stop" and names.count("message_stop") == 1
        assert names[-2] == "message_delta" and names.count("message_delta") == 1
    if names:
        assert names[0] == "message_start" and names.count("message_start") == 1
    open_block, next_index = None, 0
    for data in parsed[1:]:
        kind = data["type"]
        if kind == "content_block_start":
            assert open_block is None and data["index"] == next_index
            open_block, next_index = data["content_block"]["type"], next_index + 1
        elif kind == "content_block_delta":
            assert data["index"] == next_index - 1 and open_block is not None
            assert data["delta"]["type"] == {"text": "text_delta", "tool_use": "input_json_delta"}[open_block]
        elif kind == "content_block_stop":
            assert data["index"] == next_index - 1 and open_block is not None
            open_block = None
        elif kind == "message_delta":
            assert open_block is None
        else:
            assert kind in ("ping", "message_stop")
    return everything


def check_openai_grammar(events: list[SSEEvent], include_usage: bool, *, ends_in_error: bool = False) -> list[dict]:
    """Chat Completions chunk order; returns the parsed chunks (without ``[DONE]``)."""
    if ends_in_error:
        error = orjson.loads(events[-1].data)
        assert set(error) == {"error"} and error["error"]["message"]
        events = events[:-1]
        assert all(e.data != b"[DONE]" for e in events)
    else:
        assert events[-1].data == b"[DONE]" and [e.data for e in events].count(b"[DONE]") == 1
        events = events[:-1]
    chunks = [orjson.loads(e.data) for e in events]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert ("usage" in chunk) == include_usage
    assert len({c["id"] for c in chunks}) <= 1 and all(c["id"].startswith("chatcmpl-") for c in chunks)
    if chunks:
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    choice_chunks = [c for c in chunks if c["choices"]]
    finishes = [c["choices"][0]["finish_reason"] for c in choice_chunks]
    if not ends_in_error:
        assert finishes[-1] is not None and all(f is None for f in finishes[:-1])
        assert choice_chunks[-1]["choices"][0]["delta"] == {}
        usage_chunks = [c for c in chunks if not c["choices"]]
        assert len(usage_chunks) == int(include_usage)
        if include_usage:
            assert chunks[-1] is usage_chunks[0] and chunks[-1]["usage"]
    return chunks


# ----------------------------------------------------------------------------- hand mappings


def anthropic_from_completion(completion: dict) -> dict:
    """What an Anthropic client should rebuild from an OpenAI answer (ids aside)."""
    choice = completion["choices"][0]
    message, usage = choice["message"], completion["usage"]
    content: list[dict] = [{"type": "text", "text": message["content"]}] if message.get("content") else []
    content += [{"type": "tool_use", "name": c["function"]["name"], "input": json.loads(c["function"]["arguments"]),
                 "caller": {"type": "direct"}}
                for c in message.get("tool_calls") or ()]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[choice["finish_reason"]]
    return {"content": content, "stop_reason": stop,
            "usage": {"input_tokens": usage["prompt_tokens"] - cached, "output_tokens": usage["completion_tokens"],
                      "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}}


def openai_from_message(message: dict) -> dict:
    """What an OpenAI client should rebuild from an Anthropic answer (ids aside)."""
    text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
    calls = [{"name": b["name"], "input": b["input"]} for b in message["content"] if b["type"] == "tool_use"]
    u = message["usage"]
    prompt = u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    usage = {"prompt_tokens": prompt, "completion_tokens": u["output_tokens"],
             "total_tokens": prompt + u["output_tokens"],
             "prompt_tokens_details": {"cached_tokens": u["cache_read_input_tokens"]}}
    if u["cache_creation_input_tokens"]:
        usage["cache_creation_input_tokens"] = u["cache_creation_input_tokens"]
    finish = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}[message["stop_reason"]]
    return {"content": text or (None if calls else ""), "tool_calls": calls, "finish_reason": finish, "usage": usage}


# ----------------------------------------------------------------------------- SDK round trips


def _mock(sdk) -> object:
    """An HTTP client of the SDK's own HTTP package (httpx, or httpx2 in newer SDKs) answering ``body``."""
    client_class = next(c for c in sdk.DefaultHttpxClient.__mro__[1:] if c.__name__ == "Client")
    http = importlib.import_module(client_class.__module__.partition(".")[0])

    def factory(body: bytes):
        def handler(request):
            return http.Response(200, headers={"content-type": "text/event-stream"}, content=body)

        return http.Client(transport=http.MockTransport(handler))

    return factory


def anthropic_sdk_final(body: bytes) -> Message:
    with _mock(anthropic)(body) as http:
        client = anthropic.Anthropic(api_key="x", base_url="http://upstream.test", http_client=http, max_retries=0)
        with client.messages.stream(model=CLAUDE, max_tokens=100, messages=_messages("hi")) as stream:
            return stream.get_final_message()


def openai_sdk_chunks(body: bytes) -> list:
    with _mock(openai)(body) as http:
        client = openai.OpenAI(api_key="x", base_url="http://upstream.test/v1", http_client=http, max_retries=0)
        return list(client.chat.completions.create(model=GPT, messages=_messages("hi"), stream=True))


# ----------------------------------------------------------------------------- OpenAI -> Anthropic


@pytest.mark.parametrize("size", [None, 1, 7, 64])
@pytest.mark.parametrize("name", SCENARIOS)
def test_openai_to_anthropic_rebuilds_the_answer(openai_answers, name, size):
    raw, completion = openai_answers[name]
    translator = OpenAIToAnthropicStream(CLAUDE, input_tokens_hint=42)
    events = decode(translate(translator, split(raw, size)))
    parsed = check_anthropic_grammar(events)
    start = parsed[0]["message"]
    assert start["id"].startswith("msg_") and start["model"] == CLAUDE and start["usage"]["input_tokens"] == 42

    acc = AnthropicAccumulator()
    for event in events:
        acc.feed(event)
    assert acc.done and acc.error is None
    message = Message.model_validate(acc.message).model_dump(exclude_none=True)
    expected = anthropic_from_completion(completion)
    content = [{k: v for k, v in b.items() if k not in ("id", "citations")} for b in message["content"]]
    assert content == expected["content"]
    assert message["stop_reason"] == expected["stop_reason"] and message.get("stop_sequence") is None
    assert message["usage"] == {**message["usage"], **expected["usage"]}
    # tool ids are the upstream's own, so a tool_result finds its way back
    upstream = OpenAIAccumulator()
    for event in decode(raw):
        upstream.feed(event)
    upstream_ids = [c["id"] for c in upstream.completion["choices"][0]["message"].get("tool_calls") or ()]
    assert [b["id"] for b in message["content"] if b["type"] == "tool_use"] == upstream_ids

    assert translator.complete and translator.error is None
    assert translator.usage.output_tokens == completion["usage"]["completion_tokens"]
    assert translator.feed(b"data: [DONE]\n\n") == b"" and translator.finish() == b""  # nothing after the end

    sdk = anthropic_sdk_final(b"".join(e.raw for e in events))
    assert sdk.model_dump(exclude={"id"}) == Message.model_validate(acc.message).model_dump(exclude={"id"})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("name", ["plain", "text_tool", "two_tools", "cached"])
def test_openai_to_anthropic_ignores_chunking(openai_answers, name, data):
    raw = openai_answers[name][0]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=40)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    whole = translate(OpenAIToAnthropicStream(CLAUDE), [raw])
    assert ID.sub(b"ID", translate(OpenAIToAnthropicStream(CLAUDE), pieces)) == ID.sub(b"ID", whole)


@pytest.mark.parametrize(("fault", "error_type", "message"), [
    ("rate_limited", "rate_limit_error", "slow down"),
    ("overloaded", "overloaded_error", None),
    ("server_error", "api_error", "boom"),
])
def test_openai_error_chunk_becomes_an_anthropic_error_event(sim, fault, error_type, message):
    raw = fetch_openai(sim, f"[fault:{fault}]", True)
    translator = OpenAIToAnthropicStream(CLAUDE)
    events = decode(translate(translator, split(raw, 5)))
    parsed = check_anthropic_grammar(events, ends_in_error=True)
    error = parsed[-1]["error"]
    assert error["type"] == error_type and (message is None or error["message"] == message)
    assert translator.error == error["message"] and not translator.complete
    with pytest.raises(anthropic.APIStatusError):
        anthropic_sdk_final(b"".join(e.raw for e in events))


def test_openai_cut_stream_ends_in_an_error_event(sim):
    raw = fetch_openai(sim, "[fault:cut]", True)
    translator = OpenAIToAnthropicStream(CLAUDE)
    body = translator.feed(raw)
    assert b"event: error" not in body and b"message_stop" not in body
    tail = translator.finish()
    assert tail.startswith(b"event: error\n")
    check_anthropic_grammar(decode(body + tail), ends_in_error=True)
    assert translator.error and not translator.complete
    with pytest.raises(anthropic.APIStatusError):
        anthropic_sdk_final(body + tail)


def _oa(delta: dict | None = None, finish: str | None = None, usage: dict | None = None, index: int = 0) -> bytes:
    chunk: dict = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": GPT,
                   "choices": [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return encode_event(orjson.dumps(chunk))


def _call(index: int, call_id: str | None = None, name: str | None = None, args: str | None = None) -> dict:
    fn = {k: v for k, v in (("name", name), ("arguments", args)) if v is not None}
    return {"tool_calls": [{"index": index, **({"id": call_id} if call_id else {}), "function": fn}]}


def _anthropic(raw: bytes, *, ends_in_error: bool = False) -> tuple[OpenAIToAnthropicStream, list[dict], dict]:
    translator = OpenAIToAnthropicStream(CLAUDE)
    events = decode(translate(translator, split(raw, 3)))
    parsed = check_anthropic_grammar(events, ends_in_error=ends_in_error)
    acc = AnthropicAccumulator()
    for event in events:
        acc.feed(event)
    return translator, parsed, acc.message


def test_openai_reasoning_is_dropped_and_refusal_is_text():
    raw = (_oa({"role": "assistant", "content": ""}) + _oa({"reasoning_content": "hmm"}) + _oa({"reasoning": "hm"})
           + _oa({"content": "No"}) + _oa({"refusal": ", sorry."}) + _oa({}, "content_filter")
           + _oa(None, usage={"prompt_tokens": 5, "completion_tokens": 3}) + b"data: [DONE]\n\n")
    translator, _, message = _anthropic(raw)
    assert message["content"] == [{"type": "text", "text": "No, sorry."}] and message["stop_reason"] == "refusal"
    assert translator.usage.input_tokens == 5 and translator.usage.output_tokens == 3


def test_openai_tool_name_after_arguments_and_repeated_ids():
    raw = (_oa(_call(0, "call_a", None, '{"x"')) + _oa(_call(0, None, "f", ":1}")) + _oa(_call(0, "call_a", "f", ""))
           + _oa({"function_call": None, **_call(1, "call_b", "g", "{}")}) + _oa({}, "stop")  # "stop": some servers
           + b"data: [DONE]")  # no blank line after the last event: still read at finish()
    translator, _, message = _anthropic(raw)
    assert [(b["id"], b["name"], b["input"]) for b in message["content"]] == [("call_a", "f", {"x": 1}),
                                                                              ("call_b", "g", {})]
    assert message["stop_reason"] == "tool_use" and translator.complete


def test_openai_interleaved_tool_arguments_fail_loudly():
    raw = (_oa(_call(0, "call_a", "f", '{"a":')) + _oa(_call(1, "call_b", "g", '{"b":'))
           + _oa(_call(0, None, None, "1}")) + _oa(_call(1, None, None, "2}")) + _oa({}, "tool_calls") + b"data: [DONE]\n\n")
    translator, parsed, _ = _anthropic(raw, ends_in_error=True)
    assert "interleaved" in parsed[-1]["error"]["message"] and translator.error and not translator.complete


def test_openai_usage_on_the_finish_chunk_ends_at_once():
    translator = OpenAIToAnthropicStream(CLAUDE)
    out = translator.feed(_oa({"content": "hi"}) + _oa({}, "stop", usage={"prompt_tokens": 9, "completion_tokens": 1}))
    assert out.endswith(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") and translator.complete


def test_openai_finish_without_usage_or_done_still_completes():
    translator = OpenAIToAnthropicStream(CLAUDE, input_tokens_hint=7)
    out = translator.feed(_oa({"content": "hi"}) + _oa({}, "length"))
    assert b"message_delta" not in out  # waits for the usage chunk
    events = decode(out + translator.finish())
    parsed = check_anthropic_grammar(events)
    assert parsed[-2]["delta"]["stop_reason"] == "max_tokens" and parsed[-2]["usage"] == {"output_tokens": 0}
    assert translator.complete


@pytest.mark.parametrize("finish", [b"", _oa({}, "something_new")])
def test_openai_done_without_known_finish_reason_and_other_choices(finish):
    raw = _oa({"content": "a"}) + _oa({"content": "IGNORED"}, index=1) + finish + b"data: [DONE]\n\n"
    _, _, message = _anthropic(raw)
    assert message["content"] == [{"type": "text", "text": "a"}] and message["stop_reason"] == "end_turn"


def test_openai_error_before_anything_is_just_an_error_event():
    raw = encode_event(b'{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}')
    _translator, parsed, _ = _anthropic(raw, ends_in_error=True)
    assert [p["type"] for p in parsed] == ["error"] and parsed[0]["error"]["type"] == "rate_limit_error"


# ----------------------------------------------------------------------------- Anthropic -> OpenAI


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("size", [None, 1, 13])
@pytest.mark.parametrize("name", SCENARIOS)
def test_anthropic_to_openai_rebuilds_the_answer(anthropic_answers, name, size, include_usage):
    raw, message = anthropic_answers[name]
    translator = AnthropicToOpenAIStream(GPT, include_usage, created=1234)
    events = decode(translate(translator, split(raw, size)))
    chunks = check_openai_grammar(events, include_usage)
    assert all(c["model"] == GPT and c["created"] == 1234 and "system_fingerprint" not in c for c in chunks)

    acc = OpenAIAccumulator()
    for event in events:
        acc.feed(event)
    assert acc.done and acc.error is None
    completion = ChatCompletion.model_validate(acc.completion).model_dump()
    expected = openai_from_message(message)
    choice = completion["choices"][0]
    assert choice["message"]["content"] == expected["content"]
    assert choice["finish_reason"] == expected["finish_reason"]
    calls = choice["message"]["tool_calls"] or []
    assert [{"name": c["function"]["name"], "input": json.loads(c["function"]["arguments"])} for c in calls] == \
        expected["tool_calls"]
    upstream = AnthropicAccumulator()
    for event in decode(raw):
        upstream.feed(event)
    assert [c["id"] for c in calls] == [b["id"] for b in upstream.message["content"] if b["type"] == "tool_use"]
    if include_usage:
        assert acc.completion["usage"] == expected["usage"]
    assert translator.complete and translator.error is None
    assert translator.usage.output_tokens == message["usage"]["output_tokens"]
    assert translator.feed(raw) == b"" and translator.finish() == b""

    sdk = openai_sdk_chunks(b"".join(e.raw for e in events))
    assert len(sdk) == len(chunks) and sdk[-1].model_dump(exclude_unset=True) == chunks[-1]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("name", ["thinking", "text_tool", "two_tools", "cached"])
def test_anthropic_to_openai_ignores_chunking(anthropic_answers, name, data):
    raw = anthropic_answers[name][0]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=40)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    whole = translate(AnthropicToOpenAIStream(GPT, True, 1), [raw])
    assert ID.sub(b"ID", translate(AnthropicToOpenAIStream(GPT, True, 1), pieces)) == ID.sub(b"ID", whole)


@pytest.mark.parametrize(("fault", "error_type", "code", "message"), [
    ("rate_limited", "rate_limit_error", "rate_limit_exceeded", "slow down"),
    ("overloaded", "server_error", "overloaded", None),
    ("server_error", "server_error", None, "boom"),
])
def test_anthropic_error_event_becomes_an_openai_error_chunk(sim, fault, error_type, code, message):
    raw = fetch_anthropic(sim, f"[fault:{fault}]", True)
    translator = AnthropicToOpenAIStream(GPT, include_usage=True)
    events = decode(translate(translator, split(raw, 5)))
    check_openai_grammar(events, True, ends_in_error=True)
    error = orjson.loads(events[-1].data)["error"]
    assert error["type"] == error_type and error["code"] == code and (message is None or error["message"] == message)
    assert translator.error == error["message"] and not translator.complete
    with pytest.raises(openai.APIError):
        openai_sdk_chunks(b"".join(e.raw for e in events))


def test_anthropic_cut_stream_ends_in_an_error_chunk(sim):
    raw = fetch_anthropic(sim, "[fault:cut]", True)
    translator = AnthropicToOpenAIStream(GPT, include_usage=False)
    body = translator.feed(raw)
    assert b"[DONE]" not in body and b'"error"' not in body
    tail = translator.finish()
    check_openai_grammar(decode(body + tail), False, ends_in_error=True)
    assert translator.error and not translator.complete
    with pytest.raises(openai.APIError):
        openai_sdk_chunks(body + tail)


def _an(kind: str, **payload) -> bytes:
    return encode_event(orjson.dumps({"type": kind, **payload}), kind)


def test_anthropic_whole_tool_input_and_missing_message_stop():
    raw = (_an("message_start", message={"id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
                                         "content": [], "usage": {"input_tokens": 4, "cache_read_input_tokens": 2}})
           + _an("content_block_start", index=0, content_block={"type": "redacted_thinking", "data": "xx"})
           + _an("content_block_stop", index=0)
           + _an("content_block_start", index=1, content_block={"type": "server_tool_use", "id": "srv", "name": "web",
                                                                 "input": {}})
           + _an("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": "{}"})
           + _an("content_block_stop", index=1)
           + _an("content_block_start", index=2, content_block={"type": "tool_use", "id": "toolu_1", "name": "f",
                                                                 "input": {"q": 1}})
           + _an("content_block_stop", index=2)
           + _an("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 6}))
    translator = AnthropicToOpenAIStream(GPT, include_usage=True)
    body = translator.feed(raw)
    assert b"[DONE]" not in body
    events = decode(body + translator.finish())  # upstream closed right after message_delta: still complete
    check_openai_grammar(events, True)
    acc = OpenAIAccumulator()
    for event in events:
        acc.feed(event)
    message = acc.completion["choices"][0]["message"]
    assert message["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {"name": "f",
                                                                                         "arguments": '{"q":1}'}}]
    assert acc.completion["usage"]["prompt_tokens"] == 6 and acc.completion["usage"]["completion_tokens"] == 6
    assert translator.complete


# ----------------------------------------------------------------------------- robustness

_JUNK = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda v: b"data: " + orjson.dumps(v) + b"\n\n", st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(["type", "index", "delta", "choices", "error", "usage", "tool_calls", "function",
                             "content_block", "finish_reason", "message", "content", "text"]), inner, max_size=4),
        max_leaves=12)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_JUNK, max_size=8))
def test_translators_never_raise_on_junk(pieces):
    for translator in (OpenAIToAnthropicStream(CLAUDE), AnthropicToOpenAIStream(GPT, True)):
        out = translate(translator, pieces)
        assert translator.complete or translator.error  # every stream ends one way or the other
        assert out == b"" or out.endswith(b"\n\n")
