"""Calibration metrics of issue 13: APGR over confidence ties, unknown prices, never-draft, the quality bound."""

from __future__ import annotations

import random

import pytest

from cascadeflow.evaluation import (
    Outcome,
    apgr,
    apply_threshold,
    choose_threshold,
    cost_quality_curve,
    deferral_curve,
    quality_retained,
    saving,
    summarize,
)
from cascadeflow.evaluation.guarantee import choose_bounded, quality_lower_bound


def rec(id, confidence, d, s, dc=0.01, sc=0.10, accepted=False, extra=0.0, **kw):
    return Outcome(id, "hand", confidence, accepted, d, s, dc, sc, extra, **kw)


def test_apgr_averages_over_confidence_ties_instead_of_breaking_them_by_id():
    # every draft at confidence 1.0 (saturated): no ordering is known, so the curve is random escalation's
    bad_first = [rec("a", 1.0, 0.0, 1.0), rec("b", 1.0, 0.0, 1.0), rec("c", 1.0, 1.0, 1.0), rec("d", 1.0, 1.0, 1.0)]
    good_first = [rec("a", 1.0, 1.0, 1.0), rec("b", 1.0, 1.0, 1.0), rec("c", 1.0, 0.0, 1.0), rec("d", 1.0, 0.0, 1.0)]
    assert apgr(deferral_curve(bad_first)) == pytest.approx(0.5)
    assert apgr(deferral_curve(good_first)) == pytest.approx(0.5)
    # a real ranking outside the tie still counts: the one low-confidence bad draft goes first
    mixed = [rec("z", 0.2, 0.0, 1.0), *bad_first[2:], rec("x", 1.0, 0.0, 1.0)]
    curve = deferral_curve(mixed)
    assert [p["pgr"] for p in curve] == pytest.approx([0, 0.5, 2 / 3, 5 / 6, 1])


def test_unpriced_records_make_every_saving_unknown_but_keep_quality():
    rs = [rec("a", 0.9, 1.0, 1.0, accepted=True), rec("b", 0.2, 0.0, 1.0, priced=False)]
    assert saving(rs) is None
    summary = summarize(rs, resamples=10)
    assert summary["saving"] is None and summary["priced"] is False
    assert all(b["saving"] is None for b in summary["baselines"].values())
    assert all(p["saving"] is None for p in cost_quality_curve(rs))
    assert summary["quality_retained"] == pytest.approx(1.0)
    assert saving([rec("a", 0.9, 1.0, 1.0), rec("b", 0.2, 0.0, 1.0)]) is not None


def test_never_drafting_pays_no_draft_and_a_threshold_drafts_again():
    rs = [rec("a", 0.9, 1.0, 1.0, extra=0.001), rec("b", 0.2, 0.0, 1.0, extra=0.001)]
    never = apply_threshold(rs, None)
    assert not any(o.drafted or o.accepted for o in never)
    assert summarize(never, resamples=10)["cost"] == pytest.approx(0.2)  # the strong model only
    assert saving(never) == pytest.approx(0.0)
    again = apply_threshold(never, 0.5)
    assert [o.accepted for o in again] == [True, False] and all(o.drafted for o in again)
    with pytest.raises(ValueError):
        Outcome("x", "hand", 0.9, True, 1.0, 1.0, 0.01, 0.1, drafted=False)


# -- the bound ----------------------------------------------------------------------------------------


def synthetic(n, rng):
    """Confidence u ~ U(0, 1); the draft is right with probability u, the strong model with 0.9."""
    rows = []
    for i in range(n):
        u = rng.random()
        rows.append(rec(f"s{i:04d}", u, float(rng.random() < u), float(rng.random() < 0.9), dc=0.001, sc=0.01))
    return rows


def true_quality_retained(t):
    """Quality retained at threshold t on the whole population (exact): accepted share 1 − t, their mean u (1 + t) / 2."""
    return ((1 - t) * (1 + t) / 2 + t * 0.9) / 0.9


def test_bounded_thresholds_hold_the_target_on_new_data_where_point_estimates_miss_it_half_the_time():
    rng = random.Random(7)
    target, trials = 0.95, 120
    missed = {"point": 0, "bound": 0}
    for _ in range(trials):
        rs = synthetic(400, rng)
        point, bounded = choose_threshold(rs, target), choose_bounded(rs, target, 0.95)
        assert bounded["bound"] is not None and bounded["bound"] >= target - 1e-9
        for name, choice in (("point", point), ("bound", bounded)):
            t = choice["threshold"]
            missed[name] += t is not None and true_quality_retained(t) < target
    assert missed["point"] > 0.3 * trials  # a point estimate at the target is a coin flip out of sample
    assert missed["bound"] <= 0.08 * trials  # the 95% bound: about 5% (sampling noise allowed)


def test_quality_lower_bound_sits_below_the_estimate_and_never_draft_is_exact():
    rs = apply_threshold(synthetic(300, random.Random(1)), 0.5)
    bound = quality_lower_bound(rs)
    assert bound < quality_retained(rs)
    assert quality_lower_bound(rs, 0.99) < bound  # a higher level, a lower bound
    assert quality_lower_bound(apply_threshold(rs, None)) == pytest.approx(1.0)


def test_when_no_threshold_is_safe_the_choice_is_never_draft():
    # confidence says nothing (all 1.0) and half the drafts are wrong: drafting cannot keep 0.95
    rs = [rec(f"r{i}", 1.0, float(i % 2), 1.0) for i in range(200)]
    choice = choose_bounded(rs, 0.95)
    assert choice["threshold"] is None and not choice["reached"] and choice["bound"] == 1.0


def test_a_rule_drafts_only_where_its_confidence_beats_random_escalation_out_of_fold():
    from cascadeflow.evaluation.commands import beats_random, deployable
    from cascadeflow.evaluation.metrics import fit_threshold

    rng = random.Random(3)
    # the draft is wrong 3% of the time and confidence knows nothing about when: a 0.95 bound holds at
    # random acceptance, but the saving would be luck, not judgment
    noise = [rec(f"n{i:03d}", rng.random(), float(rng.random() > 0.03), 1.0, dc=0.001) for i in range(400)]
    fit = fit_threshold(noise, 0.95, choose=lambda rs, goal: choose_bounded(rs, goal))
    assert fit["reached"] and fit["threshold"] is not None  # the bound alone would draft
    assert not beats_random(fit) and not deployable(fit)
    # the same drafts with a confidence that does know: deployable
    informed = [rec(o.id, (0.5 + 0.5 * rng.random()) if o.draft_score else 0.5 * rng.random(), o.draft_score, 1.0, dc=0.001)
                for o in noise]  # fmt: skip
    fit = fit_threshold(informed, 0.95, choose=lambda rs, goal: choose_bounded(rs, goal))
    assert beats_random(fit) and deployable(fit)


def test_the_learned_scorer_finds_records_whose_ids_are_numbers():
    from cascadeflow.evaluation import learned

    records = [{"id": i, "dataset": "nums", "messages": [{"role": "user", "content": f"What is {i} + {i}?"}],
                "draft": {"text": str(2 * i) if i % 3 else "I am not sure."}} for i in range(60)]  # fmt: skip
    outcomes = [Outcome(r["id"], "nums", 1.0, False, float(r["id"] % 3 != 0), 1.0, 0.001, 0.01) for r in records]
    scored = learned.out_of_fold_scores(outcomes, learned.record_features(records), folds=3)
    assert len(scored) == 60 and all(0.0 < o.confidence < 1.0 for o in scored)
    # hedged drafts (every third) are the bad ones, and the text shows it
    assert min(o.confidence for o in scored if o.draft_score) > max(o.confidence for o in scored if not o.draft_score)
