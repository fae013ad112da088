"""Cached Claude-Code-shaped sessions: the saving the gateway reports is the true one.

Runs `benchmarks/agentic_session.py`'s sessions (shorter) through a cascade and straight to Opus,
against a simulator that caches per model as Anthropic does, and compares what the simulator
billed with what the gateway recorded and reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
