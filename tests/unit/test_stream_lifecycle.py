"""GatewayStream, the one owner of a streamed answer's life, driven as the ASGI server drives it.

Its source here is a plain async generator standing for any layer above the relay (translation,
the verifier pipe, renaming): one that fails, one that never gets started, one cut by shutdown.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from cascadeflow.gateway.streaming import GatewayStream, StreamOutcome

ENDED = {
    "anthropic": b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    "openai": b"data: [DONE]\n\n",
    "responses": b'event: response.completed\ndata: {"type":"response.completed","response":{}}\n\n',
}
FIRST = {
    "anthropic": b'event: message_start\ndata: {"type":"message_start","message":{}}\n\n',
    "openai": b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
    "responses": b'event: response.created\ndata: {"type":"response.created","response":{}}\n\n',
}


class Wire:
    """The server's side of one connection: what was sent, in order, and when the client leaves."""

    def __init__(self, *, gone: bool = False) -> None:
        self.messages: list[dict] = []
        self.gone = asyncio.Event()
        if gone:
            self.gone.set()

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    @property
    def ended(self) -> bool:
        return self.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def _stream(source, dialect: str, settled: list) -> GatewayStream:
    async def settle(outcome: StreamOutcome) -> None:
        await asyncio.sleep(0)  # settling may wait (a limits store): the last byte waits for it
        settled.append(outcome)

    return GatewayStream(source, 200, {}, dialect=dialect, request_id="req_1", settle=settle)


def _last_event(body: bytes) -> bytes:
    return [e for e in body.split(b"\n\n") if e.strip()][-1]


@pytest.mark.parametrize("dialect", ["anthropic", "openai", "responses"])
async def test_a_failure_above_the_relay_ends_with_the_dialects_error_event(dialect):
    async def broken():
        yield FIRST[dialect]
        raise KeyError("a bug in a translation layer")

    settled: list = []
    wire = Wire()
    await _stream(broken(), dialect, settled)({"type": "http"}, wire.receive, wire.send)
    last = _last_event(wire.body)
    if dialect == "openai":  # a data-only error chunk, which the SDKs raise; no [DONE] after it
        assert orjson.loads(last.removeprefix(b"data: "))["error"]["type"] == "server_error"
        assert b"[DONE]" not in wire.body
    else:
        name, data = last.split(b"\n", 1)
        assert name == b"event: error"
        error = orjson.loads(data.removeprefix(b"data: "))
        assert error["type"] == "error"
        assert (error["error"]["type"] if dialect == "anthropic" else error["code"]) in ("api_error", "server_error")
    assert wire.ended and settled == [StreamOutcome.FAILED]
    last = {"type": "http.response.body", "body": b"", "more_body": False}
    assert wire.messages.index(last) == len(wire.messages) - 1


@pytest.mark.parametrize("dialect", ["anthropic", "openai", "responses"])
async def test_a_failure_after_a_proper_end_adds_no_second_ending(dialect):
    async def ends_then_fails():
        yield FIRST[dialect]
        yield ENDED[dialect]
        raise RuntimeError("a bug in the accounting after the last event")

    settled: list = []
    wire = Wire()
    await _stream(ends_then_fails(), dialect, settled)({"type": "http"}, wire.receive, wire.send)
    assert wire.body == FIRST[dialect] + ENDED[dialect]
    assert wire.ended and settled == [StreamOutcome.FAILED]


async def test_an_event_cut_in_the_middle_is_closed_before_the_error_event():
    async def cut():
        yield b'event: content_block_delta\ndata: {"type":"content_blo'
        raise RuntimeError("bug")

    wire = Wire()
    await _stream(cut(), "anthropic", [])({"type": "http"}, wire.receive, wire.send)
    assert _last_event(wire.body).startswith(b"event: error\ndata: {")


async def test_a_source_never_started_still_runs_its_cleanup_and_settles_once():
    cleaned: list[str] = []

    async def upstream():  # holds an upstream connection until its ``finally`` runs
        try:
            await asyncio.sleep(3600)  # the first event is far off
            yield b"never"
        finally:
            cleaned.append("upstream closed")

    settled: list = []
    wire = Wire(gone=True)  # the client left before the answer started
    await asyncio.wait_for(_stream(upstream(), "anthropic", settled)({"type": "http"}, wire.receive, wire.send), 2)
    assert cleaned == ["upstream closed"]
    assert settled == [StreamOutcome.CLIENT_LEFT]
    assert not wire.ended and wire.body == b""


async def test_a_client_that_leaves_mid_stream_closes_the_source_at_once():
    cleaned: list[str] = []

    async def slow():
        try:
            yield FIRST["openai"]
            await asyncio.sleep(3600)
            yield b"never"
        finally:
            cleaned.append("closed")

    settled: list = []
    wire = Wire()
    task = asyncio.ensure_future(_stream(slow(), "openai", settled)({"type": "http"}, wire.receive, wire.send))
    await asyncio.sleep(0.05)
    wire.gone.set()
    await asyncio.wait_for(task, 2)
    assert cleaned == ["closed"] and settled == [StreamOutcome.CLIENT_LEFT]
    assert wire.body == FIRST["openai"] and not wire.ended


@pytest.mark.parametrize("dialect", ["anthropic", "openai", "responses"])
async def test_shutdown_past_the_deadline_ends_the_stream_with_an_error_event(dialect):
    cleaned: list[str] = []

    async def long():
        try:
            yield FIRST[dialect]
            await asyncio.sleep(3600)
            yield b"never"
        finally:
            cleaned.append("closed")

    settled: list = []
    wire = Wire()
    task = asyncio.ensure_future(_stream(long(), dialect, settled)({"type": "http"}, wire.receive, wire.send))
    await asyncio.sleep(0.05)
    task.cancel("Task cancelled, timeout graceful shutdown exceeded")  # what uvicorn does past the deadline
    await asyncio.wait_for(task, 2)
    assert not task.cancelled()  # handled: the server logs no "Exception in ASGI application"
    assert b"shutting down" in _last_event(wire.body) and wire.ended
    assert cleaned == ["closed"] and settled == [StreamOutcome.SHUTDOWN]


async def test_settling_comes_before_the_last_byte():
    order: list[str] = []

    async def two():
        yield FIRST["anthropic"]
        yield ENDED["anthropic"]

    async def settle(outcome: StreamOutcome) -> None:
        await asyncio.sleep(0.01)
        order.append(f"settled {outcome.value}")

    async def send(message: dict) -> None:
        order.append("last byte" if message.get("more_body") is False else message["type"])

    wire = Wire()
    await GatewayStream(two(), 200, {}, dialect="anthropic", request_id=None, settle=settle)(
        {"type": "http"}, wire.receive, send)
    assert order == ["http.response.start", "http.response.body", "http.response.body", "settled complete",
                     "last byte"]
