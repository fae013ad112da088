"""The simulator's /v1/responses and /v1/embeddings, read by the official openai SDK and checked
event by event against the SDK's own types."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from cascadeflow.sim import SimulatedProvider

EVENT = TypeAdapter(ResponseStreamEvent)
FUNCTION = {"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Apply a patch"}


@pytest.fixture()
def client(fresh_sim):
    return openai.OpenAI(base_url=fresh_sim.url + "/v1", api_key="x", max_retries=0)


def raw_events(sim: SimulatedProvider, body: dict) -> list[dict]:
    """The SSE events as sent, each validated against the SDK's union of stream events."""
    events = []
    with httpx.stream("POST", sim.url + "/v1/responses", json={**body, "stream": True}, timeout=10) as response:
        assert response.status_code == 200
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["type"] == name, "the event name and the data's type agree"
                EVENT.validate_python(data)
                events.append(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_text_answer_json_and_stream_agree(client, fresh_sim):
    got = client.responses.create(model="gpt-5.4-mini", input="Name a colour.", instructions="Be brief.")
    assert got.status == "completed" and got.output_text.startswith("[gpt-5.4-mini] ")
    assert got.usage.input_tokens > 0 and got.usage.output_tokens == len(got.output_text.split())
    events = raw_events(fresh_sim, {"model": "gpt-5.4-mini", "input": "Name a colour.", "instructions": "Be brief."})
    kinds = [e["type"] for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == got.output_text
    assert events[-1]["response"]["usage"]["output_tokens"] == got.usage.output_tokens


def test_function_and_custom_tool_calls(client, fresh_sim):
    fresh_sim.set_script([{"match": {"prompt_contains": "patch"},
                           "tool_calls": [{"name": "apply_patch", "input": "*** Begin Patch\n*** End Patch\n"},
                                          {"name": "get_weather", "input": {"city": "Oslo"}}]}])
    with client.responses.stream(model="gpt-5.4", input="patch it", tools=[FUNCTION, PATCH]) as stream:
        final = stream.get_final_response()
    custom, function = final.output
    assert custom.type == "custom_tool_call" and custom.input == "*** Begin Patch\n*** End Patch\n"
    assert function.type == "function_call" and json.loads(function.arguments) == {"city": "Oslo"}
    events = raw_events(fresh_sim, {"model": "gpt-5.4", "input": "patch it", "tools": [FUNCTION, PATCH]})
    kinds = {e["type"] for e in events}
    assert {"response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
            "response.function_call_arguments.delta", "response.function_call_arguments.done"} <= kinds


def test_forced_tool_and_second_turn(client):
    first = client.responses.create(model="gpt-5.4", input="weather?", tools=[FUNCTION],
                                    tool_choice={"type": "function", "name": "get_weather"})
    call = first.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "city_value"}
    second = client.responses.create(model="gpt-5.4", tools=[FUNCTION], input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ])
    assert second.output_text.startswith("[gpt-5.4] ")


def test_reasoning_usage_and_encrypted_content(client):
    got = client.responses.create(model="gpt-5.4", input="think", reasoning={"effort": "low", "summary": "auto"},
                                  include=["reasoning.encrypted_content"], store=False)
    reasoning = got.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary and reasoning.encrypted_content
    assert got.usage.output_tokens_details.reasoning_tokens == len(reasoning.summary[0].text.split())
    again = client.responses.create(model="gpt-5.4", input=[
        {"role": "user", "content": "think"}, reasoning.model_dump(exclude_none=True), {"role": "user", "content": "more"}])
    assert again.status == "completed"
    with pytest.raises(openai.BadRequestError, match="could not be verified"):
        client.responses.create(model="gpt-5.4", input=[
            {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "from another model"},
            {"role": "user", "content": "x"}])


def test_automatic_prompt_caching(client):
    """OpenAI caches prompts of 1,024 tokens or more, in 128-token steps (the full rules: test_sim_cache.py)."""
    long_input = [{"role": "developer", "content": "You are a careful assistant. " * 200},
                  {"role": "user", "content": "hello"}]
    first = client.responses.create(model="gpt-5.4-mini", input=long_input)
    second = client.responses.create(model="gpt-5.4-mini", input=long_input)
    assert first.usage.input_tokens_details.cached_tokens == 0
    cached = second.usage.input_tokens_details.cached_tokens
    assert 1024 <= cached <= second.usage.input_tokens < cached + 128 and cached % 128 == 0
    assert second.usage.input_tokens == first.usage.input_tokens


def test_structured_output_and_max_output_tokens(client):
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    got = client.responses.create(model="gpt-5.4-mini", input="colour?",
                                  text={"format": {"type": "json_schema", "name": "c", "schema": schema}})
    assert json.loads(got.output_text) == {"colour": "colour_value"}
    cut = client.responses.create(model="gpt-5.4-mini", input="colour?", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize(("status", "last"), [(500, "response.failed"), (429, "error")])
def test_stream_failure_events(fresh_sim, status, last):
    """A server failure mid-stream ends with response.failed (the response and its error), a rate limit with error."""
    fresh_sim.set_script([{"match": {"model": "gpt-5.4-mini"}, "error_event_after": 3, "status": status}])
    events = []
    with httpx.stream("POST", fresh_sim.url + "/v1/responses", timeout=10,
                      json={"model": "gpt-5.4-mini", "input": "x", "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(EVENT.validate_python(json.loads(line[6:])))
    assert len(events) == 4 and events[-1].type == last
    assert (events[-1].response.error.message if last == "response.failed" else events[-1].message)


def test_embeddings(client):
    got = client.embeddings.create(model="text-embedding-3-small", input=["a", "bb"])
    assert [d.index for d in got.data] == [0, 1] and len(got.data[0].embedding) == 8
    assert got.usage.prompt_tokens == 2
