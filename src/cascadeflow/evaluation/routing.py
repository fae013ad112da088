"""Training the pre-generation router (:mod:`cascadeflow.cascade.router`) and choosing where it routes.

The router predicts from the request alone that the draft will fail; a routed request goes straight to the
verifier and pays no draft. Routing never lowers quality retained where the strong model is at least as good
as the draft, but it gives up the saving of every good draft it routes, so whether it pays is an empirical
question, answered here the way every other threshold is:

- **the router's threshold** is one of a few routing shares (:data:`ROUTE_SHARES` of requests, least likely to
  draft well first), read off router probabilities computed out of fold (each record scored by a router trained
  without it), so the threshold is not fitted to the router's own training error;
- **the guarantee**: for each routing share, the cascade's threshold on the remaining requests is chosen by the
  same fixed-sequence test on a one-sided lower confidence bound on quality retained as without a router, at
  level ``1 − α/k`` for ``k`` routing shares (Bonferroni), so the pair finally chosen — the cheapest that passes —
  holds the bound at the stated level;
- **kept only when it pays out of fold**: the whole procedure (router, routing share, cascade threshold) is
  cross-validated, and ``calibrate`` writes the router only when its held-out saving beats the rule without one
  at a held-out quality retained that still meets the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..cascade.router import EMBEDDING, ROUTER_FEATURES, Router, embed_prompts, request_prompt, router_features
from . import learned, metrics
from .guarantee import choose_bounded
from .metrics import Outcome

__all__ = ["ROUTE_SHARES", "request_features", "train_router", "out_of_fold_probabilities", "choose_routed",
           "apply_routed", "rescored", "base_refit", "fit_routed"]

Key = tuple[str, str]
#: the routing shares tried: route this share of requests (least likely to draft well first)
ROUTE_SHARES = (0.1, 0.2, 0.3, 0.5)
#: the inner folds that give each training record an out-of-fold router probability
INNER_FOLDS = 3
_L2 = 1.0
_L2_EMBEDDING = 30.0  # 256 more weights on a few hundred records: a strong prior against over-fitting


def _key(o: Outcome) -> Key:
    return o.dataset, str(o.id)


def request_features(records: Iterable[Mapping], embedder: Any = None) -> dict[Key, list[float]]:
    """(dataset, id) → the router's features of the record's request, as the gateway computes them."""
    records = list(records)
    prompts = [request_prompt({"messages": r["messages"]}) for r in records]
    out = {(r["dataset"], str(r["id"])): router_features(p, turns, any(
        isinstance(m, dict) and m.get("role") == "system" for m in r["messages"])) for r, (p, turns) in zip(records, prompts)}
    if embedder is not None:
        for r, vector in zip(records, embed_prompts(embedder, [p for p, _ in prompts])):
            out[(r["dataset"], str(r["id"]))] += vector
    return out


def _fit_numpy(rows: list[list[float]], labels: list[float], l2: float) -> tuple[list[float], float, list[float], list[float]]:
    """Ridge logistic regression by Newton steps (numpy: hundreds of embedding dimensions)."""
    import numpy as np

    x, y = np.asarray(rows, dtype=float), np.asarray(labels, dtype=float)
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    penalty = np.eye(z.shape[1]) * l2
    penalty[0, 0] = 1e-9
    theta = np.zeros(z.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ theta, -50, 50)))
        step = np.linalg.solve((z * (p * (1 - p))[:, None]).T @ z + penalty, z.T @ (p - y) + penalty @ theta)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return theta[1:].tolist(), float(theta[0]), mean.tolist(), scale.tolist()


def train_router(outcomes: Sequence[Outcome], features: Mapping[Key, list[float]], embedding: bool = False) -> Router:
    """Logistic regression of "the draft is good" (draft_score >= GOOD) on the request's features."""
    trained = {"records": len(outcomes), "datasets": sorted({o.dataset for o in outcomes})}
    labels = [1.0 if o.draft_score >= metrics.GOOD else 0.0 for o in outcomes]
    if embedding:
        rows = [features[_key(o)] for o in outcomes]
        if 0 < sum(labels) < len(labels):
            weights, bias, mean, scale = _fit_numpy(rows, labels, _L2_EMBEDDING)
        else:
            width = len(rows[0])
            weights, mean, scale = [0.0] * width, [0.0] * width, [1.0] * width
            bias = math.log((sum(labels) + 0.5) / (len(labels) - sum(labels) + 0.5))
        return Router(tuple(weights), bias, tuple(mean), tuple(scale), trained, EMBEDDING)
    named = [replace(o, features=dict(zip(ROUTER_FEATURES, features[_key(o)]))) for o in outcomes]
    model = metrics.fit_logistic(named, ROUTER_FEATURES, l2=_L2, iterations=50)
    return Router(tuple(model["weights"][n] for n in ROUTER_FEATURES), model["bias"],
                  tuple(model["mean"][n] for n in ROUTER_FEATURES), tuple(model["scale"][n] for n in ROUTER_FEATURES),
                  trained)


def out_of_fold_probabilities(outcomes: Sequence[Outcome], features: Mapping[Key, list[float]], embedding: bool,
                              folds: int = INNER_FOLDS, seed: int = 0) -> list[float]:
    """Each record's router P(good) from a router trained without its fold."""
    rs = list(outcomes)
    if len(rs) < 2 * folds:
        router = train_router(rs, features, embedding)
        return [router.probability(features[_key(o)]) for o in rs]
    p = [0.5] * len(rs)
    for test_idx in metrics.cv_folds(rs, folds, seed):
        held = set(test_idx)
        router = train_router([o for i, o in enumerate(rs) if i not in held], features, embedding)
        for i in test_idx:
            p[i] = router.probability(features[_key(rs[i])])
    return p


def _route(o: Outcome) -> Outcome:
    return replace(o, confidence=None, accepted=False, drafted=False, routed=True)


def choose_routed(outcomes: Sequence[Outcome], p: Sequence[float], target: float, level: float) -> dict:
    """The cheapest (routing share, cascade threshold) pair whose lower bound on quality retained meets the
    target, each routing share tested at level 1 − (1 − level)/k (see the module). ``reached`` False: none."""
    rs = list(outcomes)
    each = 1.0 - (1.0 - level) / len(ROUTE_SHARES)
    ordered = sorted(p)
    passed = []
    for share in ROUTE_SHARES:
        cut = ordered[min(int(share * len(ordered)), len(ordered) - 1)]
        routed = [_route(o) if pi < cut else o for o, pi in zip(rs, p)]
        choice = choose_bounded(routed, target, each)
        if choice["reached"]:
            passed.append({**choice, "router_threshold": cut, "share": sum(pi < cut for pi in p) / len(p), "level": level,
                           "each_level": each})
    if not passed:
        return {"threshold": None, "router_threshold": None, "reached": False, "share": 0.0, "bound": None,
                "level": level, "each_level": each, "cost": None, "saving": None, "quality_retained": None}
    return min(passed, key=lambda c: (c["cost"], c["escalation_rate"]))


def apply_routed(outcomes: Iterable[Outcome], p: Sequence[float], choice: Mapping) -> list[Outcome]:
    """The records as a gateway with this router and threshold would decide them."""
    rs = list(outcomes)
    if not choice.get("reached") or choice.get("router_threshold") is None:
        return metrics.apply_threshold(rs, None)
    cut = choice["router_threshold"]
    return [_route(o) if pi < cut else metrics.apply_threshold([o], choice["threshold"])[0] for o, pi in zip(rs, p)]


def rescored(name: str, fit: Mapping, outcomes: Sequence[Outcome], features: Mapping | None,
             combine_rule: str = "min") -> list[Outcome]:
    """The records with the confidence of a deployed candidate (no threshold applied)."""
    if name == "combined":
        return metrics.rescore(outcomes, fit["model"])
    if name == "scorer" and features is not None:
        return learned.with_learned(outcomes, fit["scorer"], features, combine_rule)
    return list(outcomes)


def base_refit(name: str, fit: Mapping, features: Mapping | None, combine_rule: str = "min"
               ) -> Callable[[list[Outcome], list[Outcome]], tuple[list[Outcome], list[Outcome]]]:
    """(train, test) → both rescored by the candidate refitted on train only, as its own cross-validation does."""

    def refit(train: list[Outcome], test: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
        if name == "combined":
            model = metrics.fit_logistic(train, fit["features"])
            return metrics.rescore(train, model), metrics.rescore(test, model)
        if name == "scorer" and features is not None:
            scorer = learned.train_scorer(train, features)
            return (learned.with_learned(train, scorer, features, combine_rule),
                    learned.with_learned(test, scorer, features, combine_rule))
        return train, test

    return refit


def fit_routed(outcomes: Sequence[Outcome], name: str, fit: Mapping, score_features: Mapping | None,
               route_features: Mapping[Key, list[float]], target: float, folds: int, level: float,
               combine_rule: str = "min", embedding: bool = False, seed: int = 0) -> dict:
    """The router on top of candidate ``name``: deployed pair (router, routing threshold, cascade threshold)
    fitted on every record, and the whole procedure cross-validated (``cv``, the same figures as other fits)."""
    rs = list(outcomes)
    refit = base_refit(name, fit, score_features, combine_rule)

    def decide(train_raw: list[Outcome], test_raw: list[Outcome]) -> tuple[dict, list[Outcome], list[float]]:
        train, test = refit(train_raw, test_raw)
        choice = choose_routed(train, out_of_fold_probabilities(train_raw, route_features, embedding, seed=seed),
                               target, level)
        router = train_router(train_raw, route_features, embedding)
        p_test = [router.probability(route_features[_key(o)]) for o in test_raw]
        return choice, apply_routed(test, p_test, choice), p_test

    pooled: list[Outcome] = []
    for test_idx in metrics.cv_folds(rs, folds, seed):
        held = set(test_idx)
        _, decided, _ = decide([o for i, o in enumerate(rs) if i not in held], [rs[i] for i in test_idx])
        pooled.extend(decided)
    figures = metrics._held_out_figures(pooled)
    cv = {**figures, "quality_retained_ci": metrics.bootstrap_ci(pooled, resamples=400, seed=seed),
          "apgr": metrics.apgr(metrics.deferral_curve(pooled)), "routed": sum(o.routed for o in pooled) / len(pooled),
          "auroc_ci": None if figures["auroc"] is None else metrics.bootstrap_ci(pooled, metrics.auroc, resamples=300,
                                                                                 seed=seed)}
    deployed = rescored(name, fit, rs, score_features, combine_rule)
    choice = choose_routed(deployed, out_of_fold_probabilities(rs, route_features, embedding, seed=seed), target, level)
    return {"target": target, "threshold": choice["threshold"], "reached": choice["reached"], "in_sample": choice,
            "cv": cv, "router": train_router(rs, route_features, embedding),
            "router_threshold": choice["router_threshold"], "base": name}
