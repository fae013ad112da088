"""From check results to one confidence: the rule's combination, or a fitted logistic model.

Self-verification costs a call, so with the simple combinations it runs only when the
cheap checks have not already failed the draft; a fitted model was trained with that
score present, so it always asks.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..config import CascadeRule, Combiner
from .answer import Check, CheckResult, DraftAnswer
from .checks import combine, run_checks

__all__ = ["Score", "score_draft", "logistic_confidence"]


@dataclass(slots=True)
class Score:
    confidence: float
    reason: str
    results: list[CheckResult]

    def header(self) -> str:
        """``name=score`` pairs for ``x-cascadeflow-checks`` (the features calibration reads)."""
        return ",".join(f"{r.name}={r.score:.4f}" for r in self.results)


def logistic_confidence(scores: dict[str, float], model: Combiner) -> float:
    """P(draft is good) from standardised check scores; a missing score counts as its mean."""
    z = model.bias
    for name, weight in model.weights.items():
        mean = model.means.get(name, 0.0)
        value = scores.get(name, mean)
        z += weight * (value - mean) / (model.scales.get(name) or 1.0)
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


def _combine(rule: CascadeRule, results: list[CheckResult]) -> tuple[float, str]:
    if rule.combine == "logistic" and rule.combiner is not None:
        scores = {r.name: r.score for r in results}
        confidence = logistic_confidence(scores, rule.combiner)
        return confidence, f"fitted model over {', '.join(sorted(scores)) or 'no checks'}"
    return combine(results, rule.combine)


async def score_draft(
    rule: CascadeRule,
    checks: list[Check],
    caller: dict,
    answer: DraftAnswer,
    dialect: str,
    threshold: float,
    ask_verifier: Callable[[], Awaitable[CheckResult | None]],
) -> Score:
    """Run the checks (and self-verification when configured) on a complete draft."""
    _, _, results = run_checks(checks, caller, answer, dialect, "min")
    confidence, reason = _combine(rule, results)
    if rule.self_verify is not None and (rule.combine == "logistic" or confidence >= threshold):
        verified = await ask_verifier()
        if verified is not None:
            results.append(verified)
            confidence, reason = _combine(rule, results)
    return Score(confidence, reason, results)
