"""The simulated provider, driven directly by the official SDKs and by raw HTTP."""

from __future__ import annotations

import asyncio
import time

import anthropic
import httpx
import openai
import orjson
import pytest

from cascadeflow.dialects.sse import SSEDecoder
from cascadeflow.sim import (
    Fault,
    Script,
    ScriptRule,
    SimulatedProvider,
    default_text,
    estimate_input_tokens,
    load_script,
    run_simulator,
)

CLAUDE = "claude-sonnet-5-5"
GPT = "gpt-4o"
QUESTION = "What is the capital of France?"
PROMPT = [{"role": "user", "content": QUESTION}]
# len('[{"role":"user","content":"What is the capital of France?"}]') == 61 -> 61 // 4
PROMPT_TOKENS = 15
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
            "detailed": {"type": "boolean"},
        },
        "required": ["city", "unit", "days"],
    },
}
OPENAI_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]}}


@pytest.fixture(scope="module")
def provider():
    with SimulatedProvider() as sim:
        yield sim


_clients: list = []


@pytest.fixture()
def sim(provider):
    provider.set_script(None)
    provider.clear()
    yield provider
    provider.set_script(None)
    provider.clear()
    while _clients:
        _clients.pop().close()


def ant(sim, **kw) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=sim.url, api_key="sk-test", max_retries=0, **kw)
    _clients.append(client)
    return client


def oai(sim, **kw) -> openai.OpenAI:
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0, **kw)
    _clients.append(client)
    return client


def sse(raw: bytes) -> list[tuple[str | None, bytes]]:
    decoder = SSEDecoder()
    events = decoder.feed(raw)
    assert decoder.pending == b""
    return [(e.event, e.data) for e in events]


def raw_post(sim, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(sim.url + path, json=body, headers={"anthropic-version": "2023-06-01", **(headers or {})}, timeout=10)


# ---------------------------------------------------------------- default answers


def test_anthropic_default_answer_is_deterministic_with_estimated_usage(sim):
    client = ant(sim)
    first = client.messages.create(model=CLAUDE, max_tokens=200, messages=PROMPT)
    again = client.messages.create(model=CLAUDE, max_tokens=200, messages=PROMPT)
    other = client.messages.create(model="claude-haiku-5-5", max_tokens=200, messages=PROMPT)
    text = first.content[0].text
    assert text == default_text(CLAUDE, QUESTION) == again.content[0].text
    assert text.startswith(f"[{CLAUDE}] ") and text.endswith(".")
    assert other.content[0].text.startswith("[claude-haiku-5-5] ") and other.content[0].text != text
    assert first.id.startswith("msg_") and first.id != again.id
    assert first.role == "assistant" and first.model == CLAUDE
    assert first.stop_reason == "end_turn" and first.stop_sequence is None
    assert first.usage.input_tokens == PROMPT_TOKENS == estimate_input_tokens({"messages": PROMPT})
    assert first.usage.output_tokens == len(text.split())
    assert first.usage.cache_creation_input_tokens == 0 and first.usage.cache_read_input_tokens == 0


def test_input_estimate_counts_system_and_tools_and_matches_count_tokens(sim):
    client = ant(sim)
    body = {"messages": PROMPT, "system": "Be brief.", "tools": [WEATHER_TOOL]}
    chars = len(orjson.dumps(PROMPT)) + len(orjson.dumps("Be brief.")) + len(orjson.dumps([WEATHER_TOOL]))
    assert estimate_input_tokens(body) == chars // 4
    counted = client.messages.count_tokens(model=CLAUDE, messages=PROMPT, system="Be brief.", tools=[WEATHER_TOOL])
    msg = client.messages.create(model=CLAUDE, max_tokens=200, messages=PROMPT, system="Be brief.", tools=[WEATHER_TOOL])
    assert counted.input_tokens == msg.usage.input_tokens == chars // 4
    assert sim.requests[0]["path"] == "/v1/messages/count_tokens"


def test_anthropic_stream_matches_non_stream(sim):
    client = ant(sim)
    expected = client.messages.create(model=CLAUDE, max_tokens=200, messages=PROMPT)
    with client.messages.stream(model=CLAUDE, max_tokens=200, messages=PROMPT) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == final.content[0].text == expected.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == PROMPT_TOKENS
    assert final.usage.output_tokens == expected.usage.output_tokens


def test_anthropic_raw_sse_event_order(sim):
    sim.set_script([{"thinking": "Hmm, France.", "text": "The capital is Paris, a city on the Seine.",
                     "tool_calls": [{"name": "lookup", "input": {"q": "Paris population"}}]}])
    resp = raw_post(sim, "/v1/messages?beta=true", {"model": CLAUDE, "max_tokens": 500, "messages": PROMPT, "stream": True})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse(resp.content)
    names = [name for name, _ in events]
    datas = [orjson.loads(data) for _, data in events]
    assert all(d["type"] == n for n, d in zip(names, datas))
    text_deltas = names.count("content_block_delta")
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names.count("ping") == 1 and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 3
    assert text_deltas >= 6
    start = datas[0]["message"]
    assert start["id"].startswith("msg_") and start["type"] == "message" and start["role"] == "assistant"
    assert start["content"] == [] and start["stop_reason"] is None and start["stop_sequence"] is None
    assert start["usage"] == {"input_tokens": PROMPT_TOKENS, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 0, "output_tokens": 1,
                              "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}}
    blocks = [d["content_block"] for d in datas if d["type"] == "content_block_start"]
    assert blocks[0] == {"type": "thinking", "thinking": "", "signature": ""}
    assert blocks[1] == {"type": "text", "text": ""}
    assert blocks[2]["type"] == "tool_use" and blocks[2]["id"].startswith("toolu_") and blocks[2]["input"] == {}
    deltas = [d for d in datas if d["type"] == "content_block_delta"]
    by_index = {i: [d["delta"] for d in deltas if d["index"] == i] for i in range(3)}
    assert "".join(d["thinking"] for d in by_index[0] if d["type"] == "thinking_delta") == "Hmm, France."
    assert [d["type"] for d in by_index[0]][-1] == "signature_delta"
    assert "".join(d["text"] for d in by_index[1]) == "The capital is Paris, a city on the Seine."
    assert len(by_index[1]) == 3  # 9 words in pieces of 3
    assert orjson.loads("".join(d["partial_json"] for d in by_index[2])) == {"q": "Paris population"}
    assert len(by_index[2]) > 2
    # output = words(text) + words(thinking) + len('{"q":"Paris population"}') // 4
    assert datas[-2] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                         "usage": {"output_tokens": 9 + 2 + 24 // 4}}


def test_openai_default_answer_and_stream_with_usage(sim):
    client = oai(sim)
    done = client.chat.completions.create(model=GPT, messages=PROMPT)
    text = done.choices[0].message.content
    assert text == default_text(GPT, QUESTION)
    assert done.id.startswith("chatcmpl-") and done.object == "chat.completion"
    assert done.choices[0].finish_reason == "stop" and done.choices[0].message.tool_calls is None
    assert done.usage.prompt_tokens == PROMPT_TOKENS
    assert done.usage.completion_tokens == len(text.split())
    assert done.usage.total_tokens == PROMPT_TOKENS + len(text.split())
    assert done.usage.prompt_tokens_details.cached_tokens == 0

    chunks = list(client.chat.completions.create(model=GPT, messages=PROMPT, stream=True,
                                                 stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    content = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(content) > 1 and "".join(content) == text
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text.split())
    assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS


def test_openai_raw_stream_ends_with_done(sim):
    resp = httpx.post(sim.url + "/v1/chat/completions", timeout=10, json={
        "model": GPT, "messages": PROMPT, "stream": True, "stream_options": {"include_usage": True}})
    events = sse(resp.content)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == b"[DONE]"
    chunks = [orjson.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "system_fingerprint" in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == [] and set(chunks[-1]["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    # no include_usage: no usage chunk
    plain = sse(httpx.post(sim.url + "/v1/chat/completions", json={"model": GPT, "messages": PROMPT, "stream": True}).content)
    assert all(orjson.loads(d)["choices"] for _, d in plain[:-1]) and plain[-1][1] == b"[DONE]"


# ---------------------------------------------------------------- script answers


def test_rules_match_by_model_glob_and_prompt(sim):
    sim.set_script({"rules": [
        {"match": {"model": "claude-haiku-*", "prompt_contains": "capital"}, "text": "Paris."},
        {"match": {"dialect": "openai", "prompt_contains": "capital"}, "text": "Paris, says GPT."},
    ]})
    client = ant(sim)
    assert client.messages.create(model="claude-haiku-5-5", max_tokens=50, messages=PROMPT).content[0].text == "Paris."
    other = client.messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT).content[0].text
    assert other == default_text(CLAUDE, QUESTION)
    hello = [{"role": "user", "content": "hello"}]
    assert client.messages.create(model="claude-haiku-5-5", max_tokens=50, messages=hello).content[0].text.startswith("[")
    assert oai(sim).chat.completions.create(model=GPT, messages=PROMPT).choices[0].message.content == "Paris, says GPT."


def test_prompt_of_a_tool_result_turn(sim):
    sim.set_script([{"match": {"prompt_contains": "-3C"}, "text": "It is -3C."}])
    openai_turn = PROMPT + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                               "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "-3C"},
    ]
    assert oai(sim).chat.completions.create(model=GPT, messages=openai_turn).choices[0].message.content == "It is -3C."
    anthropic_turn = PROMPT + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3C, cloudy"}]},
    ]
    assert ant(sim).messages.create(model=CLAUDE, max_tokens=50, messages=anthropic_turn).content[0].text == "It is -3C."


def test_set_script_accepts_script_objects_and_usage_override(sim):
    sim.set_script(Script([ScriptRule(match={"model": "gpt-*"}, text="", usage={"prompt_tokens": 100, "completion_tokens": 7, "cached_tokens": 40})]))
    done = oai(sim).chat.completions.create(model=GPT, messages=PROMPT)
    assert done.choices[0].message.content == ""
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (100, 7, 107)
    assert done.usage.prompt_tokens_details.cached_tokens == 40
    sim.set_script([{"usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3,
                               "cache_creation_input_tokens": 2}}])
    msg = ant(sim).messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT)
    assert msg.usage.model_dump(include={"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}) == {
        "input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2}


@pytest.mark.parametrize("streaming", [False, True])
def test_anthropic_scripted_tool_calls(sim, streaming):
    sim.set_script([{"match": {"prompt_contains": "weather"}, "text": "Checking.",
                     "tool_calls": [{"name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}}]}])
    client = ant(sim)
    kwargs = dict(model=CLAUDE, max_tokens=300, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "weather in Paris?"}])
    if streaming:
        with client.messages.stream(**kwargs) as stream:
            msg = stream.get_final_message()
    else:
        msg = client.messages.create(**kwargs)
    assert [b.type for b in msg.content] == ["text", "tool_use"]
    assert msg.content[0].text == "Checking."
    call = msg.content[1]
    assert call.id.startswith("toolu_") and call.name == "get_weather" and call.input == {"city": "Paris", "unit": "celsius"}
    assert msg.stop_reason == "tool_use"
    assert msg.usage.output_tokens == 1 + len('{"city":"Paris","unit":"celsius"}') // 4


@pytest.mark.parametrize("streaming", [False, True])
def test_openai_scripted_tool_calls(sim, streaming):
    sim.set_script([{"tool_calls": [{"name": "get_weather", "input": {"city": "Paris"}},
                                    {"name": "get_time", "input": {"timezone": "Europe/Paris"}}]}])
    client = oai(sim)
    if not streaming:
        msg = client.chat.completions.create(model=GPT, messages=PROMPT, tools=[OPENAI_TOOL])
        choice = msg.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        calls = [(c.id[:5], c.type, c.function.name, c.function.arguments) for c in choice.message.tool_calls]
    else:
        chunks = list(client.chat.completions.create(model=GPT, messages=PROMPT, tools=[OPENAI_TOOL], stream=True))
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        acc: dict[int, dict] = {}
        for chunk in chunks:
            for tc in chunk.choices[0].delta.tool_calls or []:
                if tc.id:  # the first delta of a call: index, id, type, name, empty arguments
                    assert tc.type == "function" and tc.function.arguments == ""
                    acc[tc.index] = {"id": tc.id, "name": tc.function.name, "args": ""}
                else:
                    acc[tc.index]["args"] += tc.function.arguments
        assert sum(1 for c in chunks for tc in (c.choices[0].delta.tool_calls or []) if not tc.id) > 2
        calls = [(a["id"][:5], "function", a["name"], a["args"]) for _, a in sorted(acc.items())]
    assert calls == [("call_", "function", "get_weather", '{"city":"Paris"}'),
                     ("call_", "function", "get_time", '{"timezone":"Europe/Paris"}')]


def test_forced_tool_choice_generates_input_from_schema(sim):
    messages = [{"role": "user", "content": "weather?"}]
    expected = {"city": "city_value", "unit": "celsius", "days": 1}
    msg = ant(sim).messages.create(model=CLAUDE, max_tokens=300, tools=[{"name": "other", "input_schema": {"type": "object"}}, WEATHER_TOOL],
                                   tool_choice={"type": "tool", "name": "get_weather"}, messages=messages)
    assert [(b.type, b.name, b.input) for b in msg.content] == [("tool_use", "get_weather", expected)]
    assert msg.stop_reason == "tool_use"
    anyone = ant(sim).messages.create(model=CLAUDE, max_tokens=300, tools=[WEATHER_TOOL], tool_choice={"type": "any"}, messages=messages)
    assert anyone.content[0].input == expected
    auto = ant(sim).messages.create(model=CLAUDE, max_tokens=300, tools=[WEATHER_TOOL], messages=messages)
    assert auto.content[0].type == "text" and auto.stop_reason == "end_turn"
    done = oai(sim).chat.completions.create(model=GPT, messages=messages, tools=[OPENAI_TOOL], tool_choice="required")
    assert orjson.loads(done.choices[0].message.tool_calls[0].function.arguments) == expected
    named = oai(sim).chat.completions.create(model=GPT, messages=messages, tools=[OPENAI_TOOL],
                                             tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert named.choices[0].finish_reason == "tool_calls"


def test_thinking_blocks_carry_a_signature(sim):
    client = ant(sim)
    kwargs = dict(model=CLAUDE, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024}, messages=PROMPT)
    msg = client.messages.create(**kwargs)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking and msg.content[0].signature
    with client.messages.stream(**kwargs) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].thinking == msg.content[0].thinking
    assert streamed.content[0].signature == msg.content[0].signature
    assert streamed.usage.output_tokens == msg.usage.output_tokens == len(msg.content[0].thinking.split()) + len(msg.content[1].text.split())
    sim.set_script([{"thinking": "Let me think", "text": "Done."}])
    scripted = client.messages.create(model=CLAUDE, max_tokens=100, messages=PROMPT)
    assert scripted.content[0].thinking == "Let me think" and scripted.content[1].text == "Done."
    assert scripted.usage.output_tokens == 4


def test_max_tokens_truncates_both_dialects(sim):
    msg = ant(sim).messages.create(model=CLAUDE, max_tokens=3, messages=PROMPT)
    full = default_text(CLAUDE, QUESTION).split()
    assert msg.content[0].text == " ".join(full[:3])
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3
    done = oai(sim).chat.completions.create(model=GPT, messages=PROMPT, max_completion_tokens=2)
    assert done.choices[0].message.content == " ".join(default_text(GPT, QUESTION).split()[:2])
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 2
    chunks = list(oai(sim).chat.completions.create(model=GPT, messages=PROMPT, max_tokens=4, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"
    sim.set_script([{"text": "short", "stop_reason": "max_tokens"}])
    forced = oai(sim).chat.completions.create(model=GPT, messages=PROMPT)
    assert forced.choices[0].finish_reason == "length" and forced.choices[0].message.content == "short"


def test_stop_sequences(sim):
    sim.set_script([{"text": "one two STOP three"}])
    msg = ant(sim).messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT, stop_sequences=["STOP"])
    assert msg.content[0].text == "one two " and msg.stop_reason == "stop_sequence" and msg.stop_sequence == "STOP"
    done = oai(sim).chat.completions.create(model=GPT, messages=PROMPT, stop=["STOP"])
    assert done.choices[0].message.content == "one two " and done.choices[0].finish_reason == "stop"


def test_logprobs(sim):
    sim.set_script([{"text": "Paris is the capital.", "logprob": -0.05}])
    done = oai(sim).chat.completions.create(model=GPT, messages=PROMPT, logprobs=True, top_logprobs=2)
    content = done.choices[0].logprobs.content
    assert [t.token for t in content] == ["Paris", " is", " the", " capital."]
    assert all(t.logprob == -0.05 and len(t.top_logprobs) == 2 for t in content)
    assert content[1].bytes == list(b" is") and content[1].top_logprobs[0].token == " is"
    assert content[1].top_logprobs[1].logprob < -0.05
    sim.set_script([{"text": "Paris is the capital.", "logprobs": [-0.1, -2.3, -0.2, -0.4]}])
    chunks = list(oai(sim).chat.completions.create(model=GPT, messages=PROMPT, logprobs=True, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [("Paris", -0.1), (" is", -2.3), (" the", -0.2), (" capital.", -0.4)]
    assert sum(1 for c in chunks if c.choices and c.choices[0].logprobs) == 2  # 3 + 1 words
    sim.set_script(None)
    default = oai(sim).chat.completions.create(model=GPT, messages=PROMPT, logprobs=True)
    values = [t.logprob for t in default.choices[0].logprobs.content]
    assert len(values) == default.usage.completion_tokens and all(-0.16 < v < -0.04 for v in values)
    assert oai(sim).chat.completions.create(model=GPT, messages=PROMPT).choices[0].logprobs is None


@pytest.mark.parametrize(("extra", "param", "code", "message"), [
    ({"logprobs": True}, "logprobs", "unsupported_parameter",
     "Unsupported parameter: 'logprobs' is not supported with this model."),
    ({"top_logprobs": 2}, "top_logprobs", "unsupported_parameter",
     "Unsupported parameter: 'top_logprobs' is not supported with this model."),
    ({"max_tokens": 50}, "max_tokens", "unsupported_parameter",
     "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."),
    ({"temperature": 0.2}, "temperature", "unsupported_value",
     "Unsupported value: 'temperature' does not support 0.2 with this model. Only the default (1) value is supported."),
])
def test_reasoning_models_refuse_what_openai_refuses(sim, extra, param, code, message):
    """GPT-5 and o-series models answer 400 (OpenAI's shape, param and code) to parameters they do not take."""
    for model in ("gpt-5.4-mini", "o3"):
        with pytest.raises(openai.BadRequestError) as caught:
            oai(sim).chat.completions.create(model=model, messages=PROMPT, **extra)
        assert caught.value.body == {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    assert sim.requests[-1]["usage"] is None  # refused, nothing billed
    # what they do take: max_completion_tokens, temperature 1; a non-reasoning model takes all of it
    oai(sim).chat.completions.create(model="gpt-5.4-mini", messages=PROMPT, max_completion_tokens=50, temperature=1)
    oai(sim).chat.completions.create(model=GPT, messages=PROMPT, **extra)


# ---------------------------------------------------------------- caching


def test_cache_creation_then_read(sim):
    system = [{"type": "text", "text": "You are helpful. " * 150, "cache_control": {"type": "ephemeral"}}]
    client = ant(sim)
    messages = [{"role": "user", "content": "q1"}]
    first = client.messages.create(model=CLAUDE, max_tokens=50, system=system, messages=messages)
    # prefix: '{"type":"text","text":"<2550 chars>"}' == 2575 chars and its comma -> 644 tokens (over the 512
    # minimum); total: system JSON (2614 chars with the marker) + messages (32) == 2646 -> 661
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens, first.usage.input_tokens) == (644, 0, 17)
    with client.messages.stream(model=CLAUDE, max_tokens=50, system=system, messages=messages) as stream:
        second = stream.get_final_message()
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens, second.usage.input_tokens) == (0, 644, 17)
    # another model has its own cache
    third = client.messages.create(model="claude-haiku-5-5", max_tokens=50, system=system, messages=messages)
    assert third.usage.cache_creation_input_tokens == 644
    # the next turn moves the breakpoint: the earlier prefix is read, the rest written
    turn2 = [
        {"role": "user", "content": [{"type": "text", "text": "q1"}]},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": [{"type": "text", "text": "q2 " * 40, "cache_control": {"type": "ephemeral"}}]},
    ]
    plain_system = [{"type": "text", "text": "You are helpful. " * 150}]
    nxt = client.messages.create(model=CLAUDE, max_tokens=50, system=plain_system, messages=turn2)
    # each message's role and brackets count with its first block, each later block with a comma
    user_frame, assistant_frame = len(b'{"role":"user","content":[]}'), len(b'{"role":"assistant","content":}')
    segs = (2576 + user_frame + len(b'{"type":"text","text":"q1"}') + assistant_frame + len(b'"a1"')
            + user_frame + len(orjson.dumps({"type": "text", "text": "q2 " * 40})))
    assert nxt.usage.cache_read_input_tokens == 644
    assert nxt.usage.cache_creation_input_tokens == segs // 4 - 644
    assert nxt.usage.input_tokens == estimate_input_tokens({"system": plain_system, "messages": turn2}) - segs // 4
    sim.clear()  # clear() forgets the cache too
    assert client.messages.create(model=CLAUDE, max_tokens=50, system=system, messages=messages).usage.cache_creation_input_tokens == 644


def test_openai_cached_tokens(sim):
    """Automatic: no marker needed; the repeated prompt (2,115 tokens) is cached in 128-token steps."""
    messages = [{"role": "system", "content": "Rules. " * 1200}, {"role": "user", "content": "hi"}]
    first = oai(sim).chat.completions.create(model=GPT, messages=messages)
    second = oai(sim).chat.completions.create(model=GPT, messages=messages)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == 2115 // 128 * 128 == 2048
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == estimate_input_tokens({"messages": messages}) == 2115


# ---------------------------------------------------------------- models


def test_models_in_both_shapes(sim):
    page = ant(sim).models.list()
    assert [m.id for m in page.data][:3] == ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"]
    assert all(m.type == "model" and m.display_name for m in page.data)
    assert page.data[1].display_name == "Claude Sonnet 5.5"
    raw = httpx.get(sim.url + "/v1/models", headers={"anthropic-version": "2023-06-01"}).json()
    assert raw["has_more"] is False and raw["first_id"] == "claude-opus-5-5" and raw["last_id"] == "gpt-4o-mini"
    assert set(raw["data"][0]) == {"type", "id", "display_name", "created_at", "lifecycle", "max_input_tokens", "max_tokens", "capabilities"}
    listed = oai(sim).models.list()
    assert [m.id for m in listed.data] == ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5",
                                           "gpt-5.4", "gpt-5.4-mini", "gpt-4o", "gpt-4o-mini"]
    assert listed.data[3].object == "model" and listed.data[3].owned_by == "openai"
    assert httpx.get(sim.url + "/v1/models").json()["object"] == "list"
    assert ant(sim).models.retrieve("claude-haiku-5-5").display_name == "Claude Haiku 5.5"
    assert oai(sim).models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(anthropic.NotFoundError):
        ant(sim).models.retrieve("nope")
    with pytest.raises(openai.NotFoundError):
        oai(sim).models.retrieve("nope")
    with SimulatedProvider(models=["m-1", {"id": "m-2", "display_name": "Two"}]) as custom:
        with ant(custom) as client:
            assert [(m.id, m.display_name) for m in client.models.list().data] == [("m-1", "M 1"), ("m-2", "Two")]
        paged = httpx.get(custom.url + "/v1/models?limit=1", headers={"anthropic-version": "2023-06-01"}).json()
        assert (paged["has_more"], paged["last_id"]) == (True, "m-1")


# ---------------------------------------------------------------- faults


def test_rate_limit_with_retry_after(sim):
    sim.set_script([{"status": 429, "retry_after": 2, "error_message": "slow down"}])
    with pytest.raises(anthropic.RateLimitError) as err:
        ant(sim).messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT)
    assert err.value.status_code == 429 and err.value.response.headers["retry-after"] == "2"
    assert err.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    with pytest.raises(openai.RateLimitError) as oerr:
        oai(sim).chat.completions.create(model=GPT, messages=PROMPT)
    assert oerr.value.response.headers["retry-after"] == "2"
    assert oerr.value.body == {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}


@pytest.mark.parametrize(("status", "etype"), [(400, "invalid_request_error"), (401, "authentication_error"),
                                               (403, "permission_error"), (404, "not_found_error"),
                                               (413, "request_too_large"), (500, "api_error"),
                                               (502, "api_error"), (529, "overloaded_error")])
def test_error_bodies_per_status(sim, status, etype):
    sim.set_script([{"status": status}])
    resp = raw_post(sim, "/v1/messages", {"model": CLAUDE, "max_tokens": 5, "messages": PROMPT, "stream": True})
    assert resp.status_code == status and resp.json()["type"] == "error" and resp.json()["error"]["type"] == etype
    oresp = httpx.post(sim.url + "/v1/chat/completions", json={"model": GPT, "messages": PROMPT})
    assert oresp.status_code == status and set(oresp.json()["error"]) == {"message", "type", "param", "code"}


def test_overloaded_maps_to_sdk_error(sim):
    sim.set_script([{"status": 529}])
    with pytest.raises(anthropic.OverloadedError) as err:
        ant(sim).messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT)
    assert isinstance(err.value, anthropic.InternalServerError) and err.value.status_code == 529
    assert err.value.body["error"]["type"] == "overloaded_error"


def test_times_fails_twice_then_succeeds(sim):
    sim.set_script([{"match": {"model": CLAUDE}, "times": 2, "status": 500}, {"text": "recovered"}])
    client = ant(sim)
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT)
    assert client.messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT).content[0].text == "recovered"
    sim.clear()  # resets the counters
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT)


def test_reset_before_headers_is_a_connection_error(sim):
    sim.set_script([{"reset": "before_headers"}])
    with pytest.raises(anthropic.APIConnectionError):
        ant(sim).messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT)
    with pytest.raises(openai.APIConnectionError):
        oai(sim).chat.completions.create(model=GPT, messages=PROMPT)
    assert len(sim.requests) == 2  # recorded all the same


def test_reset_after_first_event(sim):
    sim.set_script([{"reset": "after_first_event"}])
    with httpx.stream("POST", sim.url + "/v1/messages", json={"model": CLAUDE, "max_tokens": 50, "messages": PROMPT,
                                                              "stream": True}) as resp:
        assert resp.status_code == 200
        got = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in resp.iter_raw():
                got += chunk
    assert [name for name, _ in sse(got)] == ["message_start"]


def test_cut_after_gives_an_incomplete_stream(sim):
    sim.set_script([{"cut_after": 4}])
    with ant(sim).messages.stream(model=CLAUDE, max_tokens=50, messages=PROMPT) as stream:
        msg = stream.get_final_message()
    assert msg.stop_reason is None  # no message_delta arrived
    assert msg.content[0].text == " ".join(default_text(CLAUDE, QUESTION).split()[:3])  # the first delta only
    raw = raw_post(sim, "/v1/messages", {"model": CLAUDE, "max_tokens": 50, "messages": PROMPT, "stream": True})
    assert [n for n, _ in sse(raw.content)] == ["message_start", "content_block_start", "ping", "content_block_delta"]
    oraw = httpx.post(sim.url + "/v1/chat/completions", json={"model": GPT, "messages": PROMPT, "stream": True})
    events = sse(oraw.content)
    assert len(events) == 4 and b"[DONE]" not in oraw.content and b"finish_reason\":\"stop" not in oraw.content


def test_error_event_mid_stream(sim):
    sim.set_script([{"error_event_after": 3}])
    raw = raw_post(sim, "/v1/messages", {"model": CLAUDE, "max_tokens": 50, "messages": PROMPT, "stream": True})
    events = sse(raw.content)
    assert [n for n, _ in events] == ["message_start", "content_block_start", "ping", "error"]
    assert orjson.loads(events[-1][1]) == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(openai.APIError):
        list(oai(sim).chat.completions.create(model=GPT, messages=PROMPT, stream=True))


def test_first_byte_delay_and_chunk_delay(sim):
    sim.set_script([{"match": {"prompt_contains": "slow"}, "first_byte_delay": 0.3},
                    {"match": {"prompt_contains": "drip"}, "chunk_delay": 0.05}])
    client = ant(sim)
    t0 = time.perf_counter()
    client.messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "slow please"}])
    slow = time.perf_counter() - t0
    assert fast < 0.2 and slow >= 0.3
    arrivals = []
    with httpx.stream("POST", sim.url + "/v1/chat/completions",
                      json={"model": GPT, "messages": [{"role": "user", "content": "drip"}], "stream": True}) as resp:
        t0 = time.perf_counter()
        for _ in resp.iter_raw():
            arrivals.append(time.perf_counter() - t0)
    assert len(arrivals) >= 4 and arrivals[-1] >= 0.05 * 4


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions", "/v1/responses"])
def test_a_json_answer_is_cut_or_stalled_half_way(sim, path):
    """cut_after / stall_after / reset on a JSON answer break it after half its body, as they break a stream."""
    body = {"model": CLAUDE if path == "/v1/messages" else GPT, "max_tokens": 50, "messages": PROMPT}
    if path == "/v1/responses":
        body = {"model": GPT, "input": QUESTION}
    whole = raw_post(sim, path, body).content
    sim.set_script([{"match": {"prompt_contains": "France"}, "cut_after": 1}])
    cut = raw_post(sim, path, body)
    assert cut.status_code == 200 and cut.headers["content-type"].startswith("application/json")
    assert 0 < len(cut.content) < len(whole)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(cut.content)
    sim.set_script([{"match": {"prompt_contains": "France"}, "stall_after": 1, "stall_seconds": 30}])
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sim.url + path, json=body, headers={"anthropic-version": "2023-06-01"}, timeout=0.4)
    assert time.perf_counter() - started < 5
    sim.set_script([{"match": {"prompt_contains": "France"}, "stall_after": 1, "stall_seconds": 0.1}])
    assert orjson.loads(raw_post(sim, path, body).content)  # a short stall, then the whole answer
    sim.set_script([{"match": {"prompt_contains": "France"}, "reset": "after_first_event"}])
    with pytest.raises(httpx.RemoteProtocolError):
        raw_post(sim, path, body)


def test_stall_after_times_out_the_reader(sim):
    sim.set_script([{"stall_after": 2, "stall_seconds": 30}])
    client = ant(sim, timeout=0.4)
    t0 = time.perf_counter()
    with pytest.raises(Exception) as err:  # the SDK surfaces the read timeout from inside the stream
        with client.messages.stream(model=CLAUDE, max_tokens=50, messages=PROMPT) as stream:
            stream.get_final_message()
    assert "timeout" in type(err.value).__name__.lower() or "timed out" in str(err.value).lower()
    assert 0.35 < time.perf_counter() - t0 < 5


def test_validation_errors(sim):
    resp = raw_post(sim, "/v1/messages", {"model": CLAUDE, "messages": PROMPT})
    assert resp.status_code == 400 and resp.json()["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    bad = httpx.post(sim.url + "/v1/messages", content=b"{nope", headers={"anthropic-version": "2023-06-01"})
    assert bad.status_code == 400 and bad.json()["type"] == "error"
    missing = httpx.post(sim.url + "/v1/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()


# ---------------------------------------------------------------- recording and control


def test_records_requests_and_control_endpoints(sim):
    ant(sim).messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT, extra_headers={"X-Custom": "Yes"})
    [rec] = sim.requests
    assert rec["method"] == "POST" and rec["path"] == "/v1/messages" and rec["query"] == {}
    assert rec["headers"]["x-custom"] == "Yes" and "anthropic-version" in rec["headers"]
    assert rec["body"] == {"model": CLAUDE, "max_tokens": 50, "messages": PROMPT}
    assert orjson.loads(rec["raw"]) == rec["body"]
    listed = httpx.get(sim.url + "/_sim/requests").json()
    assert len(listed) == 1 and "raw" not in listed[0] and listed[0]["body"] == rec["body"]
    ok = httpx.post(sim.url + "/_sim/script", json=[{"match": {"model": "gpt-*"}, "text": "via http"}])
    assert ok.json() == {"ok": True, "rules": 1}
    assert oai(sim).chat.completions.create(model=GPT, messages=PROMPT).choices[0].message.content == "via http"
    assert httpx.post(sim.url + "/_sim/script", json={"rules": [{"bogus": 1}]}).status_code == 400
    assert httpx.post(sim.url + "/_sim/reset").json() == {"ok": True}
    assert sim.requests == []


def test_load_script_from_yaml(tmp_path):
    path = tmp_path / "script.yaml"
    path.write_text(
        "- match: {model: 'claude-haiku-*', prompt_contains: capital}\n"
        "  times: 2\n  text: Paris.\n"
        "- status: 429\n  retry_after: 1\n"
    )
    script = load_script(path)
    assert len(script.rules) == 2 and script.rules[0].times == 2 and script.rules[0].text == "Paris."
    assert script.rules[1].fault == Fault(status=429, retry_after=1)
    (tmp_path / "s.json").write_bytes(orjson.dumps({"rules": [{"text": "x", "latency": 0.1}]}))
    assert load_script(tmp_path / "s.json").rules[0].fault.latency == 0.1
    with pytest.raises(ValueError):
        Script.coerce([{"match": {"modle": "x"}}])


async def test_in_process_async_lifecycle_and_run_simulator(capsys):
    sim = SimulatedProvider(script=[{"text": "async hello"}])
    await sim.start_async()
    try:
        client = anthropic.AsyncAnthropic(base_url=sim.url, api_key="x", max_retries=0)
        msg = await client.messages.create(model=CLAUDE, max_tokens=50, messages=PROMPT)
        assert msg.content[0].text == "async hello"
        async with client.messages.stream(model=CLAUDE, max_tokens=50, messages=PROMPT) as stream:
            assert (await stream.get_final_message()).content[0].text == "async hello"
        await client.close()
    finally:
        await sim.stop_async()

    task = asyncio.create_task(run_simulator("127.0.0.1", 0))
    out = ""
    for _ in range(200):
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
        if "listening" in out:
            break
    line = out.strip().splitlines()[0]
    assert line.startswith("simulator listening on http://127.0.0.1:")
    url = line.rsplit(" ", 1)[1]
    async with httpx.AsyncClient() as http:
        resp = await http.post(url + "/v1/chat/completions", json={"model": GPT, "messages": PROMPT})
    assert resp.json()["choices"][0]["message"]["content"] == default_text(GPT, QUESTION)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
