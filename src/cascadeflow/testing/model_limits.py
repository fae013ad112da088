"""Per-model output limits, refused as the real APIs refuse them.

Claude Code asks for ``max_tokens: 128000``; ``claude-haiku-5-5`` allows 64,000, and the
real API answers 400 rather than clamping. A gateway that drafts on a smaller model must
fit the request to it, and the simulator makes a test see the refusal if it does not.
"""

from __future__ import annotations

from typing import Any

from ..pricing import max_output_tokens

__all__ = ["output_limit_problem"]


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
