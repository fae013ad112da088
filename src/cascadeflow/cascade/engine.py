"""CascadeEngine: draft on a cheaper model, check the answer, accept it or escalate.

For one request that matched a rule::

    policies say skip? ──yes──────────────────────────────┐
        │ no                                               ▼
    for each draft stage:  send → checks → confidence ≥ threshold? ─yes─▶ answer with the draft
        │ (early check failed, draft errored, or too low)
        ▼
    verifier (the requested model by default) answers; its stream is piped through

The client gets one well-formed answer either way; headers ``x-cascadeflow-*`` say
what happened. Every call is priced; the baseline is the same request sent straight
to the requested model (for an accepted draft: the requested model's price on the
draft's usage, an estimate; for an escalation: what the verifier cost).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from ..config import CascadeRule, CascadeStage
from ..dialects.sse import SSEDecoder
from ..errors import ProxyError
from ..proxy import ProxyRequest, ProxyResult, ProxyService, ProxyStream
from ..proxy.translation import API_PATHS
from ..telemetry import CostTracker
from ..tracing import Tracing
from ..usage import Usage
from .agreement import agreement, semantic_agreement, states_final_answer
from .answer import CheckResult, DraftAnswer
from .capabilities import capability_gap
from .checks import run_early
from .drafts import ops_for
from .kinds import request_kind
from .policies import StickyEscalations, skip_reason
from .router import Router, load_router
from .scorer import checks_for
from .scoring import score_draft
from .selfcheck import verdict, verification_body
from .session import SessionBook, SessionSignal, Turn
from .shadow import ShadowRecorder
from .thinking import ThinkingThreads, ThreadView, strip_thinking

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..proxy.router import RouteMatch
    from ..sessions import Sessions, ThinkingOrigins

__all__ = ["CascadeEngine", "Decision", "CascadeReply"]

log = logging.getLogger("cascadeflow.cascade")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_REASON_CUT = re.compile(r" at |[(:=]")
_EARLY_EVERY = 8  # run early checks every N delta events (and at every block end)
#: drafts, self-verification and samples have an alternative (the verifier): one try, an open breaker may refuse
_OPTIONAL_CALL = {"attempts": 1, "has_alternative": True}


@dataclass(slots=True)
class Decision:
    """What the cascade did for one request."""

    rule: str
    requested_model: str
    served_model: str = ""
    draft_model: str | None = None
    accepted: bool = False
    confidence: float | None = None
    reason: str = ""
    cost: float | None = 0.0
    baseline_cost: float | None = None
    draft_ms: float = 0.0
    stages: list[dict] = field(default_factory=list)
    #: each check's score on the last draft judged (``name=score,…``)
    checks: str = ""
    #: tokens of every call the request made
    usage: Usage = field(default_factory=Usage)
    #: time spent waiting on upstream calls (the rest of the request's time is the gateway's)
    upstream_ms: float = 0.0
    #: per model called: what its view of the conversation left out (``dropped=N,rendered=M``)
    thinking_views: dict[str, str] = field(default_factory=dict)
    #: what drafting this turn was expected to save, priced with the conversation's caches (USD)
    expected_saving: float | None = None
    #: main, subagent, background, codex or other (:mod:`.kinds`)
    kind: str = ""
    #: (model, usage) of every upstream call, in order
    calls: list[tuple[str, Usage]] = field(default_factory=list)
    #: what this request says about the conversation's last drafted turn, when it went badly
    session_signal: SessionSignal | None = None
    #: the pre-generation router's P(draft good) for this request (None: the rule has no router)
    route_confidence: float | None = None

    def add_call(self, call: ProxyResult | ProxyStream) -> None:
        """Count one upstream call's usage and cost (unknown cost makes the total unknown)."""
        self.calls.append((call.model, call.usage))
        self.usage = self.usage + call.usage
        self.cost = None if call.cost is None or self.cost is None else self.cost + call.cost
        self.upstream_ms += call.latency_ms

    def add_cut(self, model: str, usage: Usage, cost: float | None) -> None:
        """Count a call cut off before its answer came (the client left): priced on an estimate."""
        self.calls.append((model, usage))
        self.usage = self.usage + usage
        self.cost = None if cost is None or self.cost is None else self.cost + cost

    def headers(self, *, with_cost: bool) -> dict[str, str]:
        headers = {
            "x-cascadeflow-rule": self.rule,
            "x-cascadeflow-served-model": self.served_model,
            "x-cascadeflow-draft-accepted": "true" if self.accepted else "false",
            "x-cascadeflow-decision": self.reason,
        }
        if self.draft_model:
            headers["x-cascadeflow-draft-model"] = self.draft_model
        if self.confidence is not None:
            headers["x-cascadeflow-confidence"] = repr(float(self.confidence))  # exact: calibration fits on it
        if self.checks:
            headers["x-cascadeflow-checks"] = self.checks
        if self.served_model in self.thinking_views:
            headers["x-cascadeflow-thinking"] = self.thinking_views[self.served_model]
        if self.expected_saving is not None:
            headers["x-cascadeflow-expected-saving-usd"] = f"{self.expected_saving:.8f}"
        if self.kind:
            headers["x-cascadeflow-request-kind"] = self.kind
        if self.route_confidence is not None:
            headers["x-cascadeflow-router-confidence"] = repr(float(self.route_confidence))
        if with_cost and self.cost is not None:
            headers["x-cascadeflow-cost-usd"] = f"{self.cost:.8f}"
        if with_cost and self.baseline_cost is not None:
            headers["x-cascadeflow-baseline-cost-usd"] = f"{self.baseline_cost:.8f}"
        return headers


@dataclass(slots=True)
class CascadeReply:
    """The answer for the client: a body (non-streaming) or chunks (streaming)."""

    status: int
    headers: dict[str, str]
    decision: Decision
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None


class CascadeEngine:
    def __init__(
        self, service: ProxyService, rules: list[CascadeRule], tracker: CostTracker,
        origins: ThinkingOrigins | None = None, sessions: Sessions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from ..sessions import MemorySessions, MemoryThinkingOrigins

        self.service = service
        #: which model wrote the thinking blocks handed out with accepted drafts, and each model's view
        self.threads = ThinkingThreads(origins if origins is not None else MemoryThinkingOrigins())
        self.registry = service.router.registry
        #: conversations: cache shadows per model, the true baseline, what earlier drafts led to
        self.book = SessionBook(sessions if sessions is not None else MemorySessions(), self.registry, clock)
        self.tracker = tracker
        self.sticky = StickyEscalations()
        self._checks = {rule.name: checks_for(rule) for rule in rules}  # a rule's learned scorer loads here, once
        #: WordLlama, loaded once at start when a rule's sample agreement compares meanings (the semantic extra)
        self._embedder = None
        if any(rule.sample_agreement is not None and rule.sample_agreement.mode != "exact" for rule in rules):
            from ..embeddings import load_embedder

            self._embedder = load_embedder("sample_agreement with mode semantic or auto")
        #: each rule's pre-generation router, loaded here, once (a missing or altered file stops the start)
        self._routers: dict[str | None, Router] = {
            rule.name: load_router(rule.router.path, rule.router.sha256, self._embedder)
            for rule in rules if rule.router is not None}
        #: spans for the draft, checks and verifier calls (off unless the gateway sets one up)
        self.tracing = Tracing()
        #: shadow mode's pairs (the gateway hands them to its ledger)
        self.shadow = ShadowRecorder(lambda pair: None, self.ask_judge)

    # -- the two entry points ------------------------------------------------------

    def begin(self, rule: CascadeRule, request: ProxyRequest) -> Decision:
        """The decision one request will fill in: the caller keeps it to record a request cancelled midway."""
        return self._begin(rule, request)

    async def complete(
        self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None, request_id: str = "",
        decision: Decision | None = None,
    ) -> CascadeReply:
        """A non-streaming request (``decision``: from :meth:`begin`, when the caller wants to see it filled in).

        Cancelled (the client left, the server shut down), what was used is priced and recorded: see :meth:`_abandoned`."""
        decision = decision or self._begin(rule, request)
        opened: list[Turn | None] = []
        try:
            return await self._complete(rule, request, dialect, conversation, request_id, decision, opened)
        except asyncio.CancelledError:
            self._abandoned(rule, decision, conversation, opened[0] if opened else None, stream=False)
            raise

    async def stream(
        self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None, request_id: str = "",
        decision: Decision | None = None,
    ) -> CascadeReply:
        """A streaming request: drafts are read to the end (or an early failure) before anything is sent.

        Cancelled while a draft is read (the client left), the draft's stream is closed at once and
        counted for what it generated; no verifier is opened; what was used is recorded (:meth:`_abandoned`)."""
        decision = decision or self._begin(rule, request)
        opened: list[Turn | None] = []
        try:
            return await self._stream(rule, request, dialect, conversation, request_id, decision, opened)
        except asyncio.CancelledError:
            self._abandoned(rule, decision, conversation, opened[0] if opened else None, stream=True)
            raise

    async def _complete(self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None,
                        request_id: str, decision: Decision, opened: list[Turn | None]) -> CascadeReply:
        ops = ops_for(dialect)
        talk = await self.threads.view(request.body or {}, dialect, rule.verifier_model or request.model)
        turn = await self._turn(rule, request, dialect, conversation, request_id)
        opened.append(turn)
        shadowed = self.shadow.sampled(rule)
        judged: tuple[DraftAnswer, float | None] | None = None  # the last draft judged: its answer and cost
        await self._route(rule, request, decision)
        for stage, match, draft, started in self._drafts(rule, request, dialect, conversation, decision, ops, talk, turn):
            judged = None
            try:
                result, answer = await self._send_json(match, draft, dialect, ops)
            except ProxyError as exc:
                self._draft_failed(decision, stage, started, exc)
                continue
            except asyncio.CancelledError:  # the client left: the draft's connection is closed; priced on its input
                decision.draft_model = stage.model
                self._cut(decision, match, draft)
                raise
            judged = (answer, result.cost)
            if await self._judge(rule, stage, request, answer, dialect, decision, result, started, ops):
                await self.threads.hand_out(result.data, stage.model, dialect)
                body = ops.reply_body(result.data, self._reported(rule, request, stage.model), request.body or {})
                decision.baseline_cost = self._baseline(rule, request, result.usage, turn=turn)
                self._finish(rule, decision, conversation, stream=False, turn=turn, answer=answer)
                if shadowed:
                    self._shadow_accepted(rule, request, dialect, talk, decision, request_id, answer, result.cost, ops)
                return CascadeReply(result.status, {**result.headers, **decision.headers(with_cost=True)}, decision, body)
        verifier, match = self._verifier(rule, request, dialect)
        decision.served_model = verifier
        try:
            with self.tracing.call("verifier", verifier, match.route.name) as span:
                result = await self.service.send(match, self._for_verifier(request, verifier, match, dialect, talk, decision), dialect)
                self.tracing.record_call(span, result)
        except ProxyError as exc:
            self._finish(rule, decision, conversation, stream=False)
            exc.decision = decision  # the error answer carries the decision's headers, its record the draft's cost
            raise
        except asyncio.CancelledError:
            self._cut(decision, match, request)
            raise
        decision.add_call(result)
        decision.baseline_cost = self._baseline(rule, request, result.usage, verifier_cost=result.cost, verifier=verifier,
                                                turn=turn)
        self._finish(rule, decision, conversation, stream=False, turn=turn)
        if shadowed and judged is not None and decision.confidence is not None:
            self.shadow.escalated(rule, decision, request_id, judged[0], judged[1], ops.answer(result.data), result.cost)
        body = result.raw
        reported = self._reported(rule, request, verifier)
        if reported != verifier and isinstance(result.data, dict):
            body = ops.rename(result.data, reported)
        return CascadeReply(result.status, {**result.headers, **decision.headers(with_cost=True)}, decision, body)

    async def _stream(self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None,
                      request_id: str, decision: Decision, opened: list[Turn | None]) -> CascadeReply:
        ops = ops_for(dialect)
        caller = request.body or {}
        talk = await self.threads.view(request.body or {}, dialect, rule.verifier_model or request.model)
        turn = await self._turn(rule, request, dialect, conversation, request_id)
        opened.append(turn)
        shadowed = self.shadow.sampled(rule)
        judged: tuple[DraftAnswer, float | None] | None = None  # the last draft judged: its answer and cost
        await self._route(rule, request, decision)
        for stage, match, draft, started in self._drafts(rule, request, dialect, conversation, decision, ops, talk, turn):
            judged = None
            translation = self.service.translation(match, dialect)
            if translation is not None:
                draft = translation.request(draft, match.model, logprobs=True)
            span = self.tracing.start_call("draft", stage.model, match.route.name)
            try:
                upstream = await self.service.handler.open_stream(match.route, match.model, draft, **_OPTIONAL_CALL)
            except ProxyError as exc:
                self.tracing.end_call(span, error=exc)
                self._draft_failed(decision, stage, started, exc)
                continue
            except asyncio.CancelledError:
                self.tracing.end_call(span, error=None)
                decision.draft_model = stage.model
                self._cut(decision, match, draft)
                raise
            if translation is not None:
                upstream = translation.stream(upstream, match.model)
            accumulator = ops.accumulator()
            early = None
            try:
                early = await self._read_draft(rule, upstream, accumulator, caller, dialect)
            except asyncio.CancelledError:  # the client left: stop the draft now; it is paid for what it generated
                await upstream.aclose()
                decision.add_call(upstream)
                decision.draft_model = stage.model
                raise
            finally:  # a draft stopped early by a check is no failure of the call
                self.tracing.end_call(span, upstream, error=None if early is not None else upstream.error)
            if early is not None:
                decision.add_call(upstream)
                self._escalate(decision, stage, early.score, f"early {_bucket(early.name, early.reason)}", started)
                continue
            if accumulator.error is not None or upstream.error is not None:
                decision.add_call(upstream)
                self._escalate(decision, stage, None, "draft_error", started)
                continue
            answer = accumulator.answer(partial=False)
            answer.usage = upstream.usage
            if translation is not None and translation.logprobs:
                answer.logprobs = translation.logprobs
            judged = (answer, upstream.cost)
            if await self._judge(rule, stage, request, answer, dialect, decision, upstream, started, ops):
                if dialect == "anthropic":
                    await self.threads.hand_out(accumulator.message, stage.model, dialect)
                body = ops.replay(accumulator, self._reported(rule, request, stage.model), caller)
                decision.baseline_cost = self._baseline(rule, request, upstream.usage, turn=turn)
                self._finish(rule, decision, conversation, stream=True, turn=turn, answer=answer)
                if shadowed:
                    self._shadow_accepted(rule, request, dialect, talk, decision, request_id, answer, upstream.cost, ops)
                headers = {**upstream.headers, **decision.headers(with_cost=True)}
                return CascadeReply(upstream.status, headers, decision, chunks=_once(body))
        verifier, match = self._verifier(rule, request, dialect)
        decision.served_model = verifier
        span = self.tracing.start_call("verifier", verifier, match.route.name)  # ends with the stream
        try:
            upstream = await self.service.open_stream(match, self._for_verifier(request, verifier, match, dialect, talk, decision), dialect)
        except ProxyError as exc:
            self.tracing.end_call(span, error=exc)
            self._finish(rule, decision, conversation, stream=True)
            exc.decision = decision
            raise
        except asyncio.CancelledError:
            self.tracing.end_call(span, error=None)
            self._cut(decision, match, request)
            raise
        reported = self._reported(rule, request, verifier)
        pairing = (request_id, *judged) if shadowed and judged is not None and decision.confidence is not None else None
        chunks = self._pipe_verifier(rule, request, decision, conversation, upstream, ops, reported, verifier, span, turn,
                                     pairing)
        return CascadeReply(upstream.status, {**upstream.headers, **decision.headers(with_cost=False)}, decision, chunks=chunks)

    # -- steps -------------------------------------------------------------------

    async def _route(self, rule: CascadeRule, request: ProxyRequest, decision: Decision) -> None:
        """The router's P(draft good) for this request, into the decision (an embedding runs in a worker thread)."""
        router = self._routers.get(rule.name)
        if router is None:
            return
        body = request.body or {}
        try:
            decision.route_confidence = await asyncio.to_thread(router.score, body) if router.slow else router.score(body)
        except Exception:  # noqa: BLE001 - a prompt the router cannot read is drafted as without a router
            log.exception("cascade rule %r: the router could not score the request; drafting it", decision.rule)

    def _begin(self, rule: CascadeRule, request: ProxyRequest) -> Decision:
        self.tracker.rule(rule.name or "").requests += 1
        return Decision(rule=rule.name or "", requested_model=request.model)

    def _drafts(self, rule, request: ProxyRequest, dialect: str, conversation: str | None, decision: Decision, ops,
                talk: ThreadView | None = None, turn: Turn | None = None):
        """The draft stages to try — none when a policy skips drafting — each with its route and request."""
        if self._skipped(rule, request, dialect, conversation, decision, turn):
            return
        for stage in rule.draft_stages():
            match = self._draft_route(stage, dialect, decision)
            if match is None:
                return
            draft = self._draft_request(rule, request, stage, ops)
            if talk is not None and self.service.translation(match, dialect) is None:
                draft = draft.derive(talk.body_for(draft.body or {}, stage.model, decision.thinking_views))
            yield stage, match, draft, time.perf_counter()

    def _draft_cap(self, rule: CascadeRule, model: str) -> int | None:
        """The draft's output cap: the rule's ``draft_max_tokens``, never above what the draft model allows
        (Claude Code asks for 128k; claude-haiku-5-5 would refuse anything over 64k)."""
        info = self.registry.info(model)
        limit = info.max_output_tokens if info is not None else None
        if rule.draft_max_tokens is None or limit is None:
            return rule.draft_max_tokens if limit is None else limit
        return min(rule.draft_max_tokens, limit)

    async def _turn(self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None,
                    request_id: str) -> Turn | None:
        """This request as a turn of its conversation (None without a conversation id)."""

        def rules_for(model: str) -> str:
            return "anthropic" if self._provider_of(model, dialect) == "anthropic" else "openai"

        return await self.book.begin(rule, request.body or {}, dialect, conversation, self._priced_as(rule, request),
                                     rules_for, request_id)

    def _provider_of(self, model: str, dialect: str) -> str:
        """The provider of the route that would serve ``model`` (the dialect's own when none does)."""
        try:
            return self.service.router.resolve(model, dialect).route.provider
        except ProxyError:
            return dialect

    def _priced_as(self, rule: CascadeRule, request: ProxyRequest) -> str:
        """The model savings are counted against: the requested one, or the verifier for a virtual model."""
        return request.model if self.registry.info(request.model) else (rule.verifier_model or request.model)

    def _for_verifier(self, request: ProxyRequest, verifier: str, match: RouteMatch, dialect: str,
                      talk: ThreadView | None, decision: Decision) -> ProxyRequest:
        request = _with_model(request, verifier)
        if talk is None or self.service.translation(match, dialect) is not None:
            return request
        body = talk.body_for(request.body or {}, verifier, decision.thinking_views)
        if body is request.body:
            return request
        return request.derive(body)

    def _skipped(
        self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None, decision: Decision,
        turn: Turn | None = None,
    ) -> bool:
        first = rule.draft_stages()[0].model
        body = request.body or {}
        signal = turn.signal() if turn is not None else None  # always read: it settles the last drafted turn
        reason = skip_reason(rule, body, request.raw_body or b"", dialect, first, self.registry, self.sticky, conversation)
        if turn is not None and rule.policies.cache_economics and reason in (None, "sticky_escalation"):
            totals = self.tracker.rule(decision.rule)
            go, decision.expected_saving = turn.economics(totals.drafts_tried, sum(totals.escalated.values()), first,
                                                          rule.verifier_model or request.model)
            if decision.expected_saving is not None:  # priced: the numbers say how long an escalation sticks
                reason = None if go else "cache_economics"
        decision.kind = request_kind(request.headers, body)
        kinds = rule.policies.draft_kinds
        if reason is None and kinds is not None and decision.kind not in kinds:
            reason = f"kind:{decision.kind}"
        if reason is None:
            reason = capability_gap(body, request.raw_body or b"", dialect, first, self._provider_of(first, dialect),
                                    self._provider_of(rule.verifier_model or request.model, dialect), self.registry)
        decision.session_signal = signal
        if reason is None and signal is not None:
            reason = f"session_signal:{signal.kind}"
        if reason is None and rule.router is not None and decision.route_confidence is not None \
                and decision.route_confidence < rule.router.threshold:
            reason = "router"  # predicted to fail: the draft would only be paid for
        if reason is None:
            return False
        self.tracker.rule(decision.rule).skipped[reason] += 1
        decision.reason = f"skipped:{reason}"
        return True

    def _draft_route(self, stage: CascadeStage, dialect: str, decision: Decision) -> RouteMatch | None:
        try:
            match = self.service.router.resolve(stage.model, dialect)
        except ProxyError as exc:
            log.warning("cascade rule %r: draft model %r has no route (%s)", decision.rule, stage.model, exc.message)
            self.tracker.rule(decision.rule).skipped["draft_unroutable"] += 1
            decision.reason = "skipped:draft_unroutable"
            return None
        return match

    def _draft_request(self, rule: CascadeRule, request: ProxyRequest, stage: CascadeStage, ops) -> ProxyRequest:
        body = ops.draft_body(request.body or {}, stage.model, self._draft_cap(rule, stage.model),
                              self.registry.is_reasoning(stage.model))
        return request.derive(body)

    async def _read_draft(self, rule, upstream, accumulator, caller: dict, dialect: str):
        """Buffer the draft's events; return the early check that failed it, if one did."""
        checks = self._checks[rule.name]
        decoder = SSEDecoder()
        deltas = 0
        async for chunk in upstream:
            for event in decoder.feed(chunk):
                closed = accumulator.feed(event)
                deltas += 1
                if closed is None and deltas % _EARLY_EVERY:
                    continue
                answer = accumulator.answer(partial=True)
                # only calls known to be complete are judged early
                if dialect == "openai":
                    done = set(accumulator.closed_tool_calls)
                    answer.tool_calls = [c for i, c in enumerate(answer.tool_calls) if i in done]
                elif closed is None:
                    answer.tool_calls = []
                failed = run_early(checks, caller, answer, dialect)
                if failed is not None:
                    await upstream.aclose()
                    return failed
        return None

    async def _judge(
        self, rule, stage: CascadeStage, request: ProxyRequest, answer: DraftAnswer, dialect: str,
        decision: Decision, call: ProxyResult | ProxyStream, started: float, ops,
    ) -> bool:
        """Score a complete draft; record it; True when it is accepted."""
        caller = request.body or {}
        decision.add_call(call)
        decision.draft_model = stage.model
        threshold = stage.quality_threshold if stage.quality_threshold is not None else rule.quality_threshold

        async def ask_verifier() -> CheckResult | None:
            return await self._self_verify(rule, stage, request, answer, dialect, decision, ops)

        async def ask_samples() -> CheckResult | None:
            return await self._sample_agreement(rule, stage, request, answer, dialect, decision, ops)

        costly = [ask for ask, wanted in ((ask_verifier, rule.self_verify), (ask_samples, rule.sample_agreement)) if wanted]
        with self.tracing.checks(decision.rule, stage.model, threshold) as span:
            score = await score_draft(rule, self._checks[rule.name], caller, answer, dialect, threshold, costly)
            if self.tracing.enabled:
                span.set_attributes({"cascadeflow.confidence": score.confidence, "cascadeflow.checks": score.header(),
                                     "cascadeflow.accepted": score.confidence >= threshold})
        decision.confidence = score.confidence
        decision.checks = score.header()
        if score.confidence >= threshold:
            elapsed = (time.perf_counter() - started) * 1000
            decision.stages.append({"model": stage.model, "confidence": score.confidence, "accepted": True, "ms": elapsed})
            decision.accepted, decision.served_model, decision.reason = True, stage.model, "accepted"
            totals = self.tracker.rule(decision.rule)
            totals.drafts_tried += 1
            totals.accepted += 1
            totals.accepted_by_stage[stage.model] += 1
            return True
        worst = min(score.results, key=lambda r: r.score) if score.results else None
        bucket = _bucket(worst.name, worst.reason) if worst and worst.score < threshold else "low_confidence"
        self._escalate(decision, stage, score.confidence, bucket, started, detail=score.reason)
        return False

    async def _self_verify(
        self, rule, stage: CascadeStage, request: ProxyRequest, answer: DraftAnswer, dialect: str,
        decision: Decision, ops,
    ) -> CheckResult | None:
        """Ask the verification model about the draft; its cost joins the request's."""
        model = (rule.self_verify and rule.self_verify.model) or stage.model
        body = verification_body(request.body or {}, answer, dialect, model, self.registry.is_reasoning(model))
        if body is None:
            return None
        verify = request.derive(body, method="POST", path=API_PATHS[dialect], query="")
        try:
            match = self.service.router.resolve(model, dialect)
            result, reply = await self._send_json(match, verify, dialect, ops, "self_verify")
        except ProxyError as exc:
            log.info("self-verification with %s failed (%s); not scored", model, exc.message)
            return None
        except asyncio.CancelledError:  # the client left: the question was read, so it is paid for
            self._cut(decision, match, verify)
            raise
        decision.add_call(result)
        return verdict(reply)

    async def _sample_agreement(
        self, rule, stage: CascadeStage, request: ProxyRequest, answer: DraftAnswer, dialect: str,
        decision: Decision, ops,
    ) -> CheckResult | None:
        """Sample the draft model again (concurrently) and score agreement with the draft's answer."""
        settings = rule.sample_agreement
        if settings is None or answer.tool_calls or not answer.text.strip():
            return None
        match = self.service.router.resolve(stage.model, dialect)
        reasoning = self.registry.is_reasoning(stage.model)
        body = {**ops.draft_body(request.body or {}, stage.model, self._draft_cap(rule, stage.model), reasoning),
                "stream": False, "temperature": settings.temperature}
        if reasoning and dialect != "anthropic":  # it samples at its fixed temperature (1) only: see docs/cascade.md
            del body["temperature"]
        if dialect == "anthropic" and isinstance(body.get("messages"), list):  # one-off samples think afresh
            body.pop("thinking", None)
            body["messages"] = strip_thinking(body["messages"])
        body.pop("stream_options", None)
        asks = [request.derive(body, method="POST", path=API_PATHS[dialect], query="", sample_index=i)
                for i in range(settings.samples)]
        calls = [asyncio.ensure_future(self._send_json(match, ask, dialect, ops, "sample")) for ask in asks]
        try:
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        except asyncio.CancelledError:  # the client left: samples that answered are paid for, cut ones on input
            for call, ask in zip(calls, asks, strict=True):
                if call.done() and not call.cancelled() and call.exception() is None:
                    decision.add_call(call.result()[0])
                elif call.cancelled():
                    self._cut(decision, match, ask)
            raise
        texts = []
        for outcome in outcomes:
            if isinstance(outcome, ProxyError):
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            result, sample = outcome
            decision.add_call(result)
            texts.append(sample.text)
        if settings.mode == "semantic" or (settings.mode == "auto" and not states_final_answer(answer.text)):
            # free-form answers: compare meanings (embeddings cost milliseconds: off the event loop)
            return await asyncio.to_thread(semantic_agreement, self._embedder, answer.text, texts)
        return agreement(answer.text, texts)

    async def _send_json(
        self, match: RouteMatch, request: ProxyRequest, dialect: str, ops, purpose: str = "draft"
    ) -> tuple[ProxyResult, DraftAnswer]:
        """One non-streaming call in the caller's dialect, translated if needed; log-probabilities kept."""
        translation = self.service.translation(match, dialect)
        if translation is not None:
            request = translation.request(request, match.model, logprobs=True)
        with self.tracing.call(purpose, match.model, match.route.name) as span:
            result = await self.service.handler.send(match.route, match.model, request, **_OPTIONAL_CALL)
            self.tracing.record_call(span, result)
        if translation is not None:
            result = translation.response(result)
        answer = ops.answer(result.data)
        if translation is not None and translation.logprobs:
            answer.logprobs = translation.logprobs
        return result, answer

    def _cut(self, decision: Decision, match: RouteMatch, request: ProxyRequest) -> None:
        """A call cut off before any of its answer arrived: the upstream read its prompt, so the
        request's size at 4 bytes a token is counted as input (as for a cut stream that reported none)."""
        raw = request.raw_body if request.raw_body is not None else orjson.dumps(request.body or {})
        usage = Usage(input_tokens=len(raw) // 4)
        cost = self.service.handler.price(match.route, match.model, usage)
        decision.add_cut(match.model, usage, cost)
        self.tracker.record_call(model=match.model, route=match.route.name, usage=usage, cost=cost, status=499)

    def _abandoned(self, rule: CascadeRule, decision: Decision, conversation: str | None, turn: Turn | None, *,
                   stream: bool) -> None:
        """A request cancelled before its answer (the client left, or the server shut down past its deadline).

        Its calls are priced already (cut ones on their input); the rule's totals count it as ``cancelled``
        with no saving (its baseline is its cost, as the ledger counts a row without one); an escalation
        decided before the cut still counts as one; the conversation records the models it called (their
        caches were written) but learns nothing about drafting from it.
        """
        totals = self.tracker.rule(decision.rule)
        totals.cancelled += 1
        if decision.reason.startswith("escalated:"):
            totals.escalated[decision.reason.removeprefix("escalated:")] += 1
            totals.added_latency_ms += decision.draft_ms
            self.sticky.record(conversation, escalated=True)
        if decision.cost is None:
            totals.unpriced += 1
        else:
            totals.cost += decision.cost
            totals.baseline_cost += decision.cost if decision.baseline_cost is None else decision.baseline_cost
        if turn is not None and decision.calls:
            turn.cancelled(decision.calls)
        if decision.calls:  # it reached an upstream
            self.tracker.record_request(stream=stream)

    def _escalate(
        self, decision: Decision, stage: CascadeStage, confidence: float | None, reason: str, started: float,
        detail: str = "",
    ) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        decision.draft_ms += elapsed
        decision.draft_model = stage.model
        decision.confidence = confidence
        decision.reason = f"escalated:{reason}"
        decision.stages.append({"model": stage.model, "confidence": confidence, "accepted": False, "reason": detail or reason, "ms": elapsed})
        self.tracker.rule(decision.rule).drafts_tried += 1

    def _draft_failed(self, decision: Decision, stage: CascadeStage, started: float, exc: ProxyError) -> None:
        log.info("draft %s failed (%s); escalating", stage.model, exc.message)
        self._escalate(decision, stage, None, "draft_error", started, detail=exc.message)

    def _shadow_accepted(self, rule: CascadeRule, request: ProxyRequest, dialect: str, talk: ThreadView | None,
                         decision: Decision, request_id: str, answer: DraftAnswer, draft_cost: float | None, ops) -> None:
        """Shadow mode: ask the verifier too, after the client has the accepted draft (one JSON call, priced)."""
        verifier, match = self._verifier(rule, request, dialect)
        ask = self._for_verifier(request, verifier, match, dialect, talk, decision)
        body = {k: v for k, v in (ask.body or {}).items() if k != "stream_options"}
        body["stream"] = False
        ask = ask.derive(body)

        async def ask_verifier() -> tuple[DraftAnswer, float | None]:
            result, reply = await self._send_json(match, ask, dialect, ops, "shadow")
            return reply, result.cost

        self.shadow.accepted(rule, decision, request_id, answer, draft_cost, verifier, ask_verifier)

    async def ask_judge(self, model: str, prompt: str) -> tuple[str, float | None]:
        """Shadow mode's judge: one short question to ``model`` in its own route's dialect; (reply, cost)."""
        dialect = "anthropic" if self._provider_of(model, "anthropic") == "anthropic" else "openai"
        body: dict = {"model": model, "messages": [{"role": "user", "content": prompt}]}
        body["max_tokens" if dialect == "anthropic" else "max_completion_tokens"] = 4
        request = ProxyRequest("POST", API_PATHS[dialect], {}, body, None, "")
        result, reply = await self._send_json(self.service.router.resolve(model, dialect), request, dialect,
                                              ops_for(dialect), "judge")
        return reply.text, result.cost

    def _verifier(self, rule: CascadeRule, request: ProxyRequest, dialect: str) -> tuple[str, RouteMatch]:
        verifier = rule.verifier_model or request.model
        return verifier, self.service.router.resolve(verifier, dialect)

    async def _pipe_verifier(
        self, rule, request, decision: Decision, conversation, upstream, ops, reported: str, verifier: str, span,
        turn: Turn | None = None, pairing: tuple[str, DraftAnswer, float | None] | None = None,
    ) -> AsyncIterator[bytes]:
        """The verifier's stream to the client (renamed when it must be); with ``pairing`` (shadow mode's request id,
        draft answer and cost), the verifier's answer is also read, for the pair."""
        rename = reported != verifier
        decoder = SSEDecoder() if rename or pairing else None
        accumulator = ops.accumulator() if pairing else None
        exhausted = False
        try:
            async for chunk in upstream:
                if decoder is None:
                    yield chunk
                    continue
                events = decoder.feed(chunk)
                if accumulator is not None:
                    for event in events:
                        accumulator.feed(event)
                if not rename:
                    yield chunk
                elif events:
                    yield ops.rename_events(events, reported)
            if rename and decoder is not None and decoder.pending:
                yield decoder.pending
            exhausted = True
        finally:
            if not exhausted:  # closed early (the client left): the upstream's own accounting runs first
                await upstream.aclose()
            self.tracing.end_call(span, upstream, error=upstream.error)
            decision.add_call(upstream)
            decision.baseline_cost = self._baseline(rule, request, upstream.usage, verifier_cost=upstream.cost,
                                                    verifier=verifier, turn=turn)
            self._finish(rule, decision, conversation, stream=True, turn=turn)
            if pairing is not None and accumulator is not None and upstream.error is None and accumulator.error is None:
                request_id, draft, draft_cost = pairing
                self.shadow.escalated(rule, decision, request_id, draft, draft_cost,
                                      accumulator.answer(partial=False), upstream.cost)

    # -- accounting --------------------------------------------------------------

    def _baseline(
        self, rule: CascadeRule, request: ProxyRequest, usage: Usage, *, verifier_cost: float | None = None,
        verifier: str | None = None, turn: Turn | None = None,
    ) -> float | None:
        """What the request would have cost sent straight to the requested model.

        In a conversation: on the requested model's cache as it would have been (:meth:`Turn.baseline`).
        Otherwise: the verifier's own cost when it served, else the requested model's price on the draft's usage.
        """
        if turn is not None:
            return turn.baseline(usage, usage.output_tokens, verifier_cost if verifier == turn.requested else None)
        if verifier is not None and verifier == request.model:
            return verifier_cost
        cost = self.registry.cost(request.model, usage) if self.registry.info(request.model) else None
        if cost is None:  # a virtual model (cascade/…): the verifier stands for it
            cost = self.registry.cost(rule.verifier_model or request.model, usage)
        return cost

    def _reported(self, rule: CascadeRule, request: ProxyRequest, served: str) -> str:
        return request.model if rule.report_model == "requested" else served

    def _finish(self, rule: CascadeRule, decision: Decision, conversation: str | None, *, stream: bool,
                turn: Turn | None = None, answer: DraftAnswer | None = None) -> None:
        if turn is not None and decision.calls:
            drafted = not decision.reason.startswith("skipped:")
            turn.end(decision.calls, drafted, decision.accepted, decision.calls[-1][1],
                     [c.id for c in answer.tool_calls] if answer is not None else [], decision.served_model)
        totals = self.tracker.rule(decision.rule)
        if decision.reason.startswith("escalated:"):
            totals.escalated[decision.reason.removeprefix("escalated:")] += 1
            totals.added_latency_ms += decision.draft_ms
        if decision.cost is None or decision.baseline_cost is None:
            totals.unpriced += 1
        else:
            totals.cost += decision.cost
            totals.baseline_cost += decision.baseline_cost
        if not decision.reason.startswith("skipped:"):
            self.sticky.record(conversation, escalated=not decision.accepted)
        self.tracker.record_request(stream=stream, draft_accepted=decision.accepted)
        log.debug(  # the gateway's request line says it at info level
            "cascade %s: %s → %s (%s, confidence %s)", decision.rule, decision.requested_model, decision.served_model,
            decision.reason, "n/a" if decision.confidence is None else f"{decision.confidence:.3f}",
        )


def _bucket(name: str, reason: str) -> str:
    """A low-cardinality reason for stats: the check's name and the fixed part of its reason.

    ``arguments for 'get_weather' invalid at $: …`` → ``tool_use:arguments invalid``.
    """
    if name == "logprobs":
        return "logprobs:low confidence"
    head = _REASON_CUT.split(_QUOTED.sub("", reason), maxsplit=1)[0]
    head = " ".join(head.split()).removesuffix(" for").replace(" for ", " ")
    return f"{name}:{head}" if head else name


def _with_model(request: ProxyRequest, model: str) -> ProxyRequest:
    if request.model == model:
        return request
    return request.derive({**(request.body or {}), "model": model})


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
