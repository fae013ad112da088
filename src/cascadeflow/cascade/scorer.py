"""A learned draft scorer that needs no log-probabilities: text features of the prompt and the draft.

Anthropic returns no log-probabilities, GPT-5 drafts refuse the parameter, and most recorded data has
none, so a check that reads them says nothing there. This scorer reads what every answer has: the
prompt's and the draft's text (lengths, digits, code, answer options, hedging words, overlap with the
question, repetition), the structural check's sub-signals (refusal, hedging, looping, code that does
not parse) and whether the worked answer states a false equation (:mod:`.arithmetic`). ``cascadeflow
calibrate`` fits a logistic model of "the draft is good" on labelled records and writes it as JSON beside
the config; the rule names the file and its SHA-256, and the gateway loads
it once at start (a missing, altered or foreign file is a start-up error, never a silent default).

Scoring is a few dozen regex and string passes plus a dot product: tens of microseconds of CPU, no
I/O, nothing that blocks the event loop (``benchmarks/scorer_latency.py`` measures it).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError
from .answer import CheckResult, DraftAnswer
from .arithmetic import false_equations
from .checks import _hedges, _python_breaks, _refuses, _repetition

__all__ = ["FEATURES", "FORMAT", "Scorer", "LearnedCheck", "prompt_text", "text_features", "load_scorer", "save_scorer"]

#: bumped whenever FEATURES change, so a model file from another version is refused at start, never misread
FORMAT = "cascadeflow-scorer/2"
CHECK_NAME = "learned"

_WORD = re.compile(r"[A-Za-z0-9']+")
_NUMBER_END = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)\W*$")
_OPTIONS = re.compile(r"(?m)^\s*\(?[A-Ea-e][).:]\s")
_CODE_WORDS = ("```", "def ", "function", "python", "code", "program")
_MATH_WORDS = ("how many", "how much", "total", "calculate")
_ARITHMETIC = re.compile(r"\d[ \t]?[-+*/×÷^=][ \t]?\d")
#: prompt features read its last characters (the question; few-shot examples come before it)
_PROMPT_TAIL = 3000
#: answer features read at most this many characters (lengths count them all): a bounded cost per request
_ANSWER_HEAD = 16_000
_HEDGE_WORDS = re.compile(
    r"\b(?:maybe|perhaps|might|possibly|probably|likely|unclear|uncertain|approximately|roughly|assume|"
    r"guess|not sure|i think|i believe|it depends|however|although)\b", re.IGNORECASE)  # fmt: skip
_APOLOGY = re.compile(r"\b(?:sorry|apologi[sz]e|unfortunately)\b", re.IGNORECASE)
_FINAL = re.compile(r"answer is|####|\\boxed|^answer:|final answer", re.IGNORECASE | re.MULTILINE)
_BULLET = re.compile(r"(?m)^\s*(?:[-*•]|\d+[.)])\s")
_LETTER = re.compile(r"^\W*\(?([A-Ea-e])\)?\W*(?:$|\s)")

#: the features, in order; a model file trained on another list is refused at start
FEATURES: tuple[str, ...] = (
    "answer_chars", "prompt_chars", "length_ratio", "answer_words", "answer_lines", "answer_digits",
    "prompt_digits", "ends_with_number", "answer_code", "prompt_code", "prompt_math", "prompt_options",
    "answer_is_letter", "hedge_words", "apology", "final_marker", "bullets", "overlap", "unique_words",
    "answer_questions", "turns", "refusal", "hedging", "repetition", "code_breaks", "upper_share", "non_ascii",
    "false_equation",
)  # fmt: skip


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def prompt_text(body: Mapping[str, Any]) -> tuple[str, int]:
    """The request's text (system prompt and every message, in order) and its number of messages, in any dialect."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    parts = [_text(body.get("system"))] if body.get("system") else []
    parts += [_text(m.get("content")) for m in messages if isinstance(m, dict)]
    return "\n".join(p for p in parts if p), len(messages)


def _share(pattern_count: int, total: int) -> float:
    return pattern_count / total if total else 0.0


def text_features(prompt: str, answer: str, turns: int = 1) -> list[float]:
    """The :data:`FEATURES` of one prompt and draft, in order (plain floats, no state)."""
    full_length = len(answer)
    answer = answer[:_ANSWER_HEAD]
    stripped = answer.strip()
    words = _WORD.findall(answer.lower())
    tail = prompt[-_PROMPT_TAIL:]
    low = tail.lower()
    prompt_words = set(_WORD.findall(low))
    answer_set = set(words)
    a_chars, p_chars = math.log1p(full_length), math.log1p(len(prompt))
    return [
        a_chars,
        p_chars,
        a_chars - p_chars,
        math.log1p(len(words)),
        math.log1p(answer.count("\n")),
        _share(sum(c.isdigit() for c in answer), len(answer)),
        _share(sum(c.isdigit() for c in tail), len(tail)),
        float(_NUMBER_END.search(stripped[-64:]) is not None),
        float("```" in answer),
        float(any(w in low for w in _CODE_WORDS)),
        float(_ARITHMETIC.search(tail) is not None or any(w in low for w in _MATH_WORDS)),
        float(len(_OPTIONS.findall(tail)) >= 2),
        float(len(stripped) <= 4 and _LETTER.match(stripped) is not None),
        min(len(_HEDGE_WORDS.findall(answer)), 5) / 5.0,
        float(_APOLOGY.search(answer) is not None),
        float(_FINAL.search(answer) is not None),
        math.log1p(len(_BULLET.findall(answer))),
        _share(len(answer_set & prompt_words), len(answer_set | prompt_words)),
        _share(len(answer_set), len(words)) if words else 1.0,
        float("?" in answer),
        math.log1p(turns),
        float(bool(stripped) and _refuses(stripped)),
        float(bool(stripped) and _hedges(stripped)),
        float(bool(stripped) and _repetition(stripped) is not None),
        float("```" in answer and _python_breaks(answer)),
        _share(sum(c.isupper() for c in answer), len(answer)),
        _share(sum(ord(c) > 127 for c in answer), len(answer)),
        float(false_equations(answer)[1] > 0),
    ]


@dataclass(frozen=True, slots=True)
class Scorer:
    """A fitted logistic model over :data:`FEATURES` (standardised with the training mean and scale)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    trained: Mapping[str, Any]

    def probability(self, features: Sequence[float]) -> float:
        z = self.bias + math.fsum(w * (x - m) / s for w, x, m, s in zip(self.weights, features, self.mean, self.scale))
        z = max(min(z, 50.0), -50.0)
        return 1.0 / (1.0 + math.exp(-z))

    def score(self, body: Mapping[str, Any], answer_text: str) -> float:
        prompt, turns = prompt_text(body)
        return self.probability(text_features(prompt, answer_text, turns))

    def to_json(self) -> bytes:
        return orjson.dumps({
            "format": FORMAT, "features": list(FEATURES), "weights": list(self.weights), "bias": self.bias,
            "mean": list(self.mean), "scale": list(self.scale), "trained": dict(self.trained),
        }, option=orjson.OPT_INDENT_2)  # fmt: skip


def save_scorer(scorer: Scorer, path: Path) -> str:
    """Write the model file; its SHA-256 (which the rule records, so a changed file is caught at start)."""
    data = scorer.to_json()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_scorer(path: str | Path, sha256: str | None) -> Scorer:
    """Read a model file, refusing one that is missing, altered since calibration, or built on other features."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"scorer model file {path} cannot be read ({exc.strerror or exc}); run cascadeflow calibrate") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ConfigError(f"scorer model file {path} does not match the config (sha256 {digest[:12]}…, the rule "
                          f"expects {sha256[:12]}…); run cascadeflow calibrate again")
    try:
        doc = orjson.loads(data)
        if doc.get("format") != FORMAT or tuple(doc.get("features", ())) != FEATURES:
            raise ValueError("it was written for other features (another cascadeflow version)")
        scorer = Scorer(tuple(map(float, doc["weights"])), float(doc["bias"]), tuple(map(float, doc["mean"])),
                        tuple(float(s) or 1.0 for s in doc["scale"]), doc.get("trained") or {})
        if not len(scorer.weights) == len(scorer.mean) == len(scorer.scale) == len(FEATURES):
            raise ValueError("its weights do not match its features")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"scorer model file {path} is not a usable cascadeflow scorer: {exc}") from None
    return scorer


class LearnedCheck:
    """The scorer as a check: P(draft is good) from the prompt and the draft's text."""

    name = CHECK_NAME

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def __call__(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        if answer.tool_calls and not (answer.text or "").strip():
            return None  # trained on text answers; tool calls are judged by the tool_use check
        p = self.scorer.score(request, answer.text or "")
        return CheckResult(self.name, p, f"learned P(good)={p:.2f}")

    def early(self, request: dict, answer: DraftAnswer, dialect: str) -> CheckResult | None:
        """No verdict on a partial answer: the scorer was trained on whole ones."""
        return None


def checks_for(rule: Any) -> list:
    """A rule's checks: the configured ones, plus the learned scorer when the rule names a model file
    (loaded here, once, when the gateway starts)."""
    from .checks import resolve_checks

    checks = resolve_checks(rule.checks)
    if rule.scorer is not None:
        checks.append(LearnedCheck(load_scorer(rule.scorer.path, rule.scorer.sha256)))
    return checks
