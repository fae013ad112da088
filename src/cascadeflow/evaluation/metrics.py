"""Offline evaluation of a cascade from replayed outcomes: cost, quality, and how well confidence ranks drafts.

A record's cascade quality is its draft_score when the draft was accepted, else its strong_score;
its cost is draft_cost + extra_cost (only when a draft was judged) + strong_cost (only when escalated).
Figures are compared with always using the strong model, which is what a cascade replaces.
A draft is "good" when draft_score >= GOOD (0.5). A ratio with a zero denominator is None, never
NaN or inf, so every dict here is strict JSON; nothing is rounded here (rendering does that).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "GOOD", "POOLED", "Outcome", "accepted_wrong_rate", "apgr", "apply_threshold", "auroc", "bootstrap_ci",
    "cascade_cost", "cascade_quality", "choose_threshold", "compute_curves", "cost_quality_curve", "cv_folds",
    "deferral_curve", "escalation_order", "escalation_rate", "false_accept_rate", "fit_combined", "fit_logistic",
    "fit_threshold", "group_by_dataset", "logistic_confidence", "oracle_curve", "quality_retained", "random_curve",
    "rescore", "saving", "summarize", "summarize_by_dataset",
]  # fmt: skip

#: a draft with draft_score >= GOOD counts as correct ("good") for AUROC, accepted_wrong_rate and the combiner
GOOD = 0.5
#: key of the all-datasets summary in summarize_by_dataset
POOLED = "pooled"
#: slack when comparing a quality_retained with a target, so float noise never misses an exact target
_TOL = 1e-9
#: a quality gap smaller than this is no gap (float noise): pgr and apgr are then None, not noise / noise
_NO_GAP = 1e-12


@dataclass(frozen=True)
class Outcome:
    """One evaluated request."""

    id: str
    dataset: str
    confidence: float | None  # None: no draft was judged (e.g. skipped by policy): escalated, lowest confidence
    accepted: bool  # what the cascade did at its threshold
    draft_score: float  # quality of the draft's answer, 0..1
    strong_score: float  # quality of the strong model's answer, 0..1
    draft_cost: float  # USD
    strong_cost: float  # USD
    extra_cost: float = 0.0  # USD spent on checks (e.g. a self-verification call), paid whenever a draft was judged
    features: Mapping[str, float] = field(default_factory=dict, hash=False)  # per-check scores, for calibration
    drafted: bool = True  # False: the rule sent it straight to the strong model (never_draft, a policy): no draft paid
    priced: bool = True  # False: a model on this record has no known price, so its costs (and savings) are unknown
    task_type: str | None = None  # the record's kind of task (mcq, math, ...), for per-task-type thresholds
    routed: bool = False  # the pre-generation router sent it straight to the strong model (no draft paid)

    def __post_init__(self) -> None:
        for name in ("draft_score", "strong_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{self.id}: {name} must lie in 0..1")
        for name in ("draft_cost", "strong_cost", "extra_cost"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{self.id}: {name} must be a finite cost >= 0")
        if self.confidence is not None and not math.isfinite(self.confidence):
            raise ValueError(f"{self.id}: confidence must be finite or None")
        if self.accepted and (self.confidence is None or not self.drafted):
            raise ValueError(f"{self.id}: a draft that was never judged cannot have been accepted")

    @property
    def gain(self) -> float:
        """What escalating this record adds to quality (negative when the draft was better)."""
        return self.strong_score - self.draft_score


def _records(outcomes: Iterable[Outcome]) -> list[Outcome]:
    if not (records := list(outcomes)):
        raise ValueError("no outcomes to evaluate")
    return records


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _saving(cost: float, always_strong: float, priced: bool = True) -> float | None:
    """None when the baseline cost nothing or a model's price is unknown (a saving on $0 would be invented)."""
    return 1.0 - cost / always_strong if always_strong and priced else None


def _priced(rs: Iterable[Outcome]) -> bool:
    return all(o.priced for o in rs)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values)


def _record_cost(o: Outcome, escalated: bool, checks: bool = True) -> float:
    """A check is paid only when a draft was judged; baselines that need no check pass checks=False."""
    if not o.drafted:
        return o.strong_cost
    return o.draft_cost + (o.extra_cost if checks and o.confidence is not None else 0.0) + (o.strong_cost if escalated else 0.0)


def cascade_quality(outcomes: Iterable[Outcome]) -> float:
    """Mean quality the caller got: the draft's where accepted, the strong model's where escalated."""
    rs = _records(outcomes)
    return _mean(o.draft_score if o.accepted else o.strong_score for o in rs)


def cascade_cost(outcomes: Iterable[Outcome]) -> float:
    """Total USD: every draft, every check run, and the strong call for each escalation."""
    return math.fsum(_record_cost(o, not o.accepted) for o in _records(outcomes))


def saving(outcomes: Iterable[Outcome]) -> float | None:
    """1 − cascade cost / always-strong cost; None when the strong model cost nothing or a price is unknown."""
    rs = _records(outcomes)
    return _saving(cascade_cost(rs), math.fsum(o.strong_cost for o in rs), _priced(rs))


def quality_retained(outcomes: Iterable[Outcome]) -> float | None:
    """Cascade quality / always-strong quality; None when the strong model never scored."""
    rs = _records(outcomes)
    return _ratio(cascade_quality(rs), _mean(o.strong_score for o in rs))


def escalation_rate(outcomes: Iterable[Outcome]) -> float:
    """Share of records the cascade sent on to the strong model."""
    rs = _records(outcomes)
    return sum(not o.accepted for o in rs) / len(rs)


def false_accept_rate(outcomes: Iterable[Outcome]) -> float | None:
    """Share of ACCEPTED drafts whose draft_score < strong_score: acceptances that cost quality.

    None when nothing was accepted. Measured against the strong answer, not against correctness,
    because the cascade's alternative to accepting is the strong answer.
    """
    accepted = [o for o in _records(outcomes) if o.accepted]
    return _ratio(sum(o.draft_score < o.strong_score for o in accepted), len(accepted))


def accepted_wrong_rate(outcomes: Iterable[Outcome]) -> float | None:
    """Share of accepted drafts that are wrong outright (draft_score < GOOD); None when nothing was accepted."""
    accepted = [o for o in _records(outcomes) if o.accepted]
    return _ratio(sum(o.draft_score < GOOD for o in accepted), len(accepted))


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), q in 0..100."""
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    return ordered[lo] + (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo]) * (pos - lo)


def bootstrap_ci(outcomes: Iterable[Outcome], statistic: Callable[[list[Outcome]], float | None] = quality_retained, *,
                 resamples: int = 1000, seed: int = 0, level: float = 0.95) -> list[float] | None:  # fmt: skip
    """Percentile bootstrap [lo, hi]: records resampled with replacement, random.Random(seed).

    Resamples where the statistic is undefined (None) are dropped; None when all are.
    """
    rs = _records(outcomes)
    rng = random.Random(seed)
    values = sorted(v for v in (statistic(rng.choices(rs, k=len(rs))) for _ in range(resamples)) if v is not None)
    if not values:
        return None
    tail = (1.0 - level) * 50.0
    return [_percentile(values, tail), _percentile(values, 100.0 - tail)]


def escalation_order(outcomes: Sequence[Outcome]) -> list[int]:
    """Indices in the order a falling threshold escalates them: lowest confidence first, None first of all, ties by id."""
    return sorted(range(len(outcomes)), key=lambda i: (outcomes[i].confidence is not None, outcomes[i].confidence or 0.0, outcomes[i].id))


def _tie_blocks(rs: Sequence[Outcome], order: Sequence[int]) -> list[list[int]]:
    """``order`` cut into runs of equal confidence: a threshold escalates a run all together or not at all."""
    blocks: list[list[int]] = []
    for i in order:
        if blocks and rs[blocks[-1][0]].confidence == rs[i].confidence:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return blocks


def _curve(rs: Sequence[Outcome], order: Sequence[int], checks: bool, ties: bool = False) -> list[dict]:
    """Escalate rs[order[0]], rs[order[1]], ... one at a time; a point per k = 0..n.

    With ``ties``, records of equal confidence are escalated in expectation over every order among them
    (each step adds the block's mean gain and cost), so no arbitrary tie-break (such as the id) moves the curve.
    """
    n, q_draft, q_strong = len(rs), _mean(o.draft_score for o in rs), _mean(o.strong_score for o in rs)
    spread, total = q_strong - q_draft, math.fsum(o.draft_score for o in rs)
    cost, points = math.fsum(_record_cost(o, False, checks) for o in rs), []
    steps: list[tuple[float, float]] = []
    for block in _tie_blocks(rs, order) if ties else [[i] for i in order]:
        gain = math.fsum(rs[i].gain for i in block) / len(block)
        paid = math.fsum(rs[i].strong_cost for i in block) / len(block)
        steps += [(gain, paid)] * len(block)
    for k in range(n + 1):
        if k:
            gain, paid = steps[k - 1]
            total += gain
            cost += paid
        quality = total / n
        points.append({"escalation_rate": k / n, "quality": quality, "cost": cost,
                       "pgr": (quality - q_draft) / spread if abs(spread) > _NO_GAP else None})  # fmt: skip
    return points


def deferral_curve(outcomes: Iterable[Outcome]) -> list[dict]:
    """Quality and cost when the k least confident records are escalated, k = 0..n (checks paid throughout).

    Records of equal confidence are taken in expectation over their order (as AUROC counts ties half), so
    a saturated confidence (many drafts at exactly 1.0) earns exactly what random escalation would among them.

    Each point: escalation_rate k/n, quality, cost, and pgr = (quality − q_draft) / (q_strong − q_draft),
    the performance gap recovered; pgr is None for every point when q_strong == q_draft (within 1e-12: no gap
    to recover, and a ratio of float noise would be meaningless). With q_strong < q_draft pgr is still defined.
    """
    rs = _records(outcomes)
    return _curve(rs, escalation_order(rs), checks=True, ties=True)


def oracle_curve(outcomes: Iterable[Outcome]) -> list[dict]:
    """The best any ordering can do: escalate the largest strong − draft gain first (ties by id); no check cost."""
    rs = _records(outcomes)
    return _curve(rs, sorted(range(len(rs)), key=lambda i: (-rs[i].gain, rs[i].id)), checks=False)


def random_curve(outcomes: Iterable[Outcome]) -> list[dict]:
    """Expected curve of escalating k records chosen at random: linear in k, pgr exactly k/n; no check cost."""
    rs = _records(outcomes)
    n = len(rs)
    q_draft, q_strong = _mean(o.draft_score for o in rs), _mean(o.strong_score for o in rs)
    base, strong = math.fsum(o.draft_cost for o in rs), math.fsum(o.strong_cost for o in rs)
    return [{"escalation_rate": k / n, "quality": q_draft + (q_strong - q_draft) * k / n,
             "cost": base + strong * k / n, "pgr": k / n if abs(q_strong - q_draft) > _NO_GAP else None}
            for k in range(n + 1)]  # fmt: skip


def apgr(points: Sequence[Mapping]) -> float | None:
    """Area under pgr over escalation rate (0..1), trapezoid rule; None when pgr is undefined.

    0 = no better than never escalating, 0.5 = random escalation, 1 = the whole gap at once;
    the oracle can exceed 1 where some drafts beat the strong model.
    """
    if len(points) < 2 or any(p["pgr"] is None for p in points):
        return None
    return math.fsum((b["escalation_rate"] - a["escalation_rate"]) * (a["pgr"] + b["pgr"]) for a, b in itertools.pairwise(points)) / 2.0


def auroc(outcomes: Iterable[Outcome]) -> float | None:
    """P(a good draft's confidence > a bad draft's), ties counting half (Mann–Whitney U / (P·N)).

    Good means draft_score >= GOOD; a None confidence ranks below every number. None when one class is empty.
    """
    rs = _records(outcomes)
    scored = sorted((-math.inf if o.confidence is None else o.confidence, o.draft_score >= GOOD) for o in rs)
    positives = sum(good for _, good in scored)
    negatives = len(scored) - positives
    if not positives or not negatives:
        return None
    rank_sum, i = 0.0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2.0  # ranks i+1..j share their mean
        rank_sum += mean_rank * sum(good for _, good in scored[i:j])
        i = j
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def summarize(outcomes: Iterable[Outcome], *, resamples: int = 1000, seed: int = 0) -> dict:
    """Every headline figure for one set of records, with the four baselines at the cascade's escalation rate.

    Baselines: always_draft, always_strong, random (escalates the same share at random: expected figures,
    drafts paid, no check needed so no extra_cost) and oracle (escalates the same number of records, those
    with the largest gain; no extra_cost). apgr is None for the always_* baselines, which are single points.
    """
    rs = _records(outcomes)
    q_draft, q_strong = _mean(o.draft_score for o in rs), _mean(o.strong_score for o in rs)
    c_draft, c_strong = math.fsum(o.draft_cost for o in rs), math.fsum(o.strong_cost for o in rs)
    rate, k = escalation_rate(rs), sum(not o.accepted for o in rs)
    oracle, rand, priced = oracle_curve(rs), random_curve(rs), _priced(rs)

    def point(quality: float, cost: float, rate: float, area: float | None) -> dict:
        return {"quality": quality, "cost": cost, "saving": _saving(cost, c_strong, priced), "quality_retained": _ratio(quality, q_strong),
                "escalation_rate": rate, "apgr": area}  # fmt: skip

    return {"n": len(rs), "priced": priced, **point(cascade_quality(rs), cascade_cost(rs), rate, apgr(deferral_curve(rs))),
            "quality_retained_ci": bootstrap_ci(rs, resamples=resamples, seed=seed), "false_accept_rate": false_accept_rate(rs),
            "accepted_wrong_rate": accepted_wrong_rate(rs), "auroc": auroc(rs), "draft_quality": q_draft,
            "strong_quality": q_strong, "draft_cost": c_draft, "strong_cost": c_strong,
            "extra_cost": math.fsum(o.extra_cost for o in rs if o.confidence is not None),
            "baselines": {"always_draft": point(q_draft, c_draft, 0.0, None), "always_strong": point(q_strong, c_strong, 1.0, None),
                          "random": point(rand[k]["quality"], rand[k]["cost"], rate, apgr([rand[0], rand[-1]])),
                          "oracle": point(oracle[k]["quality"], oracle[k]["cost"], rate, apgr(oracle))}}  # fmt: skip


def group_by_dataset(outcomes: Iterable[Outcome]) -> dict[str, list[Outcome]]:
    """Records per dataset, datasets sorted by name."""
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.dataset, []).append(o)
    return dict(sorted(groups.items()))


def summarize_by_dataset(outcomes: Iterable[Outcome], *, resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """summarize() per dataset (sorted by name), then POOLED over all records."""
    rs = _records(outcomes)
    out = {name: summarize(group, resamples=resamples, seed=seed) for name, group in group_by_dataset(rs).items()}
    out[POOLED] = summarize(rs, resamples=resamples, seed=seed)
    return out


def cost_quality_curve(outcomes: Iterable[Outcome]) -> list[dict]:
    """One point per distinct threshold t (accept iff confidence >= t), plus threshold None = never draft.

    Each point: threshold, cost, quality, saving, quality_retained, escalation_rate; sorted by cost
    (then by escalation rate). Checks are paid at every threshold; the None point pays no draft at all
    (what a rule with ``never_draft`` costs), never "draft everything and accept nothing".
    """
    rs = _records(outcomes)
    n, q_strong, c_strong = len(rs), _mean(o.strong_score for o in rs), math.fsum(o.strong_cost for o in rs)
    total, escalated, priced = math.fsum(o.strong_score for o in rs), n, _priced(rs)

    def point(threshold: float | None) -> dict:
        quality = total / n
        return {"threshold": threshold, "cost": cost, "quality": quality, "saving": _saving(cost, c_strong, priced),
                "quality_retained": _ratio(quality, q_strong), "escalation_rate": escalated / n}  # fmt: skip

    cost = c_strong
    points = [point(None)]
    # a judged draft is paid at every threshold; a record kept from drafting (a policy, the router) pays none
    cost = math.fsum(_record_cost(replace(o, drafted=True) if o.confidence is not None else o, True) for o in rs)
    judged = sorted(((o.confidence, o) for o in rs if o.confidence is not None), key=lambda p: -p[0])
    for i, (confidence, o) in enumerate(judged):
        total -= o.gain
        cost -= o.strong_cost
        escalated -= 1
        if i + 1 == len(judged) or judged[i + 1][0] != confidence:
            points.append(point(confidence))
    return sorted(points, key=lambda p: (p["cost"], p["escalation_rate"]))


def compute_curves(outcomes: Iterable[Outcome]) -> dict:
    """Everything the report charts for one set of records."""
    rs = _records(outcomes)
    return {"deferral": {"cascade": deferral_curve(rs), "random": random_curve(rs), "oracle": oracle_curve(rs)},
            "cost_quality": cost_quality_curve(rs)}  # fmt: skip


def apply_threshold(outcomes: Iterable[Outcome], threshold: float | None) -> list[Outcome]:
    """The records as a cascade at this threshold would decide them (None: never draft, every record to the strong model)."""
    if threshold is None:
        return [replace(o, accepted=False, drafted=False) for o in outcomes]
    # a judged draft is drafted again; a record a policy kept from drafting (no confidence) stays so
    return [replace(o, accepted=o.confidence is not None and o.confidence >= threshold,
                    drafted=o.drafted or o.confidence is not None) for o in outcomes]


def choose_threshold(outcomes: Iterable[Outcome], target_quality_retained: float) -> dict:
    """The cheapest point of the cost–quality curve with quality_retained >= target (reached: True).

    Cost ties go to fewer escalations, so data without costs still gets the least-escalating threshold.
    When no point reaches the target: the highest quality_retained, cheapest among equals, reached: False.
    """
    points = cost_quality_curve(outcomes)
    ok = [p for p in points if p["quality_retained"] is not None and p["quality_retained"] >= target_quality_retained - _TOL]
    if ok:
        return {**min(ok, key=lambda p: (p["cost"], p["escalation_rate"])), "reached": True}
    best = max(points, key=lambda p: (p["quality_retained"] if p["quality_retained"] is not None else -math.inf, -p["cost"], -p["escalation_rate"]))
    return {**best, "reached": False}


def cv_folds(outcomes: Sequence[Outcome], folds: int = 5, seed: int = 0) -> list[list[int]]:
    """Index folds, stratified by dataset: each dataset's records (by id, then shuffled) are dealt round-robin."""
    if not 2 <= folds <= len(outcomes):
        raise ValueError(f"need 2 <= folds <= number of records, got folds={folds} for {len(outcomes)} records")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, o in enumerate(outcomes):
        groups.setdefault(o.dataset, []).append(i)
    dealt: list[list[int]] = [[] for _ in range(folds)]
    position = 0
    for name in sorted(groups):
        members = sorted(groups[name], key=lambda i: outcomes[i].id)
        rng.shuffle(members)
        for i in members:
            dealt[position % folds].append(i)
            position += 1
    return [sorted(f) for f in dealt]


_Rescore = Callable[[list[Outcome], list[Outcome]], tuple[list[Outcome], list[Outcome]]]
#: picks the deployed point for a target: choose_threshold (point estimate) or guarantee.choose_bounded (a bound)
Choose = Callable[[list[Outcome], float], dict]


def _held_out_figures(decided: list[Outcome]) -> dict:
    return {"n": len(decided), "quality": cascade_quality(decided), "cost": cascade_cost(decided), "saving": saving(decided),
            "quality_retained": quality_retained(decided), "escalation_rate": escalation_rate(decided),
            "false_accept_rate": false_accept_rate(decided), "auroc": auroc(decided)}  # fmt: skip


def _cross_validate(rs: list[Outcome], target: float, folds: int, seed: int, rescore: _Rescore, choose: Choose) -> dict:
    """Fit on k−1 folds, decide the held-out fold with that threshold, pool the held-out decisions."""
    pooled: list[Outcome] = []
    details: list[dict] = []
    for f, test_idx in enumerate(cv_folds(rs, folds, seed)):
        held = set(test_idx)
        train, test = rescore([o for i, o in enumerate(rs) if i not in held], [rs[i] for i in test_idx])
        choice = choose(train, target)
        decided = apply_threshold(test, choice["threshold"])
        pooled.extend(decided)
        details.append({"fold": f, "n_train": len(train), "threshold": choice["threshold"], "reached": choice["reached"],
                        "train_saving": choice["saving"], "train_quality_retained": choice["quality_retained"],
                        **{f"test_{k}": v for k, v in _held_out_figures(decided).items()}})  # fmt: skip
    figures = _held_out_figures(pooled)  # each record ranked and decided by a fit that never saw it
    return {**figures, "quality_retained_ci": bootstrap_ci(pooled, resamples=400, seed=seed),
            "apgr": apgr(deferral_curve(pooled)),
            "auroc_ci": None if figures["auroc"] is None else bootstrap_ci(pooled, auroc, resamples=300, seed=seed),
            "folds": details}


def _fit(rs: list[Outcome], deployed: list[Outcome], target: float, folds: int, seed: int, rescore: _Rescore,
         choose: Choose) -> dict:
    choice = choose(deployed, target)
    return {"target": target, "threshold": choice["threshold"], "reached": choice["reached"], "in_sample": choice,
            "cv": _cross_validate(rs, target, folds, seed, rescore, choose)}  # fmt: skip


def fit_threshold(outcomes: Iterable[Outcome], target_quality_retained: float, folds: int = 5, seed: int = 0,
                  choose: Choose = choose_threshold) -> dict:
    """Deployable threshold for a quality target, with an honest k-fold estimate of what it delivers.

    threshold/reached/in_sample: fitted on all records (what gets deployed; in_sample figures are optimistic).
    cv: pooled out-of-fold figures (each fold decided by a threshold fitted without it) and per-fold details.
    """
    rs = _records(outcomes)
    return _fit(rs, rs, target_quality_retained, folds, seed, lambda train, test: (train, test), choose)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _value(features: Mapping[str, float], name: str) -> float | None:
    value = features.get(name)
    return float(value) if value is not None and math.isfinite(value) else None


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (a is small and positive definite here)."""
    m = [row[:] + [rhs] for row, rhs in zip(a, b)]
    size = len(m)
    for c in range(size):
        p = max(range(c, size), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(c + 1, size):
            factor = m[r][c] / m[c][c]
            for j in range(c, size + 1):
                m[r][j] -= factor * m[c][j]
    x = [0.0] * size
    for r in reversed(range(size)):
        x[r] = (m[r][size] - sum(m[r][j] * x[j] for j in range(r + 1, size))) / m[r][r]
    return x


def fit_logistic(outcomes: Iterable[Outcome], feature_names: Sequence[str], l2: float = 1.0, iterations: int = 500) -> dict:
    """Logistic regression of "draft is good" (draft_score >= GOOD) on features, by damped Newton steps.

    Features are standardised with the training mean and (population) standard deviation, so weights
    are comparable and l2 treats them alike; a missing or non-finite value is imputed with the mean.
    Minimises Σ log-loss + l2/2·|w|² (bias unpenalised). Returns {"weights", "bias", "mean", "scale"}:
    weights apply to (x − mean) / scale. With one class only, weights are 0 and the bias is its smoothed log-odds.
    """
    rs = _records(outcomes)
    names = list(feature_names)
    mean, scale = {}, {}
    for name in names:
        seen = [v for v in (_value(o.features, name) for o in rs) if v is not None]
        mu = math.fsum(seen) / len(seen) if seen else 0.0
        sd = math.sqrt(math.fsum((v - mu) ** 2 for v in seen) / len(seen)) if seen else 0.0
        mean[name], scale[name] = mu, sd if sd > 0 else 1.0
    rows = [[1.0] + [((v - mean[n]) / scale[n]) if (v := _value(o.features, n)) is not None else 0.0 for n in names] for o in rs]
    labels = [1.0 if o.draft_score >= GOOD else 0.0 for o in rs]
    positives = sum(labels)
    if positives in (0, len(rs)):
        bias = math.log((positives + 0.5) / (len(rs) - positives + 0.5))
        return {"weights": {n: 0.0 for n in names}, "bias": bias, "mean": mean, "scale": scale}
    size = len(names) + 1
    penalty = [1e-9] + [l2 + 1e-9] * len(names)  # the tiny ridge keeps the Hessian invertible

    def objective(theta: list[float]) -> float:
        loss = math.fsum(_softplus(z) - y * z for z, y in ((sum(t * x for t, x in zip(theta, row)), y) for row, y in zip(rows, labels)))
        return loss + 0.5 * sum(p * t * t for p, t in zip(penalty, theta))

    theta = [0.0] * size
    current = objective(theta)
    for _ in range(iterations):
        grad = [p * t for p, t in zip(penalty, theta)]
        hess = [[penalty[i] if i == j else 0.0 for j in range(size)] for i in range(size)]
        for row, y in zip(rows, labels):
            prob = _sigmoid(sum(t * x for t, x in zip(theta, row)))
            weight = prob * (1.0 - prob)
            for i in range(size):
                grad[i] += (prob - y) * row[i]
                for j in range(size):
                    hess[i][j] += weight * row[i] * row[j]
        step = _solve(hess, grad)
        rate = 1.0
        while rate > 1e-10:  # backtrack until the objective does not rise (Newton can overshoot)
            candidate = [t - rate * s for t, s in zip(theta, step)]
            value = objective(candidate)
            if value <= current:
                break
            rate /= 2.0
        else:
            break  # no step lowers the objective: converged to float precision
        theta, current = candidate, value
        if max(abs(rate * s) for s in step) < 1e-10:
            break
    return {"weights": dict(zip(names, theta[1:])), "bias": theta[0], "mean": mean, "scale": scale}


def logistic_confidence(features: Mapping[str, float], model: Mapping) -> float:
    """P(draft good) under a fit_logistic model; a missing feature contributes nothing (it sits at the mean)."""
    z = model["bias"]
    for name, weight in model["weights"].items():
        value = _value(features, name)
        if value is not None:
            z += weight * (value - model["mean"][name]) / model["scale"][name]
    return _sigmoid(z)


def rescore(outcomes: Iterable[Outcome], model: Mapping) -> list[Outcome]:
    """The records with confidence from a fit_logistic model; a draft never judged (None) stays unjudged."""
    return [o if o.confidence is None else replace(o, confidence=logistic_confidence(o.features, model)) for o in outcomes]


def fit_combined(outcomes: Iterable[Outcome], feature_names: Sequence[str], target_quality_retained: float,
                 folds: int = 5, seed: int = 0, l2: float = 1.0, iterations: int = 500,
                 choose: Choose = choose_threshold) -> dict:  # fmt: skip
    """fit_threshold with the confidence recomputed by a logistic combiner of features, plus the model.

    In each fold the combiner AND the threshold are fitted on the training folds only and the held-out
    records are scored by that combiner, so the cv figures never see their own labels. model, threshold
    and in_sample are fitted on all records (what gets deployed).
    """
    rs, names = _records(outcomes), list(feature_names)

    def refit(train: list[Outcome], test: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
        model = fit_logistic(train, names, l2, iterations)
        return rescore(train, model), rescore(test, model)

    model = fit_logistic(rs, names, l2, iterations)
    fitted = _fit(rs, rescore(rs, model), target_quality_retained, folds, seed, refit, choose)
    return {**fitted, "model": model, "features": names}
