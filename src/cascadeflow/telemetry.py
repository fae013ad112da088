"""CostTracker: running totals of requests, tokens and cost, as ``/stats`` shows them.

Kept in memory per process (the durable per-request ledger is a separate store).
Recording is a handful of dict updates, cheap enough for every request.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from .usage import Usage

__all__ = ["CostTracker", "ModelTotals"]


@dataclass(slots=True)
class ModelTotals:
    requests: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    unpriced: int = 0

    def to_dict(self) -> dict:
        return {"requests": self.requests, "cost": round(self.cost, 10), "unpriced_requests": self.unpriced, **self.usage.to_dict()}


class CostTracker:
    """Totals per model and per route; errors counted by status."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.total_queries = 0
        self.total_cost = 0.0
        self.cascade_used_count = 0
        self.usage = Usage()
        self.by_model: dict[str, ModelTotals] = defaultdict(ModelTotals)
        self.by_route: dict[str, ModelTotals] = defaultdict(ModelTotals)
        self.errors: dict[int, int] = defaultdict(int)
        self.streams = 0

    def record(
        self,
        *,
        model: str,
        route: str,
        usage: Usage,
        cost: float | None,
        status: int = 200,
        stream: bool = False,
        cascaded: bool = False,
    ) -> None:
        """Count one request that reached an upstream (priced when ``cost`` is known)."""
        self.total_queries += 1
        self.streams += stream
        self.cascade_used_count += cascaded
        if status >= 400:
            self.errors[status] += 1
        self.usage = self.usage + usage
        for totals in (self.by_model[model], self.by_route[route]):
            totals.requests += 1
            totals.usage = totals.usage + usage
            if cost is None:
                totals.unpriced += 1
            else:
                totals.cost += cost
        if cost is not None:
            self.total_cost += cost

    def record_error(self, status: int) -> None:
        """Count a request refused before any upstream call (bad input, no route…)."""
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
            "tokens": self.usage.to_dict(),
            "by_model": {m: t.to_dict() for m, t in self.by_model.items()},
            "by_route": {r: t.to_dict() for r, t in self.by_route.items()},
            "errors": {str(s): n for s, n in sorted(self.errors.items())},
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }
