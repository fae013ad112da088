"""Evaluation metrics and reports, each figure checked against a second computation written differently here."""

from __future__ import annotations

import itertools
import json
import math
import random
from fractions import Fraction
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascadeflow.evaluation import (
    POOLED,
    Outcome,
    accepted_wrong_rate,
    apgr,
    apply_threshold,
    auroc,
    bootstrap_ci,
    cascade_cost,
    cascade_quality,
    choose_threshold,
    compute_curves,
    cost_quality_curve,
    cv_folds,
    deferral_curve,
    escalation_rate,
    false_accept_rate,
    fit_combined,
    fit_logistic,
    fit_threshold,
    logistic_confidence,
    oracle_curve,
    quality_retained,
    random_curve,
    render_html,
    render_markdown,
    render_table,
    rescore,
    saving,
    summarize,
    summarize_by_dataset,
)


def rec(id, confidence, accepted, d, s, dc=0.01, sc=0.10, extra=0.0, dataset="hand", **features):
    return Outcome(id, dataset, confidence, accepted, d, s, dc, sc, extra, features)


# r4 was never judged (no confidence): escalated, and its check cost is not paid
HAND = [
    rec("r1", 0.9, True, 1.0, 1.0, extra=0.001),
    rec("r2", 0.8, True, 0.0, 1.0, extra=0.001),
    rec("r3", 0.3, False, 0.0, 1.0, extra=0.001),
    rec("r4", None, False, 1.0, 0.0, extra=0.001),
]


# ---------------------------------------------------------------- independent reference computations


def ref_quality(rs, escalated):
    total = Fraction(0)
    for o in rs:
        total += Fraction(o.strong_score if o.id in escalated else o.draft_score)
    return total / len(rs)


def ref_cost(rs, escalated, checks=True):
    total = Fraction(0)
    for o in rs:
        total += Fraction(o.draft_cost)
        if checks and o.confidence is not None:
            total += Fraction(o.extra_cost)
        if o.id in escalated:
            total += Fraction(o.strong_cost)
    return total


def precedes(a, b):
    """a is escalated before b: None first, then lower confidence, then smaller id."""
    if (a.confidence is None) != (b.confidence is None):
        return a.confidence is None
    if a.confidence is not None and a.confidence != b.confidence:
        return a.confidence < b.confidence
    return a.id < b.id


def ref_deferral(rs):
    """(k/n, quality, cost, pgr) per k, from scratch for every k, in exact arithmetic.

    Records of equal confidence are a block escalated in expectation over their order: with m of a block
    of b escalated, each of its records counts m/b of its gain and of its strong cost.
    """
    level = lambda o: (o.confidence is not None, o.confidence or 0.0)  # noqa: E731
    below = {a.id: sum(level(b) < level(a) for b in rs) for a in rs}
    q_d, q_s = ref_quality(rs, set()), ref_quality(rs, {o.id for o in rs})
    out = []
    for k in range(len(rs) + 1):
        escalated = {o.id for o in rs if below[o.id] + sum(level(b) == level(o) for b in rs) <= k}
        partial = [o for o in rs if below[o.id] < k and o.id not in escalated]
        share = Fraction(k - below[partial[0].id], len(partial)) if partial else Fraction(0)
        q = ref_quality(rs, escalated) + share * sum(Fraction(o.strong_score) - Fraction(o.draft_score) for o in partial) / len(rs)
        c = ref_cost(rs, escalated) + share * sum(Fraction(o.strong_cost) for o in partial)
        out.append((Fraction(k, len(rs)), q, c, (q - q_d) / (q_s - q_d) if gap(q_d, q_s) else None))
    return out


def gap(q_d, q_s):
    """Whether there is a quality gap to recover (closer than 1e-12 is float noise, as in the module)."""
    return abs(q_s - q_d) > Fraction(1, 10**12)


def ref_area(xs, ys):
    return sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]))


def ref_auroc(rs):
    good = [o for o in rs if o.draft_score >= 0.5]
    bad = [o for o in rs if o.draft_score < 0.5]
    if not good or not bad:
        return None
    def key(o):
        return -math.inf if o.confidence is None else o.confidence

    wins = sum(1.0 if key(g) > key(b) else 0.5 if key(g) == key(b) else 0.0 for g in good for b in bad)
    return wins / (len(good) * len(bad))


def ref_best_quality_by_size(rs):
    """Brute force over every escalated subset: the best quality for each number escalated."""
    best = {}
    for mask in itertools.product([False, True], repeat=len(rs)):
        escalated = {o.id for o, m in zip(rs, mask) if m}
        q = ref_quality(rs, escalated)
        best[len(escalated)] = max(best.get(len(escalated), q), q)
    return best


def close(a, b, tol=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= tol


# ---------------------------------------------------------------- generated outcome lists


@st.composite
def outcome_lists(draw, min_size=1, max_size=10):
    n = draw(st.integers(min_size, max_size))
    ids = draw(st.permutations(range(n)))  # ids not in list order, so ties are broken by id, not by position
    threshold = draw(st.sampled_from([0.25, 0.5, 0.85]))
    out = []
    for i in range(n):
        confidence = draw(st.one_of(st.none(), st.sampled_from([0.1, 0.3, 0.5, 0.8, 0.9])))  # few values: ties
        out.append(
            Outcome(
                id=f"q{ids[i]:02d}",
                dataset=draw(st.sampled_from(["a", "b"])),
                confidence=confidence,
                accepted=confidence is not None and confidence >= threshold,
                draft_score=draw(st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0])),
                strong_score=draw(st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0])),
                draft_cost=draw(st.sampled_from([0.0, 0.001, 0.004])),
                strong_cost=draw(st.sampled_from([0.0, 0.01, 0.05])),
                extra_cost=draw(st.sampled_from([0.0, 0.0005])),
            )
        )
    return out


# ---------------------------------------------------------------- the hand case, by hand


def test_hand_case_headline_figures():
    assert cascade_quality(HAND) == pytest.approx(0.5)  # r1 1, r2 0, r3 → strong 1, r4 → strong 0
    assert quality_retained(HAND) == pytest.approx(0.5 / 0.75)
    assert cascade_cost(HAND) == pytest.approx(0.04 + 0.003 + 0.2)  # drafts, three checks, two escalations
    assert saving(HAND) == pytest.approx(1 - 0.243 / 0.4)
    assert escalation_rate(HAND) == 0.5
    assert false_accept_rate(HAND) == 0.5  # of r1, r2 only r2 is worse than the strong answer
    assert accepted_wrong_rate(HAND) == 0.5
    # good: r1 (0.9), r4 (None); bad: r2 (0.8), r3 (0.3) → r1 beats both, None beats neither
    assert auroc(HAND) == 0.5


def test_hand_case_curves_and_baselines():
    # escalation order r4, r3, r2, r1: quality .5 .25 .5 .75 .75 → pgr 0 −1 0 1 1
    curve = deferral_curve(HAND)
    assert [p["quality"] for p in curve] == pytest.approx([0.5, 0.25, 0.5, 0.75, 0.75])
    assert [p["pgr"] for p in curve] == pytest.approx([0, -1, 0, 1, 1])
    assert [p["cost"] for p in curve] == pytest.approx([0.043, 0.143, 0.243, 0.343, 0.443])
    assert apgr(curve) == pytest.approx(0.125)
    # oracle order r2, r3 (gain 1, by id), r1 (0), r4 (−1): pgr 0 1 2 2 1; no check cost
    oracle = oracle_curve(HAND)
    assert [p["pgr"] for p in oracle] == pytest.approx([0, 1, 2, 2, 1])
    assert apgr(oracle) == pytest.approx(1.375)
    assert oracle[0]["cost"] == pytest.approx(0.04)
    b = summarize(HAND)["baselines"]
    assert b["always_draft"] == pytest.approx({"quality": 0.5, "cost": 0.04, "saving": 0.9, "quality_retained": 2 / 3, "escalation_rate": 0.0, "apgr": None})
    assert b["always_strong"] == pytest.approx({"quality": 0.75, "cost": 0.4, "saving": 0.0, "quality_retained": 1.0, "escalation_rate": 1.0, "apgr": None})
    assert b["random"] == pytest.approx({"quality": 0.625, "cost": 0.24, "saving": 0.4, "quality_retained": 0.625 / 0.75, "escalation_rate": 0.5, "apgr": 0.5})
    assert b["oracle"] == pytest.approx({"quality": 1.0, "cost": 0.24, "saving": 0.4, "quality_retained": 4 / 3, "escalation_rate": 0.5, "apgr": 1.375})


def test_hand_case_cost_quality_curve_and_threshold_choice():
    points = cost_quality_curve(HAND)
    assert [p["threshold"] for p in points] == [0.3, 0.8, 0.9, None]  # sorted by cost
    assert [p["quality"] for p in points] == pytest.approx([0.25, 0.5, 0.75, 0.75])
    # None = never draft: the strong model alone, no draft or check paid
    assert [p["cost"] for p in points] == pytest.approx([0.143, 0.243, 0.343, 0.4])
    assert [p["escalation_rate"] for p in points] == [0.25, 0.5, 0.75, 1.0]
    assert choose_threshold(HAND, 1.0)["threshold"] == 0.9  # cheaper than accepting nothing, same quality
    assert choose_threshold(HAND, 0.5)["threshold"] == 0.8
    unreachable = choose_threshold(HAND, 1.1)
    assert (unreachable["threshold"], unreachable["reached"]) == (0.9, False)


def test_summary_is_strict_json_and_undefined_ratios_are_none():
    no_costs = [rec("a", 0.7, True, 1.0, 1.0, dc=0.0, sc=0.0), rec("b", 0.2, False, 0.0, 0.0, dc=0.0, sc=0.0)]
    s = summarize(no_costs)
    assert s["saving"] is None  # no cost data: nothing to save against
    assert s["apgr"] is None  # q_strong == q_draft: no gap to recover
    assert all(p["pgr"] is None for p in deferral_curve(no_costs))
    assert false_accept_rate([rec("c", 0.1, False, 0.0, 1.0)]) is None  # nothing accepted
    assert auroc([rec("d", 0.1, False, 1.0, 1.0)]) is None  # one class only
    json.dumps(summarize_by_dataset(HAND + no_costs), allow_nan=False)


def test_outcome_rejects_impossible_records():
    with pytest.raises(ValueError):
        rec("x", None, True, 1.0, 1.0)  # accepted without ever being judged
    with pytest.raises(ValueError):
        rec("x", 0.5, False, 1.5, 1.0)
    with pytest.raises(ValueError):
        rec("x", 0.5, False, 1.0, 1.0, sc=-1.0)
    with pytest.raises(ValueError):
        summarize([])


# ---------------------------------------------------------------- generated lists against the references


@settings(max_examples=150, deadline=None)
@given(outcome_lists())
def test_headline_figures_match_reference(rs):
    escalated = {o.id for o in rs if not o.accepted}
    q, q_s = ref_quality(rs, escalated), ref_quality(rs, {o.id for o in rs})
    strong = sum(Fraction(o.strong_cost) for o in rs)
    s = summarize(rs, resamples=20)
    assert close(s["quality"], q)
    assert close(s["cost"], ref_cost(rs, escalated))
    assert close(s["quality_retained"], q / q_s if q_s else None)
    assert close(s["saving"], 1 - ref_cost(rs, escalated) / strong if strong else None)
    assert s["escalation_rate"] == len(escalated) / len(rs)
    accepted = [o for o in rs if o.accepted]
    assert close(s["false_accept_rate"], sum(o.draft_score < o.strong_score for o in accepted) / len(accepted) if accepted else None)
    assert close(s["auroc"], ref_auroc(rs))
    assert s["baselines"]["random"]["apgr"] == (0.5 if s["apgr"] is not None else None)
    json.dumps(s, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(outcome_lists())
def test_deferral_curve_and_apgr_match_reference(rs):
    ref = ref_deferral(rs)
    curve = deferral_curve(rs)
    assert len(curve) == len(rs) + 1
    for p, (x, q, c, pgr) in zip(curve, ref):
        assert close(p["escalation_rate"], x) and close(p["quality"], q) and close(p["cost"], c) and close(p["pgr"], pgr)
    area = ref_area([r[0] for r in ref], [r[3] for r in ref]) if ref[0][3] is not None else None
    assert close(apgr(curve), area)


@settings(max_examples=100, deadline=None)
@given(outcome_lists(max_size=9))
def test_oracle_is_the_best_subset_at_every_size_and_bounds_any_ordering(rs):
    best = ref_best_quality_by_size(rs)
    oracle = oracle_curve(rs)
    assert all(close(p["quality"], best[k]) for k, p in enumerate(oracle))
    cascade = apgr(deferral_curve(rs))
    if cascade is not None and ref_quality(rs, {o.id for o in rs}) > ref_quality(rs, set()):
        assert apgr(oracle) >= cascade - 1e-9
        assert apgr(oracle) >= 0.5 - 1e-9


@settings(max_examples=100, deadline=None)
@given(outcome_lists())
def test_random_baseline_is_linear_with_apgr_one_half(rs):
    curve = random_curve(rs)
    q_d, q_s = ref_quality(rs, set()), ref_quality(rs, {o.id for o in rs})
    for k, p in enumerate(curve):
        assert close(p["quality"], q_d + (q_s - q_d) * Fraction(k, len(rs)))
    if gap(q_d, q_s):
        assert apgr(curve) == pytest.approx(0.5, abs=1e-12)
        assert summarize(rs, resamples=5)["baselines"]["random"]["apgr"] == 0.5


@settings(max_examples=100, deadline=None)
@given(outcome_lists())
def test_perfect_confidence_has_the_oracles_apgr(rs):
    # lowest confidence where escalating gains most: exactly the oracle's order up to ties in gain
    perfect = [Outcome(o.id, o.dataset, 0.5 - (o.strong_score - o.draft_score) / 2, False, o.draft_score, o.strong_score,
                       o.draft_cost, o.strong_cost) for o in rs]  # fmt: skip
    assert close(apgr(deferral_curve(perfect)), apgr(oracle_curve(rs)))


def test_oracle_apgr_with_unit_gains_and_when_drafts_beat_the_strong_model():
    # m of n drafts wrong where the strong model is right, none better: pgr rises to 1 over m/n, area 1 − m/(2n)
    rs = [rec(f"w{i}", 0.5, False, 0.0, 1.0) for i in range(3)] + [rec(f"r{i}", 0.5, False, 1.0, 1.0) for i in range(7)]
    assert apgr(oracle_curve(rs)) == pytest.approx(1 - 3 / 20)
    # where some draft beats the strong model the oracle recovers more than the whole gap: area above 1
    rs = [rec("a", 0.5, False, 0.0, 1.0), rec("b", 0.5, False, 1.0, 0.5)]  # q_d .5, q_s .75; pgr 0, 2, 1
    assert apgr(oracle_curve(rs)) == pytest.approx(1.25)


@settings(max_examples=150, deadline=None)
@given(outcome_lists())
def test_auroc_matches_pairwise_count(rs):
    assert close(auroc(rs), ref_auroc(rs))


def test_auroc_separating_constant_and_hand_values():
    good = [rec(f"g{i}", 0.6 + i / 100, False, 1.0, 1.0) for i in range(5)]
    bad = [rec(f"b{i}", 0.1 + i / 100, False, 0.0, 1.0) for i in range(4)]
    assert auroc(good + bad) == 1.0
    assert auroc([rec(o.id, 0.5, False, o.draft_score, 1.0) for o in good + bad]) == 0.5
    assert auroc([rec(o.id, 1 - o.confidence, False, o.draft_score, 1.0) for o in good + bad]) == 0.0
    # good .9 .7 .3, bad .8 .7 None: 3 + (0 + .5 + 1) + (0 + 0 + 1) = 5.5 of 9 pairs
    hand = [rec("a", 0.9, False, 1, 1), rec("b", 0.8, False, 0, 1), rec("c", 0.7, False, 1, 1),
            rec("d", 0.7, False, 0, 1), rec("e", None, False, 0, 1), rec("f", 0.3, False, 1, 1)]  # fmt: skip
    assert auroc(hand) == pytest.approx(5.5 / 9)


@settings(max_examples=150, deadline=None)
@given(outcome_lists())
def test_cost_quality_curve_matches_direct_evaluation_of_each_threshold(rs):
    points = cost_quality_curve(rs)
    thresholds = sorted({o.confidence for o in rs if o.confidence is not None})
    assert sorted(p["threshold"] for p in points if p["threshold"] is not None) == thresholds
    assert sum(p["threshold"] is None for p in points) == 1
    assert [p["cost"] for p in points] == sorted(p["cost"] for p in points)
    for p in points:
        t = p["threshold"]
        escalated = {o.id for o in rs if t is None or o.confidence is None or o.confidence < t}
        # None = never draft: only the strong model is paid
        cost = sum(Fraction(o.strong_cost) for o in rs) if t is None else ref_cost(rs, escalated)
        assert close(p["quality"], ref_quality(rs, escalated)) and close(p["cost"], cost)
        decided = apply_threshold(rs, t)
        assert close(p["quality_retained"], quality_retained(decided)) and close(p["saving"], saving(decided))


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_is_deterministic_and_contains_the_estimate():
    rng = random.Random(5)
    rs = [rec(f"b{i}", rng.random(), rng.random() < 0.7, float(rng.random() < 0.8), float(rng.random() < 0.9)) for i in range(200)]
    point = quality_retained(rs)
    lo, hi = bootstrap_ci(rs)
    assert lo < point < hi
    assert bootstrap_ci(rs) == [lo, hi] == summarize(rs)["quality_retained_ci"]
    assert bootstrap_ci(rs, seed=1) != [lo, hi]
    assert bootstrap_ci(rs, resamples=4000, level=0.5)[1] - bootstrap_ci(rs, resamples=4000, level=0.5)[0] < hi - lo


def test_bootstrap_ci_by_hand():
    same = [rec(f"s{i}", 0.9, True, 0.5, 1.0) for i in range(6)]
    assert bootstrap_ci(same) == pytest.approx([0.5, 0.5])
    # reproduce the percentile interval with an independent resampling loop and the same generator
    rs = HAND
    rng = random.Random(0)
    values = []
    for _ in range(1000):
        sample = rng.choices(rs, k=len(rs))
        strong = sum(o.strong_score for o in sample)
        if strong:
            values.append(sum(o.draft_score if o.accepted else o.strong_score for o in sample) / strong)
    values.sort()

    def pct(q):
        pos = (len(values) - 1) * q
        lo = int(pos)
        return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (pos - lo)

    assert bootstrap_ci(rs) == pytest.approx([pct(0.025), pct(0.975)])


# ---------------------------------------------------------------- threshold fitting and cross-validation


def noisy_records(n=300, seed=11):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        signal = rng.gauss(0, 1)
        good = signal + rng.gauss(0, 1) > -0.8
        out.append(Outcome(f"n{i:03d}", "ab"[i % 2], 1 / (1 + math.exp(-signal)), False, float(good), float(rng.random() < 0.95),
                           0.001, 0.02, 0.0, {"signal": signal, "noise": rng.gauss(0, 1), "flipped": -signal}))  # fmt: skip
    return out


def test_cv_folds_partition_stratified_and_deterministic():
    rs = noisy_records(103)
    folds = cv_folds(rs, 5, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(103))
    for name in "ab":
        counts = [sum(rs[i].dataset == name for i in f) for f in folds]
        assert max(counts) - min(counts) <= 1
    assert cv_folds(rs, 5, seed=3) == folds and cv_folds(rs, 5, seed=4) != folds
    with pytest.raises(ValueError):
        cv_folds(rs[:3], 5)


def test_fit_threshold_reaches_target_at_least_cost_in_sample():
    rs = noisy_records()
    for target in (0.85, 0.9, 0.95):
        fit = fit_threshold(rs, target)
        assert fit["reached"]
        decided = apply_threshold(rs, fit["threshold"])
        assert quality_retained(decided) >= target - 1e-9
        assert fit["in_sample"]["quality_retained"] == pytest.approx(quality_retained(decided))
        candidates = {o.confidence for o in rs} | {None}
        cheapest = min(cascade_cost(d) for t in candidates if quality_retained(d := apply_threshold(rs, t)) >= target - 1e-9)
        assert cascade_cost(decided) == pytest.approx(cheapest)


def test_fit_threshold_cv_figures_come_from_held_out_folds_only():
    rs = noisy_records()
    fit = fit_threshold(rs, 0.9, folds=4, seed=2)
    pooled = []
    for f, test_idx in enumerate(cv_folds(rs, 4, seed=2)):
        train = [o for i, o in enumerate(rs) if i not in set(test_idx)]
        t = choose_threshold(train, 0.9)["threshold"]
        assert fit["cv"]["folds"][f]["threshold"] == t
        pooled += apply_threshold([rs[i] for i in test_idx], t)
    assert fit["cv"]["n"] == len(rs)
    assert fit["cv"]["quality_retained"] == pytest.approx(quality_retained(pooled))
    assert fit["cv"]["saving"] == pytest.approx(saving(pooled))
    assert fit["cv"]["escalation_rate"] == pytest.approx(escalation_rate(pooled))
    # changing the held-out labels of fold 0 leaves fold 0's threshold alone
    fold0 = set(cv_folds(rs, 4, seed=2)[0])
    flipped = [Outcome(o.id, o.dataset, o.confidence, o.accepted, 1.0 - o.draft_score, o.strong_score, o.draft_cost, o.strong_cost)
               if i in fold0 else o for i, o in enumerate(rs)]  # fmt: skip
    assert fit_threshold(flipped, 0.9, folds=4, seed=2)["cv"]["folds"][0]["threshold"] == fit["cv"]["folds"][0]["threshold"]


def test_in_sample_fit_is_perfect_but_cross_validation_is_not():
    # by falling confidence the drafts alternate good, bad, good, ...: on all records, accepting only the most
    # confident one keeps every answer right; a fold fitted without a bad record accepts it when held out
    n = 40
    rs = [rec(f"z{i:02d}", 1 - i / n, False, 1.0 if i % 2 == 0 else 0.0, 1.0, dc=0.001) for i in range(n)]
    fit = fit_threshold(rs, 1.0, folds=5, seed=0)
    assert fit["reached"] and fit["in_sample"]["quality_retained"] == pytest.approx(1.0)
    assert fit["threshold"] == 1.0
    assert fit["cv"]["quality_retained"] < 1.0
    assert any(f["test_quality_retained"] < 1.0 for f in fit["cv"]["folds"])


# ---------------------------------------------------------------- the logistic combiner


def test_fit_logistic_recovers_informative_sign_and_ignores_noise():
    rs = noisy_records(400)
    model = fit_logistic(rs, ["signal", "noise"])
    assert model["weights"]["signal"] > 0.5
    assert abs(model["weights"]["noise"]) < 0.25 * model["weights"]["signal"]
    assert fit_logistic(rs, ["flipped"])["weights"]["flipped"] < -0.5
    assert logistic_confidence({"signal": 2.0}, model) > logistic_confidence({"signal": -2.0}, model)
    assert logistic_confidence({}, model) == pytest.approx(1 / (1 + math.exp(-model["bias"])))  # missing = at the mean


def test_fit_logistic_is_at_the_penalised_optimum():
    rs = noisy_records(200)
    names = ["signal", "noise"]
    model = fit_logistic(rs, names, l2=3.0)
    # gradient of Σ log-loss + 3/2·|w|² at the returned weights, recomputed from scratch on standardised features
    grad = {"bias": 0.0, **{n: 3.0 * model["weights"][n] for n in names}}
    for o in rs:
        z = {n: (o.features[n] - model["mean"][n]) / model["scale"][n] for n in names}
        p = 1 / (1 + math.exp(-(model["bias"] + sum(model["weights"][n] * z[n] for n in names))))
        y = 1.0 if o.draft_score >= 0.5 else 0.0
        grad["bias"] += p - y
        for n in names:
            grad[n] += (p - y) * z[n]
    assert all(abs(g) < 1e-6 for g in grad.values())
    for n in names:
        values = [o.features[n] for o in rs]
        mean = sum(values) / len(values)
        assert model["mean"][n] == pytest.approx(mean)
        assert model["scale"][n] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))


def test_fit_logistic_with_one_class_is_constant():
    rs = [rec(f"o{i}", 0.5, False, 1.0, 1.0, x=float(i)) for i in range(9)]
    model = fit_logistic(rs, ["x"])
    assert model["weights"] == {"x": 0.0}
    assert logistic_confidence({"x": 100.0}, model) == pytest.approx(9.5 / 10)


def test_fit_combined_is_honest_cross_validation():
    rs = noisy_records(240)
    names = ["signal", "noise"]
    fit = fit_combined(rs, names, 0.9, folds=4, seed=1)
    pooled = []
    for f, test_idx in enumerate(cv_folds(rs, 4, seed=1)):
        held = set(test_idx)
        train = [o for i, o in enumerate(rs) if i not in held]
        model = fit_logistic(train, names)
        t = choose_threshold(rescore(train, model), 0.9)["threshold"]
        assert fit["cv"]["folds"][f]["threshold"] == pytest.approx(t)
        pooled += apply_threshold(rescore([rs[i] for i in test_idx], model), t)
    assert fit["cv"]["quality_retained"] == pytest.approx(quality_retained(pooled))
    assert fit["cv"]["saving"] == pytest.approx(saving(pooled))
    assert fit["cv"]["auroc"] == pytest.approx(auroc(pooled))
    final = fit_logistic(rs, names)
    assert fit["model"]["weights"] == pytest.approx(final["weights"])
    assert fit["threshold"] == pytest.approx(choose_threshold(rescore(rs, final), 0.9)["threshold"])
    # fold 0's model and threshold never see fold 0's labels
    fold0 = set(cv_folds(rs, 4, seed=1)[0])
    flipped = [Outcome(o.id, o.dataset, o.confidence, o.accepted, 1.0 - o.draft_score, o.strong_score, o.draft_cost, o.strong_cost,
                       0.0, o.features) if i in fold0 else o for i, o in enumerate(rs)]  # fmt: skip
    again = fit_combined(flipped, names, 0.9, folds=4, seed=1)
    assert again["cv"]["folds"][0]["threshold"] == pytest.approx(fit["cv"]["folds"][0]["threshold"])


def test_rescore_leaves_unjudged_records_unjudged():
    model = {"weights": {"x": 1.0}, "bias": 0.0, "mean": {"x": 0.0}, "scale": {"x": 1.0}}
    out = rescore([rec("u", None, False, 1.0, 1.0, x=3.0), rec("v", 0.1, True, 1.0, 1.0, x=0.0)], model)
    assert out[0].confidence is None and out[1].confidence == pytest.approx(0.5)


# ---------------------------------------------------------------- rendering


class _Nesting(HTMLParser):
    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "line", "circle", "rect", "polyline", "path"})

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def report_inputs():
    rs = HAND + [rec(f"m{i}", i / 10, i >= 5, float(i % 3 != 0), 1.0, dataset="more") for i in range(10)]
    summaries = summarize_by_dataset(rs, resamples=50)
    curves = {name: compute_curves([o for o in rs if o.dataset == name]) for name in ("hand", "more")}
    curves[POOLED] = compute_curves(rs)
    ops = {"hand": fit_threshold(HAND, 1.0, folds=2), "more": choose_threshold([o for o in rs if o.dataset == "more"], 0.9)}
    return summaries, curves, ops


def test_render_html_is_self_contained_with_a_chart_per_curve():
    summaries, curves, ops = report_inputs()
    page = render_html(summaries, curves, ops, title="Eval <1> & co")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    parser = _Nesting()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert parser.tags.count("svg") == 2 * len(curves) == page.count("<svg")
    assert "Eval &lt;1&gt; &amp; co" in page
    for forbidden in ("<script", "src=", "<link", "@import", "url("):
        assert forbidden not in page
    assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0
    assert "66.7%" in page  # the hand case's quality retained
    assert "39.3%" in page  # and its saving (39.25%)
    assert "0.125" in page and "1.375" in page  # its APGR and the oracle's
    assert "chosen t=0.9" in page


def test_render_table_has_one_row_per_dataset():
    summaries, _, _ = report_inputs()
    lines = render_table(summaries).splitlines()
    assert len(lines) == 2 + len(summaries)
    assert [line.split()[0] for line in lines[2:]] == list(summaries)
    assert len({len(line) for line in lines}) == 1  # fixed width
    assert "66.7%" in lines[2] and "39.3%" in lines[2]


def test_render_markdown_tables_and_notes():
    summaries, _, _ = report_inputs()
    text = render_markdown(summaries, ["Generated from replay data.", "Second note."])
    assert text.startswith("Generated from replay data.\n\nSecond note.")
    rows = [line for line in text.splitlines() if line.startswith("| hand |")]
    assert len(rows) == 2 and "66.7%" in rows[0]
    assert sum(line.startswith("|---") for line in text.splitlines()) == 2


def test_render_html_accepts_bare_curve_lists_and_data_without_costs():
    rs = [rec(f"c{i}", i / 10, i >= 4, float(i % 2), 1.0, dc=0.0, sc=0.0) for i in range(10)]
    curves = {"free": {"deferral": deferral_curve(rs), "oracle": oracle_curve(rs), "cost_quality": cost_quality_curve(rs)}}
    page = render_html({"free": summarize(rs, resamples=20)}, curves, {"free": {"threshold": 0.4, "cost": 0.0, "quality": 0.7,
                       "escalation_rate": 0.4}}, title="no costs")  # fmt: skip
    assert page.count("<svg") == 2
    assert "escalation rate (no cost data)" in page and "chosen t=0.4" in page
    assert "n/a" in page  # saving is undefined without costs
