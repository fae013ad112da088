"""Shadow mode: the cascade's quality measured on the gateway's own traffic.

For a share of the drafts a rule judges (``shadow.share``), the gateway keeps the draft's
answer and the verifier's answer to the same request, labels the pair — did the draft
hold up? — and writes it to the ledger (``shadow_pairs``). An escalated draft's pair
costs nothing more: the verifier served the request. An accepted draft's pair costs one
verifier call, made after the client has its answer, never on its path; those calls
stop for the UTC day once they have cost ``shadow.max_daily_usd`` (per process).

Pairs are sampled among every judged draft, accepted or not, so they cover the whole
range of confidences: ``cascadeflow calibrate --from-ledger`` fits a rule's threshold
on them as it does on recorded data, and ``cascadeflow stats`` reports the quality the
cascade keeps, measured, with its interval.

A label says whether the draft is as good as the verifier's answer:

- ``final_answer``: both reach a final answer (a labelled "Answer: …", or a short reply)
  and the two are the same after normalisation (:func:`.agreement.final_answer`);
- ``same_calls``: both call the same tools with the same arguments;
- ``judge``: otherwise, when ``shadow.judge_model`` is set, that model compares the two
  answers and says Y or N; its call is priced into the pair's shadow cost;
- none of these: the pair is kept unlabelled (it still shows the shadow cost).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from ..config import CascadeRule
from ..store.ledger import ShadowPair
from .agreement import _LABELLED, _SHORT, final_answer
from .answer import DraftAnswer

if TYPE_CHECKING:
    from .decision import Decision

__all__ = ["ShadowRecorder", "label_pair", "JUDGE_PROMPT"]

log = logging.getLogger("cascadeflow.shadow")

#: answers are kept up to this many characters each
MAX_ANSWER_CHARS = 20_000
JUDGE_PROMPT = ("Here are a question's reference answer and a candidate answer. Is the candidate as correct and as "
                "complete as the reference? Reply with a single letter: Y for yes, N for no.")

#: ``(model, prompt text) -> (reply text, cost)``: one call to the judge model
Judge = Callable[[str, str], Awaitable[tuple[str, float | None]]]


def _answer_text(answer: DraftAnswer) -> str:
    calls = [{"name": c.name, "arguments": c.arguments} for c in answer.tool_calls]
    text = answer.text
    if calls:
        text = (text + "\n" if text else "") + orjson.dumps(calls, option=orjson.OPT_SORT_KEYS).decode()
    return text[:MAX_ANSWER_CHARS]


def _has_final_answer(text: str) -> bool:
    return bool(_LABELLED.search(text)) or 0 < len(text.strip()) <= _SHORT


def label_pair(draft: DraftAnswer, verifier: DraftAnswer) -> tuple[bool | None, str | None]:
    """(the draft holds up, how that was told), or (None, None) where no rule can tell without a judge."""
    if draft.tool_calls or verifier.tool_calls:
        same = [(c.name, _canonical(c.arguments)) for c in draft.tool_calls] == [
            (c.name, _canonical(c.arguments)) for c in verifier.tool_calls]
        return (True, "same_calls") if same else (None, None)
    if _has_final_answer(draft.text) and _has_final_answer(verifier.text):
        return final_answer(draft.text) == final_answer(verifier.text), "final_answer"
    return None, None


def _canonical(arguments: object) -> str:
    if isinstance(arguments, str):
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments
        return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS).decode()
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode()


class ShadowRecorder:
    """Samples judged drafts, completes their pairs off the request path, and hands them to the ledger."""

    def __init__(self, record: Callable[[ShadowPair], None], judge: Judge | None = None,
                 chance: Callable[[], float] = random.random, clock: Callable[[], float] = time.time) -> None:
        self._record, self._judge, self._chance, self._clock = record, judge, chance, clock
        self._tasks: set[asyncio.Task] = set()
        #: (UTC day, USD spent on shadow calls that day) — per process
        self._spent: tuple[int, float] = (0, 0.0)
        self.pairs = 0
        self.cost = 0.0

    def sampled(self, rule: CascadeRule) -> bool:
        """Whether this judged draft gets a pair (decided once per request, before its answer is known)."""
        return rule.shadow is not None and self._chance() < rule.shadow.share

    def within_budget(self, rule: CascadeRule) -> bool:
        day, spent = self._spent
        today = int(self._clock() // 86400)
        return rule.shadow is not None and (day != today or spent < rule.shadow.max_daily_usd)

    def escalated(self, rule: CascadeRule, decision: Decision, request_id: str, draft: DraftAnswer,
                  draft_cost: float | None, verifier: DraftAnswer, verifier_cost: float | None) -> None:
        """Pair an escalated draft with the verifier's answer that served the request (no extra call)."""
        pair = self._pair(decision, request_id, draft, verifier, decision.served_model, accepted=False)
        pair.draft_cost, pair.verifier_cost = draft_cost, verifier_cost
        self._finish(rule, pair, draft, verifier)

    def accepted(self, rule: CascadeRule, decision: Decision, request_id: str, draft: DraftAnswer,
                 draft_cost: float | None, verifier_model: str,
                 ask_verifier: Callable[[], Awaitable[tuple[DraftAnswer, float | None]]]) -> None:
        """Pair an accepted draft: the verifier is asked off the request path, within the day's budget."""
        if not self.within_budget(rule):
            return

        async def complete() -> None:
            try:
                verifier, cost = await ask_verifier()
            except Exception as exc:  # noqa: BLE001 - an upstream failure loses the pair, never the request
                log.info("shadow call to the verifier failed (%s); no pair for %s", exc, request_id)
                return
            self._spend(cost)
            pair = self._pair(decision, request_id, draft, verifier, verifier_model, accepted=True)
            pair.draft_cost, pair.verifier_cost, pair.shadow_cost = draft_cost, cost, cost or 0.0
            await self._label(rule, pair, draft, verifier)

        self._spawn(complete())

    @staticmethod
    def _pair(decision: Decision, request_id: str, draft: DraftAnswer, verifier: DraftAnswer, verifier_model: str,
              accepted: bool) -> ShadowPair:
        if decision.draft_model is None:  # a pair is made only of a drafted request
            raise ValueError(f"request {request_id} has no draft model to pair")
        return ShadowPair(request_id=request_id, rule=decision.rule, draft_model=decision.draft_model,
                          verifier_model=verifier_model, confidence=decision.confidence,
                          accepted=accepted, draft_answer=_answer_text(draft), verifier_answer=_answer_text(verifier))

    def _finish(self, rule: CascadeRule, pair: ShadowPair, draft: DraftAnswer, verifier: DraftAnswer) -> None:
        label, method = label_pair(draft, verifier)
        if label is None and self._needs_judge(rule):
            self._spawn(self._label(rule, pair, draft, verifier))
            return
        pair.label, pair.method = label, method
        self._write(pair)

    async def _label(self, rule: CascadeRule, pair: ShadowPair, draft: DraftAnswer, verifier: DraftAnswer) -> None:
        pair.label, pair.method = label_pair(draft, verifier)
        if pair.label is None and self._needs_judge(rule):
            assert rule.shadow is not None and rule.shadow.judge_model and self._judge is not None
            prompt = f"Reference answer:\n{pair.verifier_answer}\n\nCandidate answer:\n{pair.draft_answer}\n\n{JUDGE_PROMPT}"
            try:
                reply, cost = await self._judge(rule.shadow.judge_model, prompt)
            except Exception as exc:  # noqa: BLE001 - the pair stays unlabelled
                log.info("shadow judge %s failed (%s)", rule.shadow.judge_model, exc)
            else:
                self._spend(cost)
                pair.shadow_cost += cost or 0.0
                verdict = reply.strip().upper()[:1]
                if verdict in ("Y", "N"):
                    pair.label, pair.method = verdict == "Y", "judge"
        self._write(pair)

    def _needs_judge(self, rule: CascadeRule) -> bool:
        return (self._judge is not None and rule.shadow is not None and rule.shadow.judge_model is not None
                and self.within_budget(rule))

    def _spend(self, cost: float | None) -> None:
        day, spent = self._spent
        today = int(self._clock() // 86400)
        self._spent = (today, (spent if day == today else 0.0) + (cost or 0.0))
        self.cost += cost or 0.0

    def _write(self, pair: ShadowPair) -> None:
        self.pairs += 1
        self._record(pair)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Wait for the pairs still being completed (a graceful shutdown loses none)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
