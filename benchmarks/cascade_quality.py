"""Generate benchmarks/cascade_quality.md: every calibration file through the real gateway, calibrated on
one part and evaluated on the other.

For each replay file (and the five gpt-4o-mini → gpt-4o files pooled), every draft is judged over HTTP by
the default evaluation rule (the built-in checks plus self-verification, and 10-sample agreement where the
data has samples). The records are split by a hash of their id into a calibration half and an evaluation
half. `calibrate`'s procedure runs on the calibration half only: a threshold on the check score, a
logistic combiner, and the learned scorer, each under a one-sided 95% lower confidence bound on quality
retained, the best chosen by 5-fold cross-validation; when none holds, the rule never drafts. The table
shows what that rule does on the evaluation half, which it never saw. A second table asks, for the data
without log-probabilities, whether the learned scorer ranks drafts better than random escalation
(out-of-fold scores, 5 folds over the whole file, 95% bootstrap intervals), and what `calibrate` writes for
them from the whole file, with its cross-validated figures (twice the records of a half: files of about 100
records are too small for a bound at 0.95 when halved). A rule drafts only where its
confidence also beats random escalation out of fold (held-out AUROC interval above 0.5). A third table puts the
cascade alone beside the pre-generation router + cascade (router, routing share and cascade threshold fitted on
the calibration half under the same bound; kept by `calibrate` only when it saves more out of fold); `--no-router`
leaves it out. `routerarena` is left out: its records are for checker training only.

    python benchmarks/cascade_quality.py [--data DIR] [--target 0.98] [--no-router] [--out benchmarks/cascade_quality.md]

The replay data (third-party model outputs, not redistributed) is read from ``--data``, else
``$CASCADEFLOW_REPLAY_DIR``, else ``../shared/data/replay`` beside the checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from pathlib import Path

import orjson

from cascadeflow.evaluation import learned, metrics, routing
from cascadeflow.evaluation.commands import (
    apply_fit,
    choose_candidate,
    deployable,
    evaluate,
    fit_candidates,
    router_pays,
    with_router,
)
from cascadeflow.evaluation.report import num, pct, saving_pct
from cascadeflow.evaluation.runner import DEFAULT_RULE, load_eval_records, rule_with

REPLAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "replay"
CALIBRATION_FILES = "*.calib.jsonl"
SAMPLES = 10  # extra draft samples for the agreement check, where the data has them
POOLS = {"gpt-4o-mini → gpt-4o (5 files pooled)": "zellinger_*_qwen_oai.calib.jsonl"}
FOLDS = 5
LABELS = {"threshold": "threshold", "combined": "logistic", "scorer": "learned"}


def calibration_half(outcome: metrics.Outcome) -> bool:
    """A fixed split by a hash of the record, independent of anything the fit could look at."""
    return int(hashlib.sha256(f"{outcome.dataset}:{outcome.id}".encode()).hexdigest()[:8], 16) % 2 == 0


def _ci(values: list[float] | None) -> str:
    return "n/a" if not values else f"{num(values[0])}–{num(values[1])}"


def contributions(outcomes: list[metrics.Outcome]) -> str:
    """Each check's AUROC alone (how well it ranks drafts by itself) and what it costs per always-strong dollar."""
    strong = math.fsum(o.strong_cost for o in outcomes)
    parts = []
    for name in sorted({n for o in outcomes for n in o.features}):
        applied = [metrics.Outcome(o.id, o.dataset, o.features[name], False, o.draft_score, o.strong_score, 0.0, 0.0)
                   for o in outcomes if name in o.features]
        cost = ""
        if name in ("self_verify", "agreement") and strong:
            cost = f", +{pct(math.fsum(o.extra_cost for o in outcomes) / strong)}"
        parts.append(f"{name} {num(metrics.auroc(applied), 2)}{cost}")
    return "; ".join(parts)


def apply_router(fit: dict, fits: dict, outcomes: list[metrics.Outcome], features: dict, requests: dict) -> list:
    """Other records decided by a router fit as the gateway would: the deployed router routes, the base
    candidate's confidence and the pair's cascade threshold decide the rest."""
    scored = routing.rescored(fit["base"], fits[fit["base"]], outcomes, features)
    p = [fit["router"].probability(requests[(o.dataset, str(o.id))]) for o in outcomes]
    return routing.apply_routed(scored, p, {"reached": deployable(fit), "threshold": fit["threshold"],
                                            "router_threshold": fit["router_threshold"]})


def router_row(name: str, fits: dict, check_part: list[metrics.Outcome], features: dict, requests: dict,
               target: float) -> str:
    """Cascade alone vs router + cascade on the evaluation half, both fitted on the calibration half."""
    plain = {k: v for k, v in fits.items() if k != "router"}
    base = choose_candidate(plain, target)
    alone = metrics.summarize(apply_fit(base, plain[base], check_part, features), resamples=300)
    fit = fits["router"]
    both = apply_router(fit, fits, check_part, features, requests)
    s = metrics.summarize(both, resamples=300)
    routed = sum(o.routed for o in both) / len(both)
    kept = "yes" if router_pays(fit, plain[base], target) else "no"
    cv = fit["cv"]
    return (f"| {name} | {saving_pct(alone['saving'])} | {num(alone['quality_retained'])} | "
            f"{pct(routed) if deployable(fit) else 'never draft'} | {saving_pct(s['saving'])} | "
            f"{num(s['quality_retained'])} ({_ci(s['quality_retained_ci'])}) | {saving_pct(cv['saving'])} vs "
            f"{saving_pct(plain[base]['cv']['saving'] if deployable(plain[base]) else 0.0)} | {kept} |")


def evaluate_split(name: str, outcomes: list[metrics.Outcome], features: dict, target: float,
                   requests: dict | None = None) -> tuple[str, dict]:
    fit_part = [o for o in outcomes if calibration_half(o)]
    check_part = [o for o in outcomes if not calibration_half(o)]
    fits = fit_candidates(fit_part, features, target, FOLDS)
    router = ""
    if requests is not None:
        fits = with_router(fits, fit_part, features, requests, target, FOLDS)
        router = router_row(name, fits, check_part, features, requests, target)
        if choose_candidate(fits, target) == "router":  # the written rule has the router: shown in the main table
            fit = fits["router"]
            decided = apply_router(fit, fits, check_part, features, requests)
            s = metrics.summarize(decided, resamples=500)
            base = s["baselines"]  # ranked by the rule's own order: routed requests first, then by confidence
            row = (
                f"| {name} | {len(fit_part)}/{len(check_part)} | router < {fit['router_threshold']:.4g} + "
                f"{LABELS[fit['base']]} ≥ {fit['threshold']:.8g} | {num(fit['in_sample'].get('bound'))} | "
                f"{saving_pct(s['saving'])} | {num(s['quality_retained'])} ({_ci(s['quality_retained_ci'])}) | "
                f"{pct(s['escalation_rate'])} | {num(base['random']['quality_retained'])} | {num(s['apgr'])} | "
                f"{num(s['auroc'])} |"
            )
            return row, {"summary": s, "chosen": "router", "drafts": True, "router": router}
        fits = {k: v for k, v in fits.items() if k != "router"}
    chosen = choose_candidate(fits, target)
    fit = fits[chosen]
    drafts = deployable(fit)
    decided = apply_fit(chosen, fit, check_part, features)
    ranked = apply_fit(chosen, {**fit, "reached": False}, check_part, features)  # confidences only
    s = metrics.summarize(decided, resamples=500)
    ranking = metrics.summarize(ranked, resamples=10)
    base = s["baselines"]
    rule = f"{LABELS[chosen]} ≥ {fit['threshold']:.8g}" if drafts else "**never draft**"
    row = (
        f"| {name} | {len(fit_part)}/{len(check_part)} | {rule} | {num(fit['in_sample'].get('bound') if drafts else 1.0)} | "
        f"{saving_pct(s['saving'])} | {num(s['quality_retained'])} ({_ci(s['quality_retained_ci'])}) | "
        f"{pct(s['escalation_rate'])} | {num(base['random']['quality_retained'])} | {num(ranking['apgr'])} | "
        f"{num(ranking['auroc'])} |"
    )
    return row, {"summary": s, "chosen": chosen, "drafts": drafts, "router": router}


def whole_file_row(name: str, outcomes: list[metrics.Outcome], features: dict, target: float,
                   requests: dict | None) -> str:
    """What `calibrate` writes from the whole calibration file, with its 5-fold held-out figures: twice the
    records of the calibration half, which is what a small file needs before any bound can hold."""
    fits = fit_candidates(outcomes, features, target, FOLDS)
    if requests is not None:
        fits = with_router(fits, outcomes, features, requests, target, FOLDS)
    chosen = choose_candidate(fits, target)
    fit = fits[chosen]
    cv = fit["cv"]
    auroc = f"{num(cv.get('auroc'))} ({_ci(cv.get('auroc_ci'))})"
    if not deployable(fit):
        why = "bound not met" if not fit["reached"] or fit["threshold"] is None else "ties random escalation"
        return f"| {name} | {len(outcomes)} | **never draft** ({why}) | 1.000 | 0.0% | 1.000 | 100.0% | {auroc} |"
    if chosen == "router":
        rule = f"router < {fit['router_threshold']:.4g} + {LABELS[fit['base']]} ≥ {fit['threshold']:.6g}"
    else:
        rule = f"{LABELS[chosen]} ≥ {fit['threshold']:.6g}"
    return (f"| {name} | {len(outcomes)} | {rule} | {num(fit['in_sample'].get('bound'))} | {saving_pct(cv['saving'])} | "
            f"{num(cv['quality_retained'])} ({_ci(cv.get('quality_retained_ci'))}) | {pct(cv['escalation_rate'])} | "
            f"{auroc} |")


def versus_random_row(name: str, oof: list[metrics.Outcome]) -> str:
    v = learned.versus_random(oof, share=0.5, resamples=500)
    verdict = "yes" if v["auroc_ci"] and v["auroc_ci"][0] > 0.5 else "no (interval reaches 0.5)"
    return (f"| {name} | {len(oof)} | {num(v['auroc'])} ({_ci(v['auroc_ci'])}) | {num(v['apgr'])} ({_ci(v['apgr_ci'])}) | "
            f"{num(v['gain'])} ({_ci(v['gain_ci'])}) | {verdict} |")


def router_section(target: float, rows: list[str], target_nolp: float, rows_nolp: list[str]) -> list[str]:
    header = ("| data | cascade alone: saving | q.ret | router + cascade: routed | saving | quality retained (95% CI) | "
              "held-out saving on calib (router vs none) | kept |\n|---|---|---|---|---|---|---|---|")
    return [
        "## Cascade alone vs pre-generation router + cascade",
        "",
        "The router predicts from the request alone (text features of the prompt, no draft) that the draft will "
        "fail, and sends the request straight to the strong model, so that draft is not paid for. Fitted on the "
        "calibration half with the rule's other settings: the router, then a routing share (10, 20, 30 or 50% of "
        "requests, read off out-of-fold router scores) and the cascade threshold on the rest, under the same 95% "
        "lower bound on quality retained (each routing share at level 1 − 0.05/4). Both rules are applied to the "
        "evaluation half. *kept*: `calibrate` writes the router only when its 5-fold held-out saving on the "
        "calibration half beats the rule without it at a held-out quality retained that still meets the target "
        "(the figures compared are in the second-to-last column); the main tables above show the rule it writes.",
        "",
        f"### Target {target}",
        "",
        header,
        *rows,
        "",
        f"### Data without log-probabilities, target {target_nolp}",
        "",
        header,
        *rows_nolp,
        "",
    ]


def _missing_data(replay: Path) -> str | None:
    """Why the benchmark cannot run on ``replay`` (one line: where it looked, what to do), or None."""
    if not replay.is_dir():
        return (f"no replay data at {replay} (third-party model outputs, not shipped with the repository): "
                "put the replay folder there, or pass --data DIR (or set CASCADEFLOW_REPLAY_DIR)")
    if not any(replay.glob(CALIBRATION_FILES)):
        return (f"no {CALIBRATION_FILES} files in {replay}: pass --data DIR naming the folder that holds them "
                "(or set CASCADEFLOW_REPLAY_DIR)")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--target-without-logprobs", type=float, default=0.95)
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    parser.add_argument("--data", default=os.environ.get("CASCADEFLOW_REPLAY_DIR") or str(REPLAY),
                        help=f"folder of {CALIBRATION_FILES} replay files (default: $CASCADEFLOW_REPLAY_DIR, else {REPLAY})")
    parser.add_argument("--no-router", action="store_true", help="leave the pre-generation router out")
    args = parser.parse_args()
    replay = Path(args.data)
    missing = _missing_data(replay)
    if missing:
        print(f"cascade_quality: {missing}", file=sys.stderr)
        sys.exit(2)
    probe = rule_with(dict(DEFAULT_RULE), quality_threshold=0.0)
    jobs = [(name, files) for name, pattern in POOLS.items() if (files := sorted(replay.glob(pattern)))]
    jobs += [(p.name.removesuffix(".calib.jsonl"), [p]) for p in sorted(replay.glob(CALIBRATION_FILES))
             if not p.name.startswith("routerarena")]
    main_rows, no_logprob_rows, ranking_rows, check_rows, router_rows, router_rows_nolp = [], [], [], [], [], []
    whole_rows: list[str] = []
    for name, files in jobs:
        print(f"{name} …", file=sys.stderr)
        first = orjson.loads(files[0].read_bytes().split(b"\n", 1)[0])
        # where the data has several draft samples, sample agreement is a signal worth its cost
        rule = rule_with(probe, sample_agreement={"samples": SAMPLES}) if first["draft"].get("samples") else probe
        outcomes, _, _ = evaluate(files, rule)
        records = load_eval_records(files)
        features = learned.record_features(records)
        requests = None if args.no_router else routing.request_features(records)
        row, result = evaluate_split(name, outcomes, features, args.target, requests)
        main_rows.append(row)
        router_rows.append(result["router"])
        oof = learned.out_of_fold_scores(outcomes, features, FOLDS)
        check_rows.append(f"| {name} | {contributions(outcomes)}; learned (out of fold) {num(metrics.auroc(oof), 2)} |")
        if not any("logprobs" in o.features or "self_verify" in o.features for o in outcomes):
            row, result = evaluate_split(name, outcomes, features, args.target_without_logprobs, requests)
            no_logprob_rows.append(row)
            router_rows_nolp.append(result["router"])
            ranking_rows.append(versus_random_row(name, oof))
            whole_rows.append(whole_file_row(name, outcomes, features, args.target_without_logprobs, requests))
    header = ("| data | n calib/eval | rule written | bound (calib) | saving | quality retained (95% CI) | escalated | "
              "random q.ret | APGR | AUROC |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [
        "# Cascade quality on the calibration data",
        "",
        "Generated by `python benchmarks/cascade_quality.py`; do not edit by hand.",
        "",
        "Every draft judged through the real gateway by the built-in checks plus self-verification (and agreement "
        f"between {SAMPLES} samples where the data has them; its cost counted). Records are split by a hash of their "
        "id: `calibrate`'s procedure runs on the calibration half — a threshold on the check score, a logistic "
        "combiner, the learned scorer (text features, no log-probabilities), each under a one-sided 95% lower "
        "confidence bound on quality retained, the best picked by 5-fold cross-validation, and drafting only where "
        "the chosen confidence beats random escalation out of fold (held-out AUROC interval above 0.5) — and the rule it writes "
        "is applied to the evaluation half, which it never saw. *bound* is that lower bound on the calibration half "
        "(1.000 for a rule that never drafts). Saving, quality retained (with a 95% bootstrap interval), escalated "
        "and random escalation at the same rate are on the evaluation half; APGR (random = 0.5, confidence ties "
        "averaged) and AUROC rank the evaluation half by the written rule's confidence. Costs are the recorded ones; "
        "where a source has none, the registry's price on recorded or estimated tokens; *unknown* where a model has "
        "no price (llama3.1 self-verification is priced from the recorded draft cost). RouteLLM's "
        "mistralai/Mixtral-8x7B-Instruct-v0.1 is priced as Mistral's own API sells the same weights "
        "(open-mixtral-8x7b, $0.70/$0.70 per million tokens) on estimated tokens (characters / 4).",
        "",
        f"## Target quality retained {args.target}",
        "",
        header,
        *main_rows,
        "",
        f"## Data without log-probabilities, target {args.target_without_logprobs}",
        "",
        "Only the structural check (and agreement, for mot_date) applies, so the learned scorer is what can rank "
        "the drafts.",
        "",
        header,
        *no_logprob_rows,
        "",
        f"## Data without log-probabilities, whole calibration file, target {args.target_without_logprobs}",
        "",
        "What `calibrate` writes when it is given the whole calibration file (the procedure above, router "
        "included), with its 5-fold cross-validated figures: each fold decided by a scorer, threshold and router "
        "fitted without it, pooled; 95% bootstrap intervals. These are held out but drawn from the same file "
        "the rule was fitted on; the table above tests a rule on records its fit never saw, at half the size — "
        "too few for a bound at 0.95 on the files of about 100 records (`docs/evaluation.md`, the guarantee). "
        "*bound*: the 95% lower bound on quality retained over the whole file.",
        "",
        "| data | n | rule written | bound | held-out saving | quality retained (95% CI) | escalated | AUROC (95% CI) |",
        "|---|---|---|---|---|---|---|---|",
        *whole_rows,
        "",
        "## Does the learned scorer beat random escalation? (data without log-probabilities)",
        "",
        "Out-of-fold P(good) from the learned scorer (each record scored by a model trained without its fold), over "
        "the whole calibration file; 95% percentile-bootstrap intervals. APGR > 0.5 and a gain > 0 mean better "
        "than escalating at random; *beats random* asks whether the whole AUROC interval lies above 0.5 (the test "
        "`calibrate` applies before it lets a rule draft). Gain is "
        "quality retained when the less confident half is escalated, minus random escalation of half.",
        "",
        "| data | n | AUROC | APGR | gain at 50% escalated | beats random |",
        "|---|---|---|---|---|---|",
        *ranking_rows,
        "",
        *(router_section(args.target, router_rows, args.target_without_logprobs, router_rows_nolp) if requests else []),
        "## What each check adds",
        "",
        "AUROC of each check's score alone over every record where it applied (0.5 = no better than chance), and "
        "for the checks that make calls, their cost as a share of always asking the strong model. The learned "
        "scorer costs no call (about 0.2 ms of CPU per request: `benchmarks/scorer_latency.py`).",
        "",
        "| data | check: AUROC alone (+ cost) |",
        "|---|---|",
        *check_rows,
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
