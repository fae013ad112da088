"""The data that flows through the proxy library: a request, a result, a stream."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..usage import Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from pydantic import SecretStr

    from ..route_config import ProxyRoute

__all__ = ["ProxyRequest", "ProxyResult", "ProxyStream", "UpstreamAuth", "SAMPLE_INDEX_HEADER"]

#: how a replay upstream (the simulator) learns :attr:`ProxyRequest.sample_index`
SAMPLE_INDEX_HEADER = "x-sample-index"


@dataclass(frozen=True, slots=True)
class UpstreamAuth:
    """Whose provider credentials a request goes upstream with: decided once by the gateway's
    auth, carried by every request made from it (drafts, verifiers, fallbacks), applied by the handler.

    ``forward_caller``: the caller's own provider key (its credential headers) goes upstream
    (``pass_through``, and a provider key in ``hybrid``). ``provider_keys``: a virtual key's own
    provider keys, by route name or provider kind; one that matches the route replaces the route's key.
    With neither, the route decides (its ``api_key``, or the caller's on keyless routes).
    """

    forward_caller: bool = False
    provider_keys: Mapping[str, SecretStr] = field(default_factory=dict)

    def key_for(self, route: ProxyRoute) -> SecretStr | None:
        """This request's own key for ``route``: by the route's name first, then by its provider kind."""
        if not self.provider_keys:
            return None
        return self.provider_keys.get(route.name) or self.provider_keys.get(route.provider)


#: the route decides (the default)
ROUTE_AUTH = UpstreamAuth()
#: the caller's own provider key goes upstream
CALLER_AUTH = UpstreamAuth(forward_caller=True)


@dataclass(slots=True)
class ProxyRequest:
    """An API call to forward. ``raw_body``, when given, is sent as is if nothing changes."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    raw_body: bytes | None = None
    query: str = ""
    #: which credentials go upstream (never a header: a caller could send one)
    auth: UpstreamAuth = ROUTE_AUTH
    #: the gateway's id of the request this call serves: named in the errors the gateway writes into its stream
    request_id: str = ""
    #: which extra sample of sample agreement this call is; sent (as ``x-sample-index``) only to a
    #: route marked ``replay``, whose recorded samples it selects — never to a real upstream
    sample_index: int | None = None
    #: a change to the body as the upstream receives it, after any translation: the cascade's bridging
    #: breakpoint on a translated prompt (see :mod:`cascadeflow.cascade.bridge`)
    cache_bridge: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.headers = {k.lower(): v for k, v in self.headers.items()}

    def derive(self, body: dict[str, Any] | None, **changes: Any) -> ProxyRequest:
        """A request made from this one (a draft, a verifier, a translation) with a new body: the
        credentials decision and everything not named in ``changes`` carry over, except the
        :attr:`cache_bridge`, which belongs to the body it was made for."""
        return dataclasses.replace(self, body=body, raw_body=None, cache_bridge=None, **changes)

    @property
    def model(self) -> str:
        model = (self.body or {}).get("model")
        return model if isinstance(model, str) else ""

    @property
    def stream(self) -> bool:
        return bool(self.body and self.body.get("stream") is True)


@dataclass(slots=True)
class ProxyResult:
    """A completed upstream call: its answer, usage, cost and timing."""

    data: Any
    status: int
    headers: dict[str, str]
    usage: Usage
    cost: float | None
    route: str
    model: str
    latency_ms: float
    raw: bytes = b""


class ProxyStream:
    """An upstream stream, open: iterate it for the bytes to send to the caller.

    ``usage``, ``cost`` and ``complete`` are final once iteration has ended. A
    stream that fails after it started ends with the dialect's error event.
    """

    __slots__ = (
        "status",
        "headers",
        "route",
        "model",
        "first_byte_ms",
        "latency_ms",
        "usage",
        "cost",
        "complete",
        "error",
        "_chunks",
        "_close",
    )

    def __init__(
        self, *, status: int, headers: dict[str, str], route: str, model: str, first_byte_ms: float,
        chunks: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.route = route
        self.model = model
        self.first_byte_ms = first_byte_ms
        self.latency_ms = 0.0
        self.usage = Usage()
        self.cost: float | None = None
        self.complete = False
        self.error: str | None = None
        self._chunks = chunks
        self._close: Callable[[], object] | None = None

    def attach(self, chunks: AsyncIterator[bytes], close: Callable[[], object] | None = None) -> None:
        """Set the byte source and what closes the upstream connection if it is never read."""
        self._chunks = chunks
        self._close = close

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            raise RuntimeError("the stream has no byte source yet (attach() gives it one)")
        return self._chunks

    async def aclose(self) -> None:
        """Stop early (the caller left): closes the upstream connection, read or not."""
        await self._chunks.aclose()  # type: ignore[union-attr]
        if self._close is not None:
            closed = self._close()  # harmless once the connection went back to the pool
            if inspect.isawaitable(closed):
                await closed

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])
