"""Thresholds whose quality holds out of sample: a lower confidence bound, not a point estimate, meets the target.

A threshold that merely reaches the target on the calibration records is a coin flip on new ones (half the
time it lands below). Here a threshold is admissible only when a one-sided lower confidence bound (level
``level``, 95% by default) on quality retained is at least the target:

- quality retained R = Σ cascade score / Σ strong score; its bound is the delta-method (ratio estimator)
  normal bound R − z·se, se² = Σ(cᵢ − R·sᵢ)² / ((n − 1)·n·s̄²), computed for every threshold in one pass;
- one pessimistic pseudo-record (an accepted draft scoring 0 where the strong model scored 1) joins any
  set with an acceptance, so a small sample with no observed harm does not get a zero-width bound;
- thresholds are tested as a fixed sequence (learn-then-test): from the most cautious (accept only the
  most confident drafts) downwards, stopping at the first whose bound misses the target. Every threshold
  passed is then covered at the stated level together, without a multiple-testing penalty, and the
  cheapest of them is chosen. Never drafting (quality retained exactly 1) is always admissible, so
  when nothing else is, the rule never drafts.

The bound is asymptotic (normal approximation on independent records); it says nothing about traffic
unlike the calibration data, which is why ``calibrate`` also reports cross-validated, held-out figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist

from .metrics import _TOL, Outcome, _records, cost_quality_curve

__all__ = ["DEFAULT_LEVEL", "quality_lower_bound", "choose_bounded"]

#: one-sided confidence level of the bound on quality retained
DEFAULT_LEVEL = 0.95
#: the fixed sequence tests a threshold per this share of records accepted
GRID_STEP = 0.02


def _bound(sum_c: float, sum_c2: float, sum_cs: float, sum_s: float, sum_s2: float, n: int, z: float) -> float | None:
    if sum_s <= 0 or n < 2:
        return None
    ratio = sum_c / sum_s
    residual = max(sum_c2 - 2.0 * ratio * sum_cs + ratio * ratio * sum_s2, 0.0)  # Σ(c − R·s)², Σ(c − R·s) = 0
    se = math.sqrt(residual / (n - 1)) * math.sqrt(n) / sum_s
    return ratio - z * se


def quality_lower_bound(outcomes: Iterable[Outcome], level: float = DEFAULT_LEVEL) -> float | None:
    """One-sided lower confidence bound on quality retained of the decisions as they are (see the module)."""
    rs = _records(outcomes)
    c = [o.draft_score if o.accepted else o.strong_score for o in rs]
    s = [o.strong_score for o in rs]
    if any(o.accepted for o in rs):
        c, s = [*c, 0.0], [*s, 1.0]
    z = NormalDist().inv_cdf(level)
    return _bound(math.fsum(c), math.fsum(x * x for x in c), math.fsum(x * y for x, y in zip(c, s)), math.fsum(s),
                  math.fsum(x * x for x in s), len(c), z)


def _bounds_by_threshold(rs: list[Outcome], level: float) -> dict[float | None, float | None]:
    """The lower bound at every distinct threshold (and None = never draft), in one pass from the top."""
    z = NormalDist().inv_cdf(level)
    strong = [o.strong_score for o in rs]
    sum_s, sum_s2 = math.fsum(strong) + 1.0, math.fsum(x * x for x in strong) + 1.0  # with the pseudo-record
    sum_c, sum_c2, sum_cs = sum_s - 1.0, sum_s2 - 1.0, sum_s2 - 1.0  # everything escalated: c = s
    bounds: dict[float | None, float | None] = {None: 1.0 if sum_s > 1.0 else None}
    judged = sorted(((o.confidence, o) for o in rs if o.confidence is not None), key=lambda p: -p[0])
    for i, (confidence, o) in enumerate(judged):
        d, s = o.draft_score, o.strong_score
        sum_c += d - s
        sum_c2 += d * d - s * s
        sum_cs += (d - s) * s
        if i + 1 == len(judged) or judged[i + 1][0] != confidence:
            # the pseudo-record: c = 0, s = 1 (adds nothing to Σc, Σc², Σcs)
            bounds[confidence] = _bound(sum_c, sum_c2, sum_cs, sum_s, sum_s2, len(rs) + 1, z)
    return bounds


def _grid(rs: list[Outcome], thresholds: list[float]) -> list[float]:
    """The thresholds tested, from the top: one per step of :data:`GRID_STEP` of the records accepted.

    Chosen from the confidences alone (never the labels), so the fixed sequence stays valid; a coarse step
    keeps one unlucky draft among the very first accepted from ending the sequence before it starts.
    """
    step = max(1, round(GRID_STEP * len(rs)))
    judged = sorted((o.confidence for o in rs if o.confidence is not None), reverse=True)
    grid, accepted, next_at = [], 0, step
    for threshold in thresholds:
        while accepted < len(judged) and judged[accepted] >= threshold:
            accepted += 1
        if accepted >= next_at or threshold == thresholds[-1]:
            grid.append(threshold)
            next_at = accepted + step
    return grid


def choose_bounded(outcomes: Iterable[Outcome], target_quality_retained: float, level: float = DEFAULT_LEVEL) -> dict:
    """The cheapest threshold whose lower bound on quality retained meets the target (fixed-sequence test).

    Returns the cost–quality point with ``bound`` and ``level`` added; ``reached`` is True when a threshold
    that drafts passed, False when only never drafting (threshold None) is admissible.
    """
    rs = _records(outcomes)
    bounds = _bounds_by_threshold(rs, level)
    points = {p["threshold"]: p for p in cost_quality_curve(rs)}
    admissible = [points[None]]
    for threshold in _grid(rs, sorted((t for t in bounds if t is not None), reverse=True)):
        bound = bounds[threshold]
        if bound is None or bound < target_quality_retained - _TOL:
            break  # the fixed sequence stops at its first failure
        admissible.append(points[threshold])
    best = min(admissible, key=lambda p: (p["cost"], p["escalation_rate"]))
    return {**best, "bound": bounds[best["threshold"]], "level": level, "reached": best["threshold"] is not None}
