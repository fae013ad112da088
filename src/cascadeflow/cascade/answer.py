"""What a check sees (a draft's answer, normalised across dialects) and what it says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..dialects.answer import STOP_REASONS, DraftAnswer, ToolCall

__all__ = ["ToolCall", "DraftAnswer", "CheckResult", "Check", "STOP_REASONS"]


@dataclass(slots=True, frozen=True)
class CheckResult:
    """A score in 0–1 (1 = no doubt) and why."""

    name: str
    score: float
    reason: str


class Check(Protocol):
    """A quality check. Return None when it does not apply to this request/answer."""

    name: str

    def __call__(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None: ...

    def early(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        """Judge a partial answer while it streams; a low score stops the draft at once."""
        ...
