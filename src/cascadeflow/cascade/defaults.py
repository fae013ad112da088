"""The default cascade rules, written out with the saving each can reach at most.

A cascade always pays for the draft, so even when every draft is accepted the saving
is at most ``1 − draft price / verifier price``. The ceiling is computed here on a
typical request (2,000 input and 500 output tokens) from the registry's prices.
"""

from __future__ import annotations

from ..config import DEFAULT_CASCADES
from ..pricing import ModelRegistry
from ..usage import Usage

__all__ = ["saving_ceiling", "render_default_rules", "TYPICAL_USAGE"]

TYPICAL_USAGE = Usage(input_tokens=2000, output_tokens=500)


def saving_ceiling(registry: ModelRegistry, draft: str, verifier: str, usage: Usage = TYPICAL_USAGE) -> float | None:
    """``1 − cost(draft) / cost(verifier)`` for ``usage``; None when a price is unknown."""
    draft_cost, verifier_cost = registry.cost(draft, usage), registry.cost(verifier, usage)
    if draft_cost is None or not verifier_cost:
        return None
    return 1.0 - draft_cost / verifier_cost


def _example_verifier(glob: str, registry: ModelRegistry) -> str:
    """A concrete model for a rule's glob, to price the ceiling (``claude-opus-*`` → claude-opus-5-5)."""
    if "*" not in glob:
        return glob
    family = glob.rstrip("*")
    for candidate in (f"{family}5-5", f"{family}4-5", f"{family}latest"):
        if registry.info(candidate) is not None:
            return candidate
    return glob


def render_default_rules(registry: ModelRegistry | None = None) -> str:
    """The ``cascade_rules:`` YAML block for the config file, each rule with its ceiling."""
    registry = registry or ModelRegistry()
    lines = [
        "cascade_rules:",
        "  # The saving ceiling is 1 - draft price / verifier price: the draft is always paid,",
        "  # so no acceptance rate saves more. Prices from genai-prices, for a request of",
        f"  # {TYPICAL_USAGE.input_tokens} input and {TYPICAL_USAGE.output_tokens} output tokens.",
    ]
    for glob, draft in DEFAULT_CASCADES:
        verifier = _example_verifier(glob, registry)
        ceiling = saving_ceiling(registry, draft, verifier)
        if registry.info(draft) is None:
            continue
        note = f"saving ceiling {ceiling:.0%} (vs {verifier})" if ceiling is not None else "price unknown"
        lines += [
            f"  - request_model: \"{glob}\"   # {note}",
            f"    draft_model: {draft}",
            "    quality_threshold: 0.7",
        ]
    return "\n".join(lines) + "\n"
