"""The official openai SDK against the gateway, which passes through to the simulator."""

from __future__ import annotations

import json

import openai
import pytest

from cascadeflow import ModelRegistry, Usage

MODEL = "gpt-5.4-mini"
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour of the sky."}]


def direct(sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-direct", max_retries=0)


def through(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-caller", max_retries=0)


def test_create_matches_upstream(gw, sim):
    expected = direct(sim).chat.completions.create(model=MODEL, messages=PROMPT)
    got = through(gw).chat.completions.create(model=MODEL, messages=PROMPT)
    assert got.choices[0].message.content == expected.choices[0].message.content
    assert got.usage.prompt_tokens == expected.usage.prompt_tokens
    assert got.usage.completion_tokens == expected.usage.completion_tokens
    assert sim.requests[-1]["headers"]["authorization"] == "Bearer sk-openai-route-key"


def test_stream_with_usage_chunk_when_asked(gw, sim):
    expected = direct(sim).chat.completions.create(model=MODEL, messages=PROMPT)
    chunks = list(
        through(gw).chat.completions.create(model=MODEL, messages=PROMPT, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == expected.usage.completion_tokens
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]


def test_stream_without_usage_is_still_priced_but_client_sees_no_usage_chunk(gw, sim, http):
    expected = direct(sim).chat.completions.create(model=MODEL, messages=PROMPT)
    before = http.get("/stats").json()
    chunks = list(through(gw).chat.completions.create(model=MODEL, messages=PROMPT, stream=True))
    assert all(c.choices for c in chunks), "the usage chunk the caller did not ask for must be removed"
    assert all(c.usage is None for c in chunks)
    # upstream was asked for usage so the gateway could price the stream
    assert sim.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    after = http.get("/stats").json()
    cost = ModelRegistry().cost(MODEL, Usage(expected.usage.prompt_tokens, expected.usage.completion_tokens))
    assert after["total_cost"] - before["total_cost"] == pytest.approx(cost, rel=1e-6)


async def test_async_client(gw, sim):
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-caller", max_retries=0)
    got = await client.chat.completions.create(model=MODEL, messages=PROMPT)
    stream = await client.chat.completions.create(model=MODEL, messages=PROMPT, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == got.choices[0].message.content
    await client.close()


@pytest.mark.parametrize("streaming", [False, True])
def test_tool_call_round_trip(gw, sim, streaming):
    sim.set_script(
        [
            {"match": {"prompt_contains": "weather in Oslo"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Oslo"}}]},
            {"match": {"prompt_contains": "-3C"}, "text": "It is -3C in Oslo."},
        ]
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    client = through(gw)
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    if streaming:
        calls: dict[int, dict] = {}
        for chunk in client.chat.completions.create(model=MODEL, messages=messages, tools=tools, stream=True):
            for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                call = calls.setdefault(delta.index, {"id": delta.id, "name": "", "arguments": ""})
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        call_id, name, arguments = calls[0]["id"], calls[0]["name"], calls[0]["arguments"]
    else:
        first = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
        assert first.choices[0].finish_reason == "tool_calls"
        tc = first.choices[0].message.tool_calls[0]
        call_id, name, arguments = tc.id, tc.function.name, tc.function.arguments
    assert name == "get_weather" and json.loads(arguments) == {"city": "Oslo"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "-3C"},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    assert second.choices[0].message.content == "It is -3C in Oslo."
    assert sim.requests[-1]["body"]["messages"][2] == {"role": "tool", "tool_call_id": call_id, "content": "-3C"}


def test_response_format_and_logprobs_pass_through(gw, sim):
    sim.set_script([{"match": {"prompt_contains": "JSON"}, "text": '{"colour": "blue"}', "logprob": -0.25}])
    got = through(gw).chat.completions.create(
        model="gpt-4o-mini",  # GPT-5 models refuse logprobs
        messages=[{"role": "user", "content": "Answer in JSON"}],
        response_format={"type": "json_object"},
        logprobs=True,
        top_logprobs=2,
    )
    assert json.loads(got.choices[0].message.content) == {"colour": "blue"}
    content = got.choices[0].logprobs.content
    assert content and all(t.logprob == -0.25 for t in content) and len(content[0].top_logprobs) == 2
    body = sim.requests[-1]["body"]
    assert body["response_format"] == {"type": "json_object"} and body["logprobs"] is True and body["top_logprobs"] == 2


def test_models_list_in_openai_shape(gw):
    models = through(gw).models.list()
    ids = [m.id for m in models.data]
    assert "gpt-4o" in ids and "claude-opus-5-5" in ids
    assert all(m.object == "model" for m in models.data)
    assert through(gw).models.retrieve("gpt-4o").id == "gpt-4o"


def test_forced_route_prefix_rewrites_only_the_model(gw, sim):
    got = through(gw).chat.completions.create(model="openai:gpt-4o", messages=PROMPT, temperature=0.3, extra_body={"custom_field": {"a": 1}})
    body = sim.requests[-1]["body"]
    assert body["model"] == "gpt-4o"
    assert body["custom_field"] == {"a": 1} and body["temperature"] == 0.3
    assert got.choices[0].message.content.startswith("[gpt-4o]")
