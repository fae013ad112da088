"""The two upstream dialects: Anthropic and OpenAI-compatible servers."""

from __future__ import annotations

from ..dialects import anthropic as anthropic_wire
from ..dialects import openai as openai_wire
from ..dialects import responses as responses_wire
from ..errors import ErrorKind
from ..usage import Usage
from .base import ProviderAdapter, StreamTap

__all__ = ["AnthropicAdapter", "OpenAIAdapter", "ResponsesAdapter", "adapter_for"]

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicAdapter:
    name = "anthropic"

    def caller_auth(self, headers: dict[str, str]) -> dict[str, str]:
        """The caller's credentials as sent: an API key (``x-api-key``) and/or a bearer token.

        Claude Code sends ``Authorization: Bearer`` for OAuth / ``ANTHROPIC_AUTH_TOKEN``
        credentials, which Anthropic does not accept as ``x-api-key``; both are kept. A key sent
        only as Azure-style ``api-key`` goes as ``x-api-key``.
        """
        found = {k: headers[k] for k in ("x-api-key", "authorization") if headers.get(k)}
        if not found and headers.get("api-key"):
            found["x-api-key"] = headers["api-key"]
        return found

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"x-api-key": key} if key else {}

    def default_headers(self) -> dict[str, str]:
        return {"anthropic-version": ANTHROPIC_VERSION}

    def prepare(self, path: str, body: dict, model: str) -> tuple[dict, bool]:
        if body.get("model") == model:
            return body, False
        return {**body, "model": model}, True

    def response_usage(self, body: object) -> Usage:
        return anthropic_wire.response_usage(body)

    def stream_tap(self, body: dict) -> StreamTap:
        return anthropic_wire.AnthropicStreamTap()

    def error_body(self, kind: ErrorKind, message: str) -> bytes:
        return anthropic_wire.error_body(kind, message)

    def stream_error(self, kind: ErrorKind, message: str, request_id: str | None = None) -> bytes:
        return anthropic_wire.stream_error(kind, message, request_id)


class OpenAIAdapter:
    """Any server speaking OpenAI Chat Completions (OpenAI, vLLM, Ollama, Groq, llama.cpp…)."""

    name = "openai"

    def caller_auth(self, headers: dict[str, str]) -> dict[str, str]:
        """The caller's bearer token (or Azure-style ``api-key``), as sent."""
        if headers.get("authorization"):
            return {"authorization": headers["authorization"]}
        key = headers.get("api-key") or headers.get("x-api-key")
        return {"authorization": f"Bearer {key}"} if key else {}

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def default_headers(self) -> dict[str, str]:
        return {}

    def prepare(self, path: str, body: dict, model: str) -> tuple[dict, bool]:
        """Swap the model; ask for the usage chunk of a stream so it can be priced."""
        changed = body.get("model") != model
        if body.get("stream") is True and path.endswith("/chat/completions") and not openai_wire.wants_usage(body):
            options = body.get("stream_options")
            options = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
            return {**body, "model": model, "stream_options": options}, True
        return ({**body, "model": model}, True) if changed else (body, False)

    def response_usage(self, body: object) -> Usage:
        return openai_wire.response_usage(body)

    def stream_tap(self, body: dict) -> StreamTap:
        """``body`` is the caller's: strip the usage chunk when the caller did not ask for it."""
        return openai_wire.OpenAIStreamTap(strip_usage=not openai_wire.wants_usage(body))

    def error_body(self, kind: ErrorKind, message: str) -> bytes:
        return openai_wire.error_body(kind, message)

    def stream_error(self, kind: ErrorKind, message: str, request_id: str | None = None) -> bytes:
        return openai_wire.stream_error(kind, message, request_id)


class ResponsesAdapter(OpenAIAdapter):
    """An OpenAI-compatible server's ``/v1/responses``: the body is forwarded with only the model
    swapped (its final ``response.completed`` event always carries usage), read as Responses."""

    def prepare(self, path: str, body: dict, model: str) -> tuple[dict, bool]:
        return (body, False) if body.get("model") == model else ({**body, "model": model}, True)

    def response_usage(self, body: object) -> Usage:
        return responses_wire.response_usage(body)

    def stream_tap(self, body: dict) -> StreamTap:
        return responses_wire.ResponsesStreamTap()

    def stream_error(self, kind: ErrorKind, message: str, request_id: str | None = None) -> bytes:
        return responses_wire.stream_error(kind, message, request_id)


_ADAPTERS: dict[str, ProviderAdapter] = {"anthropic": AnthropicAdapter(), "openai": OpenAIAdapter()}
_RESPONSES = ResponsesAdapter()


def adapter_for(provider: str, path: str = "") -> ProviderAdapter:
    """The adapter for ``provider``'s API at ``path`` (the Responses API reads differently from chat)."""
    if provider == "openai" and path.startswith("/v1/responses"):
        return _RESPONSES
    return _ADAPTERS[provider]
