"""Conversations through the cascade: signals from the session, cache-aware decisions, the true baseline.

Driven with the official Anthropic SDK; each conversation carries Claude Code's session header.
"""

from __future__ import annotations

import uuid

import anthropic
import pytest

from cascadeflow import ProxyConfig
from tests.conftest import ledger_rows, sim_routes

OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
BASH = {"name": "Bash", "description": "Run a command", "input_schema": {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
SYSTEM = [{"type": "text", "text": "You are a coding agent. " * 300, "cache_control": {"type": "ephemeral"}}]


@pytest.fixture(scope="module")
def session_gw(sim, start_gateway):
    rule = {"name": "opus", "request_model": OPUS, "draft_model": HAIKU, "quality_threshold": 0.7,
            "policies": {"sticky_escalations": 0}}
    return start_gateway(ProxyConfig.from_dict({"routes": sim_routes(sim), "cascade_rules": [rule]}))


@pytest.fixture()
def gw(session_gw, fresh_sim):
    return session_gw


class Conversation:
    def __init__(self, gw, session: str | None = None) -> None:
        self.client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
        self.session = session or str(uuid.uuid4())
        self.messages: list = [{"role": "user", "content": "Run the tests and fix what fails"}]

    def turn(self) -> tuple[anthropic.types.Message, dict]:
        self.messages[-1]["content"] = _marked(self.messages[-1]["content"])
        raw = self.client.messages.with_raw_response.create(
            model=OPUS, max_tokens=400, system=SYSTEM, tools=[BASH], messages=self.messages,
            extra_headers={"X-Claude-Code-Session-Id": self.session} if self.session else None)
        message = raw.parse()
        self.messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]})
        return message, dict(raw.headers)

    def answer(self, message, text: str, *, error: bool = False) -> None:
        call = next(b for b in message.content if b.type == "tool_use")
        self.messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": text, "is_error": error}]})


def _marked(content):
    """The moving breakpoint on the newest block, as Claude Code sets it (earlier marks removed)."""
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else [dict(b) for b in content]
    blocks[-1]["cache_control"] = {"type": "ephemeral"}
    return blocks


def unmark(messages: list) -> None:
    for message in messages:
        if isinstance(message["content"], list):
            for block in message["content"]:
                block.pop("cache_control", None)


def bash(command: str) -> dict:
    return {"tool_calls": [{"name": "Bash", "input": {"command": command}}]}


def test_a_failing_tool_result_after_a_drafted_turn_sends_the_next_turn_to_the_verifier(gw, sim):
    sim.set_script([{"match": {"prompt_contains": "Run the tests"}, **bash("pytest -q")},
                    {"match": {"prompt_contains": "FAILED"}, **bash("cat test_x.py")}])
    talk = Conversation(gw)
    first, headers = talk.turn()
    assert headers["x-cascadeflow-decision"] == "accepted" and headers["x-cascadeflow-served-model"] == HAIKU
    talk.answer(first, "tests/test_x.py::test_a FAILED\n1 failed, 3 passed\nExit code 1")
    unmark(talk.messages)
    _, headers = talk.turn()
    assert headers["x-cascadeflow-decision"] == "skipped:session_signal:tool_error"
    assert headers["x-cascadeflow-served-model"] == OPUS
    assert [r["body"]["model"] for r in sim.requests] == [HAIKU, OPUS], "no draft was paid for the second turn"
    stats = anthropic.Anthropic(base_url=gw.url, api_key="x")._client.get(f"{gw.url}/stats").json()
    assert stats["cascade"]["opus"]["skipped_by_policy"]["session_signal:tool_error"] >= 1


def test_the_signal_is_written_to_the_ledger_against_the_draft_it_judges(sim, fresh_sim, start_gateway, tmp_path):
    """The later request's ledger row names the earlier drafted turn it judged, so eval/calibrate can learn from it."""
    rule = {"name": "opus", "request_model": OPUS, "draft_model": HAIKU, "quality_threshold": 0.7}
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = start_gateway(ProxyConfig.from_dict({"routes": sim_routes(sim), "cascade_rules": [rule], "database_url": database}))
    sim.set_script([{"match": {"prompt_contains": "Run the tests"}, **bash("pytest -q")},
                    {"match": {"prompt_contains": "FAILED"}, **bash("cat test_x.py")}])
    talk = Conversation(gw)
    first, first_headers = talk.turn()
    talk.answer(first, "tests/test_x.py::test_a FAILED\nExit code 1")
    unmark(talk.messages)
    _, second_headers = talk.turn()
    assert second_headers["x-cascadeflow-decision"] == "skipped:session_signal:tool_error"
    rows = {row["request_id"]: row for row in ledger_rows(database, at_least=2)}
    judged, judge = rows[first_headers["x-request-id"]], rows[second_headers["x-request-id"]]
    assert (judged["accepted"], judged["session_signal"]) == (True, None)
    assert (judge["session_signal"], judge["signal_request_id"]) == ("tool_error", first_headers["x-request-id"])


def test_without_a_session_every_turn_is_drafted(gw, sim):
    sim.set_script([{"match": {"prompt_contains": "Run the tests"}, **bash("pytest -q")},
                    {"match": {"prompt_contains": "FAILED"}, **bash("cat test_x.py")}])
    talk = Conversation(gw, session="")
    talk.session = ""
    first, _ = talk.turn()
    talk.answer(first, "1 failed\nExit code 1")
    unmark(talk.messages)
    _, headers = talk.turn()
    assert headers["x-cascadeflow-decision"] == "accepted", "no conversation id: no memory, no signal"


def test_drafts_that_keep_failing_stop_being_drafted(sim, fresh_sim, start_gateway):
    """Sonnet (half Opus's price) fails the tool check every turn: drafting becomes an expected loss."""
    rule = {"name": "opus", "request_model": OPUS, "draft_model": SONNET, "policies": {"sticky_escalations": 0}}
    gw = start_gateway(ProxyConfig.from_dict({"routes": sim_routes(sim), "cascade_rules": [rule]}))
    sim.set_script([{"match": {"model": SONNET}, "tool_calls": [{"name": "Bash", "input": {"command": 7}}]},
                    {"match": {"model": OPUS}, **bash("ls")}])
    talk = Conversation(gw)
    decisions, savings = [], []
    for n in range(5):
        message, headers = talk.turn()
        decisions.append(headers["x-cascadeflow-decision"])
        savings.append(float(headers["x-cascadeflow-expected-saving-usd"]))
        talk.answer(message, f"file{n}.py")
        unmark(talk.messages)
    assert decisions[0].startswith("escalated:") and savings[0] > 0, (decisions, savings)
    assert decisions[-1] == "skipped:cache_economics", decisions
    skipped = decisions.index("skipped:cache_economics")
    assert all(d.startswith("escalated:") for d in decisions[:skipped]) and savings[skipped] < 0
    assert all(d == "skipped:cache_economics" for d in decisions[skipped:]), "no draft while it does not pay"
    # another conversation of the same rule starts with the rule's record: fewer wasted drafts
    other = Conversation(gw)
    _, headers = other.turn()
    assert float(headers["x-cascadeflow-expected-saving-usd"]) < savings[0]


def test_the_baseline_is_what_the_requested_model_would_have_paid_with_its_own_cache(gw, sim):
    """Turn 1 is drafted, so Opus's cache stays cold; turn 2 escalates and Opus writes the whole prefix.

    Always-Opus would have read turn 1's prefix from its cache: the baseline says so, and the
    escalated turn is reported as costing more than its baseline (a loss, not a saving).
    """
    sim.set_script([{"match": {"prompt_contains": "Run the tests"}, **bash("pytest -q")},
                    {"match": {"model": HAIKU, "prompt_contains": "passed"}, "tool_calls": [{"name": "Bash", "input": {}}]},
                    {"match": {"model": OPUS, "prompt_contains": "passed"}, "text": "All tests pass."}])
    talk = Conversation(gw)
    first, headers = talk.turn()
    assert headers["x-cascadeflow-decision"] == "accepted"
    talk.answer(first, "4 passed")
    unmark(talk.messages)
    _, headers = talk.turn()
    assert headers["x-cascadeflow-served-model"] == OPUS
    opus = [r for r in sim.requests if r["body"]["model"] == OPUS]
    assert len(opus) == 1
    cost, baseline = float(headers["x-cascadeflow-cost-usd"]), float(headers["x-cascadeflow-baseline-cost-usd"])
    assert baseline < cost, (baseline, cost)


def test_a_rule_can_draft_only_some_request_kinds(sim, fresh_sim, start_gateway):
    """Draft the main loop only: a sub-agent's turn (no Agent tool) goes straight to the verifier."""
    rule = {"name": "opus", "request_model": OPUS, "draft_model": HAIKU, "policies": {"draft_kinds": ["main"]}}
    gw = start_gateway(ProxyConfig.from_dict({"routes": sim_routes(sim), "cascade_rules": [rule]}))
    sim.set_script([{"match": {"prompt_contains": "Run the tests"}, **bash("pytest -q")}])
    agent = {"name": "Agent", "description": "Start a sub-agent", "input_schema": {"type": "object"}}
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)
    headers = {"X-Claude-Code-Session-Id": str(uuid.uuid4())}
    messages = [{"role": "user", "content": "Run the tests"}]
    main = client.messages.with_raw_response.create(model=OPUS, max_tokens=4096, tools=[BASH, agent],
                                                    messages=messages, extra_headers=headers)
    assert main.headers["x-cascadeflow-request-kind"] == "main" and main.headers["x-cascadeflow-served-model"] == HAIKU
    sub = client.messages.with_raw_response.create(model=OPUS, max_tokens=4096, tools=[BASH], messages=messages,
                                                   extra_headers=headers)
    assert sub.headers["x-cascadeflow-request-kind"] == "subagent"
    assert sub.headers["x-cascadeflow-decision"] == "skipped:kind:subagent"
    assert sub.headers["x-cascadeflow-served-model"] == OPUS


def test_a_draft_that_cannot_serve_the_request_is_not_tried(sim, fresh_sim, start_gateway):
    """An image inside a tool result, and a draft model that reads no images: straight to the verifier."""
    rule = {"name": "opus", "request_model": OPUS, "draft_model": "local-coder"}
    models = {"local-coder": {"provider": "openai", "input_per_mtok": 0.1, "output_per_mtok": 0.1}}
    gw = start_gateway(ProxyConfig.from_dict({"routes": sim_routes(sim), "cascade_rules": [rule], "models": models}))
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)
    screenshot = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    messages = [{"role": "user", "content": "What does the page show?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "shot"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [screenshot]}]}]
    raw = client.messages.with_raw_response.create(model=OPUS, max_tokens=400, tools=[BASH], messages=messages)
    assert raw.headers["x-cascadeflow-decision"] == "skipped:capability:image"
    assert [r["body"]["model"] for r in sim.requests] == [OPUS]
    # text only: drafted as usual
    raw = client.messages.with_raw_response.create(model=OPUS, max_tokens=400, messages=messages[:1])
    assert raw.headers["x-cascadeflow-draft-model"] == "local-coder"
    # a server tool only Anthropic runs: the OpenAI-dialect draft cannot
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    raw = client.messages.with_raw_response.create(model=OPUS, max_tokens=400, tools=[search], messages=messages[:1])
    assert raw.headers["x-cascadeflow-decision"] == "skipped:capability:server_tools"


def test_a_repeated_tool_call_or_a_correcting_user_sends_the_next_turn_to_the_verifier(gw, sim):
    # the draft calls exactly what it called the turn before: a loop
    sim.set_script([{"match": {"model": HAIKU}, **bash("ls")}, {"match": {"model": OPUS}, **bash("cat a.py")}])
    talk = Conversation(gw)
    decisions = []
    for n in range(3):
        message, headers = talk.turn()
        decisions.append(headers["x-cascadeflow-decision"])
        talk.answer(message, f"a.py b.py ({n})")
        unmark(talk.messages)
    assert decisions == ["accepted", "accepted", "skipped:session_signal:tool_loop"]
    # a user who says the drafted answer was wrong
    sim.set_script([{"match": {"model": HAIKU}, "text": "Done: the tests pass now."},
                    {"match": {"model": OPUS}, "text": "Let me look again."}])
    talk = Conversation(gw)
    _, headers = talk.turn()
    assert headers["x-cascadeflow-decision"] == "accepted"
    unmark(talk.messages)
    talk.messages.append({"role": "user", "content": "No, that's wrong: two tests still fail."})
    _, headers = talk.turn()
    assert headers["x-cascadeflow-decision"] == "skipped:session_signal:correction"
    talk.messages.append({"role": "user", "content": "Thanks. Now add a docstring."})
    unmark(talk.messages)
    _, headers = talk.turn()
    assert headers["x-cascadeflow-decision"] != "skipped:session_signal:correction"


def test_a_large_screenshot_is_counted_as_the_tokens_it_costs_not_its_bytes(gw, sim):
    """A 4 MB base64 image is ~1,600 tokens to Claude, not the 1M its bytes/4 make: the context check does not refuse the draft."""
    import base64
    import os

    screenshot = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                              "data": base64.b64encode(os.urandom(3_000_000)).decode()}}
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    messages = [{"role": "user", "content": [screenshot, {"type": "text", "text": "What does this show?"}]}]
    raw = client.messages.with_raw_response.create(model=OPUS, max_tokens=400, messages=messages)
    assert raw.headers["x-cascadeflow-draft-model"] == HAIKU
    assert not raw.headers["x-cascadeflow-decision"].startswith("skipped:"), raw.headers["x-cascadeflow-decision"]
    # a prompt whose text alone is over the draft's window is still sent straight to the verifier
    long = [{"role": "user", "content": "word " * 1_000_000}]
    raw = client.messages.with_raw_response.create(model=OPUS, max_tokens=400, messages=long)
    assert raw.headers["x-cascadeflow-decision"] == "skipped:context_too_long"
