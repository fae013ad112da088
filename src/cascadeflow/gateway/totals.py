"""``/stats``' running totals of this process, counted from the requests' records.

Every figure about requests (how many, their cost and tokens, errors, cancelled streams,
fallbacks, the cache, each cascade rule's decisions) is derived here from the one
:class:`~cascadeflow.store.RequestRecord` each request ends in, the same event the ledger
writes and the metrics, log line and trace span derive from: the totals cannot drift apart.
What no request record can carry, upstream *calls* (a request makes one or more, retries and
failed attempts included), is counted by the proxy's :class:`~cascadeflow.telemetry.CostTracker`
as each call is made; :meth:`RequestTotals.summary` adds those figures.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

from ..cascade.accounting import tally
from ..telemetry import RuleTotals
from ..usage import Usage

if TYPE_CHECKING:
    from ..store import RequestRecord
    from ..telemetry import CostTracker

__all__ = ["RequestTotals"]


class RequestTotals:
    """Totals of the requests this process finished, one :meth:`observe` per request."""

    def __init__(self) -> None:
        self.started_at = time.time()
        #: requests that reached an upstream (a cascaded one once), and of them: streams, accepted drafts
        self.queries = 0
        self.streams = 0
        self.drafts_accepted = 0
        self.cost = 0.0
        self.usage = Usage()
        self.by_rule: dict[str, RuleTotals] = defaultdict(RuleTotals)
        self.errors: dict[int, int] = defaultdict(int)
        self.cancelled_streams = 0
        self.fallbacks = 0
        self.cache: dict[str, int] = defaultdict(int)

    def rule(self, name: str) -> RuleTotals:
        return self.by_rule[name]

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request (a few additions: it runs once per request)."""
        if record.route is not None or record.decision:  # it reached an upstream (refusals and cache hits did not)
            self.queries += 1
            self.streams += record.stream
            self.drafts_accepted += bool(record.accepted)
        if record.cost is not None:
            self.cost += record.cost
        if record.input_tokens or record.output_tokens or record.cache_write_tokens or record.cache_read_tokens:
            self.usage = self.usage + Usage(record.input_tokens, record.output_tokens, record.cache_write_tokens,
                                            record.cache_read_tokens)
        if record.status >= 400:
            self.errors[record.status] += 1
        if record.cancelled and record.stream:
            self.cancelled_streams += 1
        if record.fallback_model:
            self.fallbacks += 1
        if record.cache is not None:
            self.cache[record.cache] += 1
        if record.rule is not None and record.decision:  # the cascade decided it (a cache hit did not)
            tally(self.by_rule[record.rule], record)

    def summary(self, calls: CostTracker) -> dict:
        """The ``/stats`` document: these totals, with the upstream calls' figures from ``calls``."""
        queries = self.queries
        return {
            "total_queries": queries,
            "total_cost": round(self.cost, 10),
            "avg_cost_per_query": round(self.cost / queries, 10) if queries else 0.0,
            "cascade_used_count": self.drafts_accepted,
            "cascade_usage_pct": round(100.0 * self.drafts_accepted / queries, 2) if queries else 0.0,
            "models_used": {m: t.requests for m, t in calls.by_model.items()},
            "streaming_queries": self.streams,
            "upstream_calls": calls.total_calls,
            "upstream_failed_calls": calls.failed_calls,
            "tokens": self.usage.to_dict(),
            "by_model": {m: t.to_dict() for m, t in calls.by_model.items()},
            "by_route": {r: t.to_dict() for r, t in calls.by_route.items()},
            "cascade": {name: t.to_dict() for name, t in self.by_rule.items()},
            "errors": {str(s): n for s, n in sorted(self.errors.items())},
            "cancelled_streams": self.cancelled_streams,
            "fallbacks": self.fallbacks,
            "cache": {result: self.cache.get(result, 0) for result in ("hit", "miss", "bypass")},
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }
