"""Cached Codex-shaped threads (Responses API): the saving the gateway reports is the true one.

Runs `benchmarks/codex_session.py`'s threads (shorter) through a cascade and straight to gpt-5.4, against a
simulator that caches per model as OpenAI does, and compares what the simulator billed with what the gateway
recorded and reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import codex_session as bench  # noqa: E402
from agentic_session import Pattern, script  # noqa: E402

from cascadeflow import ModelRegistry  # noqa: E402
from cascadeflow.sim import SimulatedProvider  # noqa: E402

TURNS = 12


@pytest.fixture(scope="module")
def sim():
    with SimulatedProvider() as provider:
        yield provider


@pytest.mark.parametrize("economics", [False, True])
@pytest.mark.parametrize("api", ["responses", "chat"])
def test_reported_saving_is_within_two_points_of_the_true_one(sim, economics, api):
    """Codex's threads, and the same tool loop as a Chat Completions agent sends it (tool_calls, tool messages)."""
    registry = ModelRegistry()
    run = bench.run_thread if api == "responses" else bench.run_chat_thread
    server = bench.gateway_for(sim, bench.MINI, sticky=0, economics=economics)
    try:
        for pattern in (Pattern("none", frozenset()), Pattern("spread", frozenset({3, 8})),
                        Pattern("pause", frozenset({5}), ((7, 900.0),))):
            out = bench.measure(server.url, sim, registry, TURNS, pattern, bench.MINI, run=run)
            assert out.reported_cost == pytest.approx(out.true_cost, rel=1e-6), "the ledger's cost is what was billed"
            assert abs(out.reported_saving - out.true_saving) <= 0.02, (pattern.name, out)
            assert out.true_cost < out.always, (pattern.name, out)
            if not economics:
                assert out.decisions.count("accepted") == TURNS - len(pattern.failing)
    finally:
        server.stop()


@pytest.mark.parametrize("economics", [False, True])
def test_a_thread_asking_for_a_claude_model_is_priced_on_its_translated_prompt(sim, economics):
    """Codex asking for Claude Opus, drafted on Sonnet: the gateway translates each request to the Messages API
    with the cache breakpoints it adds, and prices each model's cache on that translation. The saving it reports
    is within two points of the true one (without a memory of such threads it reported 30 points above the true
    saving after one failure), and with the cache economics on the cascade never costs more than Opus alone."""
    registry = ModelRegistry()
    server = bench.gateway_for(sim, bench.SONNET, sticky=0, economics=economics, requested=bench.OPUS)
    try:
        for pattern in (Pattern("none", frozenset()), Pattern("one", frozenset({6})),
                        Pattern("pause", frozenset({3}), ((7, 400.0),))):
            out = bench.measure(server.url, sim, registry, TURNS, pattern, bench.SONNET, requested=bench.OPUS)
            assert out.reported_cost == pytest.approx(out.true_cost, rel=1e-6), "the ledger's cost is what was billed"
            assert abs(out.reported_saving - out.true_saving) <= 0.02, (pattern.name, out)
            if economics:
                assert out.true_cost <= out.always * (1 + 1e-9), (pattern.name, out)
            else:
                assert out.decisions.count("accepted") == TURNS - len(pattern.failing)
    finally:
        server.stop()


def test_an_escalation_after_a_long_drafted_run_reads_opus_live_prefix_through_the_translation(sim):
    """Twelve drafted turns after Opus last served, its cached prefix lies beyond the lookback of the translated
    request's own breakpoints; the translation leaves one of the four free (the system prompt's breakpoint caches
    the tools), and the cascade's bridge marks the block that ends that prefix, so the escalation reads it instead
    of writing it all again (docs/codex.md)."""
    turns, failing = 16, frozenset({2, 14})
    server = bench.gateway_for(sim, bench.HAIKU, sticky=0, economics=False, requested=bench.OPUS)
    try:
        sim.set_script(script(turns, failing, bench.HAIKU, tool="tool1"))
        sim.clear()
        bench.run_thread(server.url, turns, Pattern("far", failing), sim, "thread-far", bench.OPUS)
    finally:
        server.stop()
    first, late = [r for r in sim.requests if r["body"]["model"] == bench.OPUS]
    written = first["usage"]["cache_creation_input_tokens"] + first["usage"]["cache_read_input_tokens"]
    assert late["body"] != first["body"] and str(late["body"]).count("cache_control") == 4  # the bridge is the 4th
    assert late["usage"]["cache_read_input_tokens"] >= written > 10_000, (first["usage"], late["usage"])
