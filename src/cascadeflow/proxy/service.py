"""ProxyService: a router and a handler together — route a request, translate if needed, send it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..dialects.translate import estimate_tokens
from ..errors import ProxyRoutingError, ProxyTransportError, ProxyUpstreamError
from ..providers import adapter_for
from ..usage import Usage
from .handler import ProxyHandler
from .resilience import RETRYABLE_STATUSES
from .router import ProxyRouter, RouteMatch
from .translation import Translation
from .types import ProxyRequest, ProxyResult, ProxyStream

#: what a call on a route gives: an answer, or a stream
Answer = TypeVar("Answer", ProxyResult, ProxyStream)

__all__ = ["ProxyService", "dialect_of_path"]

log = logging.getLogger("cascadeflow.proxy")


def _upstream_fault(exc: Exception) -> bool:
    """A failure another upstream might not have: unreachable, timed out, overloaded, 5xx, 429."""
    return isinstance(exc, ProxyTransportError) or (
        isinstance(exc, ProxyUpstreamError) and exc.upstream_status in RETRYABLE_STATUSES
    )


def dialect_of_path(path: str) -> str | None:
    """The dialect an API path belongs to (``/v1/messages`` → anthropic)."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/responses"):
        return "responses"
    if path.startswith(("/v1/chat/completions", "/v1/completions", "/v1/embeddings")):
        return "openai"
    return None


class ProxyService:
    """End-to-end convenience: ``await service.handle(request)``.

    A request whose route speaks the other dialect is translated both ways, so an
    Anthropic-style request may be served by an OpenAI-compatible upstream and back.
    """

    def __init__(self, router: ProxyRouter, handler: ProxyHandler) -> None:
        self.router = router
        self.handler = handler

    def route(self, request: ProxyRequest) -> RouteMatch:
        return self.router.resolve(request.model, dialect_of_path(request.path))

    def price(self, model: str, dialect: str | None, usage: Usage) -> float | None:
        """USD for ``usage`` on ``model`` as routed: a route prefix stripped, the route's own price applied."""
        try:
            match = self.router.resolve(model, dialect)
        except ProxyRoutingError:
            return self.router.registry.cost(model, usage)
        return self.handler.price(match.route, match.model, usage)

    def translation(self, match: RouteMatch, dialect: str | None) -> Translation | None:
        """How to cross from the caller's dialect to the route's, or None when they agree.

        A Responses caller agrees with an OpenAI route that serves the Responses API
        (``openai_api``); on a chat-only route it is translated to Chat Completions.
        """
        if not self.translates(match, dialect):
            return None
        assert dialect is not None  # translates() is False without one
        return Translation(dialect, match.route.provider, self.router.registry)

    @staticmethod
    def translates(match: RouteMatch, dialect: str | None) -> bool:
        """Whether a request in ``dialect`` crosses to another dialect on ``match`` (see :meth:`translation`)."""
        if dialect is None or match.route.provider == dialect:
            return False
        return not (dialect == "responses" and match.route.provider == "openai" and match.route.serves_responses)

    def rewrites(self, match: RouteMatch, request: ProxyRequest, dialect: str | None) -> bool:
        """True when ``request`` may reach an upstream re-serialised rather than as its bytes: translated, its
        model renamed, changed by the provider adapter, or sent on to a fallback."""
        if request.raw_body is None or match.route.fallbacks or self.translation(match, dialect) is not None:
            return True
        return adapter_for(match.route.provider, request.path).prepare(request.path, request.body or {}, match.model)[1]

    async def send(self, match: RouteMatch, request: ProxyRequest, dialect: str | None = None) -> ProxyResult:
        """One non-streaming call on ``match`` in the caller's ``dialect``; the route's fallbacks if it fails."""
        return await self._with_fallbacks(match, request, dialect, self._send)

    async def open_stream(self, match: RouteMatch, request: ProxyRequest, dialect: str | None = None) -> ProxyStream:
        """One streaming call on ``match``; the bytes come in the caller's ``dialect``."""
        return await self._with_fallbacks(match, request, dialect, self._open_stream)

    async def _with_fallbacks(
        self, match: RouteMatch, request: ProxyRequest, dialect: str | None,
        call: Callable[[RouteMatch, ProxyRequest, str | None, bool], Awaitable[Answer]],
    ) -> Answer:
        """Try ``match``, then each of its route's fallback models while the failure is the upstream's.

        A call with a routable fallback still to come may be refused by its open breaker; the last
        one is always sent, so the caller gets an upstream's own answer, never only a refusal.
        """
        fallbacks = self._fallbacks(match, dialect) if match.route.fallbacks else []
        try:
            return await call(match, request, dialect, bool(fallbacks))
        except (ProxyTransportError, ProxyUpstreamError) as exc:
            if not fallbacks or not _upstream_fault(exc):
                raise
            failure: Exception = exc
        for number, (model, fallback) in enumerate(fallbacks, 1):
            body = {**(request.body or {}), "model": model}
            try:
                result = await call(fallback, request.derive(body), dialect, number < len(fallbacks))
            except (ProxyTransportError, ProxyUpstreamError) as exc:
                if not _upstream_fault(exc):
                    raise
                failure = exc
                continue
            log.info("route %s failed (%s); answered by fallback %s", match.route.name, failure, model)
            result.headers["x-cascadeflow-fallback-model"] = model
            if self.handler.cost_tracker is not None:
                self.handler.cost_tracker.fallbacks += 1
            return result
        raise failure

    def _fallbacks(self, match: RouteMatch, dialect: str | None) -> list[tuple[str, RouteMatch]]:
        """The route's fallback models that have a route (the router caches resolutions)."""
        found = []
        for model in match.route.fallbacks:
            try:
                found.append((model, self.router.resolve(model, dialect)))
            except ProxyRoutingError:
                log.warning("fallback model %r of route %r has no route", model, match.route.name)
        return found

    async def _send(self, match: RouteMatch, request: ProxyRequest, dialect: str | None,
                    has_alternative: bool = False) -> ProxyResult:
        translation = self.translation(match, dialect)
        if translation is None:
            return await self.handler.send(match.route, match.model, request, has_alternative=has_alternative)
        if request.path.endswith("/count_tokens"):  # no upstream counts Anthropic-style: estimate
            # tiktoken on a body of up to server.max_body_bytes takes seconds: never on the event loop
            tokens = await asyncio.to_thread(estimate_tokens, {**(request.body or {}), "model": match.model},
                                             "anthropic")
            data = {"input_tokens": tokens}
            return ProxyResult(data, 200, {"x-cascadeflow-token-count": "estimated"}, Usage(), 0.0, match.route.name,
                               match.model, 0.0, b'{"input_tokens":%d}' % tokens)
        result = await self.handler.send(match.route, match.model, translation.request(request, match.model),
                                         has_alternative=has_alternative)
        return translation.response(result)

    async def _open_stream(self, match: RouteMatch, request: ProxyRequest, dialect: str | None,
                           has_alternative: bool = False) -> ProxyStream:
        translation = self.translation(match, dialect)
        if translation is None:
            return await self.handler.open_stream(match.route, match.model, request, has_alternative=has_alternative)
        inner = await self.handler.open_stream(match.route, match.model, translation.request(request, match.model),
                                               has_alternative=has_alternative)
        return translation.stream(inner, match.model)

    async def handle(self, request: ProxyRequest) -> ProxyResult:
        """Send the request and return the whole answer (a stream is read to its end)."""
        match = self.route(request)
        dialect = dialect_of_path(request.path)
        self._count(request)
        if not request.stream:
            return await self.send(match, request, dialect)
        stream = await self.open_stream(match, request, dialect)
        raw = await stream.read_all()
        return ProxyResult(
            raw, stream.status, stream.headers, stream.usage, stream.cost, stream.route, stream.model,
            stream.latency_ms, raw,
        )

    async def stream(self, request: ProxyRequest) -> ProxyStream:
        """Open a streaming request; iterate the result for the bytes."""
        match = self.route(request)
        self._count(request)
        return await self.open_stream(match, request, dialect_of_path(request.path))

    def _count(self, request: ProxyRequest) -> None:
        if self.handler.cost_tracker is not None and not request.path.endswith("/count_tokens"):
            self.handler.cost_tracker.record_request(stream=request.stream)

    async def aclose(self) -> None:
        await self.handler.aclose()
