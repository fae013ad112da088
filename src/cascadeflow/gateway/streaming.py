"""One response class owns a streamed answer's whole life: bytes, errors, accounting.

A stream's source is a pipeline of async generators (the upstream relay, a translation,
the cascade's verifier pipe or a replayed draft). Each layer guards what it knows, but
a bug in any of them, a client that leaves before the first byte, or a server shutting
down past its deadline must still end the same way. :class:`GatewayStream` is that one
place:

- **one ending in the caller's dialect**: a stream that fails above the relay (a bug in
  translation, renaming, the verifier pipe) or is cut by shutdown ends with the dialect's
  error event — Anthropic ``event: error``, a Chat Completions ``data: {"error": …}`` chunk
  (no ``[DONE]``), a Responses ``error`` event — the same events the relay sends when an
  upstream fails; never a silent cut, never a second ending after a proper one;
- **accounting exactly once**: ``settle`` runs in ``__call__``'s ``finally``, also when the
  source was never started (the client gone before the answer began): the source is then
  started and cancelled at its first wait, so every layer's own cleanup runs (the upstream
  closed, what it generated priced);
- **the slot back before the last byte**: ``settle`` (the open-stream count, the limits
  lease) finishes before the response's final empty chunk, so a client's next request
  never finds its own finished stream still holding ``max_concurrent``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING

from starlette.responses import Response

from ..dialects import anthropic as anthropic_wire
from ..dialects import openai as openai_wire
from ..dialects import responses as responses_wire
from ..errors import ErrorKind

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable

    from starlette.types import Receive, Scope, Send

__all__ = ["GatewayStream", "StreamOutcome", "SHUTDOWN_MESSAGE"]

log = logging.getLogger("cascadeflow.gateway")

SHUTDOWN_MESSAGE = "the gateway is shutting down (server.shutdown_timeout passed); retry the request"
_INTERNAL_MESSAGE = "internal gateway error while streaming the answer; see the gateway log"
#: a stream gives the event loop a turn after this many chunks (see ``GatewayStream.__call__``)
_TURN_EVERY = 8
_WIRES = {"anthropic": anthropic_wire, "openai": openai_wire, "responses": responses_wire}
#: the last event a finished stream sends, per dialect (checked only on the error path)
_ENDINGS = {
    "anthropic": (b"event: message_stop", b"event: error"),
    "openai": (b"data: [DONE]", b'data: {"error"'),
    "responses": (b"event: response.completed", b"event: response.incomplete", b"event: response.failed",
                  b"event: error"),
}


class StreamOutcome(enum.Enum):
    """How a stream ended (its ledger row's status follows from it)."""

    #: the source ran to its end (an upstream failure it reported with an error event included)
    COMPLETE = "complete"
    #: the client left (before or during the answer); the source was closed at once
    CLIENT_LEFT = "client_left"
    #: a bug above the relay: ended with the dialect's ``api_error`` event
    FAILED = "failed"
    #: the server's shutdown deadline passed: ended with the dialect's error event
    SHUTDOWN = "shutdown"


class GatewayStream(Response):
    """A streamed answer (``text/event-stream``) whose ending and accounting it alone owns.

    ``source`` must have ``aclose()`` (async generators and :class:`~cascadeflow.proxy.ProxyStream`
    do); ``settle(outcome)`` is awaited once, before the last byte; ``after()``, once after it (work the
    client need not wait for, such as a conversation's record). Empty chunks are skipped.
    """

    def __init__(self, source: AsyncIterable[bytes], status: int, headers: dict[str, str], *, dialect: str,
                 request_id: str | None, settle: Callable[[StreamOutcome], Awaitable[None]],
                 media_type: str = "text/event-stream", after: Callable[[], None] | None = None) -> None:
        self.status_code = status
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self._source = source
        self._dialect = dialect
        self._request_id = request_id
        self._settle: Callable[[StreamOutcome], Awaitable[None]] | None = settle
        self._after = after
        self._started = False
        self._pumping = False
        self._left = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(self._watch(receive, task))
        outcome, tail = StreamOutcome.CLIENT_LEFT, b"\n\n"
        try:
            self._pumping = True
            try:
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                source = self._source.__aiter__()
                self._started = True
                sent = 0
                async for chunk in source:
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        tail = chunk
                        sent += 1
                        if not sent % _TURN_EVERY:
                            # uvicorn's send returns without yielding while its buffer has room: without a turn
                            # now and then a stream whose chunks are already read keeps the loop, and at
                            # concurrency the others wait (streams at 10 concurrent: p99 ~50 ms without it, ~9 ms
                            # with it). Not after every chunk: a stream generated token by token waits for each
                            # one anyway, and a turn costs ~3 µs (an ``asyncio.sleep(0)`` under uvloop here)
                            await asyncio.sleep(0)
                outcome = StreamOutcome.COMPLETE
            except asyncio.CancelledError:
                # our watcher's (the client left), else the server's: past its shutdown deadline
                task.uncancel()
                outcome = StreamOutcome.CLIENT_LEFT if self._left else StreamOutcome.SHUTDOWN
            except Exception:
                log.exception("a stream failed after it started")
                outcome = StreamOutcome.FAILED
            finally:
                self._pumping = False
                watcher.cancel()
            if outcome in (StreamOutcome.FAILED, StreamOutcome.SHUTDOWN) and not _ended(self._dialect, tail):
                await send({"type": "http.response.body", "body": self._error_event(outcome, tail), "more_body": True})
        finally:
            await self._close_source(outcome is StreamOutcome.COMPLETE)
            await self._account(outcome)
        try:
            if outcome is not StreamOutcome.CLIENT_LEFT:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if self._after is not None:
                self._after()

    async def _watch(self, receive: Receive, task: asyncio.Task) -> None:
        """Cancel the stream's task when the client disconnects (uvicorn's ``send`` would not say so)."""
        while (await receive())["type"] != "http.disconnect":
            pass
        if self._pumping:
            self._left = True
            task.cancel()

    def _error_event(self, outcome: StreamOutcome, tail: bytes) -> bytes:
        if outcome is StreamOutcome.SHUTDOWN:
            kind, message = ErrorKind.UNAVAILABLE, SHUTDOWN_MESSAGE
        else:
            kind, message = ErrorKind.INTERNAL, _INTERNAL_MESSAGE
        event = _WIRES.get(self._dialect, openai_wire).stream_error(kind, message, self._request_id)
        # an event cut in the middle is ended first, so the error event is read as one
        return event if tail.endswith((b"\n\n", b"\r\n\r\n")) else b"\n\n" + event

    async def _close_source(self, exhausted: bool) -> None:
        """Close the source so each layer's cleanup runs (the upstream closed, what it generated priced)."""
        if exhausted:
            return
        source = self._source
        try:
            if not self._started:
                # an async generator closed before it started never runs its ``finally``: start it, and
                # cancel it at its first wait (the cancellation runs every layer's cleanup, innermost first)
                step = asyncio.ensure_future(source.__aiter__().__anext__())
                await asyncio.sleep(0)
                step.cancel()
                await asyncio.wait((step,))
            await source.aclose()  # type: ignore[attr-defined]
        except Exception:
            log.exception("could not close a stream's source")

    async def _account(self, outcome: StreamOutcome) -> None:
        settle, self._settle = self._settle, None
        if settle is None:
            return
        try:
            await settle(outcome)
        except Exception:  # recording a request must never break its answer
            log.exception("could not settle a stream")


def _ended(dialect: str, tail: bytes) -> bool:
    """True when the last chunk sent already ended the stream (properly, or with an error event)."""
    endings = _ENDINGS.get(dialect, _ENDINGS["openai"])
    start = max(tail.rfind(b"event: "), tail.rfind(b"data: "))
    last = tail[start:] if start >= 0 else tail
    if last.startswith(b"data: ") and dialect != "openai":  # the event line precedes its data
        previous = tail.rfind(b"event: ", 0, start)
        last = tail[previous:] if previous >= 0 else last
    return last.startswith(endings)
