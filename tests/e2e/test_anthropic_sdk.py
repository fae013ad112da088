"""The official anthropic SDK against the gateway, which passes through to the simulator."""

from __future__ import annotations

import anthropic
import pytest

from cascadeflow import ModelRegistry, Usage

MODEL = "claude-sonnet-5-5"
PROMPT = [{"role": "user", "content": "Name a colour of the sky."}]


def direct(sim) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="sk-direct", max_retries=0)


def through(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="sk-caller", max_retries=0)


def test_create_returns_exactly_what_the_upstream_sent(gw, sim):
    expected = direct(sim).messages.create(model=MODEL, max_tokens=200, messages=PROMPT)
    got = through(gw).messages.create(model=MODEL, max_tokens=200, messages=PROMPT)
    assert got.content == expected.content
    assert got.usage == expected.usage
    assert got.model == MODEL and got.stop_reason == "end_turn"
    assert got.content[0].text.startswith(f"[{MODEL}]")
    # the route's key replaced the caller's
    assert sim.requests[-1]["headers"]["x-api-key"] == "sk-ant-route-key"


def test_stream_helper_final_message_matches_upstream(gw, sim):
    expected = direct(sim).messages.create(model=MODEL, max_tokens=200, messages=PROMPT)
    with through(gw).messages.stream(model=MODEL, max_tokens=200, messages=PROMPT) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 1, "the text should arrive in several deltas"
    assert "".join(texts) == expected.content[0].text
    assert final.content[0].text == expected.content[0].text
    assert final.usage.output_tokens == expected.usage.output_tokens
    assert final.stop_reason == "end_turn"


def test_raw_stream_events_arrive_in_protocol_order(gw, sim):
    events = list(through(gw).messages.create(model=MODEL, max_tokens=200, messages=PROMPT, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert "content_block_start" in kinds and "content_block_stop" in kinds


async def test_async_client_create_and_stream(gw, sim):
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key="sk-caller", max_retries=0)
    expected = direct(sim).messages.create(model=MODEL, max_tokens=200, messages=PROMPT)
    got = await client.messages.create(model=MODEL, max_tokens=200, messages=PROMPT)
    assert got.content == expected.content
    async with client.messages.stream(model=MODEL, max_tokens=200, messages=PROMPT) as stream:
        final = await stream.get_final_message()
    assert final.content[0].text == expected.content[0].text
    await client.close()


@pytest.mark.parametrize("streaming", [False, True])
def test_tool_use_round_trip(gw, sim, streaming):
    sim.set_script(
        [
            {"match": {"prompt_contains": "weather in Paris"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}}]},
            {"match": {"prompt_contains": "18 degrees"}, "text": "It is 18 degrees and sunny in Paris."},
        ]
    )
    tools = [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]},
        }
    ]
    client = through(gw)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    if streaming:
        with client.messages.stream(model=MODEL, max_tokens=300, messages=messages, tools=tools) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(model=MODEL, max_tokens=300, messages=messages, tools=tools)
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Paris", "unit": "celsius"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees, sunny", "is_error": False}]},
    ]
    second = client.messages.create(model=MODEL, max_tokens=300, messages=messages, tools=tools)
    assert second.content[0].text == "It is 18 degrees and sunny in Paris."
    sent = sim.requests[-1]["body"]["messages"]
    assert sent[1]["content"][-1]["id"] == call.id
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees, sunny", "is_error": False}


def test_thinking_block_with_signature_survives(gw, sim):
    sim.set_script([{"match": {"prompt_contains": "think"}, "thinking": "Let me think it over", "text": "Done."}])
    client = through(gw)
    first = client.messages.create(
        model=MODEL, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Please think about it"}],
    )
    thinking = first.content[0]
    assert thinking.type == "thinking" and thinking.signature
    follow_up = [
        {"role": "user", "content": "Please think about it"},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": "And now?"},
    ]
    client.messages.create(model=MODEL, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024}, messages=follow_up)
    echoed = sim.requests[-1]["body"]["messages"][1]["content"][0]
    assert echoed["signature"] == thinking.signature and echoed["thinking"] == thinking.thinking


def test_count_tokens(gw, sim):
    expected = direct(sim).messages.count_tokens(model=MODEL, messages=PROMPT)
    got = through(gw).messages.count_tokens(model=MODEL, messages=PROMPT, system="Be brief.")
    assert expected.input_tokens > 0
    assert got.input_tokens > expected.input_tokens  # the system prompt counts
    assert sim.requests[-1]["path"] == "/v1/messages/count_tokens"


def test_models_list_in_anthropic_shape(gw, sim):
    page = through(gw).models.list()
    ids = [m.id for m in page.data]
    assert "claude-opus-5-5" in ids and "gpt-4o" in ids
    assert all(m.type == "model" and m.display_name for m in page.data)
    assert through(gw).models.retrieve("claude-haiku-5-5").id == "claude-haiku-5-5"
    with pytest.raises(anthropic.NotFoundError):
        through(gw).models.retrieve("no-such-model")


def test_usage_is_priced_in_stats(gw, sim, http):
    before = http.get("/stats").json()
    msg = through(gw).messages.create(model=MODEL, max_tokens=200, messages=PROMPT)
    with through(gw).messages.stream(model=MODEL, max_tokens=200, messages=PROMPT) as stream:
        streamed = stream.get_final_message()
    after = http.get("/stats").json()
    registry = ModelRegistry()
    cost = registry.cost(MODEL, Usage(msg.usage.input_tokens, msg.usage.output_tokens))
    cost += registry.cost(MODEL, Usage(streamed.usage.input_tokens, streamed.usage.output_tokens))
    assert after["total_queries"] - before["total_queries"] == 2
    assert after["total_cost"] - before["total_cost"] == pytest.approx(cost, rel=1e-6)
    assert after["by_model"][MODEL]["output_tokens"] - before.get("by_model", {}).get(MODEL, {}).get("output_tokens", 0) == (
        msg.usage.output_tokens + streamed.usage.output_tokens
    )
    assert after["streaming_queries"] - before["streaming_queries"] == 1


def test_cache_tokens_are_read_and_priced_at_their_rates(gw, sim, http):
    # 100 sentences: over the 512-token minimum cacheable length of the 5.5 models
    system = [{"type": "text", "text": "You are a careful assistant. " * 100, "cache_control": {"type": "ephemeral"}}]
    client = through(gw)
    before = http.get("/stats").json()["tokens"]
    first = client.messages.create(model=MODEL, max_tokens=100, system=system, messages=PROMPT)
    second = client.messages.create(model=MODEL, max_tokens=100, system=system, messages=PROMPT)
    assert first.usage.cache_creation_input_tokens > 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    after = http.get("/stats").json()["tokens"]
    assert after["cache_write_tokens"] - before["cache_write_tokens"] == first.usage.cache_creation_input_tokens
    assert after["cache_read_tokens"] - before["cache_read_tokens"] == second.usage.cache_read_input_tokens


def test_one_hour_cache_writes_are_priced_at_twice_the_input_price(gw, sim):
    """Anthropic bills a 1-hour cache write at 2× input (a 5-minute one at 1.25×): the gateway's cost says so."""
    from cascadeflow import ModelRegistry, Usage

    system = [{"type": "text", "text": "You keep answers short. " * 120, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    raw = through(gw).messages.with_raw_response.create(model=MODEL, max_tokens=100, system=system, messages=PROMPT)
    usage = raw.parse().usage
    hour = usage.cache_creation.ephemeral_1h_input_tokens
    assert hour == usage.cache_creation_input_tokens > 0
    registry = ModelRegistry()
    five_minute = registry.cost(MODEL, Usage(usage.input_tokens, usage.output_tokens, hour, 0))
    expected = five_minute + hour * registry.cost(MODEL, Usage(1_000_000, 0, 0, 0)) / 1e6 * 0.75
    assert float(raw.headers["x-cascadeflow-cost-usd"]) == pytest.approx(expected, rel=1e-6)
