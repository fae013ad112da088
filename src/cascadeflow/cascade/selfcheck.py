"""Self-verification: ask a model whether the draft's answer is right, read P("yes").

The draft model (or a named judge) gets the conversation, the draft's answer, and one
question; its one-token reply and that token's log-probability give P(yes). Only an
upstream that returns log-probabilities (OpenAI-compatible) gives a graded score; one
that does not yields 1 for "Y" and 0 for "N". The call is priced like any other and
counted in the request's cost.
"""

from __future__ import annotations

import math

from .answer import CheckResult, DraftAnswer
from .thinking import strip_thinking

__all__ = ["VERIFY_PROMPT", "verification_body", "verdict"]

VERIFY_PROMPT = "Is the answer above correct? Reply with a single letter: Y for yes, N for no."


#: a reasoning model thinks before its one-letter verdict: room for that (it refuses ``max_tokens: 1``)
REASONING_VERDICT_TOKENS = 512


def verification_body(body: dict, answer: DraftAnswer, dialect: str, model: str, reasoning: bool = False) -> dict | None:
    """The verification request in the caller's dialect, or None when it does not apply.

    Tool calls and empty answers are not verified this way (the other checks judge them).
    A ``reasoning`` model (OpenAI GPT-5 / o-series) returns no log-probabilities: it is asked
    without them, its verdict scores 1 or 0.
    """
    text = answer.text.strip()
    messages = body.get("messages")
    if not text or answer.tool_calls or not isinstance(messages, list):
        return None
    turns = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": VERIFY_PROMPT}]
    if dialect == "anthropic":  # thinking off for the one-word verdict, so no earlier thinking is sent back
        turns = strip_thinking(turns)
        verify: dict = {"model": model, "max_tokens": REASONING_VERDICT_TOKENS if reasoning else 1, "messages": turns}
        if body.get("system"):
            verify["system"] = body["system"]
        return verify
    if reasoning:
        return {"model": model, "messages": turns, "max_completion_tokens": REASONING_VERDICT_TOKENS}
    return {"model": model, "messages": turns, "max_tokens": 1, "logprobs": True, "top_logprobs": 5}


def verdict(reply: DraftAnswer) -> CheckResult | None:
    """P(yes) from the verifier's reply: its first token and that token's log-probability.

    A reply that is neither Y nor N says nothing: the check does not apply.
    """
    token = reply.text.strip().upper()[:1]
    logprob = reply.logprobs[0] if reply.logprobs else None
    if token == "Y":
        p_yes = 1.0 if logprob is None else math.exp(logprob)
    elif token == "N":
        p_yes = 0.0 if logprob is None else 1.0 - math.exp(logprob)
    else:
        return None
    p_yes = min(max(p_yes, 0.0), 1.0)
    return CheckResult("self_verify", p_yes, f"P(yes)={p_yes:.2f}")
