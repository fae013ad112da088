"""``GET /metrics``: Prometheus text, read from the gateway's own state at scrape time.

A collector per gateway (no process-global registry), so nothing is counted twice and
several apps may live in one process. These are per-process figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["GatewayCollector", "metrics_registry", "metrics"]

_STATES = ("closed", "open", "half_open")


class GatewayCollector:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self):  # type: ignore[no-untyped-def]
        gateway = self._gateway
        handler, tracker = gateway.service.handler, gateway.tracker
        breaker = GaugeMetricFamily("cascadeflow_upstream_breaker_state", "1 for the breaker's current state, per route",
                                    labels=["route", "state"])
        for route, snapshot in handler.breakers().items():
            for state in _STATES:
                breaker.add_metric([route, state], 1.0 if snapshot["state"] == state else 0.0)
        yield breaker
        yield CounterMetricFamily("cascadeflow_upstream_retries", "Upstream calls retried", value=handler.retries)
        yield CounterMetricFamily("cascadeflow_requests", "Client requests that reached an upstream", value=tracker.total_queries)
        yield CounterMetricFamily("cascadeflow_cancelled_streams", "Streams the client left before the end", value=tracker.cancelled)
        yield CounterMetricFamily("cascadeflow_fallbacks", "Requests answered by a fallback model", value=tracker.fallbacks)
        yield GaugeMetricFamily("cascadeflow_active_streams", "Streaming responses in progress", value=gateway.active_streams)
        cost = CounterMetricFamily("cascadeflow_cost_usd", "USD spent upstream, per model", labels=["model"])
        for model, totals in tracker.by_model.items():
            cost.add_metric([model], totals.cost)
        yield cost
        errors = CounterMetricFamily("cascadeflow_errors", "Error answers by HTTP status", labels=["status"])
        for status, count in tracker.errors.items():
            errors.add_metric([str(status)], count)
        yield errors


def metrics_registry(gateway: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway))
    return registry


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(generate_latest(gateway.metrics), media_type=CONTENT_TYPE_LATEST)
