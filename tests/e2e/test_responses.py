"""The OpenAI Responses API through the gateway, driven by the official openai SDK.

Three ways to an upstream, all on the simulator: forwarded to an OpenAI route that serves
/v1/responses (``openai_api: responses``), translated to Chat Completions for a chat-only
route (``chat:`` prefix), and translated to the Anthropic Messages API (Claude models).
Every stream event is parsed by the SDK and validated against its union of event types.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from cascadeflow import ModelRegistry, ProxyConfig, Usage
from tests.conftest import NO_RETRY

EVENT = TypeAdapter(ResponseStreamEvent)
GPT, MINI, HAIKU = "gpt-5.4", "gpt-5.4-mini", "claude-haiku-5-5"
#: (model asked for, upstream path, model the upstream sees)
TARGETS = {
    "forwarded": (MINI, "/v1/responses", MINI),
    "chat": (f"chat:{MINI}", "/v1/chat/completions", MINI),
    "anthropic": (HAIKU, "/v1/messages", HAIKU),
}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Apply a patch to files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /(.|\\n)+/"}}
PATCH_TEXT = "*** Begin Patch\n*** Add File: a.txt\n+hello\n*** End Patch\n"
SCRIPT = [
    {"match": {"prompt_contains": "weather in Lima"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Lima"}}]},
    {"match": {"prompt_contains": "19C"}, "text": "Lima: 19C and cloudy."},
    {"match": {"prompt_contains": "write a.txt"}, "tool_calls": [{"name": "apply_patch", "input": {"input": PATCH_TEXT}}]},
    {"match": {"prompt_contains": "Done."}, "text": "Created a.txt."},
]


@pytest.fixture(scope="module")
def resp_gw(sim, start_gateway):
    return start_gateway(ProxyConfig.from_dict({"routes": [
        {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "sk-ant-route", **NO_RETRY},
        {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-openai-route",
         "openai_api": "responses", **NO_RETRY},
        {"name": "chat", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-chat-route", **NO_RETRY},
    ]}))


@pytest.fixture()
def gw(resp_gw, fresh_sim):
    fresh_sim.set_script(SCRIPT)
    return resp_gw


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-caller", max_retries=0)


def upstream(sim) -> list[dict]:
    return [r for r in sim.requests if r["path"].startswith("/v1/") and r["method"] == "POST"]


def create(gw, stream: bool, **kwargs):
    """``responses.create`` or ``responses.stream`` (every event validated); the final Response."""
    if not stream:
        return client(gw).responses.create(**kwargs)
    with client(gw).responses.stream(**kwargs) as events:
        seen = []
        for event in events:
            EVENT.validate_python(event.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False))
            seen.append(event.type)
        final = events.get_final_response()
    assert seen[:2] == ["response.created", "response.in_progress"] and seen[-1] in ("response.completed",
                                                                                   "response.incomplete")
    assert [n for n in seen if n.endswith("output_item.added")].__len__() == len(final.output)
    return final


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("target", TARGETS)
def test_text(gw, sim, target, stream):
    model, path, served = TARGETS[target]
    got = create(gw, stream, model=model, instructions="Be brief.", input="Name a colour.")
    calls = upstream(sim)
    assert [c["path"] for c in calls] == [path] and calls[0]["body"]["model"] == served
    assert got.status == "completed" and got.output_text.startswith(f"[{served}] ")
    assert got.usage.output_tokens == len(got.output_text.split()) and got.usage.input_tokens > 0
    if target == "forwarded":  # the body as the SDK sent it, only the model swapped
        assert calls[0]["body"]["instructions"] == "Be brief." and calls[0]["body"]["input"] == "Name a colour."
    elif target == "chat":
        assert calls[0]["body"]["messages"] == [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "Name a colour."}]
    else:
        assert calls[0]["body"]["system"][0]["text"] == "Be brief."


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("target", TARGETS)
def test_function_tool_loop(gw, sim, target, stream):
    model, path, _ = TARGETS[target]
    first = create(gw, stream, model=model, input="What is the weather in Lima?", tools=[WEATHER])
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Lima"}
    second = create(gw, stream, model=model, tools=[WEATHER], input=[
        {"role": "user", "content": "What is the weather in Lima?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "19C, cloudy"},
    ])
    assert second.output_text == "Lima: 19C and cloudy."
    sent = upstream(sim)[-1]["body"]
    if target == "anthropic":  # the tool result went back as a tool_result for the same id
        results = [b for m in sent["messages"] for b in (m["content"] if isinstance(m["content"], list) else [])
                   if b.get("type") == "tool_result"]
        assert results and results[0]["tool_use_id"] == call.call_id
    elif target == "chat":
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "19C, cloudy"}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("target", ["chat", "anthropic"])
def test_custom_tool_crosses_as_a_one_string_function(gw, sim, target, stream):
    model, _, _ = TARGETS[target]
    first = create(gw, stream, model=model, input="Please write a.txt", tools=[PATCH, WEATHER])
    (call,) = first.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch" and call.input == PATCH_TEXT
    sent = upstream(sim)[-1]["body"]
    if target == "chat":
        tool = next(t for t in sent["tools"] if t["function"]["name"] == "apply_patch")
        assert tool["function"]["parameters"]["required"] == ["input"]
        assert "start: /(.|\\n)+/" in tool["function"]["description"]  # the grammar travels as a hint
    else:
        tool = next(t for t in sent["tools"] if t["name"] == "apply_patch")
        assert tool["input_schema"]["properties"]["input"]["type"] == "string"
    second = create(gw, stream, model=model, tools=[PATCH, WEATHER], input=[
        {"role": "user", "content": "Please write a.txt"},
        {"type": "custom_tool_call", "call_id": call.call_id, "name": "apply_patch", "input": call.input},
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done."},
    ])
    assert second.output_text == "Created a.txt."


def test_custom_tool_forwarded_untouched(gw, sim):
    sim.set_script([{"match": {"prompt_contains": "write a.txt"}, "tool_calls": [{"name": "apply_patch", "input": PATCH_TEXT}]}])
    got = create(gw, True, model=MINI, input="Please write a.txt", tools=[PATCH])
    assert got.output[0].type == "custom_tool_call" and got.output[0].input == PATCH_TEXT
    assert upstream(sim)[-1]["body"]["tools"][0] == PATCH


@pytest.mark.parametrize("target", TARGETS)
def test_structured_output(gw, sim, target):
    model, _, _ = TARGETS[target]
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"],
              "additionalProperties": False}
    fmt = {"format": {"type": "json_schema", "name": "colour", "schema": schema, "strict": True}}
    if target != "forwarded":  # the chat and Messages simulators do not shape their text to a schema
        sim.set_script([{"match": {"prompt_contains": "colour"}, "text": '{"colour": "blue"}'}])
    got = create(gw, False, model=model, input="Name a colour.", text=fmt)
    assert "colour" in json.loads(got.output_text)
    sent = upstream(sim)[-1]["body"]
    if target == "chat":
        assert sent["response_format"]["json_schema"]["schema"] == schema
    elif target == "anthropic":
        assert sent["output_config"]["format"] == {"type": "json_schema", "schema": schema}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("target", TARGETS)
def test_json_object_mode(gw, sim, target, stream):
    """``text.format: json_object`` everywhere; on Claude (no "any object" format, no prefill on 4.6+) it is
    asked in the system prompt, so the answer is a JSON object rather than prose."""
    model, _, _ = TARGETS[target]
    got = create(gw, stream, model=model, instructions="Be brief.", input="Name a colour, in JSON.",
                 text={"format": {"type": "json_object"}})
    assert isinstance(json.loads(got.output_text), dict)
    sent = upstream(sim)[-1]["body"]
    if target == "chat":
        assert sent["response_format"] == {"type": "json_object"}
    elif target == "anthropic":
        assert "single JSON object" in sent["system"][0]["text"] and "output_config" not in sent


SEARCH = {"type": "web_search", "filters": {"allowed_domains": ["kelp.example"]},
          "user_location": {"type": "approximate", "country": "NO", "city": "Oslo"}, "search_context_size": "low"}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("target", TARGETS)
def test_web_search(gw, sim, target, stream):
    """Codex always offers ``web_search``. OpenAI runs it (forwarded as is); a Claude model runs Anthropic's own
    search (its server tool), whose call and citations come back as a web_search_call item and url_citation
    annotations; a chat-only upstream runs nothing, so there it is dropped."""
    model, _, served = TARGETS[target]
    got = create(gw, stream, model=model, input="Search the news about kelp.", tools=[SEARCH, WEATHER])
    sent = upstream(sim)[-1]["body"]
    if target == "forwarded":
        assert sent["tools"][0] == SEARCH
        return
    if target == "chat":
        assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
        assert [item.type for item in got.output] == ["message"]
        return
    assert sent["tools"][-1] == {"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["kelp.example"],
                                 "user_location": {"type": "approximate", "country": "NO", "city": "Oslo"},
                                 "cache_control": {"type": "ephemeral"}}
    search, message = got.output
    assert search.type == "web_search_call" and search.status == "completed"
    assert search.action.type == "search" and search.action.query == "Search the news about kelp."
    assert [s.url.split("/")[2] for s in search.action.sources] == ["kelp.example", "kelp.example"]
    text = message.content[0]
    assert text.text.startswith(f"[{served}] ")
    [citation] = text.annotations
    assert citation.type == "url_citation" and citation.url == search.action.sources[0].url
    assert (citation.start_index, citation.end_index) == (0, len(text.text)) and citation.title.startswith("Result 1")


def test_anthropic_session_is_cached_turn_after_turn(gw, sim):
    """Codex never marks a cache breakpoint; the translation does, so turn 2 reads turn 1's prefix."""
    developer = {"role": "developer", "content": "You are a coding agent. " * 1200}  # above every minimum cacheable size
    turn = [developer, {"role": "user", "content": "What is the weather in Lima?"}]
    first = create(gw, True, model=HAIKU, input=turn, tools=[WEATHER], store=False)
    call = first.output[0]
    second = create(gw, True, model=HAIKU, tools=[WEATHER], store=False, input=turn + [
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "19C"}])
    assert first.usage.input_tokens_details.cache_write_tokens > 0
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens_details.cache_write_tokens
    sent = upstream(sim)[-1]["body"]
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in sent["tools"][-1]  # the system prompt's breakpoint caches the tools before it


def test_reasoning_items_never_cross_but_are_forwarded(gw, sim):
    first = create(gw, False, model=GPT, input="Think first.", reasoning={"effort": "low", "summary": "auto"},
                   include=["reasoning.encrypted_content"], store=False)
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert first.usage.output_tokens_details.reasoning_tokens > 0
    history = [{"role": "user", "content": "Think first."}, reasoning.model_dump(exclude_none=True),
               {"role": "assistant", "content": first.output_text}, {"role": "user", "content": "And now?"}]
    again = create(gw, False, model=GPT, input=history, store=False, include=["reasoning.encrypted_content"])
    assert again.status == "completed"  # the simulator verified the encrypted content it made
    assert upstream(sim)[-1]["body"]["input"][1]["encrypted_content"] == reasoning.encrypted_content
    for model in (HAIKU, f"chat:{MINI}"):
        create(gw, False, model=model, input=history, store=False)
        assert "encrypted_content" not in json.dumps(upstream(sim)[-1]["body"])


@pytest.mark.parametrize("target", ["chat", "anthropic"])
def test_stored_state_is_refused_clearly_when_translating(gw, sim, target):
    model, _, _ = TARGETS[target]
    with pytest.raises(openai.BadRequestError, match="Send the whole conversation in `input` with store: false"):
        client(gw).responses.create(model=model, input="hi", previous_response_id="resp_123")
    with pytest.raises(openai.BadRequestError, match="store: true"):
        client(gw).responses.create(model=model, input="hi", store=True)
    assert upstream(sim) == []


def test_stored_responses_are_served_by_the_upstream_that_stores_them(gw, sim):
    """OpenAI stores what was forwarded to it: retrieve and delete by id reach it (with the route's key);
    an id it does not know, or one a translated route made, gets a 404 that says why."""
    api = client(gw).responses
    made = api.create(model=MINI, input="Name a colour.")  # store defaults to true upstream
    got = api.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text
    sent = [r for r in sim.requests if r["method"] == "GET"][-1]
    assert sent["path"] == f"/v1/responses/{made.id}" and sent["headers"]["authorization"] == "Bearer sk-openai-route"
    with pytest.raises(openai.BadRequestError, match="background=true"):  # the upstream's refusal, relayed
        api.cancel(made.id)
    api.delete(made.id)
    with pytest.raises(openai.NotFoundError, match="keeps no stored responses.*store: false"):
        api.retrieve(made.id)
    translated = api.create(model=HAIKU, input="Name a colour.")
    with pytest.raises(openai.NotFoundError, match=f"No response found with id '{translated.id}'.*'openai'"):
        api.retrieve(translated.id)


def test_stored_responses_without_a_route_that_stores_them(sim, start_gateway):
    gw = start_gateway(ProxyConfig.from_dict({"routes": [
        {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "k", **NO_RETRY},
        {"name": "chat", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k", **NO_RETRY}]}))
    api = client(gw).responses
    for call in (api.retrieve, api.delete, api.cancel, api.input_items.list):
        with pytest.raises(openai.NotFoundError, match="no route of this gateway reaches an upstream that stores"):
            call("resp_123")
    raw = httpx.delete(gw.url + "/v1/responses/resp_123")  # not a 405: the answer names the decision
    assert raw.status_code == 404 and "send the whole conversation in `input`" in raw.json()["error"]["message"]


def test_stored_responses_need_the_gateway_key_and_count_against_its_rpm(fresh_sim, start_gateway):
    gw = start_gateway(ProxyConfig.from_dict({
        "routes": [{"name": "openai", "provider": "openai", "base_url": fresh_sim.url + "/v1", "api_key": "sk-route",
                    "openai_api": "responses", **NO_RETRY}],
        "auth": {"mode": "api_key", "keys": [{"key": "k-stored", "limits": {"rpm": 2}}]}}))
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key="wrong", max_retries=0).responses.retrieve("resp_1")
    keyed = openai.OpenAI(base_url=gw.url + "/v1", api_key="k-stored", max_retries=0).responses
    made = keyed.create(model=MINI, input="hi")
    assert keyed.retrieve(made.id).id == made.id
    with pytest.raises(openai.RateLimitError):
        keyed.retrieve(made.id)
    assert [r["method"] for r in fresh_sim.requests] == ["POST", "GET"]  # the refused calls never left the gateway


def test_usage_is_priced_and_recorded(gw, sim):
    stats = lambda: httpx.get(gw.url + "/stats").json()  # noqa: E731
    before = stats()
    got = create(gw, True, model=MINI, input="Name a colour.")
    after = stats()
    usage = Usage(got.usage.input_tokens - got.usage.input_tokens_details.cached_tokens, got.usage.output_tokens, 0,
                  got.usage.input_tokens_details.cached_tokens)
    expected = ModelRegistry().cost(MINI, usage)
    assert after["total_queries"] - before["total_queries"] == 1
    assert after["total_cost"] - before["total_cost"] == pytest.approx(expected, rel=1e-6)


def test_non_stream_cost_header(gw):
    raw = client(gw).responses.with_raw_response.create(model=f"chat:{MINI}", input="Name a colour.")
    assert float(raw.headers["x-cascadeflow-cost-usd"]) > 0 and raw.headers["x-cascadeflow-route"] == "chat"


@pytest.mark.parametrize("target", TARGETS)
def test_upstream_failure_mid_stream_ends_with_an_error_event(gw, sim, target):
    model, _, served = TARGETS[target]
    sim.set_script([{"match": {"model": served}, "error_event_after": 4, "status": 500}])
    with _events(gw, model) as events:
        pass
    last = events[-1]
    if target == "forwarded":  # OpenAI's own failure event, relayed as sent
        assert last["type"] == "response.failed" and last["response"]["error"]["code"] == "server_error"
    else:  # the gateway's: an error event, as OpenAI sends for a stream that broke
        assert last["type"] == "error" and last["message"]
    assert "response.completed" not in [e["type"] for e in events]


class _events:
    """The raw events of one streamed request (each validated), as a context manager's value."""

    def __init__(self, gw, model: str) -> None:
        self.gw, self.model = gw, model

    def __enter__(self) -> list[dict]:
        events = []
        with httpx.stream("POST", self.gw.url + "/v1/responses", timeout=10, headers={"authorization": "Bearer x"},
                          json={"model": self.model, "input": "hello", "stream": True}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    EVENT.validate_python(data)
                    events.append(data)
        return events

    def __exit__(self, *exc) -> None:
        return None


def test_bad_requests_answer_in_openai_shape(gw):
    response = httpx.post(gw.url + "/v1/responses", json={"model": MINI}, timeout=10)
    assert response.status_code == 400 and "input" in response.json()["error"]["message"]
    response = httpx.post(gw.url + "/v1/responses", content=b"{", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_embeddings_forwarded_priced_and_refused_on_anthropic(gw, sim):
    got = client(gw).embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert len(got.data) == 2 and got.usage.prompt_tokens > 0
    assert upstream(sim)[-1]["path"] == "/v1/embeddings"
    raw = client(gw).embeddings.with_raw_response.create(model="text-embedding-3-small", input="alpha beta gamma")
    tokens = raw.parse().usage.prompt_tokens
    assert float(raw.headers["x-cascadeflow-cost-usd"]) == pytest.approx(tokens * 0.02 / 1e6, rel=1e-3)
    with pytest.raises(openai.BadRequestError, match="no embeddings API"):
        client(gw).embeddings.create(model=HAIKU, input="alpha")


def test_auth_limits_and_ledger_as_for_chat_completions(fresh_sim, start_gateway, tmp_path):
    """Keys, rate limits and the ledger treat /v1/responses and /v1/embeddings as they treat chat completions."""
    import asyncio

    from tests.e2e.test_limits import _rows

    database = f"sqlite:///{tmp_path / 'gw.db'}"
    config = ProxyConfig.from_dict({
        "routes": [{"name": "chat", "provider": "openai", "base_url": fresh_sim.url + "/v1", "api_key": "sk-route",
                    **NO_RETRY}],
        "database_url": database, "auth": {"mode": "api_key", "keys": [{"key": "k-responses", "limits": {"rpm": 3}}]},
    })
    gw = start_gateway(config)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key="wrong", max_retries=0).responses.create(model=MINI, input="hi")
    keyed = openai.OpenAI(base_url=gw.url + "/v1", api_key="k-responses", max_retries=0)
    keyed.responses.create(model=MINI, input="hi")
    with keyed.responses.stream(model=MINI, input="hi") as stream:
        stream.get_final_response()
    keyed.embeddings.create(model="text-embedding-3-small", input="hi")
    with pytest.raises(openai.RateLimitError) as refused:
        keyed.responses.create(model=MINI, input="hi")
    assert "3 requests per minute" in refused.value.message
    assert len([r for r in fresh_sim.requests if r["method"] == "POST"]) == 3
    rows = asyncio.run(_rows(database, 5))
    assert [(r["endpoint"], r["status"]) for r in rows] == [
        ("/v1/responses", 401), ("/v1/responses", 200), ("/v1/responses", 200), ("/v1/embeddings", 200),
        ("/v1/responses", 429)]
    assert all(r["cost"] > 0 for r in rows[1:4]) and rows[2]["stream"]


# ---------------------------------------------------------------- cascades on Responses requests

OPUS = "claude-opus-5-5"
CITY = {"type": "function", "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]}}
CASCADE_SCRIPT = [
    {"match": {"model": draft, "prompt_contains": "capital of France"}, "text": "Paris is the capital of France."}
    for draft in (MINI, HAIKU)
] + [
    {"match": {"model": draft, "prompt_contains": "say nothing"}, "text": ""} for draft in (MINI, HAIKU)
] + [
    {"match": {"model": draft, "prompt_contains": "weather in Oslo"},
     "tool_calls": [{"name": "get_weather", "input": {"days": "many"}}]} for draft in (MINI, HAIKU)
]
#: rule → (model asked for, draft, upstream path the drafts and the verifier take)
RULES = {"forwarded": (GPT, MINI, "/v1/responses"), "anthropic": (OPUS, HAIKU, "/v1/messages")}


@pytest.fixture(scope="module")
def cascade_resp_gw(sim, start_gateway):
    return start_gateway(ProxyConfig.from_dict({
        "routes": [
            {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "k", **NO_RETRY},
            {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k",
             "openai_api": "responses", **NO_RETRY},
        ],
        "cascade_rules": [{"name": "gpt", "request_model": GPT, "draft_model": MINI, "quality_threshold": 0.7},
                          {"name": "opus", "request_model": OPUS, "draft_model": HAIKU, "quality_threshold": 0.7}],
    }))


def ask_cascade(gw, stream: bool, **kwargs):
    """The final Response and the response headers (streams validated event by event)."""
    api = client(gw).responses
    if not stream:
        raw = api.with_raw_response.create(**kwargs)
        return raw.parse(), raw.headers
    with api.with_streaming_response.create(stream=True, **kwargs) as raw:
        events = [EVENT.validate_python(json.loads(line[6:])) for line in raw.iter_lines() if line.startswith("data: ")]
        headers = raw.headers
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == sorted(e.sequence_number for e in events)
    return events[-1].response, headers


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("rule", RULES)
def test_cascade_accepts_a_good_draft(cascade_resp_gw, fresh_sim, rule, stream):
    model, draft, path = RULES[rule]
    fresh_sim.set_script(CASCADE_SCRIPT)
    got, headers = ask_cascade(cascade_resp_gw, stream, model=model, input="What is the capital of France?")
    assert got.output_text == "Paris is the capital of France." and got.model == model
    assert headers["x-cascadeflow-draft-accepted"] == "true" and headers["x-cascadeflow-served-model"] == draft
    calls = [r for r in fresh_sim.requests if r["method"] == "POST"]
    assert [(r["path"], r["body"]["model"]) for r in calls] == [(path, draft)]
    usage = Usage(got.usage.input_tokens - got.usage.input_tokens_details.cached_tokens
                  - got.usage.input_tokens_details.cache_write_tokens, got.usage.output_tokens,
                  got.usage.input_tokens_details.cache_write_tokens, got.usage.input_tokens_details.cached_tokens)
    registry = ModelRegistry()
    assert float(headers["x-cascadeflow-cost-usd"]) == pytest.approx(registry.cost(draft, usage), rel=1e-6)
    assert float(headers["x-cascadeflow-baseline-cost-usd"]) == pytest.approx(registry.cost(model, usage), rel=1e-6)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(("prompt", "reason", "tools"), [
    ("Please say nothing at all", "empty answer", None),
    ("What is the weather in Oslo?", "tool_use", [CITY]),
])
def test_cascade_escalates_a_bad_draft(cascade_resp_gw, fresh_sim, rule, stream, prompt, reason, tools):
    model, draft, path = RULES[rule]
    fresh_sim.set_script(CASCADE_SCRIPT)
    kwargs = {"tools": tools} if tools else {}
    got, headers = ask_cascade(cascade_resp_gw, stream, model=model, input=prompt, **kwargs)
    assert headers["x-cascadeflow-draft-accepted"] == "false" and headers["x-cascadeflow-served-model"] == model
    assert reason in headers["x-cascadeflow-decision"]
    assert got.model == model and got.status == "completed"
    assert got.output_text.startswith(f"[{model}]") or got.output[0].type == "function_call"
    calls = [r for r in fresh_sim.requests if r["method"] == "POST"]
    assert [(r["path"], r["body"]["model"]) for r in calls] == [(path, draft), (path, model)]


PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("target", TARGETS)
def test_images(gw, sim, target):
    model, _, _ = TARGETS[target]
    got = create(gw, True, model=model, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is in this picture?"},
        {"type": "input_image", "image_url": PIXEL, "detail": "low"}]}])
    assert got.status == "completed"
    sent = upstream(sim)[-1]["body"]
    if target == "forwarded":
        assert sent["input"][0]["content"][1]["image_url"] == PIXEL
    elif target == "chat":
        assert sent["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}
    else:
        image = next(b for b in sent["messages"][0]["content"] if b["type"] == "image")
        assert image["source"]["type"] == "base64" and image["source"]["media_type"] == "image/png"


@pytest.mark.parametrize("draft", [MINI, HAIKU])
def test_cascade_sample_agreement_on_responses(sim, start_gateway, fresh_sim, draft):
    """Sample agreement re-asks the draft model in the Responses API (forwarded or translated)."""
    gw = start_gateway(ProxyConfig.from_dict({
        "routes": [
            {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "k", **NO_RETRY},
            {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k",
             "openai_api": "responses", **NO_RETRY},
        ],
        "cascade_rules": [{"name": "agree", "request_model": GPT, "draft_model": draft, "quality_threshold": 0.7,
                           "sample_agreement": {"samples": 2}}],
    }))
    fresh_sim.set_script(CASCADE_SCRIPT)
    got, headers = ask_cascade(gw, False, model=GPT, input="What is the capital of France?")
    assert got.output_text == "Paris is the capital of France."
    assert headers["x-cascadeflow-draft-accepted"] == "true", headers.get("x-cascadeflow-decision")
    path = "/v1/responses" if draft == MINI else "/v1/messages"
    calls = [(r["path"], r["body"]["model"]) for r in fresh_sim.requests if r["method"] == "POST"]
    assert calls == [(path, draft)] * 3  # the draft and two samples


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("status", "error"), [(400, openai.BadRequestError), (429, openai.RateLimitError),
                                               (529, openai.InternalServerError)])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_reach_the_caller_in_openai_shape(gw, sim, target, status, error, stream):
    model, _, served = TARGETS[target]
    sim.set_script([{"match": {"model": served}, "status": status, "error_message": "scripted failure",
                     "retry_after": 7}])
    with pytest.raises(error) as raised:
        create(gw, stream, model=model, input="hello")
    assert raised.value.status_code == status and "scripted failure" in raised.value.message
    assert isinstance(raised.value.body, dict) and "message" in raised.value.body
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(("stream", "expected"), [(True, 32000), (False, 4096)])
def test_anthropic_max_tokens_without_max_output_tokens(gw, sim, stream, expected):
    """Codex sends no max_output_tokens; Anthropic needs a number: room for a long edit when streaming."""
    create(gw, stream, model=HAIKU, input="hello")
    assert upstream(sim)[-1]["body"]["max_tokens"] == expected
    create(gw, stream, model=HAIKU, input="hello", max_output_tokens=100)
    assert upstream(sim)[-1]["body"]["max_tokens"] == 100


@pytest.mark.parametrize("stream", [False, True])
def test_cascade_claude_draft_in_json_mode_is_accepted(cascade_resp_gw, fresh_sim, stream):
    got, headers = ask_cascade(cascade_resp_gw, stream, model=OPUS, input="Name a colour, in JSON.",
                               text={"format": {"type": "json_object"}})
    assert headers["x-cascadeflow-draft-accepted"] == "true" and headers["x-cascadeflow-served-model"] == HAIKU
    assert isinstance(json.loads(got.output_text), dict) and got.model == OPUS
    calls = [r for r in fresh_sim.requests if r["method"] == "POST"]
    assert [(r["path"], r["body"]["model"]) for r in calls] == [("/v1/messages", HAIKU)]


@pytest.mark.parametrize("stream", [False, True])
def test_cascade_claude_draft_that_searched_the_web_is_replayed_whole(cascade_resp_gw, fresh_sim, stream):
    got, headers = ask_cascade(cascade_resp_gw, stream, model=OPUS, input="Search the news about kelp.",
                               tools=[{"type": "web_search"}])
    assert headers["x-cascadeflow-draft-accepted"] == "true" and headers["x-cascadeflow-served-model"] == HAIKU
    search, message = got.output
    assert search.type == "web_search_call" and search.action.query == "Search the news about kelp."
    assert message.content[0].annotations[0].url == search.action.sources[0].url and got.model == OPUS
