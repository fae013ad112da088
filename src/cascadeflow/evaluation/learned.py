"""Training and honest evaluation of the learned scorer (:mod:`cascadeflow.cascade.scorer`) on labelled records.

The scorer's features come from each record's messages and draft text, computed by the same function the
gateway runs on a live request, so a model trained here scores a request there exactly as it scored the
record. Cross-validation trains one model per fold and scores each held-out record with a model that never
saw it; those out-of-fold scores are what the reports compare with random escalation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from ..cascade.answer import CheckResult
from ..cascade.checks import combine
from ..cascade.scorer import CHECK_NAME, FEATURES, Scorer, prompt_text, text_features
from . import metrics
from .metrics import Outcome

__all__ = ["record_features", "train_scorer", "with_learned", "fit_learned", "out_of_fold_scores", "versus_random"]

Key = tuple[str, str]


def record_features(records: Iterable[Mapping]) -> dict[Key, list[float]]:
    """(dataset, id) → the scorer's features of the record's prompt and draft, as the gateway computes them."""
    out = {}
    for record in records:
        prompt, turns = prompt_text({"messages": record["messages"]})
        out[(record["dataset"], str(record["id"]))] = text_features(prompt, record["draft"].get("text") or "", turns)
    return out


def _key(outcome: Outcome) -> Key:
    return outcome.dataset, str(outcome.id)  # record ids may be numbers in the data


def _named(outcomes: Sequence[Outcome], features: Mapping[Key, list[float]]) -> list[Outcome]:
    return [replace(o, features=dict(zip(FEATURES, features[_key(o)]))) for o in outcomes]


def train_scorer(outcomes: Sequence[Outcome], features: Mapping[Key, list[float]], l2: float = 1.0) -> Scorer:
    """Logistic regression of "the draft is good" (draft_score >= GOOD) on the text features."""
    model = metrics.fit_logistic(_named(outcomes, features), FEATURES, l2=l2, iterations=100)
    datasets = sorted({o.dataset for o in outcomes})
    return Scorer(tuple(model["weights"][n] for n in FEATURES), model["bias"], tuple(model["mean"][n] for n in FEATURES),
                  tuple(model["scale"][n] for n in FEATURES), {"records": len(outcomes), "datasets": datasets})


def with_learned(outcomes: Sequence[Outcome], scorer: Scorer, features: Mapping[Key, list[float]],
                  combine_rule: str) -> list[Outcome]:
    """Each judged record's confidence as the gateway would compute it with the scorer among its checks."""
    result = []
    for o in outcomes:
        if o.confidence is None:
            result.append(o)
            continue
        p = scorer.probability(features[_key(o)])
        checks = [CheckResult(name, score, "") for name, score in o.features.items() if name != CHECK_NAME]
        confidence, _ = combine([*checks, CheckResult(CHECK_NAME, p, "")], combine_rule)
        result.append(replace(o, confidence=confidence, features={**o.features, CHECK_NAME: p}))
    return result


def fit_learned(outcomes: Sequence[Outcome], features: Mapping[Key, list[float]], target: float, folds: int,
                choose: metrics.Choose, combine_rule: str = "min", seed: int = 0) -> dict:
    """fit_threshold for a rule with the learned scorer added: the scorer AND the threshold are fitted on the
    training folds only; ``scorer`` (fitted on every record) is what gets deployed."""
    rs = list(outcomes)

    def refit(train: list[Outcome], test: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
        model = train_scorer(train, features)
        return with_learned(train, model, features, combine_rule), with_learned(test, model, features, combine_rule)

    scorer = train_scorer(rs, features)
    fitted = metrics._fit(rs, with_learned(rs, scorer, features, combine_rule), target, folds, seed, refit, choose)
    return {**fitted, "scorer": scorer}


def out_of_fold_scores(outcomes: Sequence[Outcome], features: Mapping[Key, list[float]], folds: int = 5,
                       seed: int = 0, extra: Sequence[Outcome] = ()) -> list[Outcome]:
    """The records with confidence = the learned scorer's P(good) from a model trained without their fold
    (``extra``: records added to every fold's training, never scored)."""
    rs = list(outcomes)
    scored: list[Outcome | None] = [None] * len(rs)
    for test_idx in metrics.cv_folds(rs, folds, seed):
        held = set(test_idx)
        model = train_scorer([o for i, o in enumerate(rs) if i not in held] + list(extra), features)
        for i in test_idx:
            scored[i] = replace(rs[i], confidence=model.probability(features[_key(rs[i])]), accepted=False)
    return [o for o in scored if o is not None]


def _escalate_lowest(rs: Sequence[Outcome], share: float) -> float:
    """Quality retained when the ``share`` least confident records are escalated (ties in expectation)."""
    curve = metrics.deferral_curve(rs)
    k = share * len(rs)
    lo = math.floor(k)
    point = curve[lo]["quality"] + (curve[min(lo + 1, len(rs))]["quality"] - curve[lo]["quality"]) * (k - lo)
    strong = math.fsum(o.strong_score for o in rs) / len(rs)
    return point / strong if strong else math.nan


def _random_at(rs: Sequence[Outcome], share: float) -> float:
    draft = math.fsum(o.draft_score for o in rs) / len(rs)
    strong = math.fsum(o.strong_score for o in rs) / len(rs)
    return (draft + (strong - draft) * share) / strong if strong else math.nan


def versus_random(scored: Sequence[Outcome], share: float = 0.5, resamples: int = 500, seed: int = 0) -> dict:
    """How the scorer's ranking compares with random escalation, with 95% percentile-bootstrap intervals.

    apgr: area under the gap-recovered curve (random = 0.5); gain: quality retained escalating the ``share``
    least confident records minus random escalation of the same share.
    """
    rs = list(scored)

    def stats(sample: Sequence[Outcome]) -> tuple[float | None, float | None, float | None]:
        area = metrics.apgr(metrics.deferral_curve(sample))
        gain = _escalate_lowest(sample, share) - _random_at(sample, share)
        return area, (gain if math.isfinite(gain) else None), metrics.auroc(sample)

    area, gain, auc = stats(rs)
    rng = random.Random(seed)
    draws = [stats(rng.choices(rs, k=len(rs))) for _ in range(resamples)]

    def interval(index: int) -> list[float] | None:
        values = sorted(value for d in draws if (value := d[index]) is not None)
        if len(values) < resamples // 2:
            return None
        return [values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]]

    return {"apgr": area, "apgr_ci": interval(0), "gain": gain, "gain_ci": interval(1), "share": share,
            "auroc": auc, "auroc_ci": interval(2)}

