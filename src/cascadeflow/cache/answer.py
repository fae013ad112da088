"""A cached answer: what is stored, which answers may be, and how a hit is given back.

One entry holds the complete answer as the non-streaming JSON body the caller's dialect
returns (for a streamed request, the body its accumulator rebuilt from the stream) and,
for the Responses API, the stream's own events as well (there is no synthesiser for
Responses streams). A hit asked as a stream is replayed with the project's own stream
synthesisers (:mod:`cascadeflow.dialects.accumulate`), the ones a cascade uses to replay
a draft fetched whole: one well-formed stream of the caller's dialect.

Never stored: errors, incomplete or cut answers, refusals (``refusal`` stop reasons,
``content_filter``), answers paused mid-turn, and tool calls unless the request's tools
may be cached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from ..dialects import accumulate, accumulate_responses
from ..dialects.openai import wants_usage
from ..dialects.sse import SSEDecoder

__all__ = ["CachedAnswer", "cacheable", "StreamCollector", "hit_stream"]

_ANTHROPIC_DONE = frozenset({"end_turn", "max_tokens", "stop_sequence"})
_OPENAI_DONE = frozenset({"stop", "length"})


@dataclass(slots=True)
class CachedAnswer:
    """One stored answer and what it cost when it was made."""

    body: bytes
    stream: bytes | None = None
    served_model: str | None = None
    #: what the request this answer was made for would have cost on the requested model (USD)
    baseline_cost: float | None = None
    stored_at: float = 0.0

    def encode(self) -> bytes:
        head = {"v": 1, "m": self.served_model, "b": self.baseline_cost, "t": self.stored_at, "n": len(self.body)}
        return orjson.dumps(head) + b"\n" + self.body + (self.stream or b"")

    @classmethod
    def decode(cls, raw: bytes) -> CachedAnswer | None:
        """The entry, or None for bytes this version did not write (never an exception)."""
        head_bytes, sep, rest = raw.partition(b"\n")
        try:
            head = orjson.loads(head_bytes)
        except orjson.JSONDecodeError:
            return None
        if not sep or not isinstance(head, dict) or head.get("v") != 1 or not isinstance(head.get("n"), int):
            return None
        size = head["n"]
        return cls(rest[:size], rest[size:] or None, head.get("m"), head.get("b"), head.get("t") or 0.0)

    def age(self, now: float | None = None) -> int:
        return max(0, int((time.time() if now is None else now) - self.stored_at))


def cacheable(dialect: str, data: object, tools: bool) -> bool:
    """Whether a complete answer may be stored (see the module docstring)."""
    if not isinstance(data, dict):
        return False
    if dialect == "anthropic":
        if data.get("type") != "message":
            return False
        stop = data.get("stop_reason")
        return stop in _ANTHROPIC_DONE or (tools and stop == "tool_use")
    if dialect == "openai":
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return False
        for choice in choices:
            if not isinstance(choice, dict):
                return False
            reason = choice.get("finish_reason")
            message = given if isinstance(given := choice.get("message"), dict) else {}
            if message.get("refusal") or not (reason in _OPENAI_DONE or (tools and reason == "tool_calls")):
                return False
        return True
    if data.get("status") != "completed" or data.get("error"):
        return False
    for item in data.get("output") or ():
        if not isinstance(item, dict):
            return False
        kind = item.get("type")
        if kind in ("function_call", "custom_tool_call") and not tools:
            return False
        if kind == "message" and any(isinstance(part, dict) and part.get("type") == "refusal"
                                     for part in item.get("content") or ()):
            return False
    return True


class StreamCollector:
    """Reads the bytes a streamed answer sends to its caller, and rebuilds the answer from them.

    Only a request the cache will store gets one: the stream's bytes go out unchanged.
    """

    __slots__ = ("dialect", "_decoder", "_accumulator", "_raw")

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self._decoder = SSEDecoder()
        self._accumulator: (accumulate.AnthropicAccumulator | accumulate.OpenAIAccumulator
                            | accumulate_responses.ResponsesAccumulator)
        if dialect == "anthropic":
            self._accumulator = accumulate.AnthropicAccumulator()
        elif dialect == "openai":
            self._accumulator = accumulate.OpenAIAccumulator()
        else:
            self._accumulator = accumulate_responses.ResponsesAccumulator()
        self._raw: list[bytes] | None = [] if dialect == "responses" else None

    def feed(self, chunk: bytes) -> None:
        if self._raw is not None:
            self._raw.append(chunk)
        for event in self._decoder.feed(chunk):
            self._accumulator.feed(event)

    def answer(self) -> tuple[dict, bytes | None] | None:
        """(the JSON body, the raw stream for Responses) of a stream that ended properly; else None."""
        accumulator = self._accumulator
        if not accumulator.done or accumulator.error is not None or self._decoder.pending.strip():
            return None
        if isinstance(accumulator, accumulate.AnthropicAccumulator):
            return accumulator.message, None
        if isinstance(accumulator, accumulate.OpenAIAccumulator):
            return accumulator.completion, None
        return accumulator.response, b"".join(self._raw or ())


def hit_stream(dialect: str, answer: CachedAnswer, request: dict) -> bytes | None:
    """A stored answer as the stream the caller's dialect sends (None: this entry cannot make one)."""
    if dialect == "responses":
        return answer.stream
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if dialect == "anthropic":
        return accumulate.synthesize_anthropic_stream(data)
    return accumulate.synthesize_openai_stream(data, include_usage=wants_usage(request))
