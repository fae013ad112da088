"""What the gateway tells about each request: its metrics, its log line, its trace span.

:meth:`Observer.serve` wraps each API request (in-flight gauge, request id for the logs, the
request's span, current while it is answered, ended after the answer's last byte);
:meth:`Observer.finish` derives everything else from the request's ledger entry, where
every request ends once.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from ..tracing import Tracing
from .logs import REQUEST_ID, RequestLog
from .metrics import GatewayMetrics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..store import LedgerEntry
    from .app import Gateway

__all__ = ["Observer", "span_attributes"]

log = logging.getLogger("cascadeflow.gateway")

#: the span of the request being answered (set only while tracing is on)
_SPAN: ContextVar[Any] = ContextVar("cascadeflow_request_span", default=None)


class Observer:
    def __init__(self, gateway: Gateway, tracer_provider: Any = None) -> None:
        self._gateway = gateway
        self.metrics = GatewayMetrics(gateway)
        self.log = RequestLog()
        self.tracing = Tracing.from_config(gateway.config.telemetry, tracer_provider)

    def finish(self, entry: LedgerEntry) -> None:
        try:
            self.metrics.observe(entry)
            self.log.write(entry)
            if self.tracing.enabled:
                span = _SPAN.get()
                if span is not None:
                    self.tracing.annotate_request(span, span_attributes(entry), entry.status)
        except Exception:  # telling about a request must never fail it
            log.exception("could not record request %s in the metrics, log or trace", entry.request_id)

    async def serve(self, endpoint: Callable[[Request], Awaitable[Any]], scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        """Answer one API request under watch."""
        metrics = self.metrics
        metrics.in_flight.inc()
        requests, task = self._gateway.requests, asyncio.current_task()
        requests.add(task)  # type: ignore[arg-type]
        id_token = token = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                id_token = REQUEST_ID.set(value.decode("latin-1")[:64])
                break
        tracing = self.tracing
        if tracing.enabled:
            span, context = tracing.begin_request(scope["method"], scope["path"], scope["headers"])
            token = _SPAN.set(span)
        error: BaseException | None = None
        try:
            response = await endpoint(Request(scope, receive))
            streams = self._gateway.active_streams
            if streams:  # a stream may have opened (the count going down is set when a request ends)
                metrics.active_streams.set(streams)
            await response(scope, receive, send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            requests.discard(task)  # type: ignore[arg-type]
            metrics.in_flight.dec()
            if id_token is not None:
                REQUEST_ID.reset(id_token)
            if token is not None:
                _SPAN.reset(token)
                tracing.end_request(span, context, error)

    async def aclose(self) -> None:
        self.metrics.close()
        await asyncio.to_thread(self.tracing.shutdown)


def span_attributes(entry: LedgerEntry) -> dict:
    """The request span's attributes, from its ledger entry (OpenTelemetry takes no None values)."""
    attributes = {
        "cascadeflow.request_id": entry.request_id,
        "cascadeflow.plan": entry.plan,
        "gen_ai.request.model": entry.requested_model,
        "gen_ai.response.model": entry.served_model,
        "gen_ai.usage.input_tokens": entry.input_tokens + entry.cache_read_tokens + entry.cache_write_tokens,
        "gen_ai.usage.output_tokens": entry.output_tokens,
        "cascadeflow.route": entry.route,
        "cascadeflow.rule": entry.rule,
        "cascadeflow.draft_model": entry.draft_model,
        "cascadeflow.decision": entry.decision,
        "cascadeflow.accepted": entry.accepted,
        "cascadeflow.confidence": entry.confidence,
        "cascadeflow.cost_usd": entry.cost,
        "cascadeflow.baseline_cost_usd": entry.baseline_cost,
        "cascadeflow.fallback_model": entry.fallback_model,
        "cascadeflow.key_id": entry.key_id,
        "error.type": entry.error_type,
        "cascadeflow.cancelled": entry.cancelled or None,
    }
    return {k: v for k, v in attributes.items() if v is not None}
