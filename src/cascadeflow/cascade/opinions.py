"""Second opinions on a draft: the costly checks, which make upstream calls of their own.

Self-verification asks a model whether the draft is right; sample agreement asks the draft
model again (concurrently) and scores how well the samples agree with the draft. Each call
is priced into the request's decision; one cut off because the client left, on its input.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import ProxyError
from ..proxy.translation import API_PATHS
from .agreement import agreement, semantic_agreement, states_final_answer
from .selfcheck import verdict, verification_body
from .thinking import strip_thinking

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..config import CascadeRule, CascadeStage
    from ..pricing import ModelRegistry
    from ..proxy import ProxyRequest, ProxyResult
    from .accounting import Accounts
    from .answer import CheckResult, DraftAnswer
    from .decision import Decision
    from .drafts import DialectOps
    from .port import Target, UpstreamPort

    #: one non-streaming call: (route, request, dialect, ops, purpose) -> (result, its answer)
    Send = Callable[[Target, ProxyRequest, str, DialectOps, str], Awaitable[tuple[ProxyResult, DraftAnswer]]]

__all__ = ["SecondOpinions", "draft_cap"]

log = logging.getLogger("cascadeflow.cascade")


def draft_cap(rule: CascadeRule, model: str, registry: ModelRegistry) -> int | None:
    """The draft's output cap: the rule's ``draft_max_tokens``, never above what the draft model allows
    (Claude Code asks for 128k; claude-haiku-5-5 would refuse anything over 64k)."""
    info = registry.info(model)
    limit = info.max_output_tokens if info is not None else None
    if rule.draft_max_tokens is None or limit is None:
        return rule.draft_max_tokens if limit is None else limit
    return min(rule.draft_max_tokens, limit)


class SecondOpinions:
    """The extra calls that vote on a draft (``self_verify``, ``sample_agreement``), priced into its decision."""

    def __init__(self, upstreams: UpstreamPort, accounts: Accounts, send: Send, embedder: object | None) -> None:
        self.upstreams = upstreams
        self.registry = upstreams.registry
        self.accounts = accounts
        #: the engine's one non-streaming call (it traces the call with the engine's tracing, set up later)
        self.send = send
        #: WordLlama when a rule's sample agreement compares meanings
        self.embedder = embedder

    async def self_verify(
        self, rule: CascadeRule, stage: CascadeStage, request: ProxyRequest, answer: DraftAnswer, dialect: str,
        decision: Decision, ops: DialectOps,
    ) -> CheckResult | None:
        """Ask the verification model about the draft; its cost joins the request's."""
        model = (rule.self_verify and rule.self_verify.model) or stage.model
        body = verification_body(request.body or {}, answer, dialect, model, self.registry.is_reasoning(model))
        if body is None:
            return None
        verify = request.derive(body, method="POST", path=API_PATHS[dialect], query="")
        try:
            match = self.upstreams.resolve(model, dialect)
            result, reply = await self.send(match, verify, dialect, ops, "self_verify")
        except ProxyError as exc:
            log.info("self-verification with %s failed (%s); not scored", model, exc.message)
            return None
        except asyncio.CancelledError:  # the client left: the question was read, so it is paid for
            self.accounts.cut(decision, match, verify)
            raise
        decision.add_call(result)
        return verdict(reply)

    async def samples(
        self, rule: CascadeRule, stage: CascadeStage, request: ProxyRequest, answer: DraftAnswer, dialect: str,
        decision: Decision, ops: DialectOps,
    ) -> CheckResult | None:
        """Sample the draft model again (concurrently) and score agreement with the draft's answer."""
        settings = rule.sample_agreement
        if settings is None or answer.tool_calls or not answer.text.strip():
            return None
        match = self.upstreams.resolve(stage.model, dialect)
        reasoning = self.registry.is_reasoning(stage.model)
        body = {**ops.draft_body(request.body or {}, stage.model, draft_cap(rule, stage.model, self.registry), reasoning),
                "stream": False, "temperature": settings.temperature}
        if reasoning and dialect != "anthropic":  # it samples at its fixed temperature (1) only: see docs/cascade.md
            del body["temperature"]
        if dialect == "anthropic" and isinstance(body.get("messages"), list):  # one-off samples think afresh
            body.pop("thinking", None)
            body["messages"] = strip_thinking(body["messages"])
        body.pop("stream_options", None)
        asks = [request.derive(body, method="POST", path=API_PATHS[dialect], query="", sample_index=i)
                for i in range(settings.samples)]
        calls = [asyncio.ensure_future(self.send(match, ask, dialect, ops, "sample")) for ask in asks]
        try:
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        except asyncio.CancelledError:  # the client left: samples that answered are paid for, cut ones on input
            for call, ask in zip(calls, asks, strict=True):
                if call.done() and not call.cancelled() and call.exception() is None:
                    decision.add_call(call.result()[0])
                elif call.cancelled():
                    self.accounts.cut(decision, match, ask)
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
            return await asyncio.to_thread(semantic_agreement, self.embedder, answer.text, texts)
        return agreement(answer.text, texts)
