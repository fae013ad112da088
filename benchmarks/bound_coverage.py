"""How often the calibration bound certifies a target that does not hold, and what an exact test could certify.

``calibrate`` lets a rule draft only when a one-sided 95% lower bound on quality retained meets the target
(:mod:`cascadeflow.evaluation.guarantee`: the ratio estimator's delta-method normal bound plus one
pessimistic pseudo-record). A valid bound certifies a target that the truth only just meets at most 5% of
the time. This simulates exactly that case: n records, the strong model right with probability
``--strong``, every draft accepted, and each right strong answer lost by the draft with the probability that
makes the true quality retained equal the target. It prints the share of samples whose bound still reaches
the target (the false-certification rate; nominal 5%), next to the exact binomial test's verdict for the same
n: the most harms (drafts wrong where the strong model was right) among n records with which any valid 95%
test could certify the target — ``none`` means that no valid test can certify it on that many records, even
with no harm observed, so a looser-looking bound there costs nothing.

A second table runs the whole choice as ``calibrate`` makes it (:func:`choose_bounded`: the fixed sequence
over thresholds, the cheapest admissible one taken) on files with an informative confidence c ~ U(0, 1):
the draft is right with probability 0.55 + 0.45·c where the strong model is right, 0.1 where it is wrong.
It prints how often a rule drafts and how often the chosen threshold's true quality retained (computed
exactly from that model) lies below the target (nominal: at most 5%).

    python benchmarks/bound_coverage.py [--trials 2000] [--strong 0.86] [--targets 0.95,0.98]
"""

from __future__ import annotations

import argparse
import math
import random

from cascadeflow.evaluation.guarantee import DEFAULT_LEVEL, choose_bounded, quality_lower_bound
from cascadeflow.evaluation.metrics import Outcome

SIZES = (30, 54, 106, 200, 500)


def false_certification(n: int, strong: float, target: float, trials: int, seed: int) -> float:
    """Share of simulated calibration sets whose bound reaches ``target`` when the truth is exactly the target."""
    rng = random.Random(seed)
    lose = 1.0 - target  # P(draft wrong | strong right): quality retained = 1 − lose
    hits = 0
    for _ in range(trials):
        records = []
        for i in range(n):
            s = 1.0 if rng.random() < strong else 0.0
            d = 0.0 if s and rng.random() < lose else s
            records.append(Outcome(str(i), "sim", 1.0, True, d, s, 0.1, 1.0))
        bound = quality_lower_bound(records, DEFAULT_LEVEL)
        hits += bound is not None and bound >= target
    return hits / trials


def exact_allowance(n: int, strong: float, target: float) -> int | None:
    """The most harms among n records at which the exact one-sided binomial test rejects "harm rate ≥ h*"."""
    harm = (1.0 - target) * strong  # the harm rate per record at which quality retained is exactly the target
    total, allowed = 0.0, None
    for k in range(n + 1):
        total += math.comb(n, k) * harm**k * (1.0 - harm) ** (n - k)
        if total > 1.0 - DEFAULT_LEVEL:
            return allowed
        allowed = k
    return allowed


def _ranked_file(rng: random.Random, n: int, strong: float) -> list[Outcome]:
    records = []
    for i in range(n):
        c = rng.random()
        s = 1.0 if rng.random() < strong else 0.0
        right = 0.55 + 0.45 * c if s else 0.1
        records.append(Outcome(str(i), "sim", c, False, 1.0 if rng.random() < right else 0.0, s, 0.1, 1.0))
    return records


def _true_retained(threshold: float, strong: float) -> float:
    """Quality retained of accepting c ≥ threshold under :func:`_ranked_file`'s model, by integrating over c."""
    accepted = strong * (0.55 * (1 - threshold) + 0.225 * (1 - threshold**2)) + (1 - strong) * 0.1 * (1 - threshold)
    return (accepted + strong * threshold) / strong


def chosen_below(n: int, strong: float, target: float, trials: int, seed: int) -> tuple[float, float]:
    """(share of files where a rule drafts, share where the chosen threshold's true quality is below target)."""
    rng = random.Random(seed)
    drafted = below = 0
    for _ in range(trials):
        choice = choose_bounded(_ranked_file(rng, n, strong), target, DEFAULT_LEVEL)
        if choice["reached"]:
            drafted += 1
            below += _true_retained(choice["threshold"], strong) < target
    return drafted / trials, below / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--strong", type=float, default=0.86, help="share of records the strong model gets right")
    parser.add_argument("--targets", default="0.95,0.98")
    args = parser.parse_args()
    print(f"every draft accepted; strong model right on {args.strong:.0%}; {args.trials} samples per cell")
    print("| target | n | false certification (nominal 5%) | exact test certifies with at most |")
    print("|---|---|---|---|")
    for target in (float(t) for t in args.targets.split(",")):
        for n in SIZES:
            rate = false_certification(n, args.strong, target, args.trials, seed=n)
            allowed = exact_allowance(n, args.strong, target)
            print(f"| {target} | {n} | {rate:.1%} | {'none' if allowed is None else f'{allowed} harms'} |")
    print()
    print("threshold chosen by the fixed-sequence test; informative confidence; target 0.95")
    print("| n | a rule drafts | true quality retained below target (nominal ≤ 5%) |")
    print("|---|---|---|")
    for n in SIZES[2:]:
        drafted, below = chosen_below(n, args.strong, 0.95, max(args.trials // 5, 1), seed=n)
        print(f"| {n} | {drafted:.1%} | {below:.1%} |")


if __name__ == "__main__":
    main()
