"""``GET /metrics``: Prometheus metrics of what the gateway did, right across worker processes.

Per-request figures derive from the request's ledger entry in :meth:`GatewayMetrics.observe`
(called from ``Gateway.finish``, where every request ends once). With one process the values
live in memory, in a registry per gateway (several gateways may share a process, as in the
tests). With several workers the server points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before they start (:func:`multiprocess_dir`): each worker writes its values to
memory-mapped files there, and a scrape of any worker sums the files of all (prometheus_client's
multiprocess mode). Live gauges of workers that have gone are dropped at the next scrape.

Labels stay bounded: routes and rules come from the config, models are the ones the gateway
can serve (any other requested name is counted as ``other``; a skipped stage's model is one of its
rule's stages), reasons come from fixed sets, and keys and users never are labels.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from ..store.ledger import stage_skips
from .admin_guard import admin_refusal

if TYPE_CHECKING:
    from ..store import LedgerEntry
    from .app import Gateway

__all__ = ["GatewayMetrics", "metrics", "multiprocess_dir", "mark_dead_workers"]

_STATES = ("closed", "open", "half_open")
#: statuses a request is refused with by the gateway itself (keys, limits, budgets, the limit store)
_REFUSALS = frozenset({401, 402, 403, 429, 503})
_TOKEN_KINDS = ("input", "output", "cache_write", "cache_read")
_MAX_MODELS = 500  # distinct model label values; beyond, ``other`` (a safety net)
_MAX_CHILDREN = 4096  # cached label sets; the cache is cleared when it grows past this
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_CONFIDENCE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
_DEAD_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    """The multiprocess directory when prometheus_client writes values to files, else None.

    prometheus_client picks file-backed values at import time, from the environment: the
    directory counts only if it was set by then.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and values.ValueClass is not values.MutexValue else None


def mark_dead_workers(path: str) -> None:
    """Drop the live gauges (in-flight streams, breaker states…) of processes that have exited."""
    for file in glob.glob(os.path.join(path, "gauge_live*.db")):
        found = _DEAD_FILE.search(os.path.basename(file))
        if found and not _alive(int(found.group(1))):
            try:
                os.remove(file)
            except FileNotFoundError:
                pass  # another worker got there first


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Children:
    """The metric children of one kind of request: resolved once, the rarer ones when first needed."""

    __slots__ = ("model", "rule", "plan", "stream", "requests", "duration", "ttfb", "overhead", "tokens", "cost",
                 "baseline", "saving", "overspend", "unpriced", "decision", "confidence", "fallback", "refusal")

    model: str
    rule: str
    plan: str
    stream: str
    requests: Counter
    duration: Histogram
    ttfb: Histogram | None
    overhead: Histogram | None
    tokens: list[Counter | None]
    cost: Counter
    baseline: Counter
    saving: Counter | None
    overspend: Counter | None
    unpriced: Counter | None
    decision: Counter | None
    confidence: Histogram | None
    fallback: Counter | None
    refusal: Counter | None


class GatewayMetrics:
    """The gateway's metrics, and the bookkeeping that keeps them cheap to update."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.multiprocess_dir = multiprocess_dir()
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("cascadeflow_requests", "Client requests answered, by outcome",
                                ["endpoint", "dialect", "plan", "route", "model", "served_model", "status"], registry=registry)
        self.duration = Histogram("cascadeflow_request_duration_seconds", "Time from the request to its answer's last byte",
                                  ["model", "plan", "stream"], buckets=_LATENCY, registry=registry)
        self.ttfb = Histogram("cascadeflow_time_to_first_byte_seconds", "Time from the request to the upstream's first byte",
                              ["model", "plan", "stream"], buckets=_LATENCY, registry=registry)
        self.overhead = Histogram("cascadeflow_gateway_overhead_seconds",
                                  "A request's time not spent waiting on upstreams (the gateway's own cost)",
                                  ["plan", "stream"], buckets=_OVERHEAD, registry=registry)
        self.decisions = Counter("cascadeflow_cascade_decisions", "Cascade outcomes: accepted, escalated or skipped, and why",
                                 ["rule", "decision", "reason"], registry=registry)
        self.skipped_stages = Counter("cascadeflow_cascade_skipped_stages", "Draft stages passed over while another "
                                      "stage drafted the request, by stage model and why", ["rule", "model", "reason"],
                                      registry=registry)
        self.confidence = Histogram("cascadeflow_draft_confidence", "Confidence of the drafts judged, per rule",
                                    ["rule"], buckets=_CONFIDENCE, registry=registry)
        money = ["model", "rule"]
        self.cost = Counter("cascadeflow_cost_usd", "USD spent upstream (drafts included)", money, registry=registry)
        self.baseline = Counter("cascadeflow_baseline_cost_usd", "USD the same requests would have cost sent straight "
                                "to the requested model", money, registry=registry)
        self.saving = Counter("cascadeflow_saving_usd", "USD saved, on the requests that cost less than their baseline",
                              money, registry=registry)
        self.overspend = Counter("cascadeflow_overspend_usd", "USD lost, on the requests that cost more than their "
                                 "baseline (escalated drafts); net saving = saving - overspend", money, registry=registry)
        self.unpriced = Counter("cascadeflow_unpriced_requests", "Requests whose cost is unknown (no price for a model)",
                                ["model"], registry=registry)
        self.tokens = Counter("cascadeflow_tokens", "Tokens of all upstream calls, by kind", ["model", "kind"], registry=registry)
        self.fallbacks = Counter("cascadeflow_fallbacks", "Requests answered by a route's fallback model",
                                 ["route", "fallback_model"], registry=registry)
        self.refusals = Counter("cascadeflow_refusals", "Requests the gateway refused itself: keys (authentication, "
                                "permission), rate limits, budgets, an unreachable limit store", ["reason"], registry=registry)
        self.cache = Counter("cascadeflow_cache_lookups", "Requests the response cache applied to, by result "
                             "(hit: answered from it at no cost; miss; bypass: not read)", ["result"], registry=registry)
        self.upstream_errors = Counter("cascadeflow_upstream_errors", "Failed upstream attempts (retried ones included), "
                                       "by route and what failed", ["route", "kind"], registry=registry)
        self.retries = Counter("cascadeflow_upstream_retries", "Upstream calls retried", ["route"], registry=registry)
        self.breaker = Gauge("cascadeflow_upstream_breaker_state", "1 for the breaker's state, per route (with "
                             "several workers: 1 if any worker's breaker is in it)", ["route", "state"],
                             multiprocess_mode="livemax", registry=registry)
        self.active_streams = Gauge("cascadeflow_active_streams", "Streaming responses in progress",
                                    multiprocess_mode="livesum", registry=registry)
        self.in_flight = Gauge("cascadeflow_requests_in_flight", "API requests being answered (streams included)",
                               multiprocess_mode="livesum", registry=registry)
        self.ledger_written = Counter("cascadeflow_ledger_rows_written", "Ledger rows written to the database",
                                      registry=registry)
        self.ledger_dropped = Counter("cascadeflow_ledger_rows_dropped", "Ledger rows lost: their batch could not be "
                                      "written (the database unreachable or refusing it), or the queue was full "
                                      "(the database not keeping up)", registry=registry)
        self.store_errors = Counter("cascadeflow_limit_store_errors", "Admissions or settlements the limit store "
                                    "(Redis) failed to answer", registry=registry)
        self.workers = Gauge("cascadeflow_workers", "Gateway worker processes alive", multiprocess_mode="livesum",
                             registry=registry)
        self.workers.set(1)
        self._children: dict[tuple, _Children] = {}
        self._models: set[str] = set()
        self._retries_seen: dict[str, int] = {}
        self._failures_seen: dict[tuple[str, str], int] = {}
        self._upstream_seen = (0, 0)  # (retries, failures) of the handler at the last sync
        self._stores_seen = (0, 0, 0)  # (ledger written, ledger dropped, limit store errors) at the last sync
        self._breakers: dict[str, str] = {}
        self._breakers_calm = True  # every breaker closed at the last look

    # -- per request -----------------------------------------------------------------

    def observe(self, entry: LedgerEntry) -> None:
        """Count one finished request (the hot path: a dict look-up, then a few increments)."""
        key = (entry.endpoint, entry.dialect, entry.plan, entry.route, entry.requested_model, entry.served_model,
               entry.status, entry.stream, entry.rule, entry.decision, entry.fallback_model, entry.error_type)
        c = self._children.get(key)
        if c is None:
            c = self._resolve(entry, key)
        c.requests.inc()
        latency = entry.latency_ms
        if latency is not None:
            c.duration.observe(latency / 1000)
            if entry.upstream_ms is not None:
                if c.overhead is None:
                    c.overhead = self.overhead.labels(c.plan, c.stream)
                c.overhead.observe(max(latency - entry.upstream_ms, 0.0) / 1000)
        if entry.ttfb_ms is not None:
            if c.ttfb is None:
                c.ttfb = self.ttfb.labels(c.model, c.plan, c.stream)
            c.ttfb.observe(entry.ttfb_ms / 1000)
        tokens = c.tokens
        for i, count in enumerate((entry.input_tokens, entry.output_tokens, entry.cache_write_tokens,
                                   entry.cache_read_tokens)):
            if count:
                counter = tokens[i]
                if counter is None:
                    counter = tokens[i] = self.tokens.labels(c.model, _TOKEN_KINDS[i])
                counter.inc(count)
        cost, baseline = entry.cost, entry.baseline_cost
        if cost is not None:
            if baseline is None:  # a call cut off before its answer (no baseline): its cost, as the ledger counts it
                baseline = cost
            c.cost.inc(cost)
            c.baseline.inc(baseline)
            if baseline > cost:
                if c.saving is None:
                    c.saving = self.saving.labels(c.model, c.rule)
                c.saving.inc(baseline - cost)
            elif cost > baseline:
                if c.overspend is None:
                    c.overspend = self.overspend.labels(c.model, c.rule)
                c.overspend.inc(cost - baseline)
        elif (entry.route is not None or entry.rule is not None) and entry.error_type is None:
            # answered by an upstream, yet not priced: a price is missing (an upstream's error is billed nothing)
            if c.unpriced is None:
                c.unpriced = self.unpriced.labels(c.model)
            c.unpriced.inc()
        if c.decision is not None:
            c.decision.inc()
            if entry.confidence is not None and c.confidence is not None:  # set with c.decision
                c.confidence.observe(entry.confidence)
        if entry.skipped_stages and entry.rule is not None:  # rare: a multi-stage rule passed a stage over
            for model, why in stage_skips(entry.skipped_stages):
                self.skipped_stages.labels(entry.rule, model, why).inc()
        if c.fallback is not None:
            c.fallback.inc()
        if c.refusal is not None:
            c.refusal.inc()
        if entry.cache is not None:
            self.cache.labels(entry.cache).inc()
        self.sync_upstream()
        self.sync_stores()  # with several workers, each copies its own counts as it serves
        self.active_streams.set(self._gateway.active_streams)

    def sync_stores(self) -> None:
        """Copy the ledger's and the limit store's counts (three integers compared when nothing moved)."""
        gateway = self._gateway
        seen = (gateway.ledger.written, gateway.ledger.dropped, gateway.limits.store_errors)
        last = self._stores_seen
        if seen != last:
            self._stores_seen = seen
            for counter, now, before in zip((self.ledger_written, self.ledger_dropped, self.store_errors), seen, last):
                if now > before:
                    counter.inc(now - before)

    def _resolve(self, entry: LedgerEntry, key: tuple) -> _Children:
        if len(self._children) >= _MAX_CHILDREN:
            self._children.clear()
        c = _Children()
        c.model = model = self._model_label(entry)
        c.plan, c.stream, c.rule = entry.plan, "true" if entry.stream else "false", entry.rule or ""
        served = self._known_label(entry.served_model, entry.status) if entry.served_model else ""
        c.requests = self.requests.labels(entry.endpoint, entry.dialect, c.plan, entry.route or "", model,
                                          served, str(entry.status))
        c.duration = self.duration.labels(model, c.plan, c.stream)
        c.cost, c.baseline = self.cost.labels(model, c.rule), self.baseline.labels(model, c.rule)
        c.ttfb = c.overhead = c.saving = c.overspend = c.unpriced = None
        c.tokens = [None] * len(_TOKEN_KINDS)
        c.decision = c.confidence = c.fallback = c.refusal = None
        if entry.rule is not None and entry.decision:
            decision, _, reason = entry.decision.partition(":")
            c.decision = self.decisions.labels(entry.rule, decision, reason)
            c.confidence = self.confidence.labels(entry.rule)
        if entry.fallback_model:
            c.fallback = self.fallbacks.labels(entry.route or "", entry.fallback_model)
        if entry.status in _REFUSALS and entry.route is None and entry.error_type:
            c.refusal = self.refusals.labels(entry.error_type)
        self._children[key] = c
        return c

    def _model_label(self, entry: LedgerEntry) -> str:
        """The requested model, if the gateway serves it; ``other`` for names a client made up."""
        return self._known_label(entry.requested_model, entry.status)

    def _known_label(self, model: str, status: int) -> str:
        """``model`` as a label value: itself while fewer than 500 models are labelled, else ``other``."""
        if model in self._models:
            return model
        gateway = self._gateway
        known = status < 400 or model in gateway.virtual_models or gateway.registry.info(model) is not None
        if not known or len(self._models) >= _MAX_MODELS:
            return "other"
        self._models.add(model)
        return model

    # -- the upstreams (counted by the proxy handler, copied here when they move) -----

    def sync_upstream(self) -> None:
        """Copy the handler's retry and failure counts, and breaker states, when they changed."""
        handler = self._gateway.service.handler
        seen = (handler.retries, handler.failures.total())
        if seen != self._upstream_seen:
            self._upstream_seen = seen
            _copy_deltas(handler.retried, self._retries_seen, lambda route: self.retries.labels(route))
            _copy_deltas(handler.failures, self._failures_seen, lambda key: self.upstream_errors.labels(*key))
            self.sync_breakers()
        elif not self._breakers_calm:
            self.sync_breakers()

    def sync_breakers(self) -> None:
        calm = True
        for route, snapshot in self._gateway.service.handler.breakers().items():
            state = snapshot["state"]
            calm = calm and state == "closed"
            if self._breakers.get(route) != state:
                self._breakers[route] = state
                for name in _STATES:
                    self.breaker.labels(route, name).set(1.0 if name == state else 0.0)
        self._breakers_calm = calm

    # -- the scrape ------------------------------------------------------------------

    async def exposition(self) -> bytes:
        """The Prometheus text: this gateway's registry, or all workers' files in multiprocess mode."""
        self.sync_upstream()
        self.sync_stores()  # ledger rows are written after their request ended: a scrape picks them up
        self.sync_breakers()  # an open breaker turns half-open with time alone
        self.active_streams.set(self._gateway.active_streams)
        path = self.multiprocess_dir
        if path is None:
            return generate_latest(_WithoutCreated(self.registry))
        return await asyncio.to_thread(_collect_files, path)

    def close(self) -> None:
        """This worker is stopping: its live gauges (streams, breakers, itself) no longer count."""
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)


class _WithoutCreated:
    """A registry's metrics less their ``*_created`` samples (noise to most scrapers; none in multiprocess mode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self):  # type: ignore[no-untyped-def]
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


def _copy_deltas(source: dict, seen: dict, child) -> None:  # type: ignore[no-untyped-def]
    for key, count in source.items():
        delta = count - seen.get(key, 0)
        if delta > 0:
            child(key).inc(delta)
            seen[key] = count


def _collect_files(path: str) -> bytes:
    from prometheus_client import multiprocess

    mark_dead_workers(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return generate_latest(registry)


async def metrics(request: Request) -> Response:
    """Open while auth is off; with auth on, for the master key's holder (a Prometheus ``authorization``)."""
    if (refusal := admin_refusal(request, read_only=True)) is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    return Response(await gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
