"""Writing simulator responses on the wire: error answers, SSE streams with their
injected faults (delays, stalls, cuts, in-stream errors) and connection resets."""

from __future__ import annotations

import asyncio

from aiohttp import web

from . import anthropic_sim as an
from . import openai_sim as oa
from . import responses_sim as rs
from .engine import new_id
from .script import Fault

__all__ = ["JSON", "SSE_HEADERS", "abort", "breaks_body", "error_response", "fmt_seconds", "send_broken_json",
           "send_events"]

JSON = "application/json"
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def request_id_header(dialect: str) -> dict[str, str]:
    return {"request-id" if dialect == "anthropic" else "x-request-id": new_id("req_")}


def error_response(dialect: str, status: int, message: str | None = None, error_type: str | None = None,
                   headers: dict[str, str] | None = None, *, param: str | None = None,
                   code: str | None = None) -> web.Response:
    """An error answer with the body shape of ``dialect`` (``param`` and ``code``: OpenAI's fields)."""
    hdrs = request_id_header(dialect)
    if headers:
        hdrs.update(headers)
    if dialect == "anthropic":
        body = an.error_body(status, message, error_type)
    else:
        body = oa.error_body(status, message, error_type, param=param, code=code)
    return web.Response(status=status, body=body, content_type=JSON, headers=hdrs)


async def send_events(request: web.Request, events: list[bytes], fault: Fault | None, dialect: str,
                      headers: dict[str, str]) -> web.StreamResponse:
    """Send SSE ``events``; without a stream-shaping fault they go out in one write.

    Event counts in the fault fields count every event written (``ping`` included).
    """
    resp = web.StreamResponse(headers={**SSE_HEADERS, **headers})
    await resp.prepare(request)
    if fault is None or not fault.shapes_stream:
        await resp.write(b"".join(events))
        await resp.write_eof()
        return resp
    mod = an if dialect == "anthropic" else rs if dialect == "responses" else oa
    error_status = fault.status or (529 if dialect == "anthropic" else 500)
    for sent in range(len(events) + 1):
        if sent:
            if fault.chunk_delay > 0 and sent > 1:
                await asyncio.sleep(fault.chunk_delay)
            await resp.write(events[sent - 1])
            if fault.reset == "after_first_event" and sent == 1:
                return await abort(request, resp)
        if sent == len(events):
            break
        if fault.error_event_after == sent:
            await resp.write(mod.error_event(error_status, fault.error_message, fault.error_type))
            break
        if fault.cut_after == sent:
            break
        if fault.malformed_after == sent:
            await resp.write(b"event: content_block_delta\ndata: {this is not json\n\n")
        if fault.stall_after == sent:
            await asyncio.sleep(fault.stall_seconds)
    await resp.write_eof()
    return resp


def breaks_body(fault: Fault | None) -> bool:
    """Whether ``fault`` breaks a JSON (non-streaming) answer half-way: a reset, a cut or a stall."""
    return fault is not None and (
        fault.reset == "after_first_event" or fault.cut_after is not None or fault.stall_after is not None
    )


async def send_broken_json(request: web.Request, data: bytes, headers: dict[str, str],
                           fault: Fault) -> web.StreamResponse:
    """A JSON answer broken half-way, as the stream faults break a stream: ``reset`` aborts the connection
    after half the body (its ``content-length`` promised all of it); ``cut_after`` ends the body cleanly
    after its first half (chunked, so the client sees a complete but truncated JSON text);
    ``stall_after`` sends the first half, falls silent for ``stall_seconds``, then sends the rest."""
    half = len(data) // 2
    if fault.reset == "after_first_event":
        resp = web.StreamResponse(headers={**headers, "Content-Type": JSON, "Content-Length": str(len(data))})
        await resp.prepare(request)
        await resp.write(data[:half])
        return await abort(request, resp)
    resp = web.StreamResponse(headers={**headers, "Content-Type": JSON})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(data[:half])
    if fault.cut_after is None:
        await asyncio.sleep(fault.stall_seconds)
        await resp.write(data[half:])
    await resp.write_eof()
    return resp


async def abort(request: web.Request, resp: web.StreamResponse | None = None) -> web.StreamResponse:
    """Abort the TCP connection (after letting already-written bytes leave)."""
    transport = request.transport
    if transport is not None:
        for _ in range(100):
            if transport.is_closing() or transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.002)
        transport.abort()
        # the lost connection cancels this handler (the runner uses handler_cancellation=True)
        await asyncio.sleep(5)
    return resp if resp is not None else web.Response(status=500)
