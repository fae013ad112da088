"""Agreement between samples: ask the draft model again and see whether it lands on the same answer.

A model that is sure of an answer tends to reach it again when sampled; one that is
guessing scatters. The score is the share of extra samples whose *final answer* — the
part after "A:" / "Answer:" / "the answer is", else the last number or date, else the
last line — equals the draft's. Each sample is a full call, priced and counted; use it
where answers are short and checkable (math, dates, multiple choice), not for prose.
"""

from __future__ import annotations

import re

from .answer import CheckResult

__all__ = ["final_answer", "agreement"]

_LABELLED = re.compile(
    r"(?:final answer\s*(?:is)?\s*:?|the answer is\s*:?|answer\s*:|^\s*a\s*:)\s*(.+?)\s*$", re.I | re.M
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:[./:-]\d+)*")
_SHORT = 60


def final_answer(text: str) -> str:
    """The answer a text arrives at, normalised for comparison."""
    text = text.strip()
    labelled = _LABELLED.findall(text)
    if labelled:
        found = labelled[-1]
    elif len(text) <= _SHORT:
        found = text
    else:
        numbers = _NUMBER.findall(text)
        lines = [line for line in text.splitlines() if line.strip()]
        found = numbers[-1] if numbers else (lines[-1] if lines else "")
    found = found.strip().rstrip(".").strip("*$`").rstrip(".").strip()
    if _NUMBER.fullmatch(found):
        found = found.replace(",", "")
    return " ".join(found.lower().split())


def agreement(draft_text: str, samples: list[str]) -> CheckResult | None:
    """Share of ``samples`` with the draft's final answer; None without samples."""
    if not samples:
        return None
    target = final_answer(draft_text)
    same = sum(1 for sample in samples if final_answer(sample) == target)
    return CheckResult("agreement", same / len(samples), f"{same} of {len(samples)} samples agree")
