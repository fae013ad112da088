"""OpenTelemetry traces: the span tree of a cascaded request, read from the SDK's in-memory exporter."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import anthropic
import pytest

from tests import needs

pytest.importorskip("opentelemetry.sdk", reason=needs.package("opentelemetry-sdk"))
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from cascadeflow import ProxyConfig, create_app  # noqa: E402
from cascadeflow.config import TelemetryConfig  # noqa: E402
from cascadeflow.sim import ServerThread  # noqa: E402
from cascadeflow.tracing import NULL_SPAN, Tracing  # noqa: E402
from tests.conftest import sim_routes  # noqa: E402

OPUS, HAIKU = "claude-opus-5-5", "claude-haiku-5-5"
SCRIPT = [
    {"match": {"model": HAIKU, "prompt_contains": "say nothing"}, "text": ""},
    {"match": {"model": HAIKU, "prompt_contains": "capital of France"}, "text": "Paris is the capital of France."},
]


@pytest.fixture(scope="module")
def traced(sim, tmp_path_factory):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = ProxyConfig.from_dict({
        "routes": sim_routes(sim),
        "database_url": f"sqlite:///{tmp_path_factory.mktemp('ledger')}/ledger.db",
        "cascade_rules": [{"name": "opus", "request_model": "claude-opus-*", "draft_model": HAIKU}],
    })
    with ServerThread(create_app(config, tracer_provider=provider)) as server:
        yield server, exporter


@pytest.fixture()
def gw(traced, fresh_sim):
    fresh_sim.set_script(SCRIPT)
    server, exporter = traced
    exporter.clear()
    return server, exporter


def request_spans(exporter, request_id: str, timeout: float = 3.0) -> tuple:
    """The request's root span (once ended: just after the last byte was sent) and its children."""
    deadline = time.monotonic() + timeout
    while True:
        spans = exporter.get_finished_spans()
        roots = [s for s in spans if s.kind == SpanKind.SERVER and s.attributes.get("cascadeflow.request_id") == request_id]
        if roots or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(roots) == 1, [s.name for s in spans]
    root = roots[0]
    children = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
    return root, children, spans


def ask(server, prompt: str, *, stream: bool, request_id: str, headers: dict | None = None):
    client = anthropic.Anthropic(base_url=server.url, api_key="caller", max_retries=0,
                                 default_headers={"x-request-id": request_id, **(headers or {})})
    kwargs = {"model": OPUS, "max_tokens": 100, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        with client.messages.stream(**kwargs) as s:
            return s.get_final_message(), s.response.headers
    raw = client.messages.with_raw_response.create(**kwargs)
    return raw.parse(), raw.headers


@pytest.mark.parametrize("stream", [False, True])
def test_escalated_request_has_draft_checks_and_verifier_spans(gw, stream):
    server, exporter = gw
    message, headers = ask(server, "Please say nothing at all", stream=stream, request_id=f"trace-esc-{stream}")
    root, children, spans = request_spans(exporter, f"trace-esc-{stream}")
    assert root.name == "POST /v1/messages"
    assert [c.name for c in sorted(children, key=lambda s: s.start_time)] == [
        "cascadeflow.draft", "cascadeflow.checks", "cascadeflow.verifier"]
    assert all(s.context.trace_id == root.context.trace_id for s in spans if s in children)
    draft, checks, verifier = sorted(children, key=lambda s: s.start_time)

    assert draft.kind == SpanKind.CLIENT and verifier.kind == SpanKind.CLIENT
    assert draft.attributes["gen_ai.request.model"] == HAIKU == draft.attributes["gen_ai.response.model"]
    assert draft.attributes["gen_ai.usage.input_tokens"] > 0
    assert draft.attributes["cascadeflow.route"] == "anthropic"
    assert draft.attributes["cascadeflow.cost_usd"] > 0

    assert checks.attributes["cascadeflow.rule"] == "opus"
    assert checks.attributes["cascadeflow.draft_model"] == HAIKU
    assert checks.attributes["cascadeflow.accepted"] is False
    assert checks.attributes["cascadeflow.confidence"] < checks.attributes["cascadeflow.threshold"]
    assert draft.end_time <= checks.start_time and checks.end_time <= verifier.start_time

    assert verifier.attributes["gen_ai.request.model"] == OPUS == verifier.attributes["gen_ai.response.model"]
    assert verifier.attributes["gen_ai.usage.output_tokens"] == message.usage.output_tokens > 0
    assert verifier.status.status_code != StatusCode.ERROR

    attributes = root.attributes
    assert attributes["cascadeflow.decision"] == headers["x-cascadeflow-decision"] == "escalated:structural:empty answer"
    assert attributes["cascadeflow.rule"] == "opus" and attributes["cascadeflow.accepted"] is False
    assert attributes["gen_ai.request.model"] == OPUS and attributes["gen_ai.response.model"] == OPUS
    assert attributes["cascadeflow.draft_model"] == HAIKU
    assert attributes["http.response.status_code"] == 200
    assert attributes["cascadeflow.cost_usd"] == pytest.approx(
        draft.attributes["cascadeflow.cost_usd"] + verifier.attributes["cascadeflow.cost_usd"], rel=1e-6)
    assert attributes["gen_ai.usage.output_tokens"] == (draft.attributes["gen_ai.usage.output_tokens"]
                                                       + verifier.attributes["gen_ai.usage.output_tokens"])
    # the request's span ends with the answer, after the verifier's (streamed) call
    assert root.end_time >= verifier.end_time and root.start_time <= draft.start_time


def test_accepted_draft_has_no_verifier_span(gw):
    server, exporter = gw
    _, headers = ask(server, "What is the capital of France?", stream=False, request_id="trace-ok")
    root, children, _ = request_spans(exporter, "trace-ok")
    assert headers["x-cascadeflow-draft-accepted"] == "true"
    assert sorted(c.name for c in children) == ["cascadeflow.checks", "cascadeflow.draft"]
    assert root.attributes["cascadeflow.decision"] == "accepted"
    assert root.attributes["cascadeflow.confidence"] == pytest.approx(float(headers["x-cascadeflow-confidence"]), abs=1e-4)


def test_a_callers_traceparent_is_followed(gw):
    server, exporter = gw
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    ask(server, "What is the capital of France?", stream=False, request_id="trace-parent",
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    root, _, _ = request_spans(exporter, "trace-parent")
    assert format(root.context.trace_id, "032x") == trace_id
    assert format(root.parent.span_id, "016x") == parent_id


def test_tracing_is_off_and_free_without_configuration(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    tracing = Tracing.from_config(TelemetryConfig())
    assert not tracing.enabled
    assert tracing.call("draft", "m", "r") is NULL_SPAN and tracing.checks("r", "m", 0.5) is NULL_SPAN


def test_missing_package_disables_tracing_with_a_warning(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)  # as if absent
    with caplog.at_level(logging.WARNING, logger="cascadeflow.tracing"):
        tracing = Tracing.from_config(TelemetryConfig(otlp_endpoint="http://127.0.0.1:4318"))
    assert not tracing.enabled
    assert "pip install -e '.[otel]'" in caplog.text  # from the checkout: the PyPI name is another project's


def test_the_gateway_does_not_import_opentelemetry_when_tracing_is_off():
    code = ("import sys; from cascadeflow import ProxyConfig, create_app; create_app(ProxyConfig()); "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "[]"
