"""A model's answer reduced to what a judge needs, the same for both dialects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..usage import Usage

__all__ = ["ToolCall", "DraftAnswer", "STOP_REASONS"]

#: stop reasons, in Anthropic's names (OpenAI's are mapped: stop → end_turn,
#: length → max_tokens, tool_calls → tool_use, content_filter → refusal)
STOP_REASONS = ("end_turn", "max_tokens", "tool_use", "stop_sequence", "refusal", "pause_turn", "other")


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    #: the arguments as the model wrote them (JSON text); ``input`` is their parse, or None if invalid
    arguments: str
    input: Any = None
    valid_json: bool = True


@dataclass(slots=True)
class DraftAnswer:
    """A model's answer reduced to what checks judge. ``partial`` while a stream is still arriving."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    thinking: str = ""
    stop_reason: str | None = None
    #: per-token log-probabilities of the output, when the upstream returned them
    logprobs: list[float] | None = None
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    partial: bool = False
