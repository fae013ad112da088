"""The provider adapter interface: what differs between upstream dialects.

An adapter knows how to authenticate to its upstream, which caller headers to pass
on, how to prepare a body for it, and how to read usage from its answers. It does
not know about routes' choice, cascades or callers' dialects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..errors import ErrorKind
from ..usage import Usage

__all__ = ["ProviderAdapter", "StreamTap", "HOP_BY_HOP", "forwardable_request_headers", "forwardable_response_headers"]

#: Never forwarded in either direction (RFC 9110 §7.6.1), plus what the gateway sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        "accept-encoding",
    }
)
_CREDENTIALS = frozenset({"x-api-key", "authorization", "api-key"})
_RESPONSE_DROP = HOP_BY_HOP | {"date", "server", "alt-svc", "set-cookie", "cf-ray", "cf-cache-status", "via"}


def forwardable_request_headers(headers: dict[str, str]) -> dict[str, str]:
    """Caller headers that go upstream: all but hop-by-hop ones and credentials."""
    return {
        k: v
        for k, v in headers.items()
        if k not in HOP_BY_HOP and k not in _CREDENTIALS and not k.startswith("x-cascadeflow-")
    }


def forwardable_response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Upstream response headers that go back to the caller (request ids, rate-limit info…)."""
    return {k.lower(): v for k, v in headers.items() if k.lower() not in _RESPONSE_DROP}


class StreamTap(Protocol):
    usage: Usage
    complete: bool
    error: bytes | None
    started: bool
    malformed: bytes | None
    #: characters of output (text, thinking, tool input) streamed so far
    generated_chars: int

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class ProviderAdapter(Protocol):
    name: str

    def caller_auth(self, headers: dict[str, str]) -> dict[str, str]:
        """The caller's own credential headers, for pass-through (empty when it sent none)."""

    def auth_headers(self, key: str | None) -> dict[str, str]: ...

    def default_headers(self) -> dict[str, str]:
        """Headers every request to this upstream carries unless the caller sent its own."""

    def prepare(self, path: str, body: dict, model: str) -> tuple[dict, bool]:
        """Adjust ``body`` for this upstream; returns it and whether it changed."""

    def response_usage(self, body: object) -> Usage: ...

    def stream_tap(self, body: dict) -> StreamTap: ...

    def error_body(self, kind: ErrorKind, message: str) -> bytes: ...

    def stream_error(self, kind: ErrorKind, message: str, request_id: str | None = None) -> bytes: ...
