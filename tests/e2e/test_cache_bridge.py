"""The bridging breakpoint: an escalation after a long drafted run reads the verifier's live prefix.

A Claude-Code-shaped session (`benchmarks/agentic_session.py`'s tools, system blocks and turns) through a
Haiku-for-Opus cascade against the simulator, which caches per model as Anthropic does (20-position lookback,
at most 4 breakpoints). Opus serves turn 0, the draft serves 12 turns (24 blocks: Opus's prefix is out of
the newest breakpoint's reach), and turn 13 escalates.
"""

from __future__ import annotations

import copy
import sys
import uuid
from pathlib import Path

import anthropic
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import agentic_session as bench  # noqa: E402

from cascadeflow import ProxyConfig, create_app  # noqa: E402
from cascadeflow.sim import SimulatedProvider  # noqa: E402
from cascadeflow.sim.server import ServerThread  # noqa: E402

TURNS, ESCALATED = 15, 13


@pytest.fixture(scope="module")
def sim():
    with SimulatedProvider() as provider:
        yield provider


def _session(url: str, sim: SimulatedProvider, *, stream: bool, mark_tools: bool, turns: int = TURNS,
             background: range = range(0)) -> list[dict]:
    """One session; returns per turn the messages the client sent (as sent)."""
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    tools = bench.tools()
    if mark_tools:  # a fourth breakpoint: the request has no slot left
        tools[-1]["cache_control"] = {"type": "ephemeral"}
    messages: list = [{"role": "user", "content": [{"type": "text", "text": "Begin the task. " + bench.text(6000, 1)}]}]
    sent, session = [], str(uuid.uuid4())
    for n in range(turns):
        for message in messages:
            for block in message["content"]:
                block.pop("cache_control", None)
        messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
        sent.append(copy.deepcopy(messages))
        args = {"model": bench.OPUS, "max_tokens": 1000 if n in background else 4096, "system": bench.SYSTEM, "tools": tools, "messages": messages,
                "extra_headers": {"X-Claude-Code-Session-Id": session}}
        if stream:
            with client.messages.stream(**args) as events:
                final = events.get_final_message()
        else:
            final = client.messages.create(**args)
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]})
        call = next((b for b in final.content if b.type == "tool_use"), None)
        if call is None:  # the last turn answers in text
            break
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": f"step {n} done\n" + bench.text(800, n)}]})
    return sent


def _opus_calls(sim: SimulatedProvider) -> list[dict]:
    return [r for r in sim.requests if r.get("body", {}).get("model") == bench.OPUS and r.get("usage")]


def _run(sim: SimulatedProvider, *, stream: bool, mark_tools: bool) -> tuple[list[dict], list[dict]]:
    server = bench.gateway_for(sim, bench.HAIKU, sticky=0, economics=False)
    try:
        sim.set_script(bench.script(TURNS, frozenset({0, ESCALATED}), bench.HAIKU))
        sim.clear()
        sent = _session(server.url, sim, stream=stream, mark_tools=mark_tools)
    finally:
        server.stop()
    return sent, _opus_calls(sim)


def _marks(body: dict) -> list[str]:
    found = [f"tools.{i}" for i, t in enumerate(body.get("tools") or ()) if t.get("cache_control")]
    found += [f"system.{i}" for i, b in enumerate(body.get("system") or ()) if b.get("cache_control")]
    for m, message in enumerate(body["messages"]):
        found += [f"messages.{m}.{b}" for b, block in enumerate(message["content"]) if block.get("cache_control")]
    return found


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_an_escalation_after_a_long_drafted_run_reads_the_verifiers_live_prefix(sim, stream):
    sent, (first, escalation) = _run(sim, stream=stream, mark_tools=False)
    prefix = first["usage"]["cache_read_input_tokens"] + first["usage"]["cache_creation_input_tokens"]
    usage = escalation["usage"]
    # Opus's turn-0 prefix (tools, system, the first message: ~9k tokens) is read, not written again
    assert usage["cache_read_input_tokens"] == prefix > 8000
    # only what the drafted turns added is written
    total = usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    assert usage["cache_creation_input_tokens"] == total - prefix
    # one breakpoint more, at the block that ends Opus's prefix; the client's own three unchanged
    assert _marks(escalation["body"]) == ["system.1", "system.2", "messages.0.0", f"messages.{2 * ESCALATED}.0"]
    assert _marks({"system": bench.SYSTEM, "messages": sent[ESCALATED]}) == [
        "system.1", "system.2", f"messages.{2 * ESCALATED}.0"], "the client's request is not touched"
    bridged = escalation["body"]["messages"][0]["content"][0]
    assert bridged["cache_control"] == {"type": "ephemeral"}
    assert {k: v for k, v in bridged.items() if k != "cache_control"} == sent[ESCALATED][0]["content"][0]


def test_a_request_with_four_breakpoints_is_sent_unchanged(sim):
    sent, (first, escalation) = _run(sim, stream=True, mark_tools=True)
    body = escalation["body"]
    assert len(_marks(body)) == 4
    assert body["messages"] == sent[ESCALATED], "no slot left: nothing added"
    prefix = first["usage"]["cache_read_input_tokens"] + first["usage"]["cache_creation_input_tokens"]
    assert escalation["usage"]["cache_read_input_tokens"] < prefix, "so the prefix is written again"



def test_a_draft_model_coming_back_after_a_long_verifier_run_reads_its_own_live_prefix(sim):
    """Turn 0's draft fails; turns 1-13 are background calls (``max_tokens`` 1,000), which the rule does not
    draft, so Opus serves them; turn 14 is drafted again, 28 blocks after Haiku's prefix of turn 0."""
    rule = {"name": "opus", "request_model": bench.OPUS, "draft_model": bench.HAIKU, "quality_threshold": 0.7,
            "policies": {"sticky_escalations": 0, "cache_economics": False, "draft_kinds": ["subagent"]}}
    config = ProxyConfig.from_dict({"routes": [{"name": "sim", "provider": "anthropic", "base_url": sim.url, "api_key": "k"}],
                                    "cascade_rules": [rule], "database_url": "sqlite:///:memory:"})
    server = ServerThread(create_app(config)).start()
    try:
        sim.set_script(bench.script(16, frozenset({0}), bench.HAIKU))
        sim.clear()
        _session(server.url, sim, stream=True, mark_tools=False, turns=16, background=range(1, 14))
    finally:
        server.stop()
    drafts = [r for r in sim.requests if r.get("body", {}).get("model") == bench.HAIKU and r.get("usage")]
    assert len(drafts) == 3, "turns 0, 14 and 15"
    first = drafts[0]["usage"]
    prefix = first["cache_read_input_tokens"] + first["cache_creation_input_tokens"]
    assert drafts[1]["usage"]["cache_read_input_tokens"] == prefix > 8000, "Haiku reads its turn-0 prefix"
    assert "cache_control" in drafts[1]["body"]["messages"][0]["content"][0], "bridged at turn 0's last block"


def test_parallel_tool_calls_keep_the_verifiers_prefix_in_reach_without_a_bridge(sim):
    """Each drafted turn makes 4 parallel tool calls: 8 blocks, but 2 lookback positions (a run of tool_use
    blocks is one, a run of tool_result blocks another, as on the Claude API). After 8 drafted turns (64 blocks,
    16 positions) Opus's turn-0 prefix is still in the newest breakpoint's reach: the gateway's shadow knows it
    and adds no bridge, and the simulator, which counts positions the same way, reads the prefix."""
    calls, turns, escalated = 4, 10, 9
    rules = [{"match": {"prompt_contains": "Begin the task"}, "tool_calls": [
        {"name": "Tool1", "input": {"path": f"src/f0_{k}.py"}} for k in range(calls)]}]
    for n in range(1, turns):
        step = {"match": {"prompt_contains": f"step {n - 1} done"}}
        if n == escalated:
            rules.append({**step, "match": {**step["match"], "model": bench.HAIKU}, "tool_calls": [{"name": "Tool1", "input": {}}]})
        rules.append({**step, "tool_calls": [{"name": "Tool1", "input": {"path": f"src/f{n}_{k}.py"}} for k in range(calls)]})
    server = bench.gateway_for(sim, bench.HAIKU, sticky=0, economics=False)
    try:
        sim.set_script([{"match": {"model": bench.HAIKU, "prompt_contains": "Begin the task"},
                         "tool_calls": [{"name": "Tool1", "input": {}}]}, *rules])  # turn 0 escalates too
        sim.clear()
        client = anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0)
        messages: list = [{"role": "user", "content": [{"type": "text", "text": "Begin the task. " + bench.text(6000, 1)}]}]
        session = {"X-Claude-Code-Session-Id": str(uuid.uuid4())}
        for n in range(escalated + 1):
            for message in messages:
                for block in message["content"]:
                    block.pop("cache_control", None)
            messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
            final = client.messages.create(model=bench.OPUS, max_tokens=4096, system=bench.SYSTEM, tools=bench.tools(),
                                           messages=messages, extra_headers=session)
            uses = [b for b in final.content if b.type == "tool_use"]
            assert len(uses) == calls or n == escalated, n
            messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]})
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": f"step {n} done\n" + bench.text(300, n * 10 + k)}
                for k, use in enumerate(uses)]})
    finally:
        server.stop()
    first, escalation = _opus_calls(sim)
    assert sum(1 for r in sim.requests if r.get("body", {}).get("model") == bench.HAIKU and r.get("usage")) == escalated + 1
    prefix = first["usage"]["cache_read_input_tokens"] + first["usage"]["cache_creation_input_tokens"]
    assert escalation["usage"]["cache_read_input_tokens"] == prefix > 8000, "Opus reads its turn-0 prefix"
    assert _marks(escalation["body"]) == ["system.1", "system.2", f"messages.{2 * escalated}.{calls - 1}"], \
        "no bridge: the client's own breakpoints reach the prefix"
