"""Calibration metrics of issue 13: APGR over confidence ties, unknown prices, never-draft, the quality bound."""

from __future__ import annotations

import pytest

from cascadeflow.evaluation import Outcome, apgr, apply_threshold, cost_quality_curve, deferral_curve, saving, summarize


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
