"""A replay upstream: the simulator answers recorded prompts with the recorded answers.

Each record of ``../shared/data/replay/*.jsonl``-style files holds one prompt and what a
cheap (draft) and a strong model answered, with usage and, for some, log-probabilities.
Served through :class:`~cascadeflow.sim.SimulatedProvider`, an evaluation drives the
real gateway and cascade over HTTP:

- a request for the draft or strong model whose messages equal a record's (or that names
  the record in an ``x-replay-record`` header, which tells duplicated prompts apart) gets that
  model's recorded text, token counts and — as OpenAI-style ``logprobs`` on its first
  token — the recorded ``answer_logprob``;
- a request carrying ``x-sample-index: i`` (the sample-agreement check's extra samples)
  gets the record's i-th recorded sample, where the record has ``draft.samples``;
- a self-verification request (the record's messages, the draft's answer, then the
  question :data:`~cascadeflow.cascade.selfcheck.VERIFY_PROMPT`) gets ``Y`` or ``N`` with
  the recorded ``self_verify_logprob`` as log P("Y");
- anything else is a miss: a 404 error, never a synthetic answer (the simulator lists the
  misses of answers, so an evaluation that hit one fails instead of judging made-up text).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from ..cascade.selfcheck import VERIFY_PROMPT
from .script import ScriptRule

__all__ = ["ReplayTable", "load_records", "messages_key"]


def load_records(paths: Iterable[str | Path]) -> list[dict]:
    """All records of the given JSON-lines files, in order.

    A malformed record raises ``ValueError`` naming its file and line (what it lacks),
    so a command can say so in one line instead of failing somewhere deep inside.
    """
    records = []
    for path in paths:
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{path} line {number}: not valid JSON ({exc})") from None
                problem = _record_problem(record)
                if problem:
                    raise ValueError(f"{path} line {number}: not a replay record: {problem}")
                records.append(record)
    return records


def _record_problem(record: object) -> str | None:
    """What a record lacks of the fields an evaluation reads (None when it has them all)."""
    if not isinstance(record, dict):
        return "each line must be a JSON object"
    missing = [name for name in ("id", "dataset", "messages", "draft", "strong") if name not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(record["messages"], list) or not record["messages"]:
        return "messages must be a non-empty list"
    for side in ("draft", "strong"):
        answer = record[side]
        if not isinstance(answer, dict) or not isinstance(answer.get("model"), str) or "score" not in answer:
            return f"{side} must be an object with model and score"
    return None


def messages_key(messages: list) -> str:
    """A stable key for a conversation: its roles and text content."""
    canonical = [(m.get("role"), _text(m.get("content"))) for m in messages if isinstance(m, dict)]
    return hashlib.blake2b(orjson.dumps(canonical), digest_size=16).hexdigest()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


class ReplayTable:
    """Recorded answers by (model, record id) and (model, conversation)."""

    def __init__(self, records: Iterable[dict]) -> None:
        self._answers: dict[tuple[str, str], ScriptRule] = {}
        self._verdicts: dict[tuple[str, str], ScriptRule] = {}
        self._samples: dict[tuple[str, str], list[str]] = {}
        for record in records:
            self._add(record, "id:" + str(record.get("id")))
            self._add(record, messages_key(record["messages"]))

    def _add(self, record: dict, key: str) -> None:
        """Index a record under ``key`` (its id, and its conversation for clients that send no id)."""
        for side in ("draft", "strong"):
            answer = record.get(side) or {}
            rule = _answer_rule(answer)
            self._answers.setdefault((answer.get("model", ""), key), rule)
            if side == "strong" and record.get("strong_messages") and not key.startswith("id:"):
                self._answers.setdefault((answer.get("model", ""), messages_key(record["strong_messages"])), rule)
        draft = record.get("draft") or {}
        if draft.get("samples"):
            self._samples.setdefault((draft.get("model", ""), key), [str(x) for x in draft["samples"]])
        if draft.get("self_verify_logprob") is not None:
            self._verdicts.setdefault((draft.get("model", ""), key), _verdict_rule(draft["self_verify_logprob"]))

    def __len__(self) -> int:
        return len(self._answers)

    def lookup(
        self, model: str, body: dict, record_id: str | None = None, sample_index: str | None = None
    ) -> ScriptRule | None:
        """The recorded answer for this request: by record id (header ``x-replay-record``), else by conversation.

        With ``sample_index`` (header ``x-sample-index``), a record's recorded samples are served in turn.
        """
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        system = body.get("system")  # an Anthropic-dialect request keeps its system prompt apart
        if system:
            messages = [{"role": "system", "content": system}, *messages]
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        verifying = last.get("role") == "user" and _text(last.get("content")) == VERIFY_PROMPT and len(messages) >= 3
        table = self._verdicts if verifying else self._answers
        if sample_index is not None and not verifying:
            keys = [(model, "id:" + record_id)] if record_id else []
            samples = next((self._samples[k] for k in [*keys, (model, messages_key(messages))] if k in self._samples), None)
            if samples and sample_index.isdigit():
                sample = samples[int(sample_index) % len(samples)]
                return ScriptRule.from_dict({"text": sample, "logprobs": [], "usage": {"output_tokens": max(1, len(sample) // 4)}})
        if record_id:
            found = table.get((model, "id:" + record_id))
            if found is not None:
                return found
        return table.get((model, messages_key(messages[:-2] if verifying else messages)))

    @staticmethod
    def is_verification(body: dict) -> bool:
        """Whether the request asks for a self-verification verdict (a record may rightly have none)."""
        messages = body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages and isinstance(messages[-1], dict) else {}
        return last.get("role") == "user" and _text(last.get("content")) == VERIFY_PROMPT


def _answer_rule(answer: dict) -> ScriptRule:
    rule: dict[str, Any] = {"text": answer.get("text") or ""}
    if answer.get("input_tokens") is not None and answer.get("output_tokens") is not None:
        rule["usage"] = {"input_tokens": answer["input_tokens"], "output_tokens": answer["output_tokens"]}
    logprob = answer.get("answer_logprob")
    # only the recorded log-probability is served; without one the answer carries none
    rule["logprobs"] = [max(float(logprob), -100.0)] if logprob is not None else []
    return ScriptRule.from_dict(rule)


def _verdict_rule(logprob_yes: float) -> ScriptRule:
    p_yes = math.exp(max(logprob_yes, -100.0))
    if p_yes >= 0.5:
        return ScriptRule.from_dict({"text": "Y", "logprobs": [max(logprob_yes, -100.0)], "usage": {"output_tokens": 1}})
    p_no = max(1.0 - p_yes, 1e-12)
    return ScriptRule.from_dict({"text": "N", "logprobs": [math.log(p_no)], "usage": {"output_tokens": 1}})
