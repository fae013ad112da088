"""Server-sent events: encode one event, and split a byte stream into events.

Both dialects stream SSE. The gateway forwards upstream bytes as they arrive and
feeds the same bytes to an :class:`SSEDecoder` on the side to read usage and to
notice whether the stream ended properly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from ..usage import Usage

__all__ = ["JSON_STRING", "SSEEvent", "SSEDecoder", "StreamTap", "counted_deltas", "encode_event", "json_object"]

#: a JSON string's contents on one line (escapes included, as their bytes): what the taps count of a delta
JSON_STRING = rb'([^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*)'



@dataclass(slots=True)
class SSEEvent:
    """One complete event: its ``event:`` name (or None), its data, and its raw bytes.

    ``start`` is where the event began in the chunk that completed it: negative when it
    began in an earlier chunk, or when line endings were rewritten (offsets unknown).
    """

    event: str | None
    data: bytes
    raw: bytes
    start: int = -1

    @property
    def well_formed(self) -> bool:
        """Data that is a JSON object (or ``[DONE]``), as both dialects send; cheap, not a parse."""
        data = self.data
        return (data[:1] == b"{" and data.rstrip()[-1:] == b"}") or data == b"[DONE]"


def encode_event(data: bytes, event: str | None = None) -> bytes:
    """Encode one event; ``data`` must be a single line (compact JSON is)."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class SSEDecoder:
    """Incremental SSE parser: feed it chunks, get back the events they complete.

    Chunks may split an event anywhere; line endings may be LF or CRLF.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        carried = len(self._buffer)
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
            carried = len(buffer) + 1  # offsets into the chunk are lost: report them unknown
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            raw = buffer[start : end + 2]
            event = _parse(raw)
            if event is not None:
                event.start = start - carried if start >= carried else -1
                events.append(event)
            start = end + 2
        self._buffer = buffer[start:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (non-empty means a cut stream)."""
        return self._buffer


def _parse(raw: bytes) -> SSEEvent | None:
    # the shapes every upstream sends — "data: …" or "event: …\ndata: …", one line each — without the general loop
    if raw.startswith(b"data: "):
        if raw.find(b"\n", 6) == len(raw) - 2:
            return SSEEvent(None, raw[6:-2], raw)
    elif raw.startswith(b"event: "):
        eol = raw.find(b"\n", 7)
        if raw.startswith(b"data: ", eol + 1) and raw.find(b"\n", eol + 7) == len(raw) - 2:
            return SSEEvent(raw[7:eol].decode("utf-8", "replace"), raw[eol + 7 : -2], raw)
    name: str | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if name is None and not data:
        return None
    return SSEEvent(name, b"\n".join(data), raw)


def counted_deltas(decoder: SSEDecoder, chunk: bytes, head: bytes, lines: int,
                   strings: re.Pattern[bytes]) -> list[bytes] | None:
    """The delta strings (``strings``' one group) of ``chunk``'s events, where the chunk is nothing but whole events
    that each begin with ``head``, hold ``lines`` line breaks (their ``event:`` and ``data:`` lines' and the blank
    line's) and JSON object data on one line, with one ``"delta"`` apiece (and ``decoder`` holds no part of an
    earlier event); else None.

    A stream's usual chunk is one or a few deltas: counting its bytes in a few C calls tells this, where
    decoding the events one by one costs a few µs of Python each. The counts leave no other reading: the
    chunk's ``\\n\\n`` are its events' ends, each followed by ``head`` or the end, and no event has a line
    break more than ``head`` and its end give it.
    """
    events = chunk.count(b"\n\n")
    if (not events or decoder.pending or not chunk.startswith(head) or not chunk.endswith(b"}\n\n")
            or chunk.count(b"\n") != lines * events or chunk.count(b"}\n\n" + head) != events - 1 or b"\r" in chunk
            or chunk.count(b'"delta"') != events):
        return None
    found = strings.findall(chunk)
    return found if len(found) == events else None


def json_object(data: bytes) -> dict:
    """An event's data parsed as a JSON object; ``{}`` for anything else (a tap never raises)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class StreamTap:
    """What every dialect's stream tap keeps while the stream's bytes are forwarded unchanged.

    Subclasses read their dialect's events in ``feed``; the state here is what the relay,
    the ledger and the pricing of a cut stream read back.
    """

    __slots__ = ("_decoder", "usage", "complete", "error", "started", "malformed", "generated_chars")

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self.usage: Usage = Usage()
        #: characters of text, thinking/reasoning and tool input streamed so far (prices a stream cut before its usage)
        self.generated_chars = 0
        self.complete = False
        self.error: bytes | None = None
        self.started = False
        #: None, or the separator the error event needs: the upstream sent an event that is not JSON
        self.malformed: bytes | None = None

    def _malformed(self, chunk: bytes, event: SSEEvent) -> bytes:
        """Forward what came before the bad event; the relay ends the stream with an error event."""
        self.malformed = b"" if event.start >= 0 else b"\n\n"
        return chunk[: event.start] if event.start > 0 else b""
