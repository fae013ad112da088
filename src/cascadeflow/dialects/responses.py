"""The OpenAI Responses API on the wire: request checks, usage, stream events, errors.

Error bodies are the Chat Completions ones (``{"error": {message, type, param, code}}``).
A stream is a sequence of named events (``event: response.created`` …); it ends with
``response.completed``, ``response.incomplete`` or ``response.failed`` — all three carry
the whole response with its usage — or with an ``error`` event. :class:`ResponsesStreamTap`
forwards the bytes unchanged and reads that usage on the side.
"""

from __future__ import annotations

import re

import orjson

from ..errors import ErrorKind, RequestError
from ..usage import Usage
from .openai import ERROR_TYPES, check_tools, error_body
from .sse import JSON_STRING, StreamTap, encode_event, json_object

__all__ = ["error_body", "stream_error", "check_request", "response_usage", "usage_dict", "ResponsesStreamTap",
           "TERMINAL_EVENTS"]

NAME = "responses"

#: the events that end a stream (each carries the whole response)
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def error_event(kind: ErrorKind, message: str, sequence_number: int = 0) -> dict:
    """An ``error`` stream event (what OpenAI sends when a stream fails after it began)."""
    error_type, code = ERROR_TYPES[kind]
    return {"type": "error", "code": code or error_type, "message": message, "param": None,
            "sequence_number": sequence_number}


def stream_error(kind: ErrorKind, message: str, request_id: str | None = None) -> bytes:
    return encode_event(orjson.dumps(error_event(kind, message)), "error")


def check_request(body: dict, *, count_tokens: bool = False) -> None:
    """Refuse cheaply what no Responses upstream accepts; the rest is the upstream's call."""
    value = body.get("input")
    if value is None and body.get("previous_response_id") is None and body.get("conversation") is None:
        raise RequestError("input: Field required (a string or an array of input items)")
    if value is not None and not isinstance(value, (str, list)):
        raise RequestError("input: must be a string or an array of input items")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise RequestError(f"input[{i}]: must be an object")
    check_tools(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError("stream: must be a boolean")


def response_usage(body: object) -> Usage:
    return Usage.from_responses(body.get("usage")) if isinstance(body, dict) else Usage()


def usage_dict(usage: Usage, reasoning_tokens: int = 0) -> dict:
    """A Responses ``usage`` object (``input_tokens`` include cached ones)."""
    total_in = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    return {
        "input_tokens": total_in,
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": total_in + usage.output_tokens,
    }


#: a delta event's data: its string is counted as its bytes, without parsing the event (escapes count high: the
#: figure prices a stream cut before its usage, an estimate either way)
_DELTA = re.compile(rb'"delta":"' + JSON_STRING + rb'"')


def _delta_length(data: bytes) -> int:
    """The length of a delta event's string (0 when it has none)."""
    found = _DELTA.search(data) if data.count(b'"delta"') == 1 else None
    if found is not None:
        return len(found[1])
    delta = json_object(data).get("delta")  # written otherwise (spaced, say): parsed
    return len(delta) if isinstance(delta, str) else 0


class ResponsesStreamTap(StreamTap):
    """Reads a Responses event stream on the side while its bytes are forwarded unchanged."""

    __slots__ = ()

    _DELTA_STARTS = True

    def _delta(self, chunk: bytes, start: int, end: int) -> int | None:
        if chunk.startswith(b"event: response.", start) and chunk.endswith(b"}", start, end) \
                and chunk.count(b"\n", start, end) == 1 and chunk.find(b".delta\ndata: {", start, end) >= 0 \
                and chunk.count(b'"delta"', start, end) == 1:
            found = _DELTA.search(chunk, start, end)
            return None if found is None else len(found[1])
        return None

    def _events(self, chunk: bytes) -> bytes:
        for event in self._decoder.feed(chunk):
            if not event.well_formed:
                return self._malformed(chunk, event)
            self.started = True
            name = event.event
            if name is None and b'"type":"response.' in event.data[:40]:
                name = json_object(event.data).get("type")
            if name is not None and name.endswith(".delta"):
                self.generated_chars += _delta_length(event.data)
            elif name in TERMINAL_EVENTS:
                response = json_object(event.data).get("response")
                if isinstance(response, dict):
                    self.usage = Usage.from_responses(response.get("usage"))
                self.complete = True
                if name == "response.failed":
                    self.error = event.data
            elif name == "error":
                self.error = event.data
                self.complete = True
        return chunk

    def flush(self) -> bytes:
        return b""
