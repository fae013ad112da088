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

from ..dialects import translate, translate_responses, web_search
from ..dialects.accumulate import OpenAIAccumulator, answer_from_openai
from ..dialects.openai import fit_for_reasoning
from ..dialects.sse import SSEDecoder
from ..dialects.translate_responses import ChainedStream, ChatToResponsesStream, ToolNames
from ..dialects.translate_stream import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from ..errors import RequestError
from .types import ProxyRequest, ProxyResult, ProxyStream

StreamTranslator = OpenAIToAnthropicStream | AnthropicToOpenAIStream | ChatToResponsesStream | ChainedStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..pricing import ModelRegistry

__all__ = ["Translation", "API_PATHS", "anthropic_prompt"]

log = logging.getLogger("cascadeflow.proxy")

#: the generation endpoint of each dialect
API_PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions", "responses": "/v1/responses"}
_FOREIGN_HEADERS = {"anthropic": ("openai-",), "openai": ("anthropic-", "x-claude-code-", "x-stainless-helper")}
_DEFAULT_MAX_TOKENS = 4096
#: a streamed Responses request without ``max_output_tokens`` (Codex never sends one) gets this many on
#: Anthropic, which requires a number: room for a long file edit, capped by the model's own limit
_RESPONSES_STREAM_MAX_TOKENS = 32000


class Translation:
    """One request's way from ``caller`` dialect to ``upstream`` dialect and back."""

    __slots__ = ("caller", "upstream", "registry", "dropped", "logprobs", "_include_usage", "_want_logprobs", "_source",
                 "_names", "_request_id", "_searching")

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
        self._source: dict = {}  # a Responses caller's request (its answer echoes it)
        self._names = ToolNames()
        self._request_id = ""  # the gateway's id of the request (named in an error event it writes)
        self._searching = False  # a Responses web search became Anthropic's server tool: map its results back

    def request(self, request: ProxyRequest, model: str, *, logprobs: bool = False) -> ProxyRequest:
        """The request in the upstream's dialect, for ``model``.

        ``logprobs`` asks an OpenAI-compatible upstream for token log-probabilities,
        kept in :attr:`logprobs` rather than handed to the caller.
        """
        if request.path.startswith("/v1/embeddings"):
            raise RequestError(f"model {model!r} is served by an {self.upstream} route, which has no embeddings API; "
                               "embeddings need an OpenAI-compatible route")
        self._request_id = request.request_id
        body = dict(request.body or {})
        body["model"] = model
        if self.caller == "responses":
            _refuse_stored_state(body, model)
        info = self.registry.info(model)
        limit = info.max_output_tokens if info else None
        if self.caller == "responses":
            translated = self._from_responses(body, limit)
        elif self.caller == "anthropic":
            translated, self.dropped = translate.anthropic_to_openai_request(body, max_output_tokens=limit)
        else:
            options = body.get("stream_options")
            self._include_usage = isinstance(options, dict) and options.get("include_usage") is True
            translated, self.dropped = translate.openai_to_anthropic_request(
                body, default_max_tokens=min(limit or _DEFAULT_MAX_TOKENS, _DEFAULT_MAX_TOKENS), max_output_tokens=limit
            )
        reasoning = self.upstream == "openai" and self.registry.is_reasoning(model)
        if self.upstream == "openai" and (reasoning or self.registry.provider_for(model) == "openai"):
            translated = _fit_openai(translated, reasoning)
        if logprobs and self.upstream == "openai" and not reasoning:  # a reasoning model refuses them
            translated["logprobs"] = self._want_logprobs = True
        if self.dropped:
            log.debug("translating %s→%s dropped: %s", self.caller, self.upstream, ", ".join(self.dropped))
        if request.cache_bridge is not None:
            translated = request.cache_bridge(translated)
        foreign = _FOREIGN_HEADERS[self.upstream]
        headers = {k: v for k, v in request.headers.items() if not k.startswith(foreign)}
        return request.derive(translated, path=API_PATHS[self.upstream], headers=headers, query="")

    def _from_responses(self, body: dict, limit: int | None) -> dict:
        """A Responses request as chat (for a chat upstream) or as Messages (through chat), cache-marked."""
        self._source = body
        if self.upstream == "openai":
            chat, self.dropped, self._names = translate_responses.responses_to_chat_request(body)
            return chat
        translated, self.dropped, self._names, self._searching = _responses_as_messages(body, limit)
        return translated

    def response(self, result: ProxyResult) -> ProxyResult:
        """A non-streaming answer in the caller's dialect (usage and cost unchanged)."""
        if not isinstance(result.data, dict):
            return result
        if self.caller == "responses":
            chat = result.data if self.upstream == "openai" else translate.anthropic_to_openai_response(result.data)
            if self._want_logprobs:
                self.logprobs = answer_from_openai(chat).logprobs
            searches = web_search.SearchResults(result.data) if self._searching else None
            data = translate_responses.chat_to_responses_response(
                chat, self._source, str(chat.get("model") or result.model), self._names, searches)
        elif self.caller == "anthropic":
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
        translator: StreamTranslator
        if self.caller == "responses":
            translator = ChatToResponsesStream(self._source, model, self._names)
            if self.upstream == "anthropic":
                chained = web_search.SearchingStream if self._searching else ChainedStream
                translator = chained(AnthropicToOpenAIStream(model, include_usage=True), translator)
        elif self.caller == "anthropic":
            translator = OpenAIToAnthropicStream(model, request_id=self._request_id)
        else:
            translator = AnthropicToOpenAIStream(model, include_usage=self._include_usage)
        headers = {k: v for k, v in inner.headers.items() if k != "content-type"}
        headers["content-type"] = "text/event-stream" if self.caller == "anthropic" else "text/event-stream; charset=utf-8"
        outer = ProxyStream(
            status=inner.status, headers=headers, route=inner.route, model=inner.model,
            first_byte_ms=inner.first_byte_ms,
        )
        outer.attach(self._translated(inner, outer, translator), inner.aclose)
        return outer

    async def _translated(self, inner: ProxyStream, outer: ProxyStream,
                          translator: StreamTranslator) -> AsyncIterator[bytes]:
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


def _refuse_stored_state(body: dict, model: str) -> None:
    """A translated upstream keeps no responses: a request that needs one stored is refused, clearly."""
    if body.get("previous_response_id") is not None or body.get("conversation") is not None:
        raise RequestError(
            f"previous_response_id / conversation cannot be served for model {model!r}: its upstream is reached by "
            "translation and keeps no stored responses. Send the whole conversation in `input` with store: false "
            "(as Codex does)")
    if body.get("store") is True:
        raise RequestError(f"store: true cannot be honoured for model {model!r} (its upstream is reached by translation "
                           "and keeps no responses); send store: false")
    if body.get("background") is True:
        raise RequestError(f"background: true is not available for model {model!r}; send the request without it")


def _fit_openai(body: dict, reasoning: bool) -> dict:
    """What OpenAI's own API wants: ``max_completion_tokens`` (``max_tokens`` is refused by its
    reasoning models), and for a reasoning model only what it accepts (:func:`fit_for_reasoning`)."""
    if "max_tokens" in body:
        body["max_completion_tokens"] = body.pop("max_tokens")
    return fit_for_reasoning(body) if reasoning else body


def anthropic_prompt(body: dict) -> dict | None:
    """A Responses request as an Anthropic upstream receives it — system, tools and messages, with the cache
    breakpoints the gateway adds — which is what a Claude model's prompt cache reads (None: it does not
    translate; the request itself then fails with the reason)."""
    try:
        return _responses_as_messages(body, None)[0]
    except (RequestError, TypeError, ValueError, AttributeError):
        return None


def _responses_as_messages(body: dict, limit: int | None) -> tuple[dict, list[str], ToolNames, bool]:
    """A Responses request as a Messages request (through chat), cache-marked; the fields dropped, the tool
    names, and whether a hosted web search became Anthropic's server tool."""
    chat, dropped, names = translate_responses.responses_to_chat_request(body)
    default = _RESPONSES_STREAM_MAX_TOKENS if body.get("stream") is True else _DEFAULT_MAX_TOKENS
    translated, more = translate.openai_to_anthropic_request(
        chat, default_max_tokens=min(limit or default, default), max_output_tokens=limit)
    # a response_format in ``more`` is a text.format Anthropic cannot express: named as the caller's field
    dropped += ["text.format" if name == "response_format" else name for name in more
                if name not in ("stream_options", "reasoning_effort") and name not in dropped]
    searches = web_search.search_tools_of(body.get("tools"))
    if searches:  # Anthropic runs a search of its own: the hosted tool becomes its server tool
        translated.setdefault("tools", []).append(web_search.anthropic_web_search_tool(searches[0]))
        hosted = web_search.HOSTED_WEB_SEARCH
        dropped = [name for name in dropped if name.removeprefix("tools.") not in hosted]
    translate_responses.anthropic_cache_breakpoints(translated)
    return translated, dropped, names, bool(searches)
