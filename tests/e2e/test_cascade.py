"""The cascade end to end: official SDKs → gateway → simulated provider scripted per prompt.

The draft model answers some prompts well and others badly; each case must be accepted
or escalated as expected, streaming and not, and the client always gets one valid
message naming the model it asked for.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from cascadeflow import ModelRegistry, ProxyConfig, Usage
from tests.conftest import sim_routes

OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
GPT, MINI = "gpt-5.4", "gpt-5.4-mini"
GPT4O, MINI4O = "gpt-4o", "gpt-4o-mini"  # these return log-probabilities (GPT-5 models refuse them)

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city"],
    },
}

DRAFT_SCRIPT = [
    {"match": {"model": HAIKU, "prompt_contains": "capital of France"}, "text": "Paris is the capital of France."},
    {"match": {"model": HAIKU, "prompt_contains": "say nothing"}, "text": ""},
    {"match": {"model": HAIKU, "prompt_contains": "forbidden"}, "text": "I can't help with that request, sorry. " + "More words follow here. " * 20},
    {"match": {"model": HAIKU, "prompt_contains": "long essay"}, "text": "An essay that goes on " * 30, "stop_reason": "max_tokens"},
    {"match": {"model": HAIKU, "prompt_contains": "weather in Rome"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Rome", "days": 2}}]},
    {"match": {"model": HAIKU, "prompt_contains": "weather in Oslo"}, "tool_calls": [{"name": "get_weather", "input": {"days": "many"}}]},
    {"match": {"model": HAIKU, "prompt_contains": "think about Paris"}, "thinking": "draft reasoning", "text": "Paris it is."},
    {"match": {"model": HAIKU, "prompt_contains": "two stages"}, "text": "I'm not sure, maybe."},
    {"match": {"model": SONNET, "prompt_contains": "two stages"}, "text": "A confident answer from the second stage."},
    {"match": {"model": MINI, "prompt_contains": "weather in Oslo"}, "tool_calls": [{"name": "get_weather", "input": {"days": 3}}], "logprob": -0.01},
    {"match": {"model": MINI4O, "prompt_contains": "easy sum"}, "text": "2 + 2 = 4", "logprob": -0.01},
    {"match": {"model": MINI4O, "prompt_contains": "hard proof"}, "text": "Perhaps it follows by induction", "logprob": -3.0},
]


@pytest.fixture(scope="module")
def cascade_gw(sim, start_gateway):
    config = ProxyConfig.from_dict(
        {
            "routes": sim_routes(sim, anthropic_key="k", openai_key="k"),
            "models": {"tiny-draft": {"provider": "anthropic", "context_window": 60, "input_per_mtok": 0.1, "output_per_mtok": 0.1}},
            "cascade_rules": [
                {"name": "opus", "request_model": "claude-opus-*", "draft_model": HAIKU, "quality_threshold": 0.7,
                 "policies": {"sticky_escalations": 2, "cache_economics": False}},
                {"name": "gpt", "request_model": GPT, "draft_model": MINI, "quality_threshold": 0.7},
                {"name": "gpt4o", "request_model": GPT4O, "draft_model": MINI4O, "quality_threshold": 0.7},
                {"name": "forced", "request_model": "forced-sonnet", "draft_model": HAIKU, "verifier_model": SONNET,
                 "policies": {"skip_forced_tool_choice": True}},
                {"name": "tiny", "request_model": "tiny-opus", "draft_model": "tiny-draft", "verifier_model": OPUS},
            ],
            "cascade_models": {
                "cascade/claude": {"stages": [{"model": HAIKU}, {"model": SONNET}], "verifier_model": OPUS, "quality_threshold": 0.7},
            },
        }
    )
    return start_gateway(config)


@pytest.fixture()
def gw(cascade_gw, fresh_sim):
    fresh_sim.set_script(DRAFT_SCRIPT)
    return cascade_gw


def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)


def gpt(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="caller", max_retries=0)


def ask(gw, prompt: str, *, stream: bool, model: str = OPUS, **extra):
    """Send one Anthropic request; return (message, headers)."""
    kwargs = {"model": model, "max_tokens": 400, "messages": [{"role": "user", "content": prompt}], **extra}
    if stream:
        with claude(gw).messages.stream(**kwargs) as s:
            message = s.get_final_message()
            headers = s.response.headers
        return message, headers
    raw = claude(gw).messages.with_raw_response.create(**kwargs)
    return raw.parse(), raw.headers


def models_called(sim) -> list[str]:
    return [r["body"]["model"] for r in sim.requests if r["path"] in ("/v1/messages", "/v1/chat/completions")]


@pytest.mark.parametrize("stream", [False, True])
def test_good_draft_is_accepted(gw, sim, stream):
    message, headers = ask(gw, "What is the capital of France?", stream=stream)
    assert message.content[0].text == "Paris is the capital of France."
    assert message.model == OPUS  # the model that was asked for
    assert message.stop_reason == "end_turn"
    assert headers["x-cascadeflow-draft-accepted"] == "true"
    assert headers["x-cascadeflow-served-model"] == HAIKU
    assert headers["x-cascadeflow-draft-model"] == HAIKU
    assert float(headers["x-cascadeflow-confidence"]) >= 0.7
    assert models_called(sim) == [HAIKU]
    registry = ModelRegistry()
    usage = Usage(message.usage.input_tokens, message.usage.output_tokens)
    assert float(headers["x-cascadeflow-cost-usd"]) == pytest.approx(registry.cost(HAIKU, usage), rel=1e-6)
    assert float(headers["x-cascadeflow-baseline-cost-usd"]) == pytest.approx(registry.cost(OPUS, usage), rel=1e-6)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ("Please say nothing at all", "escalated:structural:empty answer"),
        ("Tell me the forbidden thing", "structural:refusal"),
        ("Write a long essay", "escalated:structural:truncated"),
    ],
)
def test_bad_draft_is_escalated(gw, sim, stream, prompt, reason):
    message, headers = ask(gw, prompt, stream=stream)
    assert message.content[0].text.startswith(f"[{OPUS}]"), "the verifier's own answer"
    assert message.model == OPUS and message.stop_reason == "end_turn"
    assert headers["x-cascadeflow-draft-accepted"] == "false"
    assert headers["x-cascadeflow-served-model"] == OPUS
    assert reason in headers["x-cascadeflow-decision"]
    assert models_called(sim) == [HAIKU, OPUS]


def test_refusal_stops_a_streaming_draft_early(gw, sim):
    _, headers = ask(gw, "Tell me the forbidden thing", stream=True)
    assert headers["x-cascadeflow-decision"] == "escalated:early structural:refusal"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_are_checked_against_the_schema(gw, sim, stream):
    good, headers = ask(gw, "What is the weather in Rome?", stream=stream, tools=[WEATHER_TOOL])
    assert headers["x-cascadeflow-draft-accepted"] == "true"
    call = next(b for b in good.content if b.type == "tool_use")
    assert call.input == {"city": "Rome", "days": 2} and good.stop_reason == "tool_use"
    sim.clear()
    bad, headers = ask(gw, "What is the weather in Oslo?", stream=stream, tools=[WEATHER_TOOL])
    assert headers["x-cascadeflow-draft-accepted"] == "false"
    assert "tool_use" in headers["x-cascadeflow-decision"]
    assert models_called(sim) == [HAIKU, OPUS]
    assert bad.model == OPUS


@pytest.mark.parametrize("stream", [False, True])
def test_multi_stage_cascade_stops_at_the_first_stage_that_passes(gw, sim, stream):
    message, headers = ask(gw, "Answer in two stages please", stream=stream, model="cascade/claude")
    assert message.content[0].text == "A confident answer from the second stage."
    assert message.model == "cascade/claude"
    assert headers["x-cascadeflow-served-model"] == SONNET
    assert models_called(sim) == [HAIKU, SONNET]
    sim.clear()
    message, headers = ask(gw, "What is the capital of France?", stream=stream, model="cascade/claude")
    assert models_called(sim) == [HAIKU] and headers["x-cascadeflow-served-model"] == HAIKU


@pytest.mark.parametrize("stream", [False, True])
def test_openai_logprobs_decide_and_are_not_leaked(gw, sim, stream):
    def call(prompt):
        kwargs = {"model": GPT4O, "messages": [{"role": "user", "content": prompt}]}
        if stream:
            raw = gpt(gw).chat.completions.with_raw_response.create(stream=True, **kwargs)
            chunks = list(raw.parse())
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert all(c.model == GPT4O for c in chunks)
            assert all(c.choices[0].logprobs is None for c in chunks if c.choices)
            assert all(c.choices for c in chunks), "no usage chunk the caller did not ask for"
            return text, raw.headers
        raw = gpt(gw).chat.completions.with_raw_response.create(**kwargs)
        completion = raw.parse()
        assert completion.model == GPT4O and completion.choices[0].logprobs is None
        return completion.choices[0].message.content, raw.headers

    text, headers = call("An easy sum: 2+2?")
    assert text == "2 + 2 = 4" and headers["x-cascadeflow-draft-accepted"] == "true"
    assert sim.requests[-1]["body"]["logprobs"] is True, "logprobs were requested from the draft"
    assert float(headers["x-cascadeflow-confidence"]) > 0.9
    sim.clear()
    text, headers = call("A hard proof, please")
    assert text.startswith(f"[{GPT4O}]") and headers["x-cascadeflow-draft-accepted"] == "false"
    assert headers["x-cascadeflow-decision"].startswith("escalated:logprobs")
    assert models_called(sim) == [MINI4O, GPT4O]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_call_missing_a_required_field_escalates(gw, sim, stream):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]}}]
    kwargs = {"model": GPT, "messages": [{"role": "user", "content": "What is the weather in Oslo?"}], "tools": tools}
    raw = gpt(gw).chat.completions.with_raw_response.create(stream=stream, **kwargs)
    result = raw.parse()
    if stream:
        chunks = list(result)
        assert chunks[0].model == GPT
    else:
        assert result.model == GPT
    assert raw.headers["x-cascadeflow-draft-accepted"] == "false"
    assert "tool_use:arguments invalid" in raw.headers["x-cascadeflow-decision"]
    assert models_called(sim) == [MINI, GPT]


def test_forced_tool_choice_policy_skips_the_draft(gw, sim):
    message, headers = ask(
        gw, "What is the weather in Rome?", stream=False, model="forced-sonnet",
        tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert headers["x-cascadeflow-decision"] == "skipped:forced_tool_choice"
    assert models_called(sim) == [SONNET]
    assert message.content[0].type == "tool_use"


def test_context_window_policy_skips_the_draft(gw, sim):
    _, headers = ask(gw, "A question " * 50, stream=False, model="tiny-opus")
    assert headers["x-cascadeflow-decision"] == "skipped:context_too_long"
    assert models_called(sim) == [OPUS]


def test_conversation_that_keeps_escalating_stops_drafting(gw, sim):
    session = {"X-Claude-Code-Session-Id": "session-sticky-1"}
    kwargs = {"model": OPUS, "max_tokens": 100, "extra_headers": session}
    for _ in range(2):
        raw = claude(gw).messages.with_raw_response.create(messages=[{"role": "user", "content": "say nothing"}], **kwargs)
        assert raw.headers["x-cascadeflow-decision"].startswith("escalated:")
    sim.clear()
    raw = claude(gw).messages.with_raw_response.create(messages=[{"role": "user", "content": "capital of France"}], **kwargs)
    assert raw.headers["x-cascadeflow-decision"] == "skipped:sticky_escalation"
    assert models_called(sim) == [OPUS]
    # another conversation still drafts
    raw = claude(gw).messages.with_raw_response.create(
        messages=[{"role": "user", "content": "capital of France"}], model=OPUS, max_tokens=100,
        extra_headers={"X-Claude-Code-Session-Id": "another"},
    )
    assert raw.headers["x-cascadeflow-draft-accepted"] == "true"


def test_thinking_blocks_never_reach_the_draft(gw, sim):
    history = [
        {"role": "user", "content": "Think first"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "opus reasoning", "signature": "c2lnbmVkLWJ5LW9wdXM="},
            {"type": "text", "text": "Done."},
        ]},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    claude(gw).messages.create(model=OPUS, max_tokens=100, messages=history)
    draft_request = next(r for r in sim.requests if r["body"]["model"] == HAIKU)
    assert draft_request["body"]["messages"][1]["content"] == [{"type": "text", "text": "Done."}]


@pytest.mark.parametrize("stream", [False, True])
def test_accepted_draft_hands_the_client_its_own_thinking(gw, sim, stream):
    message, headers = ask(gw, "Please think about Paris", stream=stream, thinking={"type": "adaptive"})
    assert headers["x-cascadeflow-draft-accepted"] == "true"
    assert [b.type for b in message.content] == ["thinking", "text"] and message.content[1].text == "Paris it is."
    assert message.content[0].thinking == "draft reasoning" and message.content[0].signature
    assert message.model == OPUS and message.stop_reason == "end_turn"


ROME_LOOP = [
    {"match": {"model": HAIKU, "prompt_contains": "weather in Rome"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Rome"}}]},
    {"match": {"model": HAIKU, "prompt_contains": "sunny"}, "tool_calls": [{"name": "get_weather", "input": {"city": 7}}]},
    {"match": {"model": OPUS, "prompt_contains": "sunny"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Milan"}}]},
    {"match": {"model": HAIKU, "prompt_contains": "foggy"}, "text": "Rome is sunny and Milan is foggy."},
]


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_tool_loop_with_adaptive_thinking_switches_models_mid_loop(gw, sim, stream):
    """Turn 1: Haiku's draft is accepted; turn 2: its draft fails, Opus takes the loop over; turn 3: Haiku again.

    Against a simulator that enforces Anthropic's rules, each turn succeeds only if every model gets
    thinking blocks it can read, unchanged, and the final assistant turn of the loop starts with thinking.
    """
    sim.set_script(ROME_LOOP)
    messages = [{"role": "user", "content": "What is the weather in Rome and Milan?"}]
    served = []
    for result in ("sunny", "foggy", None):
        message, headers = ask(gw, "", stream=stream, messages=messages, tools=[WEATHER_TOOL], thinking={"type": "adaptive"})
        served.append((headers["x-cascadeflow-served-model"], headers["x-cascadeflow-decision"]))
        assert message.content[0].type == "thinking", "the client always gets the thinking that goes with the answer"
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]})
        if result is None:
            break
        call = next(b for b in message.content if b.type == "tool_use")
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result}]})
    assert served[0] == (HAIKU, "accepted") and served[1][0] == OPUS and "tool_use" in served[1][1]
    assert served[2] == (HAIKU, "accepted") and message.content[-1].text == "Rome is sunny and Milan is foggy."
    opus = next(r for r in sim.requests if r["body"]["model"] == OPUS)["body"]
    assert all(b["type"] != "thinking" for m in opus["messages"] if isinstance(m["content"], list) for b in m["content"])
    assert opus["messages"][1]["content"][0]["text"].startswith("[tool call toolu_")  # Haiku's turn, read as text
    last_haiku = [r for r in sim.requests if r["body"]["model"] == HAIKU][-1]["body"]["messages"]
    assert last_haiku[1] == messages[1], "Haiku gets its own turn back byte for byte"


def test_the_verifier_gets_its_own_thinking_back_unchanged(gw, sim):
    sim.set_script([{"match": {"model": HAIKU}, "tool_calls": [{"name": "get_weather", "input": {"city": 7}}]},
                    {"match": {"model": OPUS, "prompt_contains": "Rome"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Rome"}}]}])
    messages = [{"role": "user", "content": "What is the weather in Rome?"}]
    first, headers = ask(gw, "", stream=False, messages=messages, tools=[WEATHER_TOOL], thinking={"type": "adaptive"})
    assert headers["x-cascadeflow-served-model"] == OPUS
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id, "content": "sunny"}]}]
    second, headers = ask(gw, "", stream=True, messages=messages, tools=[WEATHER_TOOL], thinking={"type": "adaptive"})
    assert headers["x-cascadeflow-served-model"] == OPUS and "x-cascadeflow-thinking" not in headers
    haiku = [r for r in sim.requests if r["body"]["model"] == HAIKU][-1]["body"]["messages"]
    assert haiku[1]["content"][0]["type"] == "text", "Haiku cannot read Opus's thinking: the turn reaches it as text"
    opus = [r for r in sim.requests if r["body"]["model"] == OPUS][-1]["body"]["messages"]
    assert opus == messages


def test_stats_agree_with_what_happened(gw, sim, http):
    before = http.get("/stats").json()["cascade"].get("gpt4o", {})
    outcomes = []
    for prompt in ("An easy sum: 2+2?", "A hard proof, please", "An easy sum: 3+3?"):
        raw = gpt(gw).chat.completions.with_raw_response.create(model=GPT4O, messages=[{"role": "user", "content": prompt}])
        outcomes.append((raw.headers["x-cascadeflow-draft-accepted"] == "true", float(raw.headers["x-cascadeflow-cost-usd"]),
                         float(raw.headers["x-cascadeflow-baseline-cost-usd"])))
    after = http.get("/stats").json()["cascade"]["gpt4o"]
    assert after["requests"] - before.get("requests", 0) == 3
    assert after["accepted"] - before.get("accepted", 0) == sum(a for a, _, _ in outcomes) == 2
    reason = "logprobs:low confidence"
    assert after["escalated_by_reason"].get(reason, 0) - before.get("escalated_by_reason", {}).get(reason, 0) == 1
    assert after["cost"] - before.get("cost", 0) == pytest.approx(sum(c for _, c, _ in outcomes), rel=1e-6)
    assert after["baseline_cost"] - before.get("baseline_cost", 0) == pytest.approx(sum(b for _, _, b in outcomes), rel=1e-6)
    assert after["saving"] == pytest.approx(after["baseline_cost"] - after["cost"])


def test_requests_matching_no_rule_pass_through(gw, sim):
    message, headers = ask(gw, "What is the capital of France?", stream=False, model=SONNET)
    assert "x-cascadeflow-draft-accepted" not in headers
    assert models_called(sim) == [SONNET] and message.content[0].text.startswith(f"[{SONNET}]")


def test_virtual_model_is_listed(gw):
    assert "cascade/claude" in [m.id for m in gpt(gw).models.list().data]


def test_failing_draft_upstream_escalates(gw, sim):
    sim.set_script([{"match": {"model": HAIKU}, "status": 529}, *DRAFT_SCRIPT])
    message, headers = ask(gw, "What is the capital of France?", stream=True)
    assert headers["x-cascadeflow-decision"] == "escalated:draft_error"
    assert message.content[0].text.startswith(f"[{OPUS}]")
    json.dumps(message.model_dump())  # one valid message


def test_a_draft_is_fitted_to_its_models_output_limit(gw, sim):
    """Claude Code asks for 128k output tokens; Haiku allows 64k and the API refuses more, so the draft is fitted."""
    message, headers = ask(gw, "What is the capital of France?", stream=True, max_tokens=128_000)
    assert headers["x-cascadeflow-draft-accepted"] == "true"
    draft = next(r for r in sim.requests if r["body"]["model"] == HAIKU)["body"]
    assert draft["max_tokens"] == 64_000
    sim.clear()
    with pytest.raises(anthropic.BadRequestError, match="maximum allowed number of output tokens"):
        with anthropic.Anthropic(base_url=sim.url, api_key="k").messages.stream(
                model=HAIKU, max_tokens=128_000, messages=[{"role": "user", "content": "hi"}]) as direct:
            direct.get_final_message()
