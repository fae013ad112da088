"""Per-model output limits and features, refused as the real APIs refuse them.

Claude Code asks for ``max_tokens: 128000``; ``claude-haiku-5-5`` allows 64,000, and the
real API answers 400 rather than clamping. It also sends ``output_config.effort``,
``context_management`` and adaptive thinking, which some Claude models refuse
(:mod:`cascadeflow.model_features`). A gateway that drafts on such a model must fit the
request to it or not draft, and the simulator makes a test see the refusal if it does not.
"""

from __future__ import annotations

from typing import Any

from ..model_features import feature_gaps
from ..pricing import max_output_tokens, reasoning_model

__all__ = ["beta_problem", "feature_problem", "output_limit_problem", "reasoning_problem"]


def beta_problem(refused: dict[str, frozenset[str]], model: str, header: str | None) -> str | None:
    """The 400 message for the ``anthropic-beta`` values (``header``) that ``model`` is set to refuse.

    ``refused`` maps a model-name prefix (longest wins) to the betas it refuses; it is the
    simulator's option, not a table of the real API (whose documentation lists no per-model
    betas for the current models). The words are the live API's for a beta it does not accept.
    """
    if not refused or not header:
        return None
    prefixes = [prefix for prefix in refused if model.startswith(prefix)]
    if not prefixes:
        return None
    betas = refused[max(prefixes, key=len)]
    named = [name for name in (part.strip() for part in header.split(",")) if name in betas]
    if not named:
        return None
    values = ", ".join(f"`{name}`" for name in named)
    return (f"Unexpected value(s) {values} for the `anthropic-beta` header. Please consult our documentation "
            "at docs.claude.com or try again without the header.")


def feature_problem(dialect: str, body: dict[str, Any]) -> str | None:
    """The 400 message for the first Messages-API feature ``body["model"]`` refuses, if any."""
    if dialect != "anthropic":
        return None
    gaps = feature_gaps(body, body.get("model") or "")
    return gaps[0].message if gaps else None


def output_limit_problem(dialect: str, body: dict[str, Any]) -> str | None:
    model = body.get("model") or ""
    limit = max_output_tokens(model)
    if limit is None:
        return None
    fields = ("max_tokens",) if dialect == "anthropic" else ("max_tokens", "max_completion_tokens", "max_output_tokens")
    for name in fields:
        asked = body.get(name)
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > limit:
            if dialect == "anthropic":
                return f"max_tokens: {asked} > {limit}, which is the maximum allowed number of output tokens for {model}"
            return (f"{name} is too large: {asked}. This model supports at most {limit} completion tokens, "
                    f"whereas you provided {asked}.")
    return None


def reasoning_problem(dialect: str, body: dict[str, Any]) -> tuple[str, str, str] | None:
    """``(message, param, code)`` of the 400 OpenAI answers when a reasoning model (GPT-5 family, o-series)
    gets a parameter it does not support: ``max_tokens``, ``logprobs``, ``top_logprobs``, or a
    ``temperature``/``top_p`` other than the default 1 (the messages are the real API's)."""
    model = body.get("model") or ""
    if dialect == "anthropic" or not reasoning_model(model):
        return None
    if dialect == "openai" and body.get("max_tokens") is not None:
        return ("Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and value != 1:
            return (f"Unsupported value: '{name}' does not support {value} with this model. "
                    "Only the default (1) value is supported.", name, "unsupported_value")
    for name in ("logprobs", "top_logprobs"):
        if body.get(name) not in (None, False):
            return f"Unsupported parameter: '{name}' is not supported with this model.", name, "unsupported_parameter"
    return None
