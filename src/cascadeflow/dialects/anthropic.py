"""The Anthropic Messages API on the wire: error bodies, stream events, usage.

Only what the gateway needs to stay faithful while passing bodies through: it never
re-validates a whole request (the upstream does), it checks just the fields it
routes on, and it reads usage from the events that carry it.
"""

from __future__ import annotations

import re

import orjson

from ..errors import ErrorKind, RequestError
from ..usage import Usage
from .mapping import anthropic_usage_dict
from .sse import JSON_STRING, StreamTap, encode_event, json_object

__all__ = ["ERROR_TYPES", "error_body", "stream_error", "check_request", "response_usage", "AnthropicStreamTap"]

NAME = "anthropic"

ERROR_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.BUDGET_EXCEEDED: "billing_error",
    ErrorKind.PERMISSION: "permission_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.REQUEST_TOO_LARGE: "request_too_large",
    ErrorKind.RATE_LIMIT: "rate_limit_error",
    ErrorKind.INTERNAL: "api_error",
    ErrorKind.BAD_GATEWAY: "api_error",
    ErrorKind.UNAVAILABLE: "api_error",
    ErrorKind.TIMEOUT: "timeout_error",
    ErrorKind.REQUEST_TIMEOUT: "timeout_error",
    ErrorKind.OVERLOADED: "overloaded_error",
}


def _error(kind: ErrorKind, message: str, request_id: str | None) -> dict:
    body: dict = {"type": "error", "error": {"type": ERROR_TYPES[kind], "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


def error_body(kind: ErrorKind, message: str, request_id: str | None = None) -> bytes:
    return orjson.dumps(_error(kind, message, request_id))


def stream_error(kind: ErrorKind, message: str, request_id: str | None = None) -> bytes:
    """The ``error`` event that ends a stream which failed after it started."""
    return encode_event(orjson.dumps(_error(kind, message, request_id)), "error")


def check_request(body: dict, *, count_tokens: bool = False) -> None:
    """Reject what no Anthropic upstream would accept, cheaply; the rest is the upstream's call."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise RequestError("messages: Field required and must be an array of message objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages.{i}: Input should be an object")
    if not _objects(body.get("tools")):
        raise RequestError("tools: Input should be a list of tool objects")
    system = body.get("system")
    if not isinstance(system, str) and not _objects(system):
        raise RequestError("system: Input should be a string or a list of text blocks")
    if count_tokens:
        return
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise RequestError("max_tokens: Field required and must be an integer")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError("stream: Input should be a valid boolean")


def _objects(value: object) -> bool:
    """Absent, or a list of objects (what the cascade's readers of ``tools`` and ``system`` rely on)."""
    return value is None or isinstance(value, list) and all(isinstance(item, dict) for item in value)


def response_usage(body: object) -> Usage:
    return Usage.from_anthropic(body.get("usage")) if isinstance(body, dict) else Usage()


class AnthropicStreamTap(StreamTap):
    """Reads an Anthropic event stream on the side while its bytes are forwarded unchanged.

    Usage comes from ``message_start`` (input and cache tokens) and ``message_delta``
    (cumulative output tokens, and newer servers repeat the input side there too).
    """

    __slots__ = ()

    def _delta(self, chunk: bytes, start: int, end: int) -> int | None:
        if chunk.startswith(_DELTA_HEAD, start) and chunk.endswith(b"}", start, end) \
                and chunk.count(b"\n", start, end) == 1 and chunk.count(b'"delta"', start, end) == 1:
            found = _DELTA.search(chunk, start, end)
            return None if found is None else len(found[1])
        return None

    def _events(self, chunk: bytes) -> bytes:
        """Inspect ``chunk``; return the bytes to forward (all, up to a malformed event)."""
        for event in self._decoder.feed(chunk):
            if not event.well_formed:
                return self._malformed(chunk, event)
            name = event.event
            if name == "message_start":
                self.started = True
                message = json_object(event.data).get("message")
                if isinstance(message, dict):
                    self.usage = Usage.from_anthropic(message.get("usage"))
            elif name == "message_delta":  # cumulative counts: a field present replaces, even with 0
                given = json_object(event.data).get("usage")
                if isinstance(given, dict):
                    merged = {**anthropic_usage_dict(self.usage), **{k: v for k, v in given.items() if v is not None}}
                    self.usage = Usage.from_anthropic(merged)
            elif name == "content_block_delta":
                found = _DELTA.search(event.data) if event.data.count(b'"delta"') == 1 else None
                if found is not None:  # the usual event: no parse
                    self.generated_chars += len(found[1])
                else:
                    self.generated_chars += _delta_chars(json_object(event.data).get("delta"))
            elif name == "message_stop":
                self.complete = True
            elif name == "error":
                self.error = event.data
                self.complete = True
        return chunk

    def flush(self) -> bytes:
        return b""


#: a delta of text, thinking or tool input as Anthropic writes it; its string is counted as its bytes (escapes
#: count high: the figure prices a stream cut before its usage, an estimate either way)
_DELTA = re.compile(rb'"delta":\{"type":"(?:text_delta","text|thinking_delta","thinking|input_json_delta","partial_json)":"'
                    + JSON_STRING + rb'"\}\}')
_DELTA_HEAD = b"event: content_block_delta\ndata: {"


def _delta_chars(delta: object) -> int:
    """Characters a ``content_block_delta`` adds: text, thinking, or tool input JSON (not signatures)."""
    if not isinstance(delta, dict):
        return 0
    for key in ("text", "thinking", "partial_json"):
        value = delta.get(key)
        if isinstance(value, str):
            return len(value)
    return 0
