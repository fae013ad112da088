"""Server-sent events: encode one event, and split a byte stream into events.

Both dialects stream SSE. The gateway forwards upstream bytes as they arrive and
feeds the same bytes to an :class:`SSEDecoder` on the side to read usage and to
notice whether the stream ended properly.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ..usage import Usage

__all__ = ["JSON_STRING", "SSEEvent", "SSEDecoder", "StreamTap", "encode_event", "json_object"]

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


def json_object(data: bytes) -> dict:
    """An event's data parsed as a JSON object; ``{}`` for anything else (a tap never raises)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class StreamTap:
    """What every dialect's stream tap keeps while the stream's bytes are forwarded unchanged.

    Subclasses read their dialect's events in :meth:`_events` and tell a plain delta from its bytes in
    :meth:`_delta`; the state here is what the relay, the ledger and the pricing of a cut stream read back.
    """

    __slots__ = ("_decoder", "usage", "complete", "error", "started", "malformed", "generated_chars")

    #: a plain delta says the stream has started (its dialect's decoder says so of every event)
    _DELTA_STARTS = False

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

    def feed(self, chunk: bytes) -> bytes:
        """Read ``chunk`` on the side; the bytes to forward (all of them, unless an event is malformed, or the
        dialect drops one).

        Most of a stream's events are plain deltas (a few words of text each): their size is read off their
        bytes (:meth:`_delta`: a few C calls) instead of decoding each one (several µs of Python), and the
        other events are decoded in order, run by run. A chunk that ends inside an event, or follows one
        that did, is decoded whole.
        """
        if self._decoder.pending or not chunk.endswith(b"\n\n"):
            return self._events(chunk)
        out: list[bytes] = []
        start = pos = counted = 0
        seen = False  # a plain delta (its string may be empty)
        deltas = True  # the run of events that began at ``start`` is of plain deltas (else of other events)
        while pos < len(chunk):
            end = chunk.find(b"\n\n", pos)  # the chunk ends with one: found
            size = self._delta(chunk, pos, end)
            if (size is not None) != deltas:  # a run ends here
                if start < pos and not self._pass(out, chunk, start, pos, deltas):
                    self._counted(seen, counted)
                    return b"".join(out)
                start, deltas = pos, size is not None
            if size is not None:
                counted += size
                seen = True
            pos = end + 2
        self._counted(seen, counted)
        if start == 0 and deltas:
            return chunk  # the usual chunk: deltas only
        self._pass(out, chunk, start, pos, deltas)
        return b"".join(out)

    def _counted(self, seen: bool, size: int) -> None:
        """Add what a chunk's plain deltas (those before a malformed event, if any) generated."""
        if seen:
            self.generated_chars += size
            self.started = self.started or self._DELTA_STARTS

    def _pass(self, out: list[bytes], chunk: bytes, start: int, end: int, deltas: bool) -> bool:
        """Add a run of ``chunk``'s events to ``out``: deltas as they are, others as :meth:`_events` reads them;
        False when that found a malformed event (the stream ends there)."""
        if deltas:
            out.append(chunk[start:end])
            return True
        out.append(self._events(chunk[start:end] if start or end < len(chunk) else chunk))
        return self.malformed is None

    def _events(self, chunk: bytes) -> bytes:
        """Decode ``chunk`` event by event and read what each says; the bytes to forward."""
        raise NotImplementedError

    def _delta(self, chunk: bytes, start: int, end: int) -> int | None:
        """The size of a plain delta's string, read off the bytes of the event at ``chunk[start:end]`` (its blank
        line excluded; read in place, not copied); None for any other event, which :meth:`_events` then reads.
        A plain delta is a well-formed event (JSON object data on one line) whose decoding would only add that
        size to ``generated_chars``."""
        return None

    def _malformed(self, chunk: bytes, event: SSEEvent) -> bytes:
        """Forward what came before the bad event; the relay ends the stream with an error event."""
        self.malformed = b"" if event.start >= 0 else b"\n\n"
        return chunk[: event.start] if event.start > 0 else b""
