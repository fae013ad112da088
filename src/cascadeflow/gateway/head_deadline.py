"""A deadline for a request's head: uvicorn waits for request headers without end.

A client that connects and then sends nothing, or only part of its headers, would hold a
connection (and its memory) for as long as it likes; thousands of them exhaust the
process. :class:`HeadDeadlineProtocol` is uvicorn's httptools protocol with a timer from
the connection (or the start of the next request on a kept-alive one) to the end of the
headers: past ``server.request_read_timeout`` it answers 408 in the dialect the path
names, and closes the connection. The body's own deadline is the endpoint's
(:func:`~cascadeflow.gateway.proxying.read_body`), where the request is already the app's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..dialects import anthropic as anthropic_wire
from ..dialects import openai as openai_wire
from ..errors import ErrorKind
from .errors import caller_dialect

__all__ = ["GatewayServerConfig", "HeadDeadlineProtocol"]


class GatewayServerConfig(uvicorn.Config):
    """uvicorn's config, plus the deadline the protocol reads (kept when pickled for worker processes)."""

    def __init__(self, app: Any, *, request_read_timeout: float, **options: Any) -> None:
        super().__init__(app, http=HeadDeadlineProtocol, **options)
        self.request_read_timeout = request_read_timeout


class HeadDeadlineProtocol(HttpToolsProtocol):
    """httptools' protocol, with the request head bounded in time."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._head_timeout: float = getattr(config, "request_read_timeout", 30.0)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # the next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        path = (getattr(self, "url", None) or b"").decode("latin-1").partition("?")[0]
        names = {name.decode("latin-1"): "" for name, _ in self.headers or ()}
        wire = anthropic_wire if caller_dialect(path, names) == "anthropic" else openai_wire
        message = (f"the request headers did not arrive within {self._head_timeout:g}s "
                   "(server.request_read_timeout)")
        body = wire.error_body(ErrorKind.REQUEST_TIMEOUT, message)
        self.transport.write(b"".join((
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n",
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body), body,
        )))
        self.transport.close()
