"""Across dialects with the official SDKs: anthropic → OpenAI-compatible upstream, openai → Anthropic upstream."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from cascadeflow import ProxyConfig
from tests.conftest import sim_routes

MINI, HAIKU, OPUS, GPT = "gpt-5.4-mini", "claude-haiku-5-5", "claude-opus-5-5", "gpt-5.4"
LP_MINI = "gpt-4o-mini"  # a draft that returns log-probabilities (GPT-5 models refuse them)

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
OPENAI_WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["input_schema"]}}

SCRIPT = [
    {"match": {"prompt_contains": "weather in Lima"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Lima"}}]},
    {"match": {"prompt_contains": "19C"}, "text": "Lima: 19C and cloudy."},
    {"match": {"model": LP_MINI, "prompt_contains": "confident"}, "text": "Certainly: the answer is 42.", "logprob": -0.01},
    {"match": {"model": LP_MINI, "prompt_contains": "unsure"}, "text": "Perhaps 41, or 43?", "logprob": -2.5},
    {"match": {"model": HAIKU, "prompt_contains": "confident"}, "text": "Certainly: the answer is 42."},
    {"match": {"model": HAIKU, "prompt_contains": "unsure"}, "text": ""},
]


@pytest.fixture(scope="module")
def cross_gw(sim, start_gateway):
    return start_gateway(
        ProxyConfig.from_dict(
            {
                "routes": sim_routes(sim, anthropic_key="sk-ant-route", openai_key="sk-openai-route"),
                "cascade_rules": [
                    {"name": "opus-on-mini", "request_model": OPUS, "draft_model": LP_MINI},
                    {"name": "gpt-on-haiku", "request_model": GPT, "draft_model": HAIKU},
                ],
            }
        )
    )


@pytest.fixture()
def gw(cross_gw, fresh_sim):
    fresh_sim.set_script(SCRIPT)
    return cross_gw


def claude(gw):
    return anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)


def gpt(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="caller", max_retries=0)


def upstream_calls(sim):
    return [(r["path"], r["body"]["model"]) for r in sim.requests if r["path"] in ("/v1/messages", "/v1/chat/completions")]


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_on_an_openai_upstream(gw, sim, stream):
    direct = openai.OpenAI(base_url=sim.url + "/v1", api_key="x").chat.completions.create(
        model=MINI, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    )
    kwargs = {"model": MINI, "max_tokens": 200, "system": "Be brief.", "messages": [{"role": "user", "content": "Say hello"}]}
    sim.clear()
    if stream:
        with claude(gw).messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = claude(gw).messages.create(**kwargs)
    assert message.content[0].text == direct.choices[0].message.content
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == direct.usage.completion_tokens
    sent = sim.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["headers"]["authorization"] == "Bearer sk-openai-route"
    assert not any(h.startswith("anthropic-") for h in sent["headers"])


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_tool_round_trip_on_an_openai_upstream(gw, sim, stream):
    client = claude(gw)
    messages = [{"role": "user", "content": "What is the weather in Lima?"}]
    if stream:
        with client.messages.stream(model=MINI, max_tokens=300, messages=messages, tools=[WEATHER]) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(model=MINI, max_tokens=300, messages=messages, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Lima"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "19C, cloudy"}]},
    ]
    second = client.messages.create(model=MINI, max_tokens=300, messages=messages, tools=[WEATHER])
    assert second.content[0].text == "Lima: 19C and cloudy."
    sent = sim.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Lima"}
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "19C, cloudy"}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_on_an_anthropic_upstream(gw, sim, stream):
    direct = anthropic.Anthropic(base_url=sim.url, api_key="x").messages.create(
        model=HAIKU, max_tokens=4096, system="Be brief.", messages=[{"role": "user", "content": "Say hello"}]
    )
    kwargs = {"model": HAIKU, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]}
    sim.clear()
    if stream:
        chunks = list(gpt(gw).chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage.completion_tokens == direct.usage.output_tokens
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    else:
        completion = gpt(gw).chat.completions.create(**kwargs)
        text = completion.choices[0].message.content
        assert completion.usage.completion_tokens == direct.usage.output_tokens
    assert text == direct.content[0].text
    sent = sim.requests[-1]
    assert sent["path"] == "/v1/messages" and sent["body"]["system"] == "Be brief."
    assert sent["headers"]["x-api-key"] == "sk-ant-route"


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_round_trip_on_an_anthropic_upstream(gw, sim, stream):
    client = gpt(gw)
    messages = [{"role": "user", "content": "What is the weather in Lima?"}]
    if stream:
        calls: dict[int, dict] = {}
        for chunk in client.chat.completions.create(model=HAIKU, messages=messages, tools=[OPENAI_WEATHER], stream=True):
            for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls.setdefault(delta.index, {"id": delta.id, "name": "", "arguments": ""})
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
        call_id, arguments = calls[0]["id"], calls[0]["arguments"]
    else:
        first = client.chat.completions.create(model=HAIKU, messages=messages, tools=[OPENAI_WEATHER])
        assert first.choices[0].finish_reason == "tool_calls"
        call_id, arguments = first.choices[0].message.tool_calls[0].id, first.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(arguments) == {"city": "Lima"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "19C, cloudy"},
    ]
    second = client.chat.completions.create(model=HAIKU, messages=messages, tools=[OPENAI_WEATHER])
    assert second.choices[0].message.content == "Lima: 19C and cloudy."
    sent = sim.requests[-1]["body"]["messages"]
    assert sent[1]["content"][0] == {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Lima"}}
    assert sent[2]["content"][0]["type"] == "tool_result" and sent[2]["content"][0]["tool_use_id"] == call_id


def test_count_tokens_on_an_openai_route_is_estimated(gw, sim):
    response = claude(gw).messages.with_raw_response.count_tokens(
        model=MINI, messages=[{"role": "user", "content": "How many tokens is this sentence, roughly?"}]
    )
    assert 5 <= response.parse().input_tokens <= 40
    assert response.headers["x-cascadeflow-token-count"] == "estimated"
    assert upstream_calls(sim) == []


def test_upstream_errors_come_back_in_the_callers_dialect(gw, sim):
    sim.set_script([{"match": {"model": MINI}, "status": 429, "retry_after": 3, "error_message": "slow down"},
                    {"match": {"model": HAIKU}, "status": 529, "error_message": "busy"}])
    with pytest.raises(anthropic.RateLimitError) as info:
        claude(gw).messages.create(model=MINI, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "rate_limit_error"
    assert "slow down" in info.value.body["error"]["message"] and info.value.response.headers["retry-after"] == "3"
    with pytest.raises(openai.APIStatusError) as oinfo:
        gpt(gw).chat.completions.create(model=HAIKU, messages=[{"role": "user", "content": "x"}])
    assert oinfo.value.status_code == 529 and "busy" in oinfo.value.message
    assert "type" not in oinfo.value.body or oinfo.value.body.get("type") != "error"


@pytest.mark.parametrize("stream", [False, True])
def test_cascade_draft_on_the_other_dialect(gw, sim, stream):
    # Anthropic caller, OpenAI draft: accepted on confident log-probabilities, escalated on unsure ones
    for prompt, accepted in (("a confident one", True), ("an unsure one", False)):
        sim.clear()
        kwargs = {"model": OPUS, "max_tokens": 200, "messages": [{"role": "user", "content": prompt}]}
        if stream:
            with claude(gw).messages.stream(**kwargs) as s:
                message, headers = s.get_final_message(), s.response.headers
        else:
            raw = claude(gw).messages.with_raw_response.create(**kwargs)
            message, headers = raw.parse(), raw.headers
        assert message.model == OPUS
        assert headers["x-cascadeflow-draft-accepted"] == ("true" if accepted else "false")
        if accepted:
            assert message.content[0].text == "Certainly: the answer is 42."
            assert upstream_calls(sim) == [("/v1/chat/completions", LP_MINI)]
            assert sim.requests[-1]["body"]["logprobs"] is True
        else:
            assert headers["x-cascadeflow-decision"] == "escalated:logprobs:low confidence"
            assert upstream_calls(sim) == [("/v1/chat/completions", LP_MINI), ("/v1/messages", OPUS)]
    # OpenAI caller, Anthropic draft
    for prompt, accepted in (("a confident one", True), ("an unsure one", False)):
        sim.clear()
        raw = gpt(gw).chat.completions.with_raw_response.create(model=GPT, messages=[{"role": "user", "content": prompt}], stream=stream)
        result = raw.parse()
        text = "".join(c.choices[0].delta.content or "" for c in result if c.choices) if stream else result.choices[0].message.content
        assert raw.headers["x-cascadeflow-draft-accepted"] == ("true" if accepted else "false")
        if accepted:
            assert text == "Certainly: the answer is 42."
            assert upstream_calls(sim) == [("/v1/messages", HAIKU)]
        else:
            assert text.startswith(f"[{GPT}]")
            assert upstream_calls(sim) == [("/v1/messages", HAIKU), ("/v1/chat/completions", GPT)]


def _chat(gw, stream: bool, **kwargs):
    """(text, headers) of a chat completion through the openai SDK, streamed or not."""
    raw = gpt(gw).chat.completions.with_raw_response.create(stream=stream, **kwargs)
    result = raw.parse()
    text = "".join(c.choices[0].delta.content or "" for c in result if c.choices) if stream else result.choices[0].message.content
    return text, raw.headers


@pytest.mark.parametrize("stream", [False, True])
def test_json_mode_on_a_claude_model(gw, sim, stream):
    """OpenAI's JSON mode on a Claude model: Anthropic has no "any object" format and Claude 4.6+ refuse a
    prefilled ``{``, so it is asked in the system prompt; the answer is a JSON object, not prose."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour, in JSON"}]
    text, _ = _chat(gw, stream, model=HAIKU, messages=messages, response_format={"type": "json_object"})
    assert isinstance(json.loads(text), dict)
    sent = sim.requests[-1]["body"]
    assert sent["system"].startswith("Be brief.\n\n") and "single JSON object" in sent["system"]
    assert "output_config" not in sent and sent["messages"][-1]["role"] == "user"  # no schema, no prefill


@pytest.mark.parametrize("stream", [False, True])
def test_cascade_claude_draft_in_json_mode_is_accepted(gw, sim, stream):
    sim.clear()
    messages = [{"role": "user", "content": "Name a colour, in JSON"}]
    text, headers = _chat(gw, stream, model=GPT, messages=messages, response_format={"type": "json_object"})
    assert headers["x-cascadeflow-draft-accepted"] == "true" and headers["x-cascadeflow-served-model"] == HAIKU
    assert isinstance(json.loads(text), dict) and upstream_calls(sim) == [("/v1/messages", HAIKU)]


@pytest.mark.parametrize("stream", [False, True])
def test_web_search_options_on_a_claude_model(gw, sim, stream):
    """Chat Completions' web search on a Claude model: Anthropic's own search tool, the location carried."""
    options = {"user_location": {"type": "approximate", "approximate": {"country": "NO", "city": "Oslo"}}}
    text, _ = _chat(gw, stream, model=HAIKU, messages=[{"role": "user", "content": "Search the news about kelp"}],
                    web_search_options=options)
    assert text.startswith(f"[{HAIKU}] ")
    sent = sim.requests[-1]["body"]
    if not stream:  # the search's citation, as Chat Completions carries one
        [note] = gpt(gw).chat.completions.create(model=HAIKU, web_search_options=options, messages=[
            {"role": "user", "content": "Search the news about kelp"}]).choices[0].message.annotations
        assert note.type == "url_citation" and note.url_citation.url.startswith("https://example.com/")
        assert (note.url_citation.start_index, note.url_citation.end_index) == (0, len(text))
    assert sent["tools"] == [{"type": "web_search_20250305", "name": "web_search",
                              "user_location": {"type": "approximate", "country": "NO", "city": "Oslo"}}]
