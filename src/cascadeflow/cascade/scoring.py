"""From check results to one confidence: the rule's combination, or a fitted logistic model.

Self-verification and sample agreement cost calls, so with the simple combinations they
run only while the draft has not already failed; a fitted model was trained with those
scores present, so it always asks.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
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
        """``name=score`` pairs for ``x-cascadeflow-checks`` (the features calibration reads).

        Exact (shortest round-trip) values: a threshold fitted on rounded scores would decide differently here.
        """
        return ",".join(f"{r.name}={float(r.score)!r}" for r in self.results)


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
    costly: Sequence[Callable[[], Awaitable[CheckResult | None]]],
) -> Score:
    """Run the checks on a complete draft, then the ``costly`` ones (each makes calls) if still needed."""
    _, _, results = run_checks(checks, caller, answer, dialect, "min")
    confidence, reason = _combine(rule, results)
    for ask in costly:
        if rule.combine != "logistic" and confidence < threshold:
            break  # already failed: spend nothing more on it
        result = await ask()
        if result is not None:
            results.append(result)
            confidence, reason = _combine(rule, results)
    return Score(confidence, reason, results)
