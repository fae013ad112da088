"""Optional OpenTelemetry traces: one span per request, the cascade's calls as its children.

::

    POST /v1/messages                 (server span; ends when the answer's last byte is sent)
    ├── cascadeflow.draft             (client span per draft call: model, tokens, cost)
    ├── cascadeflow.checks            (the draft's scoring: confidence, accepted)
    │   └── cascadeflow.self_verify / cascadeflow.sample   (calls the checks make, if any)
    └── cascadeflow.verifier          (client span, when the draft was not good enough)

Tracing is on when ``telemetry.otlp_endpoint`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and
the ``otel`` extra is installed (``pip install -e '.[otel]'`` in the checkout), or when the caller hands in
a ``TracerProvider``. Otherwise :class:`Tracing` is disabled: OpenTelemetry is not even
imported and every span is one shared do-nothing object, so the request path pays nothing.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import TelemetryConfig

__all__ = ["Tracing", "NULL_SPAN"]

log = logging.getLogger("cascadeflow.tracing")


class _NullSpan:
    """Stands for a span (and a span's context manager) when tracing is off."""

    __slots__ = ()

    def set_attribute(self, key: str, value: object) -> None:
        pass

    def set_attributes(self, attributes: dict) -> None:
        pass

    def end(self, end_time: int | None = None) -> None:
        pass

    def is_recording(self) -> bool:
        return False

    def __enter__(self) -> _NullSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


#: the one span of a disabled :class:`Tracing` (stateless)
NULL_SPAN = _NullSpan()


class Tracing:
    """Spans for the gateway and the cascade; ``enabled`` is False when no tracer was set up."""

    def __init__(self, tracer: Any = None, provider: Any = None) -> None:
        self.tracer = tracer
        self.enabled = tracer is not None
        self._provider = provider  # ours to shut down (None when the caller owns it)
        if self.enabled:
            from opentelemetry import context, propagate, trace

            self._context, self._propagate, self._trace = context, propagate, trace
            self._client, self._server = trace.SpanKind.CLIENT, trace.SpanKind.SERVER
            self._error = trace.StatusCode.ERROR
            self._status = trace.Status

    @classmethod
    def from_config(cls, telemetry: TelemetryConfig, provider: Any = None) -> Tracing:
        """Tracing from ``provider`` if given, else an OTLP exporter when an endpoint is configured."""
        if provider is not None:
            return cls(provider.get_tracer("cascadeflow"))
        endpoint = telemetry.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not endpoint or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return cls()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        except ImportError:
            log.warning("an OTLP endpoint is set but OpenTelemetry is not installed "
                        "(pip install -e '.[otel]' in the checkout); requests are not traced")
            return cls()
        traces_url = endpoint.rstrip("/")
        if not traces_url.endswith("/v1/traces"):
            traces_url += "/v1/traces"
        provider = TracerProvider(
            resource=Resource.create({"service.name": telemetry.service_name}),
            sampler=ParentBased(TraceIdRatioBased(telemetry.sample_ratio)),
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url)))
        log.info("tracing requests to %s", traces_url)
        return cls(provider.get_tracer("cascadeflow"), provider)

    def shutdown(self) -> None:
        """Export what is buffered (blocking: run it off the event loop)."""
        if self._provider is not None:
            self._provider.shutdown()

    # -- the request's span (the gateway) ------------------------------------------

    def begin_request(self, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[Any, object]:
        """Start the request's span (a child of the caller's ``traceparent``) and make it current."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")}
        parent = self._propagate.extract(carrier) if carrier else None
        span = self.tracer.start_span(
            f"{method} {path}", context=parent, kind=self._server,
            attributes={"http.request.method": method, "url.path": path},
        )
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        return span, token

    def end_request(self, span: Any, token: Any, error: BaseException | None = None) -> None:
        self._context.detach(token)
        if error is not None and span.is_recording():
            span.set_status(self._status(self._error, type(error).__name__))
        span.end()

    def annotate_request(self, span: Any, attributes: dict, status: int) -> None:
        span.set_attributes(attributes)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(self._status(self._error, f"HTTP {status}"))

    # -- the cascade's calls ---------------------------------------------------------

    def call(self, purpose: str, model: str, route: str) -> Any:
        """A context manager: the span of one upstream call, current while it lasts."""
        if not self.enabled:
            return NULL_SPAN
        return self.tracer.start_as_current_span(
            f"cascadeflow.{purpose}", kind=self._client, attributes=_call_attributes(model, route)
        )

    def start_call(self, purpose: str, model: str, route: str) -> Any:
        """The span of one streamed upstream call; not made current (it outlives this frame): end it with :meth:`end_call`."""
        if not self.enabled:
            return NULL_SPAN
        return self.tracer.start_span(f"cascadeflow.{purpose}", kind=self._client, attributes=_call_attributes(model, route))

    def end_call(self, span: Any, call: Any = None, error: object = None) -> None:
        if span is NULL_SPAN:
            return
        if call is not None:
            self.record_call(span, call)
        if error:
            self.fail(span, error)
        span.end()

    def record_call(self, span: Any, call: Any) -> None:
        """Model, tokens and cost of a finished upstream call (a ProxyResult or ProxyStream)."""
        if span is NULL_SPAN:
            return
        usage = call.usage
        attributes = {
            "gen_ai.response.model": call.model,
            "gen_ai.usage.input_tokens": usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "http.response.status_code": call.status,
        }
        if usage.cache_read_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
        if usage.cache_write_tokens:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
        if call.cost is not None:
            attributes["cascadeflow.cost_usd"] = call.cost
        span.set_attributes(attributes)

    def fail(self, span: Any, error: object) -> None:
        if span is not NULL_SPAN and span.is_recording():
            message = getattr(error, "message", None) or str(error)
            span.set_status(self._status(self._error, message[:200]))
            span.set_attribute("error.type", type(error).__name__ if isinstance(error, BaseException) else "upstream_stream")

    def checks(self, rule: str, draft_model: str, threshold: float) -> Any:
        """A context manager: the span of scoring one draft."""
        if not self.enabled:
            return NULL_SPAN
        attributes = {"cascadeflow.rule": rule, "cascadeflow.draft_model": draft_model, "cascadeflow.threshold": threshold}
        return self.tracer.start_as_current_span("cascadeflow.checks", attributes=attributes)


def _call_attributes(model: str, route: str) -> dict:
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "cascadeflow.route": route}
