"""One exception tree and one status mapping for everything cascadeflow refuses.

::

    CascadeflowError                 .kind (ErrorKind) → .status
    ├── ConfigError                  a config file or value is wrong (startup, CLI)
    ├── RequestError                 the caller's request is unacceptable (400, 404, 413…)
    └── ProxyError                   the library layer of the proxy
        ├── ProxyRoutingError        no route serves the model (404)
        ├── ProxyUpstreamError       the upstream answered an error status (relayed as is)
        └── ProxyTransportError      the upstream could not be reached or timed out (502/504)
            ├── ProxyProtocolError   it answered something that is not its API: a redirect, a
            │                        body that is not JSON (502, not retried)
            └── ProxyPoolFullError   the gateway's own connections to it stayed busy (503, not
                                     retried, no verdict on the upstream)

The gateway renders any of them in the caller's dialect (see ``dialects``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = [
    "ErrorKind",
    "CascadeflowError",
    "ConfigError",
    "RequestError",
    "ProxyError",
    "ProxyRoutingError",
    "ProxyUpstreamError",
    "ProxyTransportError",
    "ProxyProtocolError",
    "ProxyPoolFullError",
]


class ErrorKind(Enum):
    """What went wrong, with the HTTP status an SDK maps to the right exception class."""

    INVALID_REQUEST = 400
    AUTHENTICATION = 401
    BUDGET_EXCEEDED = 402  # not retried by the SDKs, unlike 429: the budget will not come back in seconds
    PERMISSION = 403
    NOT_FOUND = 404
    REQUEST_TIMEOUT = 408  # the request did not finish arriving in time; the SDKs retry it
    REQUEST_TOO_LARGE = 413
    RATE_LIMIT = 429
    INTERNAL = 500
    BAD_GATEWAY = 502
    UNAVAILABLE = 503
    TIMEOUT = 504
    OVERLOADED = 529

    @property
    def status(self) -> int:
        return self.value

    @classmethod
    def from_status(cls, status: int) -> ErrorKind:
        try:
            return cls(status)
        except ValueError:
            return cls.INVALID_REQUEST if 400 <= status < 500 else cls.INTERNAL


class CascadeflowError(Exception):
    kind: ErrorKind = ErrorKind.INTERNAL
    #: the cascade's :class:`~cascadeflow.cascade.Decision` when a cascaded request failed after its
    #: drafts: the error answer carries its ``x-cascadeflow-*`` headers and its record the drafts' cost
    decision: Any = None
    #: the same request would be refused again at once (answered with ``x-should-retry: false``)
    final: bool = False

    def __init__(self, message: str, *, kind: ErrorKind | None = None, final: bool = False) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        if final:
            self.final = True

    @property
    def status(self) -> int:
        return self.kind.status


class ConfigError(CascadeflowError):
    """A configuration problem; the message names the key and what is wrong."""


class RequestError(CascadeflowError):
    kind = ErrorKind.INVALID_REQUEST


class ProxyError(CascadeflowError):
    """Base of the proxy library's errors."""


class ProxyRoutingError(ProxyError):
    kind = ErrorKind.NOT_FOUND


class ProxyUpstreamError(ProxyError):
    """The upstream answered with an error status; ``payload`` is its body, relayed unchanged."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        payload: bytes = b"",
        headers: dict[str, str] | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__(message, kind=ErrorKind.from_status(status))
        self.upstream_status = status
        self.payload = payload
        self.headers = headers or {}
        self.route = route

    @property
    def status(self) -> int:
        return self.upstream_status


class ProxyTransportError(ProxyError):
    """Connection refused or reset (502), a timeout (504), or an upstream whose circuit is open (503)."""

    kind = ErrorKind.BAD_GATEWAY

    def __init__(
        self, message: str, *, timeout: bool = False, route: str | None = None, retry_after: float | None = None
    ) -> None:
        kind = ErrorKind.TIMEOUT if timeout else ErrorKind.UNAVAILABLE if retry_after is not None else ErrorKind.BAD_GATEWAY
        super().__init__(message, kind=kind)
        self.route = route
        #: seconds until the upstream is tried again (an open circuit breaker)
        self.retry_after = retry_after


class ProxyProtocolError(ProxyTransportError):
    """The upstream answered, but not as its API does (a redirect, a 200 whose body is not JSON): 502."""


class ProxyPoolFullError(ProxyTransportError):
    """Every one of a route's ``max_connections`` stayed busy for ``pool_timeout``: 503 with ``retry-after``.

    The gateway's own limit, not the upstream's fault: not retried, and no verdict for the breaker.
    """

    def __init__(self, message: str, *, route: str | None = None) -> None:
        super().__init__(message, route=route, retry_after=1.0)
