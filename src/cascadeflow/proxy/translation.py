"""Crossing dialects: an Anthropic caller on an OpenAI-compatible upstream, or the reverse.

A :class:`Translation` turns one request into the upstream's dialect and its answer —
JSON or stream, errors included — back into the caller's. Used by the proxy service
for plain requests and by the cascade for drafts and verifiers on the other dialect.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson

from ..dialects import translate
from ..dialects.accumulate import OpenAIAccumulator, answer_from_openai
from ..dialects.sse import SSEDecoder
from ..dialects.translate_stream import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from .types import ProxyRequest, ProxyResult, ProxyStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..pricing import ModelRegistry

__all__ = ["Translation", "API_PATHS"]

log = logging.getLogger("cascadeflow.proxy")

#: the generation endpoint of each dialect
API_PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}
_FOREIGN_HEADERS = {"anthropic": ("openai-",), "openai": ("anthropic-", "x-claude-code-", "x-stainless-helper")}
_DEFAULT_MAX_TOKENS = 4096


class Translation:
    """One request's way from ``caller`` dialect to ``upstream`` dialect and back."""

    __slots__ = ("caller", "upstream", "registry", "dropped", "logprobs", "_include_usage", "_want_logprobs")

    def __init__(self, caller: str, upstream: str, registry: ModelRegistry) -> None:
        self.caller = caller
        self.upstream = upstream
        self.registry = registry
        self.dropped: list[str] = []
        #: token log-probabilities of an OpenAI-compatible upstream's answer (the Anthropic
        #: dialect has no place for them; a cascade's checks read them from here)
        self.logprobs: list[float] | None = None
        self._include_usage = False
        self._want_logprobs = False

    def request(self, request: ProxyRequest, model: str, *, logprobs: bool = False) -> ProxyRequest:
        """The request in the upstream's dialect, for ``model``.

        ``logprobs`` asks an OpenAI-compatible upstream for token log-probabilities,
        kept in :attr:`logprobs` rather than handed to the caller.
        """
        body = dict(request.body or {})
        body["model"] = model
        info = self.registry.info(model)
        limit = info.max_output_tokens if info else None
        if self.caller == "anthropic":
            translated, self.dropped = translate.anthropic_to_openai_request(body, max_output_tokens=limit)
        else:
            options = body.get("stream_options")
            self._include_usage = isinstance(options, dict) and options.get("include_usage") is True
            translated, self.dropped = translate.openai_to_anthropic_request(
                body, default_max_tokens=min(limit or _DEFAULT_MAX_TOKENS, _DEFAULT_MAX_TOKENS), max_output_tokens=limit
            )
        if self.upstream == "openai" and self.registry.provider_for(model) == "openai":
            _fit_openai(translated, model)
        if logprobs and self.upstream == "openai":
            translated["logprobs"] = self._want_logprobs = True
        if self.dropped:
            log.debug("translating %s→%s dropped: %s", self.caller, self.upstream, ", ".join(self.dropped))
        foreign = _FOREIGN_HEADERS[self.upstream]
        headers = {k: v for k, v in request.headers.items() if not k.startswith(foreign)}
        return ProxyRequest(request.method, API_PATHS[self.upstream], headers, translated, None, "")

    def response(self, result: ProxyResult) -> ProxyResult:
        """A non-streaming answer in the caller's dialect (usage and cost unchanged)."""
        if not isinstance(result.data, dict):
            return result
        if self.caller == "anthropic":
            if self._want_logprobs:
                self.logprobs = answer_from_openai(result.data).logprobs
            data = translate.openai_to_anthropic_response(result.data)
        else:
            data = translate.anthropic_to_openai_response(result.data)
        headers = {k: v for k, v in result.headers.items() if k != "content-type"}
        return ProxyResult(
            data, result.status, headers, result.usage, result.cost, result.route, result.model,
            result.latency_ms, orjson.dumps(data),
        )

    def stream(self, inner: ProxyStream, model: str) -> ProxyStream:
        """The upstream's stream, translated event by event as it arrives."""
        if self.caller == "anthropic":
            translator: OpenAIToAnthropicStream | AnthropicToOpenAIStream = OpenAIToAnthropicStream(model)
        else:
            translator = AnthropicToOpenAIStream(model, include_usage=self._include_usage)
        headers = {k: v for k, v in inner.headers.items() if k != "content-type"}
        headers["content-type"] = "text/event-stream; charset=utf-8" if self.caller == "openai" else "text/event-stream"
        outer = ProxyStream(
            status=inner.status, headers=headers, route=inner.route, model=inner.model,
            first_byte_ms=inner.first_byte_ms,
        )
        outer.attach(self._translated(inner, outer, translator), inner.aclose)
        return outer

    async def _translated(self, inner: ProxyStream, outer: ProxyStream, translator) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        side = (SSEDecoder(), OpenAIAccumulator()) if self._want_logprobs else None
        exhausted = False
        try:
            async for chunk in inner:
                if side is not None:
                    for event in side[0].feed(chunk):
                        side[1].feed(event)
                out = translator.feed(chunk)
                if out:
                    yield out
            exhausted = True
            tail = translator.finish()
            if tail:
                yield tail
        finally:
            if not exhausted:
                await inner.aclose()
            if side is not None:
                self.logprobs = side[1].answer(partial=not exhausted).logprobs
            outer.usage, outer.cost = inner.usage, inner.cost
            outer.error = inner.error or translator.error
            outer.complete = inner.complete and translator.complete and outer.error is None
            outer.latency_ms = inner.latency_ms or (time.perf_counter() - started) * 1000


def _fit_openai(body: dict, model: str) -> None:
    """What OpenAI's own API wants: ``max_completion_tokens`` (``max_tokens`` is refused by its
    reasoning models), and no sampling settings for reasoning models, which accept only defaults."""
    if "max_tokens" in body:
        body["max_completion_tokens"] = body.pop("max_tokens")
    if model.startswith(("gpt-5", "o1", "o3", "o4")):
        body.pop("temperature", None)
        body.pop("top_p", None)
