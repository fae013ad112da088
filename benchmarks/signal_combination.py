"""Does combining the log-probability signals with the learned scorer rank gpt-4o-mini drafts better? (issue 13)

On the five gpt-4o-mini → gpt-4o calibration files pooled, 47% of drafts have a check score of exactly 1.0
(answer log-probability or self-verification P(yes) saturated at 0.0), so the rule's confidence cannot
order them. Each way of combining the signals below is fitted by `calibrate`'s own procedure (a threshold
under the one-sided 95% lower bound on quality retained, any model and the threshold fitted on the training
folds only) and judged out of fold, never on the records it was fitted on:

- *check score*: the rule's own confidence (min over the checks), what `calibrate` deploys today;
- *tie-break*: check score first; among drafts within 1e-9 of 1.0 the learned text scorer (fitted on the
  training folds) orders them (lexicographic; mapped into 0..1 so a threshold still applies);
- *joint*: one logistic model over the learned scorer's text features plus, per log-probability check,
  its score as "nines" (−log10(1 − score), capped at 9) and whether it applied (a check that did not apply
  sits at the training mean); the structural checks still combine by min;
- *joint, gain label*: the same model trained on whether escalating helps (the strong model scores higher
  than the draft) instead of whether the draft is good: APGR counts an escalation by what it gains, and a
  draft that fails where the strong model fails too gains nothing from one;
- *per applied check* / *per task type*: the check score mapped, per group of records, to P(draft good) by a
  logistic fit on its "nines" and whether it is saturated (within a group the order is the check score's, ties
  included; across groups the scales are made comparable). The groups are which log-probability check applied
  (answer log-probability or self-verification: what the gateway knows of a live request), or the record's
  labelled task type (mcq, short answer, math: which the gateway does not know of a live request — an upper
  view of per-task-type thresholds);
- *ceiling*: check score with every tie among saturated drafts broken by the TRUE gain (an oracle, in
  sample): the most that any tie-breaker could add.

Two views: 5-fold cross-validation over all the records (the figures `calibrate` reports: bound on the
deployed fit, held-out saving, quality retained, APGR and AUROC of the pooled out-of-fold confidences), and
the split of `benchmarks/cascade_quality.py` (fitted on the hash calibration half, applied to the other).

    python benchmarks/signal_combination.py [--data DIR] [--out benchmarks/signal_combination.md]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from cascadeflow.cascade.scorer import FEATURES
from cascadeflow.evaluation import learned, metrics
from cascadeflow.evaluation.commands import deployable, evaluate
from cascadeflow.evaluation.guarantee import DEFAULT_LEVEL, choose_bounded
from cascadeflow.evaluation.metrics import Outcome
from cascadeflow.evaluation.report import num, saving_pct
from cascadeflow.evaluation.runner import DEFAULT_RULE, load_eval_records, rule_with

REPLAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "replay"
POOL = "zellinger_*_qwen_oai.calib.jsonl"
TARGET, FOLDS = 0.98, 5
LOGPROB_CHECKS = ("logprobs", "self_verify")
SATURATED = 1e-9  # a score within this of 1.0 is saturated (its log-probability rounded to 0.0)
MAX_NINES = 9.0

Features = Mapping[tuple[str, str], list[float]]
#: fits a model on training records; returns the function that gives any record its confidence
Fitter = Callable[[list[Outcome]], Callable[[Outcome], float]]


def nines(score: float) -> float:
    return min(-math.log10(max(1.0 - score, 10.0**-MAX_NINES)), MAX_NINES)


def _text(features: Features, o: Outcome) -> dict[str, float]:
    return dict(zip(FEATURES, features[(o.dataset, str(o.id))]))


def _others(o: Outcome) -> list[float]:
    return [v for k, v in o.features.items() if k not in LOGPROB_CHECKS]


def check_score(features: Features) -> Fitter:
    return lambda train: lambda o: o.confidence if o.confidence is not None else 0.0


def tie_break(features: Features) -> Fitter:
    def fit(train: list[Outcome]) -> Callable[[Outcome], float]:
        model = metrics.fit_logistic([replace(o, features=_text(features, o)) for o in train], FEATURES, iterations=100)

        def confidence(o: Outcome) -> float:
            n = nines(o.confidence or 0.0)
            if n < MAX_NINES:
                return 0.9 * n / MAX_NINES
            return 0.9 + 0.1 * metrics.logistic_confidence(_text(features, o), model)

        return confidence

    return fit


def _joint_features(features: Features, o: Outcome) -> dict[str, float]:
    out = _text(features, o)
    for name in LOGPROB_CHECKS:
        out[f"{name}_applied"] = float(name in o.features)
        if name in o.features:
            out[f"{name}_nines"] = nines(o.features[name])
    return out


JOINT = (*FEATURES, *(f"{n}_{k}" for n in LOGPROB_CHECKS for k in ("nines", "applied")))


def joint(features: Features, gain_label: bool = False) -> Fitter:
    """``gain_label``: trained on whether escalating helps instead of whether the draft is good."""

    def fit(train: list[Outcome]) -> Callable[[Outcome], float]:
        rows = [replace(o, features=_joint_features(features, o)) for o in train]
        if gain_label:  # fit_logistic learns "draft_score >= GOOD": 1.0 where escalating gains nothing, 0.0 where it does
            rows = [replace(o, draft_score=0.0 if o.strong_score > o.draft_score else 1.0) for o in rows]
        model = metrics.fit_logistic(rows, JOINT, iterations=100)
        return lambda o: min([metrics.logistic_confidence(_joint_features(features, o), model), *_others(o)])

    return fit


def joint_gain(features: Features) -> Fitter:
    return joint(features, gain_label=True)


def _applied_check(o: Outcome) -> str:
    return ",".join(sorted(k for k in o.features if k in LOGPROB_CHECKS)) or "none"


def _task_type(o: Outcome) -> str:
    return o.task_type or "unknown"


def per_group(group: Callable[[Outcome], str]) -> Callable[[Features], Fitter]:
    """The check score mapped to P(draft good) per ``group`` of records (see the module doc)."""

    def values(o: Outcome) -> dict[str, float]:
        n = nines(o.confidence or 0.0)
        return {"nines": n, "saturated": float(n >= MAX_NINES)}

    def make(features: Features) -> Fitter:
        def fit(train: list[Outcome]) -> Callable[[Outcome], float]:
            models = {g: metrics.fit_logistic([replace(o, features=values(o)) for o in train
                                               if group(o) == g and o.confidence is not None],
                                              ("nines", "saturated"), iterations=100)
                      for g in {group(o) for o in train}}

            def confidence(o: Outcome) -> float:
                model = models.get(group(o))
                if model is None:
                    return o.confidence or 0.0
                # P(good) of the group, the check score breaking its own ties within the group
                return 0.999 * metrics.logistic_confidence(values(o), model) + 0.001 * values(o)["nines"] / MAX_NINES

            return confidence

        return fit

    return make


def _scored(rs: Sequence[Outcome], confidence: Callable[[Outcome], float]) -> list[Outcome]:
    return [o if o.confidence is None else replace(o, confidence=confidence(o), accepted=False) for o in rs]


def cross_validated(rs: list[Outcome], fitter: Fitter) -> dict:
    """calibrate's procedure: deployed fit on every record, held-out figures from 5 folds."""

    def refit(train: list[Outcome], test: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
        confidence = fitter(train)
        return _scored(train, confidence), _scored(test, confidence)

    def choose(sample: list[Outcome], goal: float) -> dict:
        return choose_bounded(sample, goal, DEFAULT_LEVEL)

    return metrics._fit(rs, _scored(rs, fitter(rs)), TARGET, FOLDS, 0, refit, choose)


def calibration_half(o: Outcome) -> bool:
    """The split of benchmarks/cascade_quality.py."""
    return int(hashlib.sha256(f"{o.dataset}:{o.id}".encode()).hexdigest()[:8], 16) % 2 == 0


def out_of_fold(rs: list[Outcome], fitter: Fitter) -> list[Outcome]:
    """Every record with the confidence of a fit that never saw it (the folds of :func:`cross_validated`)."""
    scored: dict[int, Outcome] = {}
    for test in metrics.cv_folds(rs, FOLDS, 0):
        held = set(test)
        confidence = fitter([o for i, o in enumerate(rs) if i not in held])
        scored.update({i: _scored([rs[i]], confidence)[0] for i in test})
    return [scored[i] for i in range(len(rs))]


def apgr_difference(a: list[Outcome], b: list[Outcome], resamples: int = 1000, seed: int = 0) -> str:
    """APGR of ``a`` minus ``b`` (the same records, two confidences) with a paired 95% percentile-bootstrap interval."""
    rng = random.Random(seed)
    diffs = []
    for _ in range(resamples):
        idx = [rng.randrange(len(a)) for _ in a]
        x = metrics.apgr(metrics.deferral_curve([a[i] for i in idx]))
        y = metrics.apgr(metrics.deferral_curve([b[i] for i in idx]))
        if x is not None and y is not None:
            diffs.append(x - y)
    diffs.sort()
    point = (metrics.apgr(metrics.deferral_curve(a)) or 0.0) - (metrics.apgr(metrics.deferral_curve(b)) or 0.0)
    return f"{point:+.3f} ({diffs[int(0.025 * (len(diffs) - 1))]:+.3f} to {diffs[int(0.975 * (len(diffs) - 1))]:+.3f})"


def row(name: str, rs: list[Outcome], fitter: Fitter, today: list[Outcome]) -> str:
    full = cross_validated(rs, fitter)
    cv = full["cv"]
    part = [o for o in rs if calibration_half(o)]
    fit = cross_validated(part, fitter)
    check = _scored([o for o in rs if not calibration_half(o)], fitter(part))
    decided = metrics.summarize(
        metrics.apply_threshold(check, fit["threshold"] if deployable(fit) else None), resamples=300
    )
    ranking = metrics.summarize(check, resamples=10)
    return (
        f"| {name} | {num(full['in_sample'].get('bound'))} | {saving_pct(cv['saving'])} | "
        f"{num(cv['quality_retained'])} | **{num(cv['apgr'])}** | {apgr_difference(out_of_fold(rs, fitter), today)} | "
        f"{num(cv['auroc'])} | "
        f"{saving_pct(decided['saving'])} | {num(decided['quality_retained'])} "
        f"({num(decided['quality_retained_ci'][0])}–{num(decided['quality_retained_ci'][1])}) | **{num(ranking['apgr'])}** | "
        f"{num(ranking['auroc'])} |"
    )


def ceiling(rs: list[Outcome]) -> str:
    """Check score with ties among saturated drafts broken by the true gain (in sample, an oracle)."""

    def confidence(o: Outcome) -> float:
        n = nines(o.confidence or 0.0)
        return 0.9 * n / MAX_NINES if n < MAX_NINES else 0.9 + 0.05 * (1.0 - (o.strong_score - o.draft_score))

    full = _scored(rs, confidence)
    check = [o for o in full if not calibration_half(o)]
    return (
        f"| ceiling: ties broken by the true gain (oracle) | – | – | – | **{num(metrics.summarize(full, resamples=10)['apgr'])}** | – | "
        f"{num(metrics.auroc(full))} | – | – | **{num(metrics.summarize(check, resamples=10)['apgr'])}** | "
        f"{num(metrics.auroc(check))} |"
    )


def saturated_auroc(rs: list[Outcome], features: Features) -> float | None:
    """Out-of-fold AUROC of the learned text scorer among the saturated drafts alone."""
    oof = learned.out_of_fold_scores(rs, features, FOLDS)
    return metrics.auroc([o for o, r in zip(oof, rs) if r.confidence is not None and nines(r.confidence) >= MAX_NINES])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CASCADEFLOW_REPLAY_DIR") or str(REPLAY))
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args()
    files = sorted(Path(args.data).glob(POOL))
    if not files:
        print(f"signal_combination: no {POOL} files in {args.data}: pass --data DIR", file=sys.stderr)
        sys.exit(2)
    outcomes, _, _ = evaluate(files, rule_with(dict(DEFAULT_RULE), quality_threshold=0.0))
    features = learned.record_features(load_eval_records(files))
    saturated = sum(1 for o in outcomes if o.confidence is not None and nines(o.confidence) >= MAX_NINES)
    today = out_of_fold(outcomes, check_score(features))
    rows = [
        row(name, outcomes, make(features), today)
        for name, make in (
            ("check score (today)", check_score),
            ("tie-break: check score, then learned", tie_break),
            ("joint: learned over text + log-probability features", joint),
            ("joint, gain label: trained on whether escalating helps", joint_gain),
            ("per applied check: P(good) per log-probability check", per_group(_applied_check)),
            ("per task type (labelled; not known of a live request)", per_group(_task_type)),
        )
    ]
    lines = [
        "# Combining log-probability signals with the learned scorer (gpt-4o-mini → gpt-4o, 5 files pooled)",
        "",
        "Generated by `python benchmarks/signal_combination.py`; do not edit by hand. What each column means is in "
        "the script's docstring. Target quality retained 0.98 under the one-sided 95% lower bound.",
        "",
        f"{len(outcomes)} records; {saturated} ({saturated / len(outcomes):.0%}) have a saturated check score. Out-of-fold "
        f"AUROC of the learned text scorer among those alone: {num(saturated_auroc(outcomes, features))}.",
        "",
        "| confidence | bound (all) | 5-fold CV saving | CV q.ret | CV APGR | CV APGR − today (paired 95% CI) | "
        "CV AUROC | half split: saving | q.ret (95% CI) | APGR | AUROC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        ceiling(outcomes),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
