"""``cascadeflow eval`` and ``cascadeflow calibrate``: measure a rule on recorded data, and fit it.

``eval`` reports, per dataset and pooled, what the rule saves and what quality it keeps
against always asking the strong model, with the baselines that tell whether the
checks earn their keep (always-draft, always-strong, random escalation at the same
rate, the oracle). ``calibrate`` fits the threshold — and, if it helps, a logistic
model over the check scores — so that a lower confidence bound on quality retained
(not the point estimate) meets the target, reports cross-validated held-out figures,
and writes the result into the rule: a threshold, or ``never_draft`` when none holds.
``calibrate --from-ledger`` does the same on shadow mode's labelled pairs of the
gateway's own traffic (:mod:`cascadeflow.cascade.shadow`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import TextIO

import yaml

from ..cascade.router import Router, save_router
from ..cascade.scorer import Scorer, save_scorer
from ..config import ProxyConfig
from ..store import Ledger
from . import learned, metrics, report, routing
from .guarantee import DEFAULT_LEVEL, choose_bounded
from .report import num, pct, saving_pct
from .runner import EvalSetup, load_eval_records, replay_outcomes, rule_template, rule_with

__all__ = ["run_eval", "run_calibrate", "run_calibrate_from_ledger", "by_dataset", "fit_candidates", "choose_candidate", "apply_fit", "deployable"]

POOLED = "pooled"


def by_dataset(outcomes: list[metrics.Outcome]) -> dict[str, list[metrics.Outcome]]:
    groups: dict[str, list[metrics.Outcome]] = defaultdict(list)
    for outcome in outcomes:
        groups[outcome.dataset].append(outcome)
    result = dict(sorted(groups.items()))
    if len(result) > 1:
        result[POOLED] = outcomes
    return result


def evaluate(files: list[Path], rule: dict, out: TextIO = sys.stdout, concurrency: int = 16,
             ) -> tuple[list[metrics.Outcome], dict[str, dict], dict[str, dict[str, list[dict]]]]:
    """Replay ``files`` through a gateway running ``rule``; per-dataset summaries and curves."""
    outcomes = replay_outcomes(EvalSetup(files, rule, concurrency))
    groups = by_dataset(outcomes)
    summaries = {name: metrics.summarize(group) for name, group in groups.items()}
    curves = {name: {"deferral": metrics.deferral_curve(g), "oracle": metrics.oracle_curve(g),
                     "cost_quality": metrics.cost_quality_curve(g)} for name, g in groups.items()}
    return outcomes, summaries, curves


def run_eval(files: list[Path], config: str | None, rule_name: str | None, report_path: str | None,
             markdown_path: str | None, out: TextIO = sys.stdout, concurrency: int = 16) -> dict:
    rule = rule_template(config, rule_name)
    print(f"evaluating {len(files)} file(s) with threshold {rule.get('quality_threshold', 0.7)}, "
          f"checks {rule.get('checks') or 'default'}, combine {rule.get('combine', 'min')}"
          f"{', self-verification' if 'self_verify' in rule else ''}"
          f"{', sample agreement' if 'sample_agreement' in rule else ''}"
          f"{', pre-generation router' if rule.get('router') else ''}", file=out)
    outcomes, summaries, curves = evaluate(files, rule, out, concurrency)
    print(report.render_table(summaries), file=out)
    print(check_contributions(outcomes), file=out)
    if rule.get("router"):
        print(router_summary(outcomes), file=out)
    operating = {name: {"threshold": rule.get("quality_threshold", 0.7), **_point(s)} for name, s in summaries.items()}
    if report_path:
        Path(report_path).write_text(report.render_html(summaries, curves, operating, "cascadeflow eval"))
        print(f"report written to {report_path}", file=out)
    if markdown_path:
        notes = [f"Rule: {_describe(rule)}.", f"Data: {', '.join(f.name for f in files)}."]
        Path(markdown_path).write_text(report.render_markdown(summaries, notes))
        print(f"markdown written to {markdown_path}", file=out)
    return summaries


def run_calibrate(files: list[Path], config: str | None, rule_name: str | None, target: float, folds: int,
                  write: bool, out: TextIO = sys.stdout, concurrency: int = 16, level: float = DEFAULT_LEVEL,
                  learn: bool = True, route: str = "text") -> dict:
    """Fit the threshold (and maybe a combiner) on ``files`` so that a lower confidence bound on quality
    retained meets ``target``; write them into the config's rule (or ``never_draft`` when nothing does).
    ``route``: also try a pre-generation router on the request's text features (``text``), with a WordLlama
    embedding too (``embedding``), or not (``none``)."""
    template = rule_template(config, rule_name)
    # judge every draft (threshold 0 accepts all) so each record gets its confidence and check scores
    probe = rule_with({k: v for k, v in template.items() if k not in ("combiner", "never_draft", "scorer", "router")},
                      quality_threshold=0.0,
                      combine="min" if template.get("combine") == "logistic" else template.get("combine", "min"))
    outcomes, _, _ = evaluate(files, probe, out, concurrency)

    records = load_eval_records(files)
    features = learned.record_features(records) if learn else None
    fits = fit_candidates(outcomes, features, target, folds, level, probe.get("combine", "min"))
    if route != "none":
        fits = with_router(fits, outcomes, features, route_features(records, route == "embedding"), target, folds,
                           level, probe.get("combine", "min"), route == "embedding")
    return _deploy(fits, template, config, rule_name, target, folds, level, write, out)


def route_features(records: list[dict], embedding: bool) -> dict:
    """The router's features of every record's request (with the WordLlama embedding when asked for)."""
    embedder = None
    if embedding:
        from ..embeddings import load_wordllama

        embedder = load_wordllama()
    return routing.request_features(records, embedder)


def with_router(fits: dict[str, dict], outcomes: list[metrics.Outcome], features: dict | None, requests: dict,
                target: float, folds: int, level: float = DEFAULT_LEVEL, combine_rule: str = "min",
                embedding: bool = False) -> dict:
    """``fits`` plus ``router``: the pre-generation router on top of the candidate calibrate would choose, fitted
    under the bound and cross-validated (:func:`routing.fit_routed`); :func:`choose_candidate` deploys it only
    when it beats the rule without it out of fold (:func:`router_pays`)."""
    base = choose_candidate(fits, target)
    routed = routing.fit_routed(outcomes, base, fits[base], features, requests, target, folds, level, combine_rule,
                                embedding)
    return {**fits, "router": routed}


def run_calibrate_from_ledger(config: str, rule_name: str | None, target: float, folds: int, write: bool,
                              out: TextIO | None = None, level: float = DEFAULT_LEVEL) -> dict:
    """Fit the rule's threshold on shadow mode's labelled pairs from the gateway's own ledger (the user's traffic),
    under the same bound as :func:`run_calibrate`; write it into the config's rule (or ``never_draft``)."""
    out = out or sys.stdout
    template = rule_template(config, rule_name)
    name = template.get("name") or template["request_model"]
    pairs = asyncio.run(_ledger_pairs(ProxyConfig.load(config).database_url, name))
    outcomes = [metrics.Outcome(
        id=pair["request_id"] or str(pair["id"]), dataset="ledger", confidence=pair["confidence"], accepted=False,
        draft_score=1.0 if pair["label"] else 0.0, strong_score=1.0, draft_cost=pair["draft_cost"] or 0.0,
        strong_cost=pair["verifier_cost"] or 0.0, priced=pair["draft_cost"] is not None and pair["verifier_cost"] is not None,
    ) for pair in pairs if pair["label"] is not None and pair["confidence"] is not None]
    unlabelled = len(pairs) - len(outcomes)
    print(f"rule {name!r}: {len(pairs)} shadow pairs in the ledger, {len(outcomes)} labelled with a confidence"
          + (f" ({unlabelled} unlabelled: set shadow.judge_model to label free-form answers)" if unlabelled else ""),
          file=out)
    if len(outcomes) < folds * 2:
        raise ValueError(f"{len(outcomes)} labelled pairs are too few to calibrate rule {name!r} "
                         f"(at least {folds * 2}); let shadow mode run longer or raise shadow.share")
    fits = fit_candidates(outcomes, None, target, folds, level)
    return _deploy(fits, template, config, rule_name, target, folds, level, write, out)


async def _ledger_pairs(database_url: str, rule: str) -> list[dict]:
    ledger = await Ledger(database_url, retention_days=None).start()
    try:
        return await ledger.shadow_pairs(rule=rule)
    finally:
        await ledger.aclose()


def _deploy(fits: dict[str, dict], template: dict, config: str | None, rule_name: str | None, target: float,
            folds: int, level: float, write: bool, out: TextIO) -> dict:
    """Report the fits, choose one, and write it into the config's rule (``never_draft`` when none deploys)."""
    chosen = choose_candidate(fits, target)
    best = fits[chosen]
    print(_calibration_report(fits, chosen, target, folds, level), file=out)
    if not deployable(best):
        # a threshold of 1.0 would still accept every draft scoring exactly 1.0: the rule must not draft at all
        why = (f"no threshold keeps the {level:.0%} lower bound on quality retained at {target:.3f} or more (or drafting "
               "costs more than it saves)" if not best["reached"] or best["threshold"] is None else
               "no confidence ranks drafts better than random escalation out of fold (held-out AUROC interval "
               f"{_interval(best['cv'].get('auroc_ci'))} reaches 0.5)")
        print(f"{why}: the rule is written to NEVER DRAFT (every request goes straight to the verifier, so no draft "
              "is paid for)", file=out)
        changes: dict = {"never_draft": True, "scorer": None, "router": None}
        if write and config:
            _write_rule(Path(config), rule_name, changes, out)
        return {**fits, "chosen": "never_draft", "changes": changes}
    # the exact fitted value: the gateway compares exact confidences with it
    changes = {"quality_threshold": min(max(float(best["threshold"]), 0.0), 1.0), "never_draft": False, "scorer": None}
    label = rule_name or template.get("name") or "rule"
    if chosen == "router":
        changes["router"] = {**_model_file(best["router"], "router", config, label, write, out),
                             "threshold": float(best["router_threshold"])}
        chosen_base, best = best["base"], {**fits[best["base"]], "threshold": best["threshold"]}
    else:
        chosen_base = chosen
        changes["router"] = None
    if chosen_base == "scorer":
        changes["scorer"] = _model_file(best["scorer"], "scorer", config, label, write, out)
    if chosen_base == "combined":
        model = best["model"]
        changes.update(combine="logistic", combiner={
            "weights": model["weights"], "bias": model["bias"], "means": model["mean"], "scales": model["scale"],
        })
    else:
        changes.update(combine=template.get("combine", "min") if template.get("combine") != "logistic" else "min")
    if write and config:
        _write_rule(Path(config), rule_name, changes, out)
    return {**fits, "chosen": chosen, "changes": changes}


def fit_candidates(outcomes: list[metrics.Outcome], features: dict | None, target: float, folds: int,
                   level: float = DEFAULT_LEVEL, combine_rule: str = "min") -> dict[str, dict]:
    """Every way calibrate can set a rule, each fitted under the bound and cross-validated: a threshold on the
    rule's own check score; a logistic combiner of the check scores; the learned scorer (when ``features``)."""

    def choose(rs: list[metrics.Outcome], goal: float) -> dict:
        return choose_bounded(rs, goal, level)

    fits: dict[str, dict] = {"threshold": metrics.fit_threshold(outcomes, target, folds=folds, choose=choose)}
    names = sorted({name for o in outcomes for name in o.features})
    if len(names) > 1:
        fits["combined"] = metrics.fit_combined(outcomes, names, target, folds=folds, choose=choose)
    if features is not None:  # the learned scorer, added to the rule's checks and combined by its rule
        fits["scorer"] = learned.fit_learned(outcomes, features, target, folds, choose, combine_rule)
    return fits


def choose_candidate(fits: dict[str, dict], target: float) -> str:
    """The fit calibrate deploys (see :func:`_merit`); the router only where it pays (:func:`router_pays`)."""
    plain = {name: fit for name, fit in fits.items() if name != "router"}
    best = max(plain, key=lambda name: _merit(plain[name], target))
    if "router" in fits and router_pays(fits["router"], plain[fits["router"]["base"]], target):
        return "router"
    return best


def router_pays(routed: dict, base: dict, target: float) -> bool:
    """Keep the router when it may draft, holds the target out of fold, and saves more there than the rule
    without it (nothing, when that rule would never draft)."""
    if not (deployable(routed) and _reached(routed, target)) or routed["cv"]["saving"] is None:
        return False
    without = base["cv"]["saving"] if deployable(base) else 0.0
    return without is not None and routed["cv"]["saving"] > without


def apply_fit(name: str, fit: dict, outcomes: list[metrics.Outcome], features: dict | None,
              combine_rule: str = "min") -> list[metrics.Outcome]:
    """Other records decided by a deployed fit, as the gateway running the written rule would decide them."""
    if name == "combined":
        outcomes = metrics.rescore(outcomes, fit["model"])
    elif name == "scorer" and features is not None:
        outcomes = learned.with_learned(outcomes, fit["scorer"], features, combine_rule)
    return metrics.apply_threshold(outcomes, fit["threshold"] if deployable(fit) else None)


def check_contributions(outcomes: list[metrics.Outcome]) -> str:
    """What each check adds: where it applied, how well it alone ranks good drafts, what it escalated."""
    names = sorted({name for o in outcomes for name in o.features})
    lines = ["check contributions:",
             f"  {'check':<18} {'applied':>8} {'mean score':>10} {'AUROC alone':>11} {'lowest on escalations':>21}"]
    escalated = [o for o in outcomes if not o.accepted and o.features]
    for name in names:
        applied = [o for o in outcomes if name in o.features]
        alone = [dataclasses.replace(o, confidence=o.features[name], accepted=False) for o in applied]
        auroc = metrics.auroc(alone) if alone else None
        blamed = sum(1 for o in escalated if min(o.features, key=o.features.__getitem__) == name)
        mean = sum(o.features[name] for o in applied) / len(applied)
        lines.append(f"  {name:<18} {len(applied):>8} {mean:>10.3f} {num(auroc):>11} {blamed:>21}")
    return "\n".join(lines)


def router_summary(outcomes: list[metrics.Outcome]) -> str:
    """What the pre-generation router did: the share it routed, how many of those drafts the records say would
    have been good (what routing gave up), and the drafts it did not pay for."""
    lines = ["pre-generation router:",
             f"  {'data':<32} {'routed':>8} {'good drafts routed':>18} {'draft cost not paid':>19}"]
    for name, group in by_dataset(outcomes).items():
        routed = [o for o in group if o.routed]
        strong = math.fsum(o.strong_cost for o in group)
        good = sum(o.draft_score >= metrics.GOOD for o in routed)
        unpaid = math.fsum(o.draft_cost + o.extra_cost for o in routed)
        priced = all(o.priced for o in group) and strong > 0
        lines.append(f"  {name:<32} {pct(len(routed) / len(group)):>8} "
                     f"{(pct(good / len(routed)) if routed else 'n/a'):>18} "
                     f"{(pct(unpaid / strong) + ' of strong' if priced else 'unknown'):>19}")
    return "\n".join(lines)


def _reached(fit: dict, target: float) -> bool:
    retained = fit["cv"]["quality_retained"]
    return retained is not None and retained >= target - 1e-9


def beats_random(fit: dict) -> bool:
    """Whether the fit's confidence ranks drafts better than random escalation out of fold: the 95% bootstrap
    interval of its held-out AUROC lies above 0.5 (or every draft is good or every one bad: nothing to rank).
    AUROC rather than APGR, whose ratio is unstable when draft and strong score nearly alike."""
    cv = fit["cv"]
    return cv.get("auroc") is None or (cv.get("auroc_ci") is not None and cv["auroc_ci"][0] > 0.5)


def deployable(fit: dict) -> bool:
    """A fit worth a rule that drafts: a threshold passed the bound, and its ranking beats random escalation
    (else the saving would come from accepting drafts at random, which the bound only tolerates by luck)."""
    return bool(fit["reached"]) and fit["threshold"] is not None and beats_random(fit)


def _merit(fit: dict, target: float) -> tuple:
    """Which fit to deploy: a deployable one, then one holding the target out of fold, then the largest held-out
    saving (fewest escalations where costs are unknown)."""
    cv = fit["cv"]
    gain = cv["saving"] if cv["saving"] is not None else -cv["escalation_rate"]
    return deployable(fit), _reached(fit, target), gain


_LABELS = {"threshold": "threshold on the combined check score", "combined": "logistic model over the check scores",
           "scorer": "learned scorer (text features, no log-probabilities)"}


def _interval(values: list[float] | None) -> str:
    return "n/a" if not values else f"{num(values[0])}-{num(values[1])}"


def _calibration_report(fits: dict[str, dict], chosen: str, target: float, folds: int, level: float) -> str:
    lines = [f"target quality retained {target:.3f}, met by a one-sided {level:.0%} lower confidence bound "
             f"(delta method, fixed-sequence test over thresholds); held-out figures from {folds}-fold cross-validation"]
    for name, fit in fits.items():
        cv, point = fit["cv"], fit["in_sample"]
        mark = "  <- chosen" if name == chosen else ""
        threshold = "none (never draft)" if fit["threshold"] is None else f"{fit['threshold']:.6g}"
        ci = cv.get("quality_retained_ci")
        label = _LABELS.get(name, name)
        if name == "router":
            label = (f"pre-generation router on the {_LABELS[fit['base']]}: "
                     + ("routes nothing" if fit["router_threshold"] is None else
                        f"routes P(draft good) < {fit['router_threshold']:.6g} ({pct(point.get('share'))} of records; "
                        f"held out {pct(cv.get('routed'))})") + ",")
            if fit["reached"] and not router_pays(fit, fits[fit["base"]], target):
                mark = "  (saves no more than the rule without it out of fold: not kept)"
        lines.append(
            f"  {label}{'' if name == 'router' else ':'} threshold {threshold}; bound on quality retained {num(point.get('bound'))} "
            f"(all records, in sample {num(point.get('quality_retained'))}); held-out saving {saving_pct(cv['saving'])}, "
            f"quality retained {num(cv['quality_retained'])}"
            f"{f' (95% CI {num(ci[0])}-{num(ci[1])})' if ci else ''}, escalated {pct(cv['escalation_rate'])}, "
            f"APGR {num(cv.get('apgr'))}, AUROC {num(cv['auroc'])} ({_interval(cv.get('auroc_ci'))})"
            f"{'' if _reached(fit, target) else ' (target not held out of fold)'}"
            f"{'' if beats_random(fit) else ' (no better than random escalation)'}{mark}"
        )
    return "\n".join(lines)


def _model_file(model: Scorer | Router, kind: str, config: str | None, rule_name: str, write: bool,
                out: TextIO) -> dict:
    """Write the learned scorer or the router beside the config; the rule records its name and SHA-256."""
    folder = Path(config).parent if config else Path.cwd()
    stem = Path(config).stem if config else "cascadeflow-proxy"
    name = f"{stem}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', rule_name)}.{kind}.json"
    if not (write and config):
        return {"path": name, "sha256": hashlib.sha256(model.to_json()).hexdigest()}
    digest = save_router(model, folder / name) if isinstance(model, Router) else save_scorer(model, folder / name)
    print(f"wrote the {'router' if kind == 'router' else 'learned scorer'} to {folder / name}", file=out)
    return {"path": name, "sha256": digest}


def _write_rule(path: Path, rule_name: str | None, changes: dict, out: TextIO) -> None:
    data = yaml.safe_load(path.read_text()) or {}
    rules = data.get("cascade_rules") or []
    target = None
    for rule in rules:
        if rule_name is None or rule.get("name") == rule_name or rule.get("request_model") == rule_name:
            target = rule
            break
    if target is None:
        for name, model in (data.get("cascade_models") or {}).items():
            if rule_name in (None, name, model.get("name")):
                target = model
                break
    if target is None:
        raise ValueError(f"no rule {rule_name!r} in {path} to write into")
    target.update(changes)
    for key, default in (("never_draft", False), ("scorer", None), ("router", None)):
        if key in target and target[key] == default:
            target.pop(key)  # the default: no need to spell it out
    if target.get("combine") != "logistic":
        target.pop("combiner", None)
    shutil.copyfile(path, path.with_name(path.name + ".bak"))
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    print(f"wrote the fitted rule into {path} (previous version: {path.name}.bak; comments are not kept)", file=out)


def _point(summary: dict) -> dict:
    """The rule's operating point, as the report marks it on the cost–quality curve."""
    return {key: summary.get(key) for key in ("cost", "quality", "saving", "quality_retained", "escalation_rate")}


def _describe(rule: dict) -> str:
    parts = [f"threshold {rule.get('quality_threshold', 0.7)}", f"combine {rule.get('combine', 'min')}"]
    if "self_verify" in rule:
        parts.append("self-verification")
    if "sample_agreement" in rule:
        agree = rule["sample_agreement"]
        parts.append(f"sample agreement ({agree.get('samples', 5)} samples, {agree.get('mode', 'exact')})")
    if rule.get("router"):
        parts.append(f"pre-generation router (routes P(draft good) < {rule['router']['threshold']:.4g})")
    return ", ".join(parts)


