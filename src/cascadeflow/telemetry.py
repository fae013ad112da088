"""CostTracker: running totals of requests, upstream calls, tokens, cost and cascade decisions.

Kept in memory per process (the durable per-request ledger is a separate store).
Two levels are counted: *calls* (each upstream call, priced: a cascaded request makes
one or more) and *requests* (what clients sent, for the proxy library's ``forward``).
The gateway uses a tracker for the calls only: it counts its requests from each one's
record (``cascadeflow.gateway.totals``), the event the ledger and the metrics consume too.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .usage import Usage

__all__ = ["CostTracker", "ModelTotals", "RuleTotals", "MAX_MODELS", "OTHER_MODELS", "stage_skip_counts"]

#: distinct models :attr:`CostTracker.by_model` keeps; calls to any further one are pooled under
#: :data:`OTHER_MODELS` (a client chooses model names, so the totals must not grow with them)
MAX_MODELS = 256
OTHER_MODELS = "other"


def stage_skip_counts(counts: Counter) -> dict[str, dict[str, int]]:
    """``{stage model: {why: count}}`` from (model, why) counts: ``/stats`` and the ledger's overview both show this."""
    out: dict[str, dict[str, int]] = {}
    for (model, why), count in sorted(counts.items()):
        out.setdefault(model, {})[why] = count
    return out


@dataclass(slots=True)
class ModelTotals:
    requests: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    unpriced: int = 0

    def to_dict(self) -> dict:
        return {"requests": self.requests, "cost": round(self.cost, 10), "unpriced_requests": self.unpriced, **self.usage.to_dict()}


@dataclass(slots=True)
class RuleTotals:
    """What one cascade rule did."""

    requests: int = 0
    drafts_tried: int = 0
    accepted: int = 0
    escalated: Counter = field(default_factory=Counter)  # reason → count
    skipped: Counter = field(default_factory=Counter)  # policy → count
    accepted_by_stage: Counter = field(default_factory=Counter)  # model → count
    #: (stage model, why) → count: a draft stage passed over while another stage drafted the request
    skipped_stages: Counter = field(default_factory=Counter)
    #: model → drafts it made, and those that failed (escalated): each stage's own failure rate, for cache economics
    stage_drafts: Counter = field(default_factory=Counter)
    stage_failures: Counter = field(default_factory=Counter)
    cost: float = 0.0
    baseline_cost: float = 0.0
    #: time spent on drafts that were then escalated: the latency the cascade added
    added_latency_ms: float = 0.0
    unpriced: int = 0
    #: requests cancelled before their answer (client gone, shutdown); their cost is in ``cost``
    cancelled: int = 0

    def to_dict(self) -> dict:
        escalated = sum(self.escalated.values())
        return {
            "requests": self.requests,
            "drafts_tried": self.drafts_tried,
            "accepted": self.accepted,
            "escalated": escalated,
            "skipped": sum(self.skipped.values()),
            "acceptance_rate": round(self.accepted / self.requests, 4) if self.requests else 0.0,
            "escalated_by_reason": dict(self.escalated),
            "skipped_by_policy": dict(self.skipped),
            "accepted_by_stage": dict(self.accepted_by_stage),
            "skipped_stages": stage_skip_counts(self.skipped_stages),
            "drafts_by_stage": {model: {"drafts": n, "failed": self.stage_failures[model]}
                                for model, n in sorted(self.stage_drafts.items())},
            "cost": round(self.cost, 10),
            "baseline_cost": round(self.baseline_cost, 10),
            "saving": round(self.baseline_cost - self.cost, 10),
            "saving_pct": round(100 * (1 - self.cost / self.baseline_cost), 2) if self.baseline_cost else 0.0,
            "avg_added_latency_ms_when_escalated": round(self.added_latency_ms / escalated, 2) if escalated else 0.0,
            "unpriced_requests": self.unpriced,
            "cancelled": self.cancelled,
        }


class CostTracker:
    """Totals per model, per route and per cascade rule; errors counted by status."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.total_queries = 0
        self.total_calls = 0
        #: upstream calls that got no answer (an error status, a timeout, a refused connection)
        self.failed_calls = 0
        self.total_cost = 0.0
        self.cascade_used_count = 0
        self.streams = 0
        self.usage = Usage()
        self.by_model: dict[str, ModelTotals] = defaultdict(ModelTotals)
        self.by_route: dict[str, ModelTotals] = defaultdict(ModelTotals)
        self.by_rule: dict[str, RuleTotals] = defaultdict(RuleTotals)
        self.errors: dict[int, int] = defaultdict(int)
        #: streams the client left before their end (the upstream was closed at once)
        self.cancelled = 0
        #: requests the response cache applied to: hit, miss, bypass
        self.cache: dict[str, int] = defaultdict(int)
        #: requests answered by a route's fallback model
        self.fallbacks = 0

    def record_call(
        self, *, model: str, route: str, usage: Usage, cost: float | None, status: int = 200, stream: bool = False
    ) -> None:
        """Count one upstream call (priced when ``cost`` is known).

        A stream closed before its end (499) is no error here: a client that left is counted
        once, by the gateway, for its request; a draft a check stopped early is a decision.
        """
        self.total_calls += 1
        if status >= 400 and status != 499:
            self.errors[status] += 1
        self.usage = self.usage + usage
        by_model = self.by_model.get(model)
        if by_model is None:
            by_model = self.by_model[model if len(self.by_model) < MAX_MODELS else OTHER_MODELS]
        for totals in (by_model, self.by_route[route]):
            totals.requests += 1
            totals.usage = totals.usage + usage
            if cost is None:
                totals.unpriced += 1
            else:
                totals.cost += cost
        if cost is not None:
            self.total_cost += cost

    def record_failed_call(self) -> None:
        """Count an upstream call that failed without an answer: billed nothing, but made (a retry is
        another call). The request's error, if it reaches the client, is counted by the gateway."""
        self.total_calls += 1
        self.failed_calls += 1

    def record_request(self, *, stream: bool = False, draft_accepted: bool = False) -> None:
        """Count one client request that reached an upstream."""
        self.total_queries += 1
        self.streams += stream
        self.cascade_used_count += draft_accepted

    def rule(self, name: str) -> RuleTotals:
        return self.by_rule[name]

    def record_error(self, status: int) -> None:
        """Count a request that ended in an error: refused (bad input, no route…), failed, or left by its client (499)."""
        self.errors[status] += 1

    def summary(self) -> dict:
        """The ``/stats`` document (the routing proxy guide's fields, then details)."""
        queries = self.total_queries
        return {
            "total_queries": queries,
            "total_cost": round(self.total_cost, 10),
            "avg_cost_per_query": round(self.total_cost / queries, 10) if queries else 0.0,
            "cascade_used_count": self.cascade_used_count,
            "cascade_usage_pct": round(100.0 * self.cascade_used_count / queries, 2) if queries else 0.0,
            "models_used": {m: t.requests for m, t in self.by_model.items()},
            "streaming_queries": self.streams,
            "upstream_calls": self.total_calls,
            "upstream_failed_calls": self.failed_calls,
            "tokens": self.usage.to_dict(),
            "by_model": {m: t.to_dict() for m, t in self.by_model.items()},
            "by_route": {r: t.to_dict() for r, t in self.by_route.items()},
            "cascade": {name: t.to_dict() for name, t in self.by_rule.items()},
            "errors": {str(s): n for s, n in sorted(self.errors.items())},
            "cancelled_streams": self.cancelled,
            "fallbacks": self.fallbacks,
            "cache": {result: self.cache.get(result, 0) for result in ("hit", "miss", "bypass")},
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }
