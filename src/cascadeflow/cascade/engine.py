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

This module is the decision's flow; its parts live beside it: what was decided
(:mod:`.decision`), how it is counted and priced (:mod:`.accounting`), the checks that
call upstream (:mod:`.opinions`), and the draft's read and the verifier's relay
(:mod:`.streaming`). All of them reach upstreams through one narrow port (:mod:`.port`:
resolve a model, send, open a stream, price), never the proxy's router or handler; the
engine returns a :class:`.Decision` in its reply and the gateway renders the headers from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING

from ..config import CascadeRule, CascadeStage
from ..dialects.accumulate import AnthropicAccumulator
from ..errors import ProxyError
from ..proxy import ProxyRequest, ProxyResult, ProxyStream
from ..proxy.translation import API_PATHS
from ..tracing import Tracing
from .accounting import Accounts, RuleTotalsSource, bucket
from .answer import CheckResult, DraftAnswer
from .beta_refusals import BetaRefusals
from .bridge import bridged
from .capabilities import capability_gap
from .decision import CascadeReply, Decision
from .drafts import DialectOps, ops_for
from .kinds import request_kind
from .opinions import SecondOpinions, draft_cap
from .policies import context_gap, skip_reason
from .port import ANSWER_CALL, OPTIONAL_CALL
from .router import Router, load_router
from .scorer import checks_for
from .scoring import score_draft
from .session import SessionBook, SessionSignal, Turn
from .shadow import ShadowRecorder
from .streaming import once, read_draft, relay
from .thinking import ThinkingThreads, ThreadView

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..sessions import Sessions, ThinkingOrigins
    from .port import Target, UpstreamPort
    from .streaming import Accumulator

__all__ = ["CascadeEngine", "Decision", "CascadeReply"]

log = logging.getLogger("cascadeflow.cascade")


class CascadeEngine:
    def __init__(
        self, upstreams: UpstreamPort, rules: list[CascadeRule], tracker: RuleTotalsSource,
        origins: ThinkingOrigins | None = None, sessions: Sessions | None = None,
        clock: Callable[[], float] = time.time, refusals: BetaRefusals | None = None,
    ) -> None:
        from ..sessions import MemorySessions, MemoryThinkingOrigins

        #: the one way upstream: resolve a model, send, open a stream, price (:mod:`.port`)
        self.upstreams = upstreams
        #: which model wrote the thinking blocks handed out with accepted drafts, and each model's view
        self.threads = ThinkingThreads(origins if origins is not None else MemoryThinkingOrigins())
        self.registry = upstreams.registry
        #: conversations: cache shadows per model, the true baseline, what earlier drafts led to
        self.book = SessionBook(sessions if sessions is not None else MemorySessions(), self.registry, clock)
        #: sticky escalations, the baseline of each decision (each rule's totals: ``tracker``, from the records)
        self.accounts = Accounts(upstreams)
        self.tracker = tracker
        self.sticky = self.accounts.sticky
        #: the ``anthropic-beta`` values each draft model refused (learned from its 400s; shared with ``redis_url``)
        self.refusals = refusals if refusals is not None else BetaRefusals()
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
        #: self-verification and sample agreement: the checks that call upstream
        self.opinions = SecondOpinions(upstreams, self.accounts, self._send_json, self._embedder)
        #: spans for the draft, checks and verifier calls (off unless the gateway sets one up)
        self.tracing = Tracing()
        #: shadow mode's pairs (the gateway hands them to its ledger)
        self.shadow = ShadowRecorder(lambda pair: None, self.ask_judge)

    # -- the two entry points ------------------------------------------------------

    def begin(self, rule: CascadeRule, request: ProxyRequest) -> Decision:
        """The decision one request will fill in: the caller keeps it to record a request cancelled midway."""
        return self.accounts.begin(rule, request)

    async def complete(
        self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None, request_id: str = "",
        decision: Decision | None = None,
    ) -> CascadeReply:
        """A non-streaming request (``decision``: from :meth:`begin`, when the caller wants to see it filled in).

        Cancelled (the client left, the server shut down), what was used is priced and recorded: see :meth:`.Accounts.abandoned`."""
        decision = decision or self.accounts.begin(rule, request)
        opened: list[Turn | None] = []
        try:
            return await self._complete(rule, request, dialect, conversation, request_id, decision, opened)
        except asyncio.CancelledError:
            self.accounts.abandoned(rule, decision, conversation, opened[0] if opened else None)
            raise

    async def stream(
        self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None, request_id: str = "",
        decision: Decision | None = None,
    ) -> CascadeReply:
        """A streaming request: drafts are read to the end (or an early failure) before anything is sent.

        Cancelled while a draft is read (the client left), the draft's stream is closed at once and
        counted for what it generated; no verifier is opened; what was used is recorded (:meth:`.Accounts.abandoned`)."""
        decision = decision or self.accounts.begin(rule, request)
        opened: list[Turn | None] = []
        try:
            return await self._stream(rule, request, dialect, conversation, request_id, decision, opened)
        except asyncio.CancelledError:
            self.accounts.abandoned(rule, decision, conversation, opened[0] if opened else None)
            raise

    async def _complete(self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None,
                        request_id: str, decision: Decision, opened: list[Turn | None]) -> CascadeReply:
        ops = ops_for(dialect)
        turn = await self._turn(rule, request, dialect, conversation, request_id)
        opened.append(turn)
        talk = await self._talk(rule, request, dialect, turn)
        shadowed = self.shadow.sampled(rule)
        judged: tuple[DraftAnswer, float | None] | None = None  # the last draft judged: its answer and cost
        await self._route(rule, request, decision)
        await self.refusals.ready(request.headers)  # the betas other processes learned (at most every few seconds)
        for stage, match, draft, started in self._drafts(rule, request, dialect, conversation, decision, ops, talk, turn):
            judged = None
            try:
                result, answer = await self._send_json(match, draft, dialect, ops)
            except ProxyError as exc:
                self.accounts.draft_failed(decision, stage, started, exc,
                                          await self.refusals.learn(stage.model, draft.headers, exc))
                continue
            except asyncio.CancelledError:  # the client left: the draft's connection is closed; priced on its input
                decision.draft_model = stage.model
                self.accounts.cut(decision, match, draft)
                raise
            judged = (answer, result.cost)
            if await self._judge(rule, stage, request, answer, dialect, decision, result, started, ops):
                await self.threads.hand_out(result.data, stage.model, dialect)
                body = ops.reply_body(result.data, self._reported(rule, request, stage.model), request.body or {})
                decision.baseline_cost = self.accounts.baseline(rule, request, result.usage, turn=turn)
                self.accounts.finish(rule, decision, conversation, turn=turn, answer=answer)
                if shadowed:
                    self._shadow_accepted(rule, request, dialect, talk, decision, request_id, answer, result.cost, ops)
                await self.book.stored(turn)
                return CascadeReply(result.status, result.headers, decision, body, after=self._after(turn))
        verifier, match = self._verifier(rule, request, dialect)
        decision.served_model = verifier
        try:
            with self.tracing.call("verifier", verifier, match.route) as span:
                ask = bridged(turn, verifier, self._for_verifier(request, verifier, match, dialect, talk, decision))
                result = (await self.upstreams.send(match, ask, ANSWER_CALL)).result
                self.tracing.record_call(span, result)
        except ProxyError as exc:
            self.accounts.finish(rule, decision, conversation)
            exc.decision = decision  # the error answer carries the decision's headers, its record the draft's cost
            raise
        except asyncio.CancelledError:
            self.accounts.cut(decision, match, request)
            raise
        decision.add_call(result)
        decision.baseline_cost = self.accounts.baseline(rule, request, result.usage, verifier_cost=result.cost,
                                                        verifier=verifier, turn=turn)
        self.accounts.finish(rule, decision, conversation, turn=turn)
        if shadowed and judged is not None and decision.confidence is not None:
            self.shadow.escalated(rule, decision, request_id, judged[0], judged[1], ops.answer(result.data), result.cost)
        body = result.raw
        reported = self._reported(rule, request, verifier)
        if reported != verifier and isinstance(result.data, dict):
            body = ops.rename(result.data, reported)
        await self.book.stored(turn)
        return CascadeReply(result.status, result.headers, decision, body, after=self._after(turn))

    async def _stream(self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None,
                      request_id: str, decision: Decision, opened: list[Turn | None]) -> CascadeReply:
        ops = ops_for(dialect)
        caller = request.body or {}
        turn = await self._turn(rule, request, dialect, conversation, request_id)
        opened.append(turn)
        talk = await self._talk(rule, request, dialect, turn)
        shadowed = self.shadow.sampled(rule)
        judged: tuple[DraftAnswer, float | None] | None = None  # the last draft judged: its answer and cost
        await self._route(rule, request, decision)
        await self.refusals.ready(request.headers)  # the betas other processes learned (at most every few seconds)
        for stage, match, draft, started in self._drafts(rule, request, dialect, conversation, decision, ops, talk, turn):
            judged = None
            span = self.tracing.start_call("draft", stage.model, match.route)
            try:
                drafting = await self.upstreams.open_stream(match, draft, OPTIONAL_CALL)
            except ProxyError as exc:
                self.tracing.end_call(span, error=exc)
                self.accounts.draft_failed(decision, stage, started, exc,
                                          await self.refusals.learn(stage.model, draft.headers, exc))
                continue
            except asyncio.CancelledError:
                self.tracing.end_call(span, error=None)
                decision.draft_model = stage.model
                self.accounts.cut(decision, match, draft)
                raise
            except Exception as exc:  # refused before any call (a body its translation cannot carry): end the span
                self.tracing.end_call(span, error=exc)
                raise
            upstream = drafting.stream
            accumulator = ops.accumulator()
            early = None
            try:
                early = await read_draft(self._checks[rule.name], upstream, accumulator, caller, dialect)
            except asyncio.CancelledError:  # the client left: stop the draft now; it is paid for what it generated
                await upstream.aclose()
                decision.add_call(upstream)
                decision.draft_model = stage.model
                raise
            finally:  # a draft stopped early by a check is no failure of the call
                self.tracing.end_call(span, upstream, error=None if early is not None else upstream.error)
            if early is not None:
                decision.add_call(upstream)
                self.accounts.escalate(decision, stage, early.score, f"early {bucket(early.name, early.reason)}", started)
                continue
            if accumulator.error is not None or upstream.error is not None:
                decision.add_call(upstream)
                self.accounts.escalate(decision, stage, None, "draft_error", started)
                continue
            answer = accumulator.answer(partial=False)
            answer.usage = upstream.usage
            logprobs = drafting.logprobs()  # kept by a translation; a same-dialect stream's are in its events
            if logprobs:
                answer.logprobs = logprobs
            judged = (answer, upstream.cost)
            if await self._judge(rule, stage, request, answer, dialect, decision, upstream, started, ops):
                if isinstance(accumulator, AnthropicAccumulator):  # only Anthropic's answers carry thinking blocks
                    await self.threads.hand_out(accumulator.message, stage.model, dialect)
                body = ops.replay(accumulator, self._reported(rule, request, stage.model), caller)
                decision.baseline_cost = self.accounts.baseline(rule, request, upstream.usage, turn=turn)
                self.accounts.finish(rule, decision, conversation, turn=turn, answer=answer)
                if shadowed:
                    self._shadow_accepted(rule, request, dialect, talk, decision, request_id, answer, upstream.cost, ops)
                await self.book.stored(turn)
                return CascadeReply(upstream.status, upstream.headers, decision, chunks=once(body),
                                    after=self._after(turn))
        verifier, match = self._verifier(rule, request, dialect)
        decision.served_model = verifier
        span = self.tracing.start_call("verifier", verifier, match.route)  # ends with the stream
        try:
            ask = bridged(turn, verifier, self._for_verifier(request, verifier, match, dialect, talk, decision))
            upstream = (await self.upstreams.open_stream(match, ask, ANSWER_CALL)).stream
        except ProxyError as exc:
            self.tracing.end_call(span, error=exc)
            self.accounts.finish(rule, decision, conversation)
            exc.decision = decision
            raise
        except asyncio.CancelledError:
            self.tracing.end_call(span, error=None)
            self.accounts.cut(decision, match, request)
            raise
        reported = self._reported(rule, request, verifier)
        pairing = (request_id, *judged) if shadowed and judged is not None and decision.confidence is not None else None

        def ended(accumulator: Accumulator | None) -> None:
            """The verifier's stream is over (read out or cut): price it, record the request, pair it for shadow mode."""
            self.tracing.end_call(span, upstream, error=upstream.error)
            decision.add_call(upstream)
            decision.baseline_cost = self.accounts.baseline(rule, request, upstream.usage, verifier_cost=upstream.cost,
                                                            verifier=verifier, turn=turn)
            self.accounts.finish(rule, decision, conversation, turn=turn)
            if pairing is not None and accumulator is not None and upstream.error is None and accumulator.error is None:
                paired_id, paired_draft, paired_cost = pairing
                self.shadow.escalated(rule, decision, paired_id, paired_draft, paired_cost,
                                      accumulator.answer(partial=False), upstream.cost)

        chunks = relay(upstream, ops, reported, verifier, pairing is not None, ended)
        # priced when the stream ends: the headers go out without the cost
        return CascadeReply(upstream.status, upstream.headers, decision, chunks=chunks, priced=False,
                            after=self._after(turn))

    # -- steps -------------------------------------------------------------------

    def _after(self, turn: Turn | None) -> Callable[[], None] | None:
        """The turn's record, for the gateway to run once the answer is out (see :mod:`.session`)."""
        return None if turn is None else partial(self.book.settle, turn)

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

    def _drafts(self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None, decision: Decision,
                ops: DialectOps, talk: ThreadView | None = None, turn: Turn | None = None,
                ) -> Iterator[tuple[CascadeStage, Target, ProxyRequest, float]]:
        """The draft stages to try — none when a policy skips drafting — each with its route and request."""
        for stage in self._open_stages(rule, request, dialect, conversation, decision, turn):
            match = self._draft_route(stage, dialect, decision)
            if match is None:
                return
            draft = self._draft_request(rule, request, stage, ops)
            if talk is not None and not match.translated:
                draft = draft.derive(talk.body_for(draft.body or {}, stage.model, decision.thinking_views))
            draft = bridged(turn, stage.model, draft)  # the draft model's own cache, read past a verifier's run
            yield stage, match, draft, time.perf_counter()

    async def _turn(self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None,
                    request_id: str) -> Turn | None:
        """This request as a turn of its conversation (None without a conversation id)."""

        def rules_for(model: str) -> str:
            return "anthropic" if self._provider_of(model, dialect) == "anthropic" else "openai"

        return await self.book.begin(rule, request.body or {}, dialect, conversation, self._priced_as(rule, request),
                                     rules_for, request_id, request.raw_body)

    async def _talk(self, rule: CascadeRule, request: ProxyRequest, dialect: str, turn: Turn | None) -> ThreadView | None:
        """Who wrote the conversation's thinking blocks, for each model's view (see :class:`.ThinkingThreads`)."""
        return await self.threads.view(request.body or {}, dialect, rule.verifier_model or request.model,
                                       turn.key if turn is not None else None, request.raw_body)

    def _provider_of(self, model: str, dialect: str) -> str:
        """The provider of the route that would serve ``model`` (the dialect's own when none does)."""
        try:
            return self.upstreams.resolve(model, dialect).provider
        except ProxyError:
            return dialect

    def _priced_as(self, rule: CascadeRule, request: ProxyRequest) -> str:
        """The model savings are counted against: the requested one, or the verifier for a virtual model."""
        return request.model if self.registry.info(request.model) else (rule.verifier_model or request.model)

    def _for_verifier(self, request: ProxyRequest, verifier: str, match: Target, dialect: str,
                      talk: ThreadView | None, decision: Decision) -> ProxyRequest:
        request = _with_model(request, verifier)
        if talk is None or match.translated:
            return request
        body = talk.body_for(request.body or {}, verifier, decision.thinking_views)
        if body is request.body:
            return request
        return request.derive(body)

    def _open_stages(
        self, rule: CascadeRule, request: ProxyRequest, dialect: str, conversation: str | None, decision: Decision,
        turn: Turn | None = None,
    ) -> list[CascadeStage]:
        """The draft stages this request may be drafted on, in order; none when it skips drafting (then
        ``decision.reason`` says why: the first stage's reason when every stage is gated out).

        Each stage is gated on its own model, once: its context window, the media, server tools and features it
        lacks (:func:`.capability_gap`), the betas it refused (:mod:`.beta_refusals`), and, with
        ``cache_economics``, the conversation's prices on its own cache. A stage passed over while another drafts
        is named in ``decision.skipped_stages``.

        Which reason wins when several apply: first those that hold for every stage and that nothing about a
        stage can undo, cheapest first — ``never_draft``, ``forced_tool_choice``, ``kind:…``,
        ``session_signal:…``, ``router`` — so a request skipped for one of them pays for no stage's gates
        (counting its context, walking its media, pricing caches). Then the stage gates (every stage gated out:
        the first stage's reason), then ``cache_economics`` / ``sticky_escalation``: the economics, once they
        price a stage, decide how long an escalation sticks, so a sticky escalation stands only where no stage
        could be priced. Every skip sends the request to the verifier alike: the order changes only the reason
        recorded and the work done (pricing reads the caches and changes nothing, :meth:`.Turn.economics`; a
        request skipped before it carries no ``expected_saving``).
        """
        body = request.body or {}
        signal = turn.signal() if turn is not None else None  # always read: it settles the last drafted turn
        decision.kind = request_kind(request.headers, body)
        decision.session_signal = signal
        reason = skip_reason(rule, body, dialect, self.sticky, conversation)
        if reason in (None, "sticky_escalation"):
            reason = _request_reason(rule, decision, signal) or reason
        if reason not in (None, "sticky_escalation"):
            decision.reason = f"skipped:{reason}"
            return []
        stages = rule.draft_stages()
        passed: dict[str, str] = {}  # stage model → why it is passed over
        open_stages: list[CascadeStage] = []
        verifier = rule.verifier_model or request.model
        raw = request.raw_body or b""
        verifier_provider = self._provider_of(verifier, dialect)
        for stage in stages:
            gap = context_gap(rule, body, raw, stage.model, self.registry) or capability_gap(
                body, raw, dialect, stage.model, self._provider_of(stage.model, dialect), verifier_provider,
                self.registry)
            if gap is None and self.refusals.refused(stage.model, request.headers) is not None:
                gap = "capability:beta"  # this model refused one of the request's betas before
            if gap is None:
                open_stages.append(stage)
            else:
                passed[stage.model] = gap
        if not open_stages:
            reason = passed[stages[0].model]
        elif turn is not None and rule.policies.cache_economics:
            open_stages, reason = self._priced_stages(rule, decision, turn, open_stages, verifier, reason, passed)
        if reason is None:
            if passed:
                decision.skipped_stages = [(stage.model, passed[stage.model]) for stage in stages
                                           if stage.model in passed]
            return open_stages
        decision.reason = f"skipped:{reason}"
        return []

    def _priced_stages(
        self, rule: CascadeRule, decision: Decision, turn: Turn, stages: list[CascadeStage], verifier: str,
        reason: str | None, passed: dict[str, str],
    ) -> tuple[list[CascadeStage], str | None]:
        """Cache economics per stage: the stages whose drafting pays, each priced on its own model's cache and its
        own failure rate, the chain priced backwards (:meth:`.Turn.economics`), and the reason.

        A stage that cannot be priced drafts as without economics (not past a sticky escalation); once any stage
        is priced, the numbers decide how long an escalation sticks. The decision's expected saving is that of
        the chain from the first priced stage that drafts over the verifier (of the first priced stage alone
        when none drafts).
        """
        totals = self.tracker.rule(decision.rule)
        counts = [(stage.model, totals.stage_drafts[stage.model], totals.stage_failures[stage.model])
                  for stage in stages]
        paying: list[CascadeStage] = []
        priced: list[float] = []
        for stage, found in zip(stages, turn.economics(counts, verifier), strict=True):
            if found is None:
                if reason is None:
                    paying.append(stage)
                continue
            go, saving, chain = found
            priced.append(saving)
            if go:
                if decision.expected_saving is None:
                    decision.expected_saving = chain
                paying.append(stage)
            else:
                passed[stage.model] = "cache_economics"
        if not priced:
            return paying, reason
        if not paying:
            decision.expected_saving = priced[0]
        return paying, None if paying else "cache_economics"

    def _draft_route(self, stage: CascadeStage, dialect: str, decision: Decision) -> Target | None:
        try:
            match = self.upstreams.resolve(stage.model, dialect)
        except ProxyError as exc:
            log.warning("cascade rule %r: draft model %r has no route (%s)", decision.rule, stage.model, exc.message)
            decision.reason = "skipped:draft_unroutable"
            return None
        return match

    def _draft_request(self, rule: CascadeRule, request: ProxyRequest, stage: CascadeStage, ops: DialectOps) -> ProxyRequest:
        body = ops.draft_body(request.body or {}, stage.model, draft_cap(rule, stage.model, self.registry),
                              self.registry.is_reasoning(stage.model))
        return request.derive(body)

    async def _judge(
        self, rule: CascadeRule, stage: CascadeStage, request: ProxyRequest, answer: DraftAnswer, dialect: str,
        decision: Decision, call: ProxyResult | ProxyStream, started: float, ops: DialectOps,
    ) -> bool:
        """Score a complete draft; record it; True when it is accepted."""
        caller = request.body or {}
        decision.add_call(call)
        decision.draft_model = stage.model
        threshold = stage.quality_threshold if stage.quality_threshold is not None else rule.quality_threshold

        async def ask_verifier() -> CheckResult | None:
            return await self.opinions.self_verify(rule, stage, request, answer, dialect, decision, ops)

        async def ask_samples() -> CheckResult | None:
            return await self.opinions.samples(rule, stage, request, answer, dialect, decision, ops)

        costly = [ask for ask, wanted in ((ask_verifier, rule.self_verify), (ask_samples, rule.sample_agreement)) if wanted]
        with self.tracing.checks(decision.rule, stage.model, threshold) as span:
            score = await score_draft(rule, self._checks[rule.name], caller, answer, dialect, threshold, costly)
            if self.tracing.enabled:
                span.set_attributes({"cascadeflow.confidence": score.confidence, "cascadeflow.checks": score.header(),
                                     "cascadeflow.accepted": score.confidence >= threshold})
        decision.confidence = score.confidence
        decision.checks = score.header()
        if score.confidence >= threshold:
            self.accounts.accepted(decision, stage, score.confidence, started)
            return True
        worst = min(score.results, key=lambda r: r.score) if score.results else None
        reason = bucket(worst.name, worst.reason) if worst and worst.score < threshold else "low_confidence"
        self.accounts.escalate(decision, stage, score.confidence, reason, started, detail=score.reason)
        return False

    async def _send_json(
        self, match: Target, request: ProxyRequest, dialect: str, ops: DialectOps, purpose: str = "draft"
    ) -> tuple[ProxyResult, DraftAnswer]:
        """One optional non-streaming call in the caller's dialect (translated by the port); log-probabilities kept."""
        with self.tracing.call(purpose, match.model, match.route) as span:
            sent = await self.upstreams.send(match, request, OPTIONAL_CALL)
            self.tracing.record_call(span, sent.result)
        result = sent.result
        answer = ops.answer(result.data)
        if sent.logprobs:
            answer.logprobs = sent.logprobs
        return result, answer

    def _shadow_accepted(self, rule: CascadeRule, request: ProxyRequest, dialect: str, talk: ThreadView | None,
                         decision: Decision, request_id: str, answer: DraftAnswer, draft_cost: float | None,
                         ops: DialectOps) -> None:
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
        result, reply = await self._send_json(self.upstreams.resolve(model, dialect), request, dialect,
                                              ops_for(dialect), "judge")
        return reply.text, result.cost

    def _verifier(self, rule: CascadeRule, request: ProxyRequest, dialect: str) -> tuple[str, Target]:
        verifier = rule.verifier_model or request.model
        return verifier, self.upstreams.resolve(verifier, dialect)

    def _reported(self, rule: CascadeRule, request: ProxyRequest, served: str) -> str:
        return request.model if rule.report_model == "requested" else served


def _with_model(request: ProxyRequest, model: str) -> ProxyRequest:
    if request.model == model:
        return request
    return request.derive({**(request.body or {}), "model": model})


def _request_reason(rule: CascadeRule, decision: Decision, signal: SessionSignal | None) -> str | None:
    """The reason not to draft this request that holds whatever the stage: its kind, the session's signal,
    the router's prediction (read from ``decision``, where the engine put them); None when none applies."""
    kinds = rule.policies.draft_kinds
    if kinds is not None and decision.kind not in kinds:
        return f"kind:{decision.kind}"
    if signal is not None:
        return f"session_signal:{signal.kind}"
    if rule.router is not None and decision.route_confidence is not None \
            and decision.route_confidence < rule.router.threshold:
        return "router"  # predicted to fail: the draft would only be paid for
    return None
