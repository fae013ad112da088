"""Issue 14's smaller protocol defects and Claude Code's gateway protocol, driven by the official SDKs.

Each test failed on the defect it names (structured output reaching a Claude draft,
translated stream fields, error headers and counts, trailing slashes, ``request_id``,
the models listing, the billing line, server tools, model discovery), or pins what
Claude Code's gateway page asks that already held (headers forwarded, tool-result images).
"""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from cascadeflow import ProxyConfig
from tests.conftest import sim_routes

MINI, HAIKU, OPUS, GPT = "gpt-5.4-mini", "claude-haiku-5-5", "claude-opus-5-5", "gpt-5.4"
COLOUR = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"],
          "additionalProperties": False}


@pytest.fixture(scope="module")
def proto_gw(sim, start_gateway):
    return start_gateway(ProxyConfig.from_dict({
        "routes": sim_routes(sim, anthropic_key="sk-ant-route", openai_key="sk-openai-route"),
        "cascade_rules": [
            {"name": "opus-on-mini", "request_model": OPUS, "draft_model": MINI},
            {"name": "gpt-on-haiku", "request_model": GPT, "draft_model": HAIKU},
        ],
    }))


@pytest.fixture()
def gw(proto_gw, fresh_sim):
    return proto_gw


def claude(gw):
    return anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)


def gpt(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="caller", max_retries=0)


def calls(sim):
    return [(r["path"], r["body"]["model"]) for r in sim.requests if r["path"] in ("/v1/messages", "/v1/chat/completions")]


# ---------------------------------------------------------------- a. response_format on a Claude draft


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_reaches_a_claude_draft(gw, sim, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "colour", "schema": COLOUR, "strict": True}}
    raw = gpt(gw).chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": "Name a colour."}], response_format=fmt, stream=stream)
    result = raw.parse()
    text = "".join(c.choices[0].delta.content or "" for c in result if c.choices) if stream \
        else result.choices[0].message.content
    assert raw.headers["x-cascadeflow-draft-accepted"] == "true"
    assert "colour" in json.loads(text)
    assert calls(sim) == [("/v1/messages", HAIKU)]
    assert sim.requests[-1]["body"]["output_config"]["format"] == {"type": "json_schema", "schema": COLOUR}


# ---------------------------------------------------------------- b. translated stream fields


WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
LIMA = {"match": {"prompt_contains": "weather in Lima"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Lima"}}]}


def test_translated_openai_stream_sends_no_null_system_fingerprint(gw, sim):
    with gpt(gw).chat.completions.with_streaming_response.create(
            model=HAIKU, messages=[{"role": "user", "content": "Say hello"}], stream=True) as response:
        chunks = [json.loads(line[len("data: "):]) for line in response.iter_lines()
                  if line.startswith("data: {")]
    assert chunks and calls(sim) == [("/v1/messages", HAIKU)]
    assert all(c.get("system_fingerprint", "") is not None for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
def test_translated_tool_use_blocks_carry_their_caller(gw, sim, stream):
    sim.set_script([LIMA])
    kwargs = {"model": MINI, "max_tokens": 200, "tools": [WEATHER],
              "messages": [{"role": "user", "content": "What is the weather in Lima?"}]}
    if stream:
        with claude(gw).messages.stream(**kwargs) as s:
            starts = [e.content_block for e in s if e.type == "content_block_start"]
            message = s.get_final_message()
        assert starts[0].caller is not None and starts[0].caller.type == "direct"
    else:
        message = claude(gw).messages.create(**kwargs)
    assert calls(sim) == [("/v1/chat/completions", MINI)]
    block = message.content[0]
    assert block.type == "tool_use" and block.input == {"city": "Lima"}
    assert block.caller is not None and block.caller.type == "direct"


def test_replayed_openai_draft_stream_starts_with_its_input_usage(gw, sim):
    sim.set_script([{"match": {"model": MINI}, "text": "Certainly: the answer is 42.", "logprob": -0.01}])
    with claude(gw).messages.stream(model=OPUS, max_tokens=200,
                                    messages=[{"role": "user", "content": "a confident one"}]) as s:
        start = next(e for e in s if e.type == "message_start")
        message, headers = s.get_final_message(), s.response.headers
    assert headers["x-cascadeflow-draft-accepted"] == "true" and calls(sim) == [("/v1/chat/completions", MINI)]
    assert message.usage.input_tokens > 0
    assert start.message.usage.input_tokens == message.usage.input_tokens


# ---------------------------------------------------------------- c. error headers, /stats counts


def stats(gw):
    return httpx.get(gw.url + "/stats").json()


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_verifier_answer_says_what_the_cascade_did(gw, sim, stream):
    sim.set_script([{"match": {"model": HAIKU}, "text": ""},
                    {"match": {"model": GPT}, "status": 500}])
    before = stats(gw)
    with pytest.raises(openai.InternalServerError) as info:
        result = gpt(gw).chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hi"}], stream=stream)
        list(result) if stream else None
    headers = info.value.response.headers
    assert headers["x-cascadeflow-rule"] == "gpt-on-haiku" and headers["x-cascadeflow-draft-model"] == HAIKU
    assert headers["x-cascadeflow-draft-accepted"] == "false" and headers["x-cascadeflow-served-model"] == GPT
    assert headers["x-cascadeflow-decision"].startswith("escalated:")
    assert float(headers["x-cascadeflow-cost-usd"]) > 0  # the draft was paid for
    assert calls(sim) == [("/v1/messages", HAIKU), ("/v1/chat/completions", GPT)]
    after = stats(gw)
    assert after["upstream_calls"] - before["upstream_calls"] == 2  # the failed verifier call is a call
    assert after["upstream_failed_calls"] - before["upstream_failed_calls"] == 1
    assert after["errors"].get("500", 0) - before["errors"].get("500", 0) == 1  # once, for the request


def test_a_draft_stopped_early_is_no_error(gw, sim):
    sim.set_script([{"match": {"model": MINI}, "text": "I can't help with that request, sorry. " + "More words. " * 40}])
    before = stats(gw)
    with claude(gw).messages.stream(model=OPUS, max_tokens=300,
                                    messages=[{"role": "user", "content": "the forbidden thing"}]) as s:
        message, headers = s.get_final_message(), s.response.headers
    assert headers["x-cascadeflow-decision"] == "escalated:early structural:refusal"
    assert message.content[0].text.startswith(f"[{OPUS}]")
    after = stats(gw)
    assert after["upstream_calls"] - before["upstream_calls"] == 2
    assert after["errors"] == before["errors"]


# ---------------------------------------------------------------- d. trailing slashes, request_id, the models listing


def test_a_trailing_slash_is_served_never_redirected(gw, sim):
    with httpx.Client(base_url=gw.url, follow_redirects=False) as http:
        message = http.post("/v1/messages/", json={"model": HAIKU, "max_tokens": 50,
                                                    "messages": [{"role": "user", "content": "hi"}]})
        completion = http.post("/v1/chat/completions/", json={"model": MINI,
                                                              "messages": [{"role": "user", "content": "hi"}]})
        unknown = http.post("/v1/nothing/", headers={"anthropic-version": "2023-06-01"}, json={})
    assert message.status_code == 200 and message.json()["type"] == "message"
    assert completion.status_code == 200 and completion.json()["object"] == "chat.completion"
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    assert calls(sim) == [("/v1/messages", HAIKU), ("/v1/chat/completions", MINI)]


def test_gateway_made_anthropic_errors_carry_a_request_id(gw, sim):
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude(gw).messages.create(model=HAIKU, max_tokens=10, messages="not a list")  # type: ignore[arg-type]
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude(gw).models.retrieve("no-such-model")
    for error in (bad.value, missing.value):
        assert error.body["request_id"] and error.body["request_id"] == error.response.headers["x-request-id"]
    assert calls(sim) == []


def test_a_repeated_header_counts_by_its_first_value(gw, sim):
    """Headers are read off the raw list once; where a name comes twice the first value counts, as starlette has it."""
    headers = [("x-request-id", "first-id"), ("x-request-id", "second-id"), ("anthropic-version", "2023-06-01"),
               ("content-type", "application/json")]
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        answer = http.post("/v1/messages", headers=headers, content=json.dumps(
            {"model": HAIKU, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "first-id"


def test_anthropic_models_listing_has_limits_and_capabilities(gw, sim):
    from cascadeflow.pricing import ModelRegistry

    listed = {m.id: m for m in claude(gw).models.list(limit=1000).data}
    haiku, known = listed[HAIKU], ModelRegistry().info(HAIKU)
    assert haiku.max_tokens == known.max_output_tokens and haiku.max_input_tokens == known.context_window
    assert haiku.lifecycle == "active" and haiku.capabilities is not None
    assert haiku.capabilities.image_input.supported and haiku.capabilities.thinking.supported
    assert claude(gw).models.retrieve(OPUS).max_tokens == ModelRegistry().info(OPUS).max_output_tokens


# ---------------------------------------------------------------- e. Claude Code's gateway protocol

BETAS = "interleaved-thinking-2025-05-14,context-1m-2025-08-07"
BILLING = {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330; cc_entrypoint=cli; cch=0a1b2;"}
SYSTEM = [BILLING, {"type": "text", "text": "You are Claude Code."}]
SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="


def claude_code(gw):
    """The SDK as Claude Code configures it: its betas, an API version of its own, its session header."""
    return anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0, default_headers={
        "anthropic-beta": BETAS, "anthropic-version": "2023-06-01", "x-claude-code-session-id": "session-1"})


def sent(sim, path):
    return [r for r in sim.requests if r["path"] == path]


def test_betas_and_version_reach_anthropic_routes_unchanged_and_never_an_openai_one(gw, sim):
    sim.set_script([{"match": {"model": MINI}, "text": ""}])  # an empty draft: escalates to the verifier
    claude_code(gw).messages.create(model=HAIKU, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    claude_code(gw).messages.create(model=OPUS, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert calls(sim) == [("/v1/messages", HAIKU), ("/v1/chat/completions", MINI), ("/v1/messages", OPUS)]
    for request in sent(sim, "/v1/messages"):  # pass-through and cascade verifier alike
        assert request["headers"]["anthropic-beta"] == BETAS
        assert request["headers"]["anthropic-version"] == "2023-06-01"  # the caller's, not the gateway's default
    translated = sent(sim, "/v1/chat/completions")[0]["headers"]
    assert not [k for k in translated if k.startswith(("anthropic-", "x-claude-code-"))]


def test_the_billing_line_is_stripped_only_when_translating(gw, sim):
    for model in (HAIKU, MINI):
        claude_code(gw).messages.create(model=model, max_tokens=50, system=SYSTEM,
                                        messages=[{"role": "user", "content": "hi"}])
    assert sent(sim, "/v1/messages")[0]["body"]["system"] == SYSTEM  # forwarded as sent
    messages = sent(sim, "/v1/chat/completions")[0]["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "You are Claude Code."}


def test_server_tools_pass_to_anthropic_and_are_refused_where_they_cannot_run(gw, sim):
    message = claude_code(gw).messages.create(model=HAIKU, max_tokens=50, tools=[SEARCH],
                                              messages=[{"role": "user", "content": "search the news"}])
    assert message.content and sent(sim, "/v1/messages")[0]["body"]["tools"] == [SEARCH]
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude_code(gw).messages.create(model=MINI, max_tokens=50, tools=[SEARCH],
                                        messages=[{"role": "user", "content": "search the news"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert "web_search_20250305" in refused.value.message and MINI in refused.value.message
    assert calls(sim) == [("/v1/messages", HAIKU)]


@pytest.mark.parametrize("stream", [False, True])
def test_a_web_search_passed_to_anthropic_comes_back_whole(gw, sim, stream):
    """Forwarded untouched both ways: the search's blocks and the text's citations, as the SDK types them."""
    kwargs = {"model": HAIKU, "max_tokens": 200, "tools": [SEARCH],
              "messages": [{"role": "user", "content": "search the news about kelp"}]}
    if stream:
        with claude_code(gw).messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        message = claude_code(gw).messages.create(**kwargs)
    use, result, text = message.content
    assert use.type == "server_tool_use" and use.name == "web_search" and use.input == {"query": "search the news about kelp"}
    assert result.type == "web_search_tool_result" and result.tool_use_id == use.id
    assert text.type == "text" and text.citations[0].type == "web_search_result_location"
    assert text.citations[0].url == result.content[0].url and message.usage.server_tool_use.web_search_requests == 1


def test_a_web_search_is_priced_per_search_on_top_of_its_tokens(gw, sim):
    """Anthropic bills each search its server tool runs ($10 per 1,000) besides the tokens: the gateway's cost
    is the tokens' price plus that fee (it was the tokens alone)."""
    from cascadeflow.pricing import WEB_SEARCH_USD, ModelRegistry
    from cascadeflow.usage import Usage

    raw = claude_code(gw).messages.with_raw_response.create(
        model=HAIKU, max_tokens=200, tools=[SEARCH], messages=[{"role": "user", "content": "search the news about kelp"}])
    message = raw.parse()
    assert message.usage.server_tool_use.web_search_requests == 1
    tokens = ModelRegistry().info(HAIKU).cost(Usage.from_anthropic(
        message.usage.model_dump(include={"input_tokens", "output_tokens", "cache_creation_input_tokens",
                                          "cache_read_input_tokens"})))
    assert float(raw.headers["x-cascadeflow-cost-usd"]) == pytest.approx(tokens + WEB_SEARCH_USD, abs=1e-7)


@pytest.mark.parametrize(("tool", "problem"), [
    ({**SEARCH, "type": "web_search_20240101"}, "does not match any of the expected tags"),
    ({**SEARCH, "name": "search"}, "name: Input should be 'web_search'"),
    ({**SEARCH, "allowed_domains": ["a.com"], "blocked_domains": ["b.com"]}, "both allowed_domains and blocked_domains"),
    ({**SEARCH, "max_uses": 0}, "max_uses: Input should be greater than or equal to 1"),
    ({**SEARCH, "user_location": {"country": "NO"}}, "user_location.type: Input should be 'approximate'"),
    ({**SEARCH, "filters": {}}, "filters: Extra inputs are not permitted"),
])
def test_malformed_server_tools_are_refused_as_the_api_refuses_them(gw, sim, tool, problem):
    with pytest.raises(anthropic.BadRequestError, match=problem) as refused:
        claude_code(gw).messages.create(model=HAIKU, max_tokens=50, tools=[tool],
                                        messages=[{"role": "user", "content": "search the news"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"


def test_an_image_in_a_tool_result_reaches_an_openai_upstream(gw, sim):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}
    messages = [
        {"role": "user", "content": "Take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "here it is"}, image]}]},
    ]
    tool = {"name": "screenshot", "description": "Screenshot", "input_schema": {"type": "object", "properties": {}}}
    claude_code(gw).messages.create(model=MINI, max_tokens=50, tools=[tool], messages=messages)
    upstream = sent(sim, "/v1/chat/completions")[0]["body"]["messages"]
    assert upstream[-2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "here it is"}
    assert upstream[-1]["role"] == "user"
    assert upstream[-1]["content"] == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]


# ---------------------------------------------------------------- f. model discovery


@pytest.fixture()
def discovery_gw(fresh_sim, start_gateway):
    anthropic_route, openai_route = sim_routes(fresh_sim, anthropic_key="sk-ant-route", openai_key="sk-openai-route")
    return start_gateway(ProxyConfig.from_dict({
        "routes": [{**anthropic_route, "models": ["claude-*"]}, {**openai_route, "models": [MINI]}],
        "cascade_models": {
            "claude-auto": {"stages": [{"model": HAIKU}], "verifier_model": OPUS},
            "cascade/gpt": {"stages": [{"model": MINI}], "verifier_model": OPUS},
        },
    }))


def test_claude_code_discovers_claude_ids_and_cascade_models(discovery_gw, fresh_sim):
    client = claude(discovery_gw)
    listed = {m.id: m for m in client.models.list(limit=1000).data}
    # Claude Code's picker keeps ids starting with claude/anthropic: the globbed route's upstream models are among them
    assert {HAIKU, OPUS, "claude-sonnet-5-5", "claude-auto"} <= {i for i in listed if i.startswith("claude")}
    assert "gpt-4o" not in listed and MINI in listed and "cascade/gpt" in listed  # what no route serves is not listed
    auto = listed["claude-auto"]
    assert auto.display_name == "claude-auto (cascade)" and auto.max_tokens == listed[OPUS].max_tokens
    assert auto.capabilities == listed[OPUS].capabilities  # a cascade model can do what its verifier can
    fresh_sim.set_script([{"match": {"model": HAIKU}, "text": "Paris is the capital of France."}])
    raw = client.messages.with_raw_response.create(model="claude-auto", max_tokens=100,
                                                   messages=[{"role": "user", "content": "capital of France?"}])
    assert raw.headers["x-cascadeflow-draft-model"] == HAIKU and raw.parse().model == "claude-auto"
