"""The cascade's bookkeeping: what a request would have cost, calls cut off midway, sticky escalations;
and how one request's record counts in its rule's totals (:func:`tally`).

The engine counts nothing itself: a rule's totals (accepted, escalated and skipped by reason, the
stages passed over by stage and reason, each stage's drafts and failures, cancelled, cost and
baseline) are derived from the decision fields of the request's one
:class:`~cascadeflow.store.RequestRecord`, the same event the ledger and the metrics consume.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Protocol

import orjson

from ..store.ledger import stage_skips
from ..usage import Usage
from .decision import Decision
from .policies import StickyEscalations

if TYPE_CHECKING:
    from ..config import CascadeRule, CascadeStage
    from ..errors import ProxyError
    from ..proxy import ProxyRequest
    from ..store import RequestRecord
    from ..telemetry import RuleTotals
    from .answer import DraftAnswer
    from .port import Target, UpstreamPort
    from .session import Turn

__all__ = ["Accounts", "RuleTotalsSource", "bucket", "tally"]

log = logging.getLogger("cascadeflow.cascade")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_REASON_CUT = re.compile(r" at |[(:=]")


class RuleTotalsSource(Protocol):
    """Where the engine reads a rule's totals so far (cache economics weighs its escalation rate)."""

    def rule(self, name: str) -> RuleTotals: ...


def tally(totals: RuleTotals, record: RequestRecord) -> None:
    """Count one cascaded request's record in its rule's totals (a cache hit made no decision: not counted).

    A cancelled request counts as ``cancelled`` with no saving (its baseline is its cost, as the
    ledger counts a row without one); an escalation decided before the cut still counts as one.
    """
    reason = record.decision or ""
    totals.requests += 1
    totals.drafts_tried += record.drafts
    if record.accepted:
        totals.accepted += 1
        totals.accepted_by_stage[record.served_model or ""] += 1
    elif reason.startswith("escalated:"):
        totals.escalated[reason.removeprefix("escalated:")] += 1
        totals.added_latency_ms += record.draft_ms
    elif reason.startswith("skipped:"):
        totals.skipped[reason.removeprefix("skipped:")] += 1
    for model, failed in record.stages_tried:
        totals.stage_drafts[model] += 1
        totals.stage_failures[model] += failed
    if record.skipped_stages:
        totals.skipped_stages.update(stage_skips(record.skipped_stages))
    cost, baseline = record.cost, record.baseline_cost
    if record.cancelled:
        totals.cancelled += 1
        baseline = cost if baseline is None else baseline
    if cost is None or baseline is None:
        totals.unpriced += 1
    else:
        totals.cost += cost
        totals.baseline_cost += baseline


class Accounts:
    """Prices what the engine decided: sticky escalations, each decision's baseline, calls cut off midway."""

    def __init__(self, upstreams: UpstreamPort) -> None:
        self.upstreams = upstreams
        self.registry = upstreams.registry
        self.sticky = StickyEscalations()

    def begin(self, rule: CascadeRule, request: ProxyRequest) -> Decision:
        """A new decision for a request the rule matched."""
        return Decision(rule=rule.name or "", requested_model=request.model)

    def cut(self, decision: Decision, match: Target, request: ProxyRequest) -> None:
        """A call cut off before any of its answer arrived: the upstream read its prompt, so the
        request's size at 4 bytes a token is counted as input (as for a cut stream that reported none)."""
        raw = request.raw_body if request.raw_body is not None else orjson.dumps(request.body or {})
        usage = Usage(input_tokens=len(raw) // 4)
        cost = self.upstreams.price(match, usage)
        decision.add_cut(match.model, usage, cost)
        self.upstreams.count_cut(match, usage, cost)  # upstream calls are counted per call, beside the records

    def abandoned(self, rule: CascadeRule, decision: Decision, conversation: str | None, turn: Turn | None) -> None:
        """A request cancelled before its answer (the client left, or the server shut down past its deadline).

        Its calls are priced already (cut ones on their input; its record counts it, :func:`tally`); an
        escalation decided before the cut still sticks; the conversation records the models it called
        (their caches were written) but learns nothing about drafting from it.
        """
        if decision.reason.startswith("escalated:"):
            self.sticky.record(conversation, escalated=True)
        if turn is not None and decision.calls:
            turn.cancelled(decision.calls)

    def escalate(
        self, decision: Decision, stage: CascadeStage, confidence: float | None, reason: str, started: float,
        detail: str = "",
    ) -> None:
        """The draft of ``stage`` does not serve the request: the verifier (or the next stage) will."""
        elapsed = (time.perf_counter() - started) * 1000
        decision.draft_ms += elapsed
        decision.draft_model = stage.model
        decision.confidence = confidence
        decision.reason = f"escalated:{reason}"
        decision.stages.append({"model": stage.model, "confidence": confidence, "accepted": False, "reason": detail or reason, "ms": elapsed})

    def draft_failed(self, decision: Decision, stage: CascadeStage, started: float, exc: ProxyError,
                     refused_betas: list[str] | None = None) -> None:
        """The draft call failed (``refused_betas``: the ``anthropic-beta`` values its upstream said it refuses)."""
        detail = f"{exc.message}: refused anthropic-beta {', '.join(refused_betas)}" if refused_betas else exc.message
        log.info("draft %s failed (%s); escalating", stage.model, detail)
        self.escalate(decision, stage, None, "draft_error", started, detail=detail)

    def accepted(self, decision: Decision, stage: CascadeStage, confidence: float, started: float) -> None:
        """The draft of ``stage`` serves the request."""
        elapsed = (time.perf_counter() - started) * 1000
        decision.stages.append({"model": stage.model, "confidence": confidence, "accepted": True, "ms": elapsed})
        decision.accepted, decision.served_model, decision.reason = True, stage.model, "accepted"

    def baseline(
        self, rule: CascadeRule, request: ProxyRequest, usage: Usage, *, verifier_cost: float | None = None,
        verifier: str | None = None, turn: Turn | None = None,
    ) -> float | None:
        """What the request would have cost sent straight to the requested model.

        In a conversation: on the requested model's cache as it would have been (:meth:`Turn.baseline`).
        Otherwise: the verifier's own cost when it served, else the requested model's price on the draft's usage.
        """
        if turn is not None:
            return turn.baseline(usage, usage.output_tokens, verifier_cost if verifier == turn.requested else None)
        if verifier is not None and verifier == request.model:
            return verifier_cost
        cost = self.registry.cost(request.model, usage) if self.registry.info(request.model) else None
        if cost is None:  # a virtual model (cascade/…): the verifier stands for it
            cost = self.registry.cost(rule.verifier_model or request.model, usage)
        return cost

    def finish(self, rule: CascadeRule, decision: Decision, conversation: str | None, *,
               turn: Turn | None = None, answer: DraftAnswer | None = None) -> None:
        """The request is decided (answered, or failed at the verifier): the conversation learns it (its record
        counts it in the rule's totals, :func:`tally`)."""
        if turn is not None and decision.calls:
            drafted = not decision.reason.startswith("skipped:")
            turn.end(decision.calls, drafted, decision.accepted, decision.calls[-1][1],
                     [c.id for c in answer.tool_calls] if answer is not None else [], decision.served_model,
                     decision.stages_tried())
        if not decision.reason.startswith("skipped:"):
            self.sticky.record(conversation, escalated=not decision.accepted)
        log.debug(  # the gateway's request line says it at info level
            "cascade %s: %s → %s (%s, confidence %s)", decision.rule, decision.requested_model, decision.served_model,
            decision.reason, "n/a" if decision.confidence is None else f"{decision.confidence:.3f}",
        )


def bucket(name: str, reason: str) -> str:
    """A low-cardinality reason for stats: the check's name and the fixed part of its reason.

    ``arguments for 'get_weather' invalid at $: …`` → ``tool_use:arguments invalid``.
    """
    if name == "logprobs":
        return "logprobs:low confidence"
    head = _REASON_CUT.split(_QUOTED.sub("", reason), maxsplit=1)[0]
    head = " ".join(head.split()).removesuffix(" for").replace(" for ", " ")
    return f"{name}:{head}" if head else name
