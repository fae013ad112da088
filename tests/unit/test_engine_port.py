"""The cascade engine against a fake upstream port: its decisions and the calls it makes, no HTTP.

The engine talks to upstreams only through :class:`cascadeflow.cascade.port.UpstreamPort`, so a
scripted fake stands in for the gateway's ProxyService here. Each test asserts the
:class:`Decision` and the exact calls the port saw (which model, streamed or not, with
which :class:`CallOptions`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest

from cascadeflow.cascade import CallOptions, CascadeEngine, Opened, Sent, Target
from cascadeflow.cascade.port import ANSWER_CALL, OPTIONAL_CALL
from cascadeflow.config import CascadeRule
from cascadeflow.dialects.sse import SSEDecoder
from cascadeflow.errors import ProxyRoutingError, ProxyUpstreamError
from cascadeflow.pricing import ModelRegistry
from cascadeflow.proxy import ProxyRequest, ProxyResult, ProxyStream
from cascadeflow.telemetry import CostTracker
from cascadeflow.usage import Usage

DRAFT, VERIFIER = "claude-haiku-4-5", "claude-opus-4-1"
DRAFT_COST, VERIFIER_COST = 0.001, 0.05
USAGE = Usage(input_tokens=100, output_tokens=20)
REFUSAL = "I'm sorry, but I can't help with that request."


@dataclass
class Call:
    kind: str  # send or stream
    model: str
    options: CallOptions
    body: dict


@dataclass
class FakePort:
    """Answers from a script: per model, a queue of replies (text, or an exception to raise)."""

    script: dict[str, list[str | Exception]]
    calls: list[Call] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    #: the streams closed before their end (the upstream connection given up)
    closed: list[str] = field(default_factory=list)
    registry: ModelRegistry = field(default_factory=ModelRegistry)

    def resolve(self, model: str, dialect: str) -> Target:
        self.resolved.append(model)
        if model not in (DRAFT, VERIFIER):
            raise ProxyRoutingError(f"no route for {model!r}")
        return Target(model, "anthropic", "anthropic", dialect, translated=False)

    def _next(self, kind: str, target: Target, request: ProxyRequest, options: CallOptions) -> str:
        self.calls.append(Call(kind, target.model, options, request.body or {}))
        reply = self.script[target.model].pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def send(self, target: Target, request: ProxyRequest, options: CallOptions) -> Sent:
        text = self._next("send", target, request, options)
        data = {"id": "msg_1", "type": "message", "role": "assistant", "model": target.model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": USAGE.input_tokens, "output_tokens": USAGE.output_tokens}}
        return Sent(ProxyResult(data, 200, {"request-id": f"req-{target.model}"}, USAGE, _cost(target.model),
                                target.route, target.model, 12.0, orjson.dumps(data)))

    async def open_stream(self, target: Target, request: ProxyRequest, options: CallOptions) -> Opened:
        text = self._next("stream", target, request, options)
        stream = ProxyStream(status=200, headers={"request-id": f"req-{target.model}"}, route=target.route,
                             model=target.model, first_byte_ms=5.0)
        stream.usage, stream.cost, stream.latency_ms = USAGE, _cost(target.model), 12.0
        stream.attach(_events(target.model, text), lambda: self.closed.append(target.model))
        return Opened(stream)

    def price(self, target: Target, usage: Usage) -> float | None:
        return self.registry.cost(target.model, usage)

    def count_cut(self, target: Target, usage: Usage, cost: float | None) -> None:
        self.calls.append(("cut", target.model, None))


def _cost(model: str) -> float:
    return DRAFT_COST if model == DRAFT else VERIFIER_COST


async def _events(model: str, text: str) -> AsyncIterator[bytes]:
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": USAGE.input_tokens, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": USAGE.output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    for name, data in events:
        yield b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _engine(port: FakePort, **rule: object) -> tuple[CascadeEngine, CascadeRule, CostTracker]:
    cascade = CascadeRule(request_model=VERIFIER, draft_model=DRAFT, checks=["structural"], **rule)  # type: ignore[arg-type]
    tracker = CostTracker()
    return CascadeEngine(port, [cascade], tracker), cascade, tracker


def _request(stream: bool = False) -> ProxyRequest:
    body = {"model": VERIFIER, "max_tokens": 256, "messages": [{"role": "user", "content": "Capital of France?"}]}
    if stream:
        body["stream"] = True
    return ProxyRequest("POST", "/v1/messages", {}, body, orjson.dumps(body))


def _text(chunks: bytes) -> str:
    """The text a stream of Anthropic events carries."""
    events = [orjson.loads(e.data) for e in SSEDecoder().feed(chunks)]
    return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")


def _opus_price(usage: Usage) -> float:
    cost = ModelRegistry().cost(VERIFIER, usage)
    assert cost is not None
    return cost


async def test_an_accepted_draft_is_one_optional_call_and_the_decision_says_so():
    port = FakePort({DRAFT: ["Paris is the capital of France."]})
    engine, rule, tracker = _engine(port)
    reply = await engine.complete(rule, _request(), "anthropic", None)

    assert [(c.kind, c.model, c.options) for c in port.calls] == [("send", DRAFT, OPTIONAL_CALL)]
    assert port.calls[0].body["max_tokens"] == 256  # the caller's cap, under the draft model's 64k
    d = reply.decision
    assert (d.accepted, d.served_model, d.draft_model, d.reason) == (True, DRAFT, DRAFT, "accepted")
    assert d.confidence == 1.0 and d.checks == "structural=1.0"
    assert d.cost == pytest.approx(DRAFT_COST)
    assert d.baseline_cost == pytest.approx(_opus_price(USAGE))  # the requested model's price on the draft's usage
    body = orjson.loads(reply.body)
    assert body["model"] == VERIFIER and body["content"][0]["text"] == "Paris is the capital of France."
    # the engine renders no headers of its own: the gateway renders them from the decision
    assert not any(k.startswith("x-cascadeflow-") for k in reply.headers)
    headers = reply.response_headers()
    assert headers["x-cascadeflow-draft-accepted"] == "true" and headers["request-id"] == f"req-{DRAFT}"
    assert headers["x-cascadeflow-cost-usd"] == f"{DRAFT_COST:.8f}"
    assert tracker.rule(rule.name or "").requests == 0  # the engine counts nothing: rule totals come from the record


async def test_a_low_confidence_draft_escalates_to_the_verifier_with_the_routes_retries_and_fallbacks():
    port = FakePort({DRAFT: [REFUSAL], VERIFIER: ["Paris."]})
    engine, rule, tracker = _engine(port)
    reply = await engine.complete(rule, _request(), "anthropic", None)

    assert [(c.kind, c.model, c.options) for c in port.calls] == [
        ("send", DRAFT, OPTIONAL_CALL), ("send", VERIFIER, ANSWER_CALL)]
    assert ANSWER_CALL.has_alternative is False and ANSWER_CALL.attempts is None
    d = reply.decision
    assert (d.accepted, d.served_model, d.draft_model) == (False, VERIFIER, DRAFT)
    assert d.reason == "escalated:structural:refusal" and d.confidence == pytest.approx(0.1)
    assert d.cost == pytest.approx(DRAFT_COST + VERIFIER_COST)  # both calls are paid for
    assert d.baseline_cost == pytest.approx(VERIFIER_COST)  # the verifier is the requested model: its own cost
    assert [model for model, _ in d.calls] == [DRAFT, VERIFIER]
    assert orjson.loads(reply.body)["content"][0]["text"] == "Paris."
    assert reply.response_headers()["x-cascadeflow-decision"] == "escalated:structural:refusal"
    assert d.reason == "escalated:structural:refusal"  # what the record (and so the rule's totals) will say


async def test_a_draft_error_escalates_at_once_without_a_retry():
    failure = ProxyUpstreamError("upstream returned 529", status=529)
    port = FakePort({DRAFT: [failure, "never asked for"], VERIFIER: ["Paris."]})
    engine, rule, _ = _engine(port)
    reply = await engine.complete(rule, _request(), "anthropic", None)

    assert [(c.kind, c.model) for c in port.calls] == [("send", DRAFT), ("send", VERIFIER)]
    draft_call = port.calls[0].options
    assert draft_call.attempts == 1 and draft_call.has_alternative  # one try; an open breaker may refuse it
    d = reply.decision
    assert d.reason == "escalated:draft_error" and d.confidence is None and not d.accepted
    assert d.cost == pytest.approx(VERIFIER_COST)  # the failed draft produced nothing to pay for
    assert d.stages[0]["reason"] == "upstream returned 529"


async def test_a_verifier_failure_after_a_paid_draft_still_counts_the_drafts_cost():
    failure = ProxyUpstreamError("upstream returned 500", status=500)
    port = FakePort({DRAFT: [REFUSAL], VERIFIER: [failure]})
    engine, rule, tracker = _engine(port)
    with pytest.raises(ProxyUpstreamError) as raised:
        await engine.complete(rule, _request(), "anthropic", None)

    decision = raised.value.decision  # the error answer carries the decision: its headers, its record's cost
    assert decision is not None
    assert decision.cost == pytest.approx(DRAFT_COST) and decision.calls == [(DRAFT, USAGE)]
    assert decision.served_model == VERIFIER and decision.reason == "escalated:structural:refusal"
    assert decision.headers(with_cost=True)["x-cascadeflow-cost-usd"] == f"{DRAFT_COST:.8f}"
    assert decision.baseline_cost is None  # no baseline: the record counts it as unpriced, never as saved


async def test_an_unroutable_draft_model_skips_drafting_and_calls_only_the_verifier():
    port = FakePort({VERIFIER: ["Paris."]})
    engine, rule, _ = _engine(port)
    rule = rule.model_copy(update={"draft_model": "no-such-draft"})
    reply = await engine.complete(rule, _request(), "anthropic", None)

    assert [(c.kind, c.model, c.options) for c in port.calls] == [("send", VERIFIER, ANSWER_CALL)]
    assert reply.decision.reason == "skipped:draft_unroutable" and reply.decision.cost == pytest.approx(VERIFIER_COST)


async def test_a_streamed_draft_accepted_is_replayed_as_a_whole_stream_priced_in_its_headers():
    port = FakePort({DRAFT: ["Paris is the capital of France."]})
    engine, rule, _ = _engine(port)
    reply = await engine.stream(rule, _request(stream=True), "anthropic", None)

    assert [(c.kind, c.model, c.options) for c in port.calls] == [("stream", DRAFT, OPTIONAL_CALL)]
    d = reply.decision
    assert (d.accepted, d.served_model, d.reason) == (True, DRAFT, "accepted")
    assert d.cost == pytest.approx(DRAFT_COST) and d.baseline_cost == pytest.approx(_opus_price(USAGE))
    assert reply.priced and reply.response_headers()["x-cascadeflow-cost-usd"] == f"{DRAFT_COST:.8f}"
    assert reply.chunks is not None
    chunks = b"".join([chunk async for chunk in reply.chunks])
    assert _text(chunks) == "Paris is the capital of France."
    assert b'"model":"claude-opus-4-1"' in chunks and b"message_stop" in chunks  # named as asked, well formed
    assert port.closed == []  # the draft was read to its end


async def test_a_streamed_draft_failed_early_is_closed_and_the_verifier_relayed_and_priced_when_it_ends():
    port = FakePort({DRAFT: [REFUSAL], VERIFIER: ["Paris."]})
    engine, rule, tracker = _engine(port)
    reply = await engine.stream(rule, _request(stream=True), "anthropic", None)

    assert [(c.kind, c.model, c.options) for c in port.calls] == [
        ("stream", DRAFT, OPTIONAL_CALL), ("stream", VERIFIER, ANSWER_CALL)]
    assert port.closed == [DRAFT]  # the refusal was seen as it arrived: the draft's stream is given up
    d = reply.decision
    assert d.reason == "escalated:early structural:refusal" and d.served_model == VERIFIER
    assert d.cost == pytest.approx(DRAFT_COST)  # the verifier is priced when its stream ends
    headers = reply.response_headers()
    assert not reply.priced and "x-cascadeflow-cost-usd" not in headers
    assert headers["x-cascadeflow-served-model"] == VERIFIER
    assert reply.chunks is not None
    chunks = b"".join([chunk async for chunk in reply.chunks])
    assert _text(chunks) == "Paris."
    assert d.cost == pytest.approx(DRAFT_COST + VERIFIER_COST) and d.baseline_cost == pytest.approx(VERIFIER_COST)
    assert d.reason == "escalated:early structural:refusal"
    assert port.closed == [DRAFT]  # the verifier's stream was read to its end, not cut


def test_call_options_refuse_a_retry_cap_or_logprobs_on_the_clients_answer():
    with pytest.raises(ValueError, match="only to a call with an alternative"):
        CallOptions(attempts=1)
    with pytest.raises(ValueError, match="only to a call with an alternative"):
        CallOptions(logprobs=True)


def test_the_gateways_adapter_states_a_routes_facts_and_prices_with_its_override():
    from cascadeflow.gateway.upstreams import ServiceUpstreams
    from cascadeflow.proxy import ProxyHandler, ProxyRoute, ProxyRouter, ProxyService

    registry = ModelRegistry()
    routes = [ProxyRoute(name="anthropic", provider="anthropic", base_url="http://a"),
              ProxyRoute(name="local", provider="openai", base_url="http://l/v1", models=frozenset({"qwen-*"}),
                         cost_per_1k_tokens=0.5, openai_api="chat"),
              ProxyRoute(name="openai", provider="openai", base_url="http://o/v1", openai_api="responses")]
    port = ServiceUpstreams(ProxyService(ProxyRouter(routes, registry), ProxyHandler(registry=registry)))
    assert port.registry is registry
    assert port.resolve(DRAFT, "anthropic") is port.resolve(DRAFT, "anthropic")  # kept, as the router keeps its matches

    same = port.resolve("anthropic/" + DRAFT, "anthropic")  # a route prefix is stripped
    assert (same.model, same.route, same.provider, same.dialect, same.translated) == (
        DRAFT, "anthropic", "anthropic", "anthropic", False)
    crossed = port.resolve("qwen-7b", "anthropic")
    assert (crossed.route, crossed.provider, crossed.translated) == ("local", "openai", True)
    assert port.resolve("qwen-7b", "responses").translated  # a chat-only route: Responses are translated
    assert not port.resolve("gpt-4o", "responses").translated  # a route serving /v1/responses takes them as they are
    assert port.price(crossed, Usage(input_tokens=1000, output_tokens=1000)) == pytest.approx(1.0)  # the route's price
    assert port.price(same, USAGE) == pytest.approx(registry.cost(DRAFT, USAGE))
    with pytest.raises(ProxyRoutingError):
        ServiceUpstreams(ProxyService(ProxyRouter(routes[1:2], registry), ProxyHandler(registry=registry))).resolve(
            "claude-nothing", "anthropic")
