"""Per-dialect plumbing for drafts: build the draft's request, read its answer, replay it.

Kept apart from the engine so the engine reads as the decision it makes.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ..dialects import accumulate, accumulate_responses
from ..dialects.openai import fit_for_reasoning
from ..dialects.sse import SSEEvent
from .answer import DraftAnswer
from .capabilities import fit_features

__all__ = ["DialectOps", "ops_for"]


@dataclass(frozen=True, slots=True)
class DialectOps:
    """What the engine needs to do differently for each caller dialect."""

    name: str

    def draft_body(self, body: dict, model: str, max_tokens: int | None, reasoning: bool = False) -> dict:
        """The caller's request for the draft ``model``: its output capped at ``max_tokens``; for a
        ``reasoning`` model (an OpenAI GPT-5 / o-series) only the parameters it accepts, no log-probabilities."""
        draft = {**body, "model": model}
        if self.name == "responses":  # no log-probabilities asked: the checks judge Responses drafts without them
            limit = body.get("max_output_tokens")
            if max_tokens is not None and (not isinstance(limit, int) or limit > max_tokens):
                draft["max_output_tokens"] = max_tokens
            if reasoning:
                draft = fit_for_reasoning(draft)
        elif self.name == "anthropic":  # the thinking blocks each model may read: see CascadeEngine._drafts
            draft = fit_features(draft, model)
            if max_tokens is not None and isinstance(body.get("max_tokens"), int) and body["max_tokens"] > max_tokens:
                draft["max_tokens"] = max_tokens
                thinking = body.get("thinking")
                if isinstance(thinking, dict) and isinstance(thinking.get("budget_tokens"), int):
                    budget = min(thinking["budget_tokens"], max(1024, max_tokens // 2))
                    draft["thinking"] = {**thinking, "budget_tokens": budget}
        else:
            if not body.get("logprobs") and not reasoning:  # confidence from log-probabilities, stripped again
                draft["logprobs"] = True
            if max_tokens is not None:
                for key in ("max_tokens", "max_completion_tokens"):
                    if isinstance(body.get(key), int) and body[key] > max_tokens:
                        draft[key] = max_tokens
            if reasoning:
                draft = fit_for_reasoning(draft)
        return draft

    def accumulator(self) -> accumulate.AnthropicAccumulator | accumulate.OpenAIAccumulator:
        if self.name == "responses":
            return accumulate_responses.ResponsesAccumulator()  # type: ignore[return-value]
        return accumulate.AnthropicAccumulator() if self.name == "anthropic" else accumulate.OpenAIAccumulator()

    def answer(self, data: object) -> DraftAnswer:
        if not isinstance(data, dict):
            return DraftAnswer()
        if self.name == "responses":
            return accumulate_responses.answer_from_response(data)
        if self.name == "anthropic":
            return accumulate.answer_from_anthropic(data)
        return accumulate.answer_from_openai(data)

    def reply_body(self, data: dict, model: str | None, caller: dict) -> bytes:
        """A draft's non-streaming answer for the caller: renamed, without what the gateway added.

        Its thinking blocks stay: the next turn of a tool loop must send them back, and the
        engine gives each model only the blocks it can read (:mod:`.thinking`).
        """
        if self.name == "anthropic":
            return orjson.dumps(accumulate.rewrite_anthropic_message(data, model))
        if self.name == "responses":
            return orjson.dumps(accumulate_responses.rewrite_response(data, model))
        strip = not caller.get("logprobs")
        return orjson.dumps(accumulate.rewrite_openai_completion(data, model, strip))

    def rename(self, data: dict, model: str) -> bytes:
        """The verifier's non-streaming answer under another model name, otherwise unchanged."""
        if self.name == "anthropic":
            return orjson.dumps(accumulate.rewrite_anthropic_message(data, model))
        if self.name == "responses":
            return orjson.dumps(accumulate_responses.rewrite_response(data, model))
        return orjson.dumps(accumulate.rewrite_openai_completion(data, model, False))

    def replay(self, accumulator: accumulate.AnthropicAccumulator | accumulate.OpenAIAccumulator
               | accumulate_responses.ResponsesAccumulator, model: str | None, caller: dict) -> bytes:
        """A buffered draft stream for the caller, as a correct stream of its dialect.

        The upstream's own events are replayed byte for byte where possible, thinking
        blocks and their signatures included.
        """
        if self.name == "anthropic":
            return accumulate.replay_anthropic(accumulator.events, model)
        if self.name == "responses":
            return accumulate_responses.replay_responses(accumulator.events, model)
        # the usage chunk was already removed by the stream tap if the caller did not ask for it
        return accumulate.replay_openai(accumulator.events, model, not caller.get("logprobs"), False)

    def rename_events(self, events: list[SSEEvent], model: str) -> bytes:
        """Part of the verifier's stream under another model name."""
        if self.name == "anthropic":
            return accumulate.replay_anthropic(events, model)
        if self.name == "responses":
            return accumulate_responses.replay_responses(events, model)
        return accumulate.replay_openai(events, model, False, False)


_OPS = {"anthropic": DialectOps("anthropic"), "openai": DialectOps("openai"), "responses": DialectOps("responses")}


def ops_for(dialect: str) -> DialectOps:
    return _OPS[dialect]
