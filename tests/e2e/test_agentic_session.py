"""Cached Claude-Code-shaped sessions: the saving the gateway reports is the true one.

Runs `benchmarks/agentic_session.py`'s sessions (shorter) through a cascade and straight to Opus,
against a simulator that caches per model as Anthropic does, and compares what the simulator
billed with what the gateway recorded and reported.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import anthropic
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import agentic_session as bench  # noqa: E402

from cascadeflow import ModelRegistry  # noqa: E402
from cascadeflow.sim import SimulatedProvider  # noqa: E402

TURNS = 14


@pytest.fixture(scope="module")
def sim():
    with SimulatedProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry()


@pytest.mark.parametrize("draft", [bench.HAIKU, bench.SONNET])
def test_reported_saving_is_within_two_points_of_the_true_one(sim, registry, draft):
    server = bench.gateway_for(sim, draft, sticky=0, economics=False)
    try:
        for pattern in (bench.Pattern("none", frozenset()), bench.Pattern("spread", frozenset({3, 9})),
                        bench.Pattern("pause", frozenset({5}), ((7, 400.0),))):
            out = bench.measure(server.url, sim, registry, TURNS, pattern, draft)
            assert out.reported_cost == pytest.approx(out.true_cost, rel=1e-6), "the ledger's cost is what was billed"
            assert abs(out.reported_saving - out.true_saving) <= 0.02, (pattern.name, out)
            assert out.decisions.count("accepted") == TURNS - len(pattern.failing)
    finally:
        server.stop()


def test_claude_code_asking_for_an_openai_model_is_priced_on_openai_cache(sim, registry):
    """Claude Code pointed at gpt-5.4 (translated to Chat Completions, drafted on gpt-5.4-mini): OpenAI caches the
    prefixes itself; the reported saving is still the true one, and the cascade is never dearer than gpt-5.4."""
    server = bench.gateway_for(sim, bench.GPT_MINI, sticky=0, economics=True, requested=bench.GPT)
    try:
        for pattern in (bench.Pattern("none", frozenset()), bench.Pattern("spread", frozenset({3, 9})),
                        bench.Pattern("pause", frozenset({5}), ((7, 900.0),))):
            out = bench.measure(server.url, sim, registry, TURNS, pattern, bench.GPT_MINI, requested=bench.GPT)
            assert out.reported_cost == pytest.approx(out.true_cost, rel=1e-6), "the ledger's cost is what was billed"
            assert abs(out.reported_saving - out.true_saving) <= 0.02, (pattern.name, out)
            assert out.true_cost < out.always, (pattern.name, out)
            assert out.decisions.count("accepted") == TURNS - len(pattern.failing)
    finally:
        server.stop()


def test_a_cheap_draft_that_rarely_fails_keeps_most_of_its_saving(sim, registry):
    server = bench.gateway_for(sim, bench.HAIKU, sticky=0, economics=True)
    try:
        clean = bench.measure(server.url, sim, registry, TURNS, bench.Pattern("none", frozenset()), bench.HAIKU)
        once = bench.measure(server.url, sim, registry, TURNS, bench.Pattern("one", frozenset({TURNS - 3})), bench.HAIKU)
    finally:
        server.stop()
    assert clean.true_saving > 0.5
    assert once.true_cost < once.always, "never dearer than always-Opus"
    assert once.true_saving > 0


def test_with_the_economics_a_half_price_draft_is_never_dearer_than_always_opus(sim, registry):
    """Sonnet for Opus loses once a late turn escalates (the writes it put off are paid at once); the economics,
    counting only what a drafted turn saves for good, keep such a conversation on Opus from the start."""
    late = bench.Pattern("late", frozenset({TURNS - 3, TURNS - 2}))
    server = bench.gateway_for(sim, bench.SONNET, sticky=0, economics=False)
    try:
        gamble = bench.measure(server.url, sim, registry, TURNS, late, bench.SONNET)
    finally:
        server.stop()
    assert gamble.true_cost > gamble.always, "without the economics the late failures make it dearer"
    server = bench.gateway_for(sim, bench.SONNET, sticky=0, economics=True)
    try:
        out = bench.measure(server.url, sim, registry, TURNS, late, bench.SONNET)
    finally:
        server.stop()
    assert out.true_cost <= out.always * (1 + 1e-9)
    assert set(out.decisions) == {"skipped:cache_economics"}
    assert abs(out.reported_saving - out.true_saving) < 1e-6, "served by Opus on Opus's own cache: the baseline is exact"


def _run_marked(url: str, turns: int, pattern: bench.Pattern, sim: SimulatedProvider, session: str, marks: str) -> list[dict]:
    """``bench.run_session`` with other breakpoints on the conversation: ``top-level`` (automatic caching beside
    the system prompt's two marks) or ``nested`` (the mark inside the newest tool result's content)."""
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    messages: list = [{"role": "user", "content": [{"type": "text", "text": "Begin the task. " + bench.text(6000, 1)}]}]
    pauses, seen = dict(pattern.pauses), []
    for n in range(turns):
        if n in pauses:
            sim.advance_clock(pauses[n])
        extra = {"cache_control": {"type": "ephemeral"}} if marks == "top-level" else None
        if marks == "nested":
            for message in messages:
                for block in message["content"]:
                    block.pop("cache_control", None)
                    for part in block.get("content") if isinstance(block.get("content"), list) else ():
                        part.pop("cache_control", None)
            last = messages[-1]["content"][-1]
            (last["content"][-1] if last["type"] == "tool_result" else last)["cache_control"] = {"type": "ephemeral"}
        with client.messages.stream(model=bench.OPUS, max_tokens=4096, system=bench.SYSTEM, tools=bench.tools(),
                                    messages=messages, extra_body=extra,
                                    extra_headers={"X-Claude-Code-Session-Id": session}) as stream:
            final = stream.get_final_message()
            seen.append(dict(stream.response.headers))
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]})
        call = next((b for b in final.content if b.type == "tool_use"), None)
        if call is None:
            break
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": [
            {"type": "text", "text": f"step {n} done\n" + bench.text(800, n)}]}]})
    return seen


@pytest.mark.parametrize("marks", ["top-level", "nested"])
def test_the_saving_is_true_with_automatic_caching_or_a_mark_inside_a_tool_result(sim, registry, marks):
    """The shadows behind the baseline count the breakpoints the simulator (and the API) counts: a top-level
    ``cache_control`` beside block marks, a mark inside a tool result's content. Drafted sessions report the
    true saving; a session served by Opus throughout reports its baseline as exactly what Opus was billed."""
    for draft, economics, pattern in ((bench.HAIKU, False, bench.Pattern("spread", frozenset({3, 9}))),
                                      (bench.SONNET, True, bench.Pattern("late", frozenset({TURNS - 3, TURNS - 2})))):
        server = bench.gateway_for(sim, draft, sticky=0, economics=economics)
        try:
            sim.set_script(bench.script(TURNS, pattern.failing, draft))
            sim.clear()
            before = bench.rule_totals(server.url)
            seen = _run_marked(server.url, TURNS, pattern, sim, str(uuid.uuid4()), marks)
            true_cost = bench.billed(sim, registry)
            after = bench.rule_totals(server.url)
            sim.clear()
            _run_marked(sim.url, TURNS, pattern, sim, str(uuid.uuid4()), marks)
            always = bench.billed(sim, registry)
        finally:
            server.stop()
        reported_cost, baseline = after["cost"] - before.get("cost", 0.0), after["baseline_cost"] - before.get("baseline_cost", 0.0)
        decisions = [h["x-cascadeflow-decision"] for h in seen]
        assert reported_cost == pytest.approx(true_cost, rel=1e-6), "the ledger's cost is what was billed"
        if economics:
            assert set(decisions) == {"skipped:cache_economics"}, decisions
            assert baseline == pytest.approx(always, rel=1e-6), "served by Opus on Opus's own cache: the baseline is exact"
        else:
            assert decisions.count("accepted") == TURNS - len(pattern.failing), decisions
            assert abs((1 - reported_cost / baseline) - (1 - true_cost / always)) <= 0.02, (marks, baseline, always)
