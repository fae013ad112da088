"""Ledger entries for the requests the gateway answered: one per request, whatever happened."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import CascadeflowError
from ..store import LedgerEntry
from .auth import ANONYMOUS

if TYPE_CHECKING:
    from ..cache import CacheTicket
    from ..cascade import Decision
    from ..proxy import ProxyResult, ProxyStream
    from ..proxy.router import RouteMatch
    from ..store.counters import Lease
    from .auth import Identity

__all__ = ["RequestInfo", "pass_through_entry", "cascade_entry", "error_entry", "cache_hit_entry", "shut_down"]


class RequestInfo:
    """What every entry of one request shares (who, where, when it started)."""

    __slots__ = ("endpoint", "dialect", "model", "stream", "started", "request_id", "identity", "lease", "cache", "done")

    def __init__(self, endpoint: str, dialect: str, model: str, stream: bool, request_id: str) -> None:
        self.endpoint, self.dialect, self.model, self.stream = endpoint, dialect, model, stream
        self.started = time.perf_counter()
        self.request_id = request_id
        self.identity: Identity = ANONYMOUS
        #: the request's hold on limits and budgets, settled when it ends
        self.lease: Lease | None = None
        #: the response cache's part in this request (None: the cache does not apply to it)
        self.cache: CacheTicket | None = None
        #: its ledger entry is made (each request has exactly one)
        self.done = False

    def entry(self, **fields: object) -> LedgerEntry:
        identity = self.identity
        return LedgerEntry(
            endpoint=self.endpoint, dialect=self.dialect, requested_model=self.model, stream=self.stream,
            request_id=self.request_id, key_id=identity.key_id, user_id=identity.user_id, team=identity.team,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            cache=self.cache.status if self.cache is not None else None, **fields,  # type: ignore[arg-type]
        )


def pass_through_entry(info: RequestInfo, match: RouteMatch, answer: ProxyResult | ProxyStream,
                       cancelled: bool = False) -> LedgerEntry:
    error = getattr(answer, "error", None)
    status = 499 if cancelled else 502 if error else answer.status
    usage = answer.usage
    return info.entry(
        plan="pass_through", status=status, served_model=match.model, route=match.route.name,
        fallback_model=answer.headers.get("x-cascadeflow-fallback-model"),
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cache_write_tokens=usage.cache_write_tokens, cache_read_tokens=usage.cache_read_tokens,
        cost=answer.cost, baseline_cost=answer.cost,
        ttfb_ms=getattr(answer, "first_byte_ms", None) or answer.latency_ms, upstream_ms=answer.latency_ms,
        cancelled=cancelled, error_type="upstream_stream" if error and not cancelled else None, detail=error,
    )


def cascade_entry(info: RequestInfo, decision: Decision, status: int, cancelled: bool = False) -> LedgerEntry:
    usage, signal = decision.usage, decision.session_signal
    return info.entry(
        plan="cascade", status=499 if cancelled else status, rule=decision.rule, draft_model=decision.draft_model,
        decision=decision.reason, accepted=decision.accepted, confidence=decision.confidence,
        served_model=decision.served_model, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cache_write_tokens=usage.cache_write_tokens, cache_read_tokens=usage.cache_read_tokens,
        cost=decision.cost, baseline_cost=decision.baseline_cost, cancelled=cancelled, detail=decision.detail(),
        upstream_ms=decision.upstream_ms or None, drafts=len(decision.stages), draft_ms=decision.draft_ms,
        session_signal=signal and signal.kind, signal_request_id=signal and signal.request_id or None,
        skipped_stages=decision.skipped_stages_text() or None, stages_tried=tuple(decision.stages_tried()),
    )


def error_entry(info: RequestInfo, exc: CascadeflowError, plan: str) -> LedgerEntry:
    if exc.decision is not None:  # a cascade whose verifier failed: its drafts were made, and paid for
        entry = cascade_entry(info, exc.decision, exc.status)
        entry.error_type, entry.detail = exc.kind.name.lower(), exc.message[:500]
        entry.route = getattr(exc, "route", None)
        return entry
    return info.entry(plan=plan, status=exc.status, error_type=exc.kind.name.lower(), detail=exc.message[:500],
                      route=getattr(exc, "route", None))  # upstream errors name their route; refusals have none


def cache_hit_entry(info: RequestInfo, rule: str | None, served_model: str | None, baseline_cost: float | None,
                    match: str = "exact") -> LedgerEntry:
    """A request answered from the response cache: no upstream call, no tokens, priced at zero.

    Its baseline is what the stored answer would have cost on the requested model, so the
    saving the cache makes is counted like the cascade's. ``detail`` says how it matched.
    """
    return info.entry(plan="cascade" if rule is not None else "pass_through", status=200, rule=rule,
                      served_model=served_model, cost=0.0, baseline_cost=baseline_cost, upstream_ms=0.0,
                      detail=f"cache {match}")


def shut_down(entry: LedgerEntry) -> LedgerEntry:
    """``entry`` as the row of a request the server's shutdown deadline cut short: 503, cancelled, what it used."""
    entry.status, entry.cancelled, entry.error_type = 503, True, "unavailable"
    entry.detail = "the gateway shut down before the answer ended" + (f" ({entry.detail})" if entry.detail else "")
    return entry
