"""The cascade's bookkeeping: each rule's totals, what a request would have cost, calls cut off midway.

Every outcome of a request (accepted, escalated, skipped, cancelled) is counted here, once, so the
rule's totals and the cost and baseline each decision reports agree.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import orjson

from ..usage import Usage
from .decision import Decision
from .policies import StickyEscalations

if TYPE_CHECKING:
    from ..config import CascadeRule, CascadeStage
    from ..errors import ProxyError
    from ..proxy import ProxyRequest
    from ..telemetry import CostTracker
    from .answer import DraftAnswer
    from .port import Target, UpstreamPort
    from .session import Turn

__all__ = ["Accounts", "bucket"]

log = logging.getLogger("cascadeflow.cascade")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_REASON_CUT = re.compile(r" at |[(:=]")


class Accounts:
    """Prices and counts what the engine decided: the rule's totals, sticky escalations, each decision's baseline."""

    def __init__(self, upstreams: UpstreamPort, tracker: CostTracker) -> None:
        self.upstreams = upstreams
        self.registry = upstreams.registry
        self.tracker = tracker
        self.sticky = StickyEscalations()

    def begin(self, rule: CascadeRule, request: ProxyRequest) -> Decision:
        """A new decision for a request the rule matched (counted as one of the rule's requests)."""
        self.tracker.rule(rule.name or "").requests += 1
        return Decision(rule=rule.name or "", requested_model=request.model)

    def cut(self, decision: Decision, match: Target, request: ProxyRequest) -> None:
        """A call cut off before any of its answer arrived: the upstream read its prompt, so the
        request's size at 4 bytes a token is counted as input (as for a cut stream that reported none)."""
        raw = request.raw_body if request.raw_body is not None else orjson.dumps(request.body or {})
        usage = Usage(input_tokens=len(raw) // 4)
        cost = self.upstreams.price(match, usage)
        decision.add_cut(match.model, usage, cost)
        self.tracker.record_call(model=match.model, route=match.route, usage=usage, cost=cost, status=499)

    def abandoned(self, rule: CascadeRule, decision: Decision, conversation: str | None, turn: Turn | None, *,
                  stream: bool) -> None:
        """A request cancelled before its answer (the client left, or the server shut down past its deadline).

        Its calls are priced already (cut ones on their input); the rule's totals count it as ``cancelled``
        with no saving (its baseline is its cost, as the ledger counts a row without one); an escalation
        decided before the cut still counts as one; the conversation records the models it called (their
        caches were written) but learns nothing about drafting from it.
        """
        totals = self.tracker.rule(decision.rule)
        totals.cancelled += 1
        if decision.reason.startswith("escalated:"):
            totals.escalated[decision.reason.removeprefix("escalated:")] += 1
            totals.added_latency_ms += decision.draft_ms
            self.sticky.record(conversation, escalated=True)
        if decision.cost is None:
            totals.unpriced += 1
        else:
            totals.cost += decision.cost
            totals.baseline_cost += decision.cost if decision.baseline_cost is None else decision.baseline_cost
        if turn is not None and decision.calls:
            turn.cancelled(decision.calls)
        if decision.calls:  # it reached an upstream
            self.tracker.record_request(stream=stream)

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
        self.tracker.rule(decision.rule).drafts_tried += 1

    def draft_failed(self, decision: Decision, stage: CascadeStage, started: float, exc: ProxyError) -> None:
        log.info("draft %s failed (%s); escalating", stage.model, exc.message)
        self.escalate(decision, stage, None, "draft_error", started, detail=exc.message)

    def accepted(self, decision: Decision, stage: CascadeStage, confidence: float, started: float) -> None:
        """The draft of ``stage`` serves the request."""
        elapsed = (time.perf_counter() - started) * 1000
        decision.stages.append({"model": stage.model, "confidence": confidence, "accepted": True, "ms": elapsed})
        decision.accepted, decision.served_model, decision.reason = True, stage.model, "accepted"
        totals = self.tracker.rule(decision.rule)
        totals.drafts_tried += 1
        totals.accepted += 1
        totals.accepted_by_stage[stage.model] += 1

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

    def finish(self, rule: CascadeRule, decision: Decision, conversation: str | None, *, stream: bool,
               turn: Turn | None = None, answer: DraftAnswer | None = None) -> None:
        """The request is decided (answered, or failed at the verifier): the conversation and the totals learn it."""
        if turn is not None and decision.calls:
            drafted = not decision.reason.startswith("skipped:")
            turn.end(decision.calls, drafted, decision.accepted, decision.calls[-1][1],
                     [c.id for c in answer.tool_calls] if answer is not None else [], decision.served_model)
        totals = self.tracker.rule(decision.rule)
        if decision.reason.startswith("escalated:"):
            totals.escalated[decision.reason.removeprefix("escalated:")] += 1
            totals.added_latency_ms += decision.draft_ms
        if decision.cost is None or decision.baseline_cost is None:
            totals.unpriced += 1
        else:
            totals.cost += decision.cost
            totals.baseline_cost += decision.baseline_cost
        if not decision.reason.startswith("skipped:"):
            self.sticky.record(conversation, escalated=not decision.accepted)
        self.tracker.record_request(stream=stream, draft_accepted=decision.accepted)
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
