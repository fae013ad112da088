"""The OpenAI Chat Completions API on the wire: error bodies, stream chunks, usage.

To price a stream the gateway needs its usage chunk, which OpenAI sends only when
asked (``stream_options.include_usage``). When the caller did not ask, the gateway
asks for it upstream and :class:`OpenAIStreamTap` removes that chunk again, so the
caller sees exactly the stream it requested.
"""

from __future__ import annotations

import re

import orjson

from ..errors import ErrorKind, RequestError
from ..usage import Usage
from .sse import JSON_STRING, StreamTap, encode_event, json_object

__all__ = ["ERROR_TYPES", "error_body", "stream_error", "check_request", "check_tools", "response_usage", "OpenAIStreamTap",
           "fit_for_reasoning"]

NAME = "openai"

ERROR_TYPES: dict[ErrorKind, tuple[str, str | None]] = {
    ErrorKind.INVALID_REQUEST: ("invalid_request_error", None),
    ErrorKind.AUTHENTICATION: ("authentication_error", "invalid_api_key"),
    ErrorKind.BUDGET_EXCEEDED: ("insufficient_quota", "budget_exceeded"),
    ErrorKind.PERMISSION: ("permission_error", None),
    ErrorKind.NOT_FOUND: ("invalid_request_error", "not_found"),
    ErrorKind.REQUEST_TOO_LARGE: ("invalid_request_error", "request_too_large"),
    ErrorKind.RATE_LIMIT: ("rate_limit_error", "rate_limit_exceeded"),
    ErrorKind.INTERNAL: ("server_error", None),
    ErrorKind.BAD_GATEWAY: ("server_error", "bad_gateway"),
    ErrorKind.UNAVAILABLE: ("server_error", "service_unavailable"),
    ErrorKind.TIMEOUT: ("timeout", "timeout"),
    ErrorKind.REQUEST_TIMEOUT: ("invalid_request_error", "request_timeout"),
    ErrorKind.OVERLOADED: ("server_error", "overloaded"),
}


#: what OpenAI's reasoning models refuse outright (Chat Completions and Responses)
_REASONING_REFUSED = ("logprobs", "top_logprobs")
#: sampling settings they take only at their default value, 1
_REASONING_DEFAULT_ONLY = ("temperature", "top_p")


def fit_for_reasoning(body: dict) -> dict:
    """``body`` as an OpenAI reasoning model accepts it (a copy when anything changes).

    Such a model answers 400 to ``logprobs``/``top_logprobs``, to ``temperature``/``top_p``
    other than 1, and to ``max_tokens`` (its limit is ``max_completion_tokens``): a draft,
    a self-verification or a sample sent with them would be refused and paid for in time.
    """
    drop = [k for k in _REASONING_REFUSED if k in body]
    drop += [k for k in _REASONING_DEFAULT_ONLY if k in body and body[k] is not None and body[k] != 1]
    if not drop and "max_tokens" not in body:
        return body
    out = {k: v for k, v in body.items() if k not in drop}
    if "max_tokens" in out:
        limit = out.pop("max_tokens")
        other = out.get("max_completion_tokens")
        if isinstance(limit, int) and isinstance(other, int):
            out["max_completion_tokens"] = min(limit, other)
        elif limit is not None and other is None:
            out["max_completion_tokens"] = limit
    return out


def _error(kind: ErrorKind, message: str) -> dict:
    error_type, code = ERROR_TYPES[kind]
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def error_body(kind: ErrorKind, message: str, request_id: str | None = None) -> bytes:
    return orjson.dumps(_error(kind, message))


def stream_error(kind: ErrorKind, message: str, request_id: str | None = None) -> bytes:
    """A ``data: {"error": …}`` chunk, which the OpenAI SDKs raise as an APIError."""
    return encode_event(orjson.dumps(_error(kind, message)))


def check_request(body: dict, *, count_tokens: bool = False) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: must be a non-empty array of message objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}]: must be an object")
    check_tools(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError("stream: must be a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError("stream_options: must be an object")


def check_tools(body: dict) -> None:
    """``tools``, where present, is a list of objects (Chat Completions and Responses; the cascade reads them)."""
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools)):
        raise RequestError("tools: must be an array of tool objects")


def check_embeddings_request(body: dict, *, count_tokens: bool = False) -> None:
    value = body.get("input")
    if not isinstance(value, (str, list)) or not value:
        raise RequestError("input: must be a non-empty string or array")


def response_usage(body: object) -> Usage:
    return Usage.from_openai(body.get("usage")) if isinstance(body, dict) else Usage()


def wants_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class OpenAIStreamTap(StreamTap):
    """Reads a chat-completions stream on the side.

    With ``strip_usage`` (the gateway asked for usage the caller did not), bytes are
    forwarded event by event and the usage-only chunk is dropped; otherwise each
    chunk is forwarded as it arrived.
    """

    __slots__ = ("_strip_usage",)

    def __init__(self, strip_usage: bool = False) -> None:
        super().__init__()
        self._strip_usage = strip_usage

    _DELTA_STARTS = True

    def _delta(self, chunk: bytes, start: int, end: int) -> int | None:
        if chunk.startswith(b"data: {", start) and chunk.endswith(b"}", start, end) \
                and chunk.find(b"\n", start, end) < 0 and chunk.count(b'"delta"', start, end) == 1 \
                and chunk.find(b'"usage":{', start, end) < 0 and chunk.find(b'"usage": {', start, end) < 0:
            found = _CONTENT.search(chunk, start, end)
            return None if found is None else len(found[1])
        return None

    def _events(self, chunk: bytes) -> bytes:
        events = self._decoder.feed(chunk)
        if not self._strip_usage:
            for event in events:
                if not event.well_formed:
                    return self._malformed(chunk, event)
                self._inspect(event.data)
            return chunk
        out = []
        for event in events:
            if not event.well_formed:
                self.malformed = b""  # whole events only are forwarded here: the boundary is intact
                break
            if not self._inspect(event.data):
                out.append(event.raw)
        return b"".join(out)

    def flush(self) -> bytes:
        """Bytes held back at the end of the stream (an unterminated last event)."""
        return self._decoder.pending if self._strip_usage else b""

    def _inspect(self, data: bytes) -> bool:
        """Record what ``data`` tells; True when it is a usage-only chunk."""
        self.started = True
        if data == b"[DONE]":
            self.complete = True
            return False
        if b'"delta"' in data:
            found = _CONTENT.search(data) if data.count(b'"delta"') == 1 else None
            if found is not None:  # the common chunk: no parse
                self.generated_chars += len(found[1])
            else:
                chunk = json_object(data)
                choices = chunk.get("choices")
                for choice in choices if isinstance(choices, list) else ():
                    if isinstance(choice, dict):
                        self.generated_chars += _delta_chars(choice.get("delta"))
            if b'"usage":{' not in data and b'"usage": {' not in data:
                return False
        if b'"usage":{' in data or b'"usage": {' in data:
            chunk = json_object(data)
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                self.usage = Usage.from_openai(usage)
                return not chunk.get("choices")
        elif b'"error"' in data and data.startswith(b'{"error"'):
            self.error = data
            self.complete = True
        return False


#: the content a chunk's one choice adds, its string counted as its bytes (escapes count high: the figure prices a
#: stream cut before its usage, an estimate either way)
_CONTENT = re.compile(rb'"delta":\{"content":"' + JSON_STRING + rb'"')


def _delta_chars(delta: object) -> int:
    """Characters a chunk's ``delta`` adds: content, reasoning, refusal, tool call arguments."""
    if not isinstance(delta, dict):
        return 0
    count = 0
    for key in ("content", "reasoning_content", "reasoning", "refusal"):
        value = delta.get(key)
        if isinstance(value, str):
            count += len(value)
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            count += len(function["arguments"])
    return count
