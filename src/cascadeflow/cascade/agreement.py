"""Agreement between samples: ask the draft model again and see whether it lands on the same answer.

A model that is sure of an answer tends to reach it again when sampled; one that is
guessing scatters. The exact score is the share of extra samples whose *final answer* — the
part after "A:" / "Answer:" / "the answer is", else the last number or date, else the
last line — equals the draft's: for short, checkable answers (math, dates, multiple choice).
Free-form answers never match exactly, so the semantic score compares meanings instead: the
mean cosine similarity of the samples' WordLlama embeddings to the draft's (a few ms of CPU,
run in a worker thread by the engine). Each sample is a full call, priced and counted.
"""

from __future__ import annotations

import re
from typing import Any

from .answer import CheckResult

__all__ = ["final_answer", "agreement", "semantic_agreement", "states_final_answer"]

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


def states_final_answer(text: str) -> bool:
    """Whether the text arrives at a short answer that exact agreement can compare (a labelled answer, or a
    short reply); free-form prose does not."""
    text = text.strip()
    return len(text) <= _SHORT or bool(_LABELLED.search(text))


def semantic_agreement(embedder: Any, draft_text: str, samples: list[str]) -> CheckResult | None:
    """Mean cosine similarity (clipped to 0..1) of the samples' embeddings to the draft's; None without samples."""
    texts = [t for t in samples if t.strip()]
    if not texts or not draft_text.strip():
        return None
    vectors = embedder.embed([draft_text, *texts], norm=True)
    similarities = [max(0.0, min(1.0, float(v @ vectors[0]))) for v in vectors[1:]]
    score = sum(similarities) / len(similarities)
    return CheckResult("semantic_agreement", score, f"mean similarity {score:.2f} over {len(texts)} samples")


def agreement(draft_text: str, samples: list[str]) -> CheckResult | None:
    """Share of ``samples`` with the draft's final answer; None without samples."""
    if not samples:
        return None
    target = final_answer(draft_text)
    same = sum(1 for sample in samples if final_answer(sample) == target)
    return CheckResult("agreement", same / len(samples), f"{same} of {len(samples)} samples agree")
