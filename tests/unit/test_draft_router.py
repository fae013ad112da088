"""The pre-generation router's pure parts: request features, and the routing threshold chosen under the bound."""

from __future__ import annotations

import random

import pytest

from cascadeflow.cascade.router import ROUTER_FEATURES, Router, request_prompt, router_features
from cascadeflow.evaluation import Outcome, cost_quality_curve, quality_retained, saving
from cascadeflow.evaluation.commands import router_pays
from cascadeflow.evaluation.guarantee import quality_lower_bound
from cascadeflow.evaluation.routing import ROUTE_SHARES, apply_routed, choose_routed


def named(prompt: str, turns: int = 1, system: bool = False) -> dict[str, float]:
    return dict(zip(ROUTER_FEATURES, router_features(prompt, turns, system)))


def test_request_features_read_what_the_prompt_asks():
    mcq = named("Which is a mammal?\nA) trout\nB) whale\nC) gecko\nAnswer:")
    assert mcq["options"] == 1.0 and mcq["math"] == 0.0 and mcq["code"] == 0.0
    math_word = named("Tom has 3 apples and buys 4 more. How many apples does he have? 3 + 4 = ?")
    assert math_word["math"] == 1.0 and math_word["digits"] > 0 and math_word["questions"] > 0
    assert named("Write a python function that reverses a list")["code"] == 1.0
    assert named("Explain why the sky is blue")["open_ended"] == 1.0
    assert named("hi", turns=5, system=True)["turns"] > named("hi")["turns"] and named("hi", system=True)["system"] == 1.0
    # only the last 3,000 characters are read for the shares (few-shot examples come first), all for the length
    long = "x" * 10_000 + " How many?"
    assert named(long)["prompt_chars"] > named(long[-3000:])["prompt_chars"] and named(long)["math"] == 1.0


def test_the_request_prompt_is_read_in_every_dialect():
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Peru?"}]}
    anthropic = {"system": "Be brief.", "messages": [{"role": "user", "content": [{"type": "text", "text": "Capital of Peru?"}]}]}
    responses = {"instructions": "Be brief.", "input": "Capital of Peru?"}
    texts = {request_prompt(body)[0] for body in (chat, anthropic, responses)}
    assert texts == {"Be brief.\nCapital of Peru?"}
    weights = tuple(0.1 * (i + 1) for i in range(len(ROUTER_FEATURES)))
    router = Router(weights, 0.0, tuple(0.0 for _ in weights), tuple(1.0 for _ in weights), {})
    assert router.score(anthropic) == router.score(responses)  # the system prompt counts in both


def records(n: int = 400, seed: int = 1) -> tuple[list[Outcome], list[float]]:
    """Drafts every check scores 1.0 (no ranking at all); the router's P(good) knows which are hard."""
    rng = random.Random(seed)
    rs, p = [], []
    for i in range(n):
        hard = i % 4 == 0  # a quarter of the prompts: the draft fails
        good = (rng.random() < 0.97) if not hard else (rng.random() < 0.1)
        rs.append(Outcome(f"r{i}", "d", 1.0, False, 1.0 if good else 0.0, 1.0, 0.01, 0.10))
        p.append((0.2 if hard else 0.8) + rng.uniform(-0.05, 0.05))
    return rs, p


def test_routing_lets_a_rule_draft_where_no_check_ranks_drafts_and_holds_the_bound():
    rs, p = records()
    choice = choose_routed(rs, p, 0.95, 0.95)
    assert choice["reached"] and choice["threshold"] == 1.0 and 0.2 <= choice["share"] <= 0.3
    assert choice["each_level"] == pytest.approx(1 - 0.05 / len(ROUTE_SHARES))
    decided = apply_routed(rs, p, choice)
    routed = [o for o in decided if o.routed]
    assert routed and all(not o.drafted and not o.accepted and o.confidence is None for o in routed)
    assert all(o.accepted for o in decided if not o.routed)  # every draft left scores 1.0 and is accepted
    # the bound holds at the Bonferroni level, on the rule as decided; routed records pay no draft
    assert quality_lower_bound(decided, choice["each_level"]) >= 0.95
    assert saving(decided) == pytest.approx(1 - (0.01 * (len(rs) - len(routed)) + 0.10 * len(routed)) / (0.10 * len(rs)))
    assert quality_retained(decided) > 0.95


def test_an_uninformative_router_reaches_nothing_and_the_rule_never_drafts():
    rs, _ = records()
    rng = random.Random(3)
    noise = [rng.random() for _ in rs]
    choice = choose_routed(rs, noise, 0.95, 0.95)
    assert not choice["reached"] and choice["router_threshold"] is None
    assert all(not o.drafted and not o.accepted for o in apply_routed(rs, noise, choice))


def test_a_record_kept_from_drafting_pays_no_draft_at_any_threshold():
    judged = Outcome("a", "d", 0.9, False, 1.0, 1.0, 0.01, 0.10)
    skipped = Outcome("b", "d", None, False, 1.0, 1.0, 0.01, 0.10, drafted=False, routed=True)
    curve = {p["threshold"]: p["cost"] for p in cost_quality_curve([judged, skipped])}
    assert curve[None] == pytest.approx(0.20)  # never draft: both verifier calls
    assert curve[0.9] == pytest.approx(0.01 + 0.10)  # the judged draft accepted; the skipped one pays the verifier only


def test_the_router_is_kept_only_when_it_saves_more_out_of_fold():
    def fit(saving, quality=0.99, reached=True, auroc=(0.6, 0.7)):
        return {"reached": reached, "threshold": 0.5 if reached else None,
                "cv": {"saving": saving, "quality_retained": quality, "auroc": 0.65, "auroc_ci": list(auroc)}}

    assert router_pays(fit(0.30), fit(0.20), 0.98)
    assert not router_pays(fit(0.20), fit(0.30), 0.98)
    assert not router_pays(fit(0.30, quality=0.97), fit(0.20), 0.98)  # misses the target held out
    assert router_pays(fit(0.05), fit(0.40, reached=False), 0.98)  # the rule without it would never draft
    assert not router_pays(fit(0.30, auroc=(0.45, 0.7)), fit(0.0, reached=False), 0.98)  # no better than random
    assert not router_pays(fit(None), fit(0.0, reached=False), 0.98)  # unknown prices: nothing shown to pay


def test_an_embedding_router_scores_a_live_request_as_calibration_scored_the_record(tmp_path):
    from cascadeflow.cache.semantic import load_wordllama
    from cascadeflow.cascade.router import EMBEDDING, load_router, save_router
    from cascadeflow.evaluation.routing import request_features, train_router

    prompts = [f"What is the capital of {c}?" for c in ("France", "Peru", "Japan", "Kenya")] + [
        f"Prove that the sum of the first {n} odd numbers is {n} squared, step by step." for n in (3, 5, 7, 9)]
    records = [{"id": str(i), "dataset": "d", "messages": [{"role": "user", "content": p}]} for i, p in enumerate(prompts)]
    features = request_features(records, load_wordllama())
    assert all(len(v) == len(ROUTER_FEATURES) + 256 for v in features.values())
    outcomes = [Outcome(str(i), "d", None, False, 1.0 if i < 4 else 0.0, 1.0, 0.01, 0.1) for i in range(len(prompts))]
    router = train_router(outcomes, features, embedding=True)
    path = tmp_path / "r.router.json"
    loaded = load_router(path, save_router(router, path))  # loads WordLlama from the installed wheel
    assert loaded.embedding == EMBEDDING and loaded.slow  # the engine scores it in a worker thread
    for record in records:
        expected = router.probability(features[("d", record["id"])])
        assert loaded.score({"messages": record["messages"]}) == pytest.approx(expected, abs=1e-6)
    assert loaded.score({"messages": records[0]["messages"]}) > 0.5 > loaded.score({"messages": records[-1]["messages"]})
