"""Translate a streamed answer between the two dialects, event by event, as it arrives.

When a client speaks one dialect and its upstream the other, the gateway cannot wait
for the whole answer: it feeds the upstream bytes (in whatever pieces the network
delivers) to a translator and forwards what comes out at once. Both translators share
one small API: ``feed(chunk) -> bytes``, ``finish() -> bytes``, and the ``usage``,
``complete`` and ``error`` properties the gateway bills and logs from.

A stream that ends before it finished always ends in the client's dialect's error
event, never in a silent cut: the SDKs raise on those, a truncated answer would look
like a complete one otherwise.

What does not cross over, on purpose:

- OpenAI ``reasoning_content`` / ``reasoning`` deltas (some compatible servers) are
  dropped. An Anthropic ``thinking`` block must carry a signature the upstream made;
  we cannot sign, and clients send thinking blocks back on the next turn.
- Anthropic ``thinking`` / ``redacted_thinking`` blocks and ``signature_delta`` are
  dropped: Chat Completions has no field for them. ``citations_delta`` is dropped too
  (the cited text itself arrives as text). Server-tool blocks (``server_tool_use``,
  their results) ran upstream already and have no OpenAI form: dropped.
- Only choice 0 of an OpenAI stream is translated (a Messages answer has one).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from types import MappingProxyType

import orjson

from ..errors import ErrorKind
from ..usage import Usage
from . import anthropic, openai
from .mapping import ANTHROPIC_TO_OPENAI_STOP, OPENAI_TO_ANTHROPIC_STOP, anthropic_usage_dict, openai_usage_dict
from .sse import SSEDecoder, SSEEvent, encode_event, json_object

__all__ = ["AnthropicToOpenAIStream", "OpenAIToAnthropicStream"]

_DONE = b"data: [DONE]\n\n"
#: Messages API usage field -> :class:`Usage` field
_USAGE_FIELDS = MappingProxyType({"input_tokens": "input_tokens", "output_tokens": "output_tokens",
                                  "cache_creation_input_tokens": "cache_write_tokens",
                                  "cache_read_input_tokens": "cache_read_tokens"})
_CUT = "upstream stream ended before the answer was complete"

#: Anthropic error ``type`` -> the kind an OpenAI client is told (api_error names several: INTERNAL; a
#: timeout_error inside an upstream's stream is the upstream's silence, never the caller's slow request)
_ANTHROPIC_ERROR_KINDS = MappingProxyType({**{t: k for k, t in anthropic.ERROR_TYPES.items()},
                                           "api_error": ErrorKind.INTERNAL, "timeout_error": ErrorKind.TIMEOUT})


def _openai_error_kind(error: object) -> ErrorKind:
    """OpenAI signals rate limits in ``type``/``code`` and overload mostly in the message; a ``timeout``
    (the gateway's own event for a silent upstream) stays a timeout."""
    if not isinstance(error, dict):
        return ErrorKind.INTERNAL
    tag = " ".join(str(error.get(k) or "") for k in ("type", "code")).lower()
    if "rate_limit" in tag or "429" in tag or error.get("type") in ("requests", "tokens"):
        return ErrorKind.RATE_LIMIT
    if "timeout" in tag:
        return ErrorKind.TIMEOUT
    if "overload" in tag or "overload" in str(error.get("message") or "").lower():
        return ErrorKind.OVERLOADED
    return ErrorKind.INTERNAL


def _error_message(error: object, default: str) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return error if isinstance(error, str) and error else default


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _index(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Translator:
    """The part both directions share: decoding, the end state, and flushing at the end."""

    __slots__ = ("_complete", "_decoder", "_error", "_out", "_usage")

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._out: list[bytes] = []
        self._usage = Usage()
        self._complete = False
        self._error: str | None = None

    @property
    def usage(self) -> Usage:
        """Usage as the upstream reported it (zeros until it does)."""
        return self._usage

    @property
    def complete(self) -> bool:
        """True once the stream ended properly; ``error`` holds the message if it ended in one."""
        return self._complete

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def _ended(self) -> bool:
        return self._complete or self._error is not None

    def feed(self, chunk: bytes) -> bytes:
        """Upstream bytes in (any chunking), the client's bytes to send now out."""
        if not self._ended:
            self._events(self._decoder.feed(chunk))
        return self._take()

    def finish(self) -> bytes:
        """The bytes that end the stream once the upstream closed it."""
        if not self._ended and self._decoder.pending.strip():
            self._events(self._decoder.feed(b"\n\n"))  # a last event without its blank line
        if not self._ended:
            self._finish()
        return self._take()

    def _events(self, events: list[SSEEvent]) -> None:
        for event in events:
            self._event(event)
            if self._ended:  # nothing may follow the last event
                break

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _event(self, event: SSEEvent) -> None: ...  # one upstream event

    def _finish(self) -> None: ...  # the upstream closed before the end


class _Tool:
    """An OpenAI tool call being streamed as an Anthropic ``tool_use`` block."""

    __slots__ = ("block", "id", "name", "pending")

    def __init__(self) -> None:
        self.id, self.name = "", ""
        self.pending: list[str] = []  # argument pieces that came before the name did
        self.block: int | None = None  # its Anthropic block index once started


class OpenAIToAnthropicStream(_Translator):
    """Chat-completions chunks in, Messages API events out.

    Blocks are strictly sequential, as the Messages API sends them: a block opens at
    the next free index and is stopped before the next one starts. A tool call starts
    its block once its name is known (argument pieces that came earlier go out in one
    delta then). OpenAI servers send parallel tool calls one after the other. If one
    interleaved them (argument pieces for a call whose block was already stopped
    because a later call began), blocks cannot reopen, and holding every call back to
    the end would cost the common case its liveness: such a stream ends with an
    ``error`` event rather than a tool call with silently corrupt input. Repeated ids
    or names in later deltas for the same call are harmless.

    ``message_delta`` goes out once the answer is finished *and* usage is known: with
    ``include_usage`` the usage chunk follows the finish_reason chunk, so we wait for
    it (or for ``[DONE]``, or for the upstream to close). ``[DONE]`` without any
    finish_reason ends the message as ``tool_use`` / ``end_turn``; so does an unknown
    finish_reason. ``stop`` after tool calls becomes ``tool_use``, as the Messages API
    would say (some servers finish tool-calling answers with ``stop``).
    """

    __slots__ = ("_block", "_current", "_hint", "_id", "_model", "_next", "_request_id", "_started", "_stop", "_tools")

    def __init__(self, model: str, input_tokens_hint: int = 0, request_id: str = "") -> None:
        super().__init__()
        self._model, self._hint = model, max(0, input_tokens_hint)
        #: named in the error event this stream may end with, as the gateway's JSON errors name it
        self._request_id = request_id
        self._id = "msg_" + secrets.token_hex(12)
        self._started = False
        self._next = 0  # next free block index
        self._current: str | int | None = None  # "text", an OpenAI tool index, or None
        self._block: int | None = None  # the open block's index
        self._tools: dict[int, _Tool] = {}
        self._stop: str | None = None  # the mapped stop reason, once finish_reason came

    def _emit(self, name: str, payload: dict) -> None:
        self._out.append(encode_event(orjson.dumps({"type": name, **payload}), name))

    def _event(self, event: SSEEvent) -> None:
        if event.data.strip() == b"[DONE]":
            if self._stop is None:
                self._finished("tool_calls" if self._tools else "stop")
            self._end()
            return
        chunk = json_object(event.data)
        if event.event == "error" or ("error" in chunk and "choices" not in chunk):
            error = chunk.get("error", chunk)
            self._fail(_openai_error_kind(error), _error_message(error, "upstream error"))
            return
        if not chunk:
            return  # junk or keep-alive
        self._start()
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if isinstance(choice.get("delta"), dict) and self._stop is None:
                self._delta(choice["delta"])
                if self._ended:
                    return
            if choice.get("finish_reason") and self._stop is None:
                self._finished(choice["finish_reason"])
        if isinstance(chunk.get("usage"), dict):
            self._usage = Usage.from_openai(chunk["usage"])
            if self._stop is not None:  # usage at or after the finish is final
                self._end()

    def _start(self) -> None:
        if not self._started:
            self._started = True
            usage = {"input_tokens": self._hint, "output_tokens": 1,  # the API's own start counts 1 too
                     "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
            self._emit("message_start", {"message": {
                "id": self._id, "type": "message", "role": "assistant", "model": self._model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": usage}})

    def _delta(self, delta: dict) -> None:
        for key in ("content", "refusal"):  # a refusal is the model's answer: shown as text
            if _text(delta.get(key)):
                self._text(delta[key])
        calls = delta.get("tool_calls")
        for pos, call in enumerate(calls if isinstance(calls, list) else ()):
            if isinstance(call, dict):
                self._tool(call, pos)
                if self._ended:
                    return
        if isinstance(delta.get("function_call"), dict):  # the functions API, before tools
            self._tool({"index": 0, "function": delta["function_call"]}, 0)
        # reasoning_content / reasoning: dropped (see the module docstring)

    def _text(self, text: str) -> None:
        if self._current != "text":
            self._close()
            self._current = "text"
            self._open({"type": "text", "text": ""})
        self._emit("content_block_delta", {"index": self._block, "delta": {"type": "text_delta", "text": text}})

    def _tool(self, call: dict, pos: int) -> None:
        index = _index(call.get("index", pos))
        index = pos if index is None else index
        fn = given if isinstance(given := call.get("function"), dict) else {}
        args = _text(fn.get("arguments"))
        tool = self._tools.get(index)
        if tool is None:
            self._close()
            tool = self._tools[index] = _Tool()
            self._current = index
        elif self._current != index:
            if args:
                self._fail(ErrorKind.BAD_GATEWAY, "upstream interleaved the arguments of parallel tool calls")
            return
        tool.id = tool.id or _text(call.get("id"))
        tool.name = tool.name or _text(fn.get("name"))
        if tool.block is not None:
            if args:
                self._json(args)
            return
        if args:
            tool.pending.append(args)
        if tool.name:
            self._start_tool(tool)

    def _start_tool(self, tool: _Tool) -> None:
        # the OpenAI id is kept: the client sends it back as tool_use_id, translated back as is
        tool.block = self._open({"type": "tool_use", "id": tool.id or "toolu_" + secrets.token_hex(12),
                                 "name": tool.name, "input": {}, "caller": {"type": "direct"}})
        if tool.pending:
            self._json("".join(tool.pending))
            tool.pending.clear()

    def _json(self, piece: str) -> None:
        self._emit("content_block_delta",
                   {"index": self._block, "delta": {"type": "input_json_delta", "partial_json": piece}})

    def _open(self, block: dict) -> int:
        index = self._block = self._next
        self._next += 1
        self._emit("content_block_start", {"index": index, "content_block": block})
        if index == 0:
            self._emit("ping", {})
        return index

    def _close(self) -> None:
        if isinstance(self._current, int) and self._block is None:  # a call whose name never came
            self._start_tool(self._tools[self._current])
        if self._block is not None:
            self._emit("content_block_stop", {"index": self._block})
        self._current = self._block = None

    def _finished(self, finish_reason: object) -> None:
        self._start()
        self._close()
        self._stop = OPENAI_TO_ANTHROPIC_STOP.get(_text(finish_reason), "end_turn")
        if self._tools and self._stop == "end_turn":  # some servers say "stop" after tool calls
            self._stop = "tool_use"

    def _end(self) -> None:
        usage = anthropic_usage_dict(self._usage) if self._usage != Usage() else {"output_tokens": 0}
        self._emit("message_delta", {"delta": {"stop_reason": self._stop, "stop_sequence": None}, "usage": usage})
        self._emit("message_stop", {})
        self._complete = True

    def _fail(self, kind: ErrorKind, message: str) -> None:
        self._out.append(anthropic.stream_error(kind, message, self._request_id or None))
        self._error = message

    def _finish(self) -> None:
        if self._stop is not None:  # finished, only [DONE] (or usage) never came
            self._end()
        else:
            self._fail(ErrorKind.BAD_GATEWAY, _CUT)


class AnthropicToOpenAIStream(_Translator):
    """Messages API events in, ``chat.completion.chunk`` SSE out.

    The first chunk carries ``role``; text deltas become ``content``; each client
    ``tool_use`` block becomes one ``tool_calls`` entry, numbered from 0 in block
    order. ``message_delta`` gives the final chunk (empty delta, mapped
    finish_reason); the usage chunk (with ``include_usage``) and ``[DONE]`` follow at
    ``message_stop``, or at the end if the upstream closed right after the delta.
    """

    __slots__ = ("_base", "_finish_reason", "_started", "_tail", "_tools")

    def __init__(self, model: str, include_usage: bool, created: int | None = None) -> None:
        super().__init__()
        self._base = {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion.chunk",
                      "created": int(time.time()) if created is None else created, "model": model}
        # no system_fingerprint: the spec says a string, and there is no OpenAI backend to name
        self._tail = {"usage": None} if include_usage else None  # OpenAI's shape when usage was asked for
        self._started = False
        self._tools: dict[int, list] = {}  # block index -> [tool index, streamed any arguments, start input]
        self._finish_reason: str | None = None

    def _begin(self) -> None:
        if not self._started:
            self._started = True
            self._chunk({"role": "assistant", "content": ""})

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> None:
        self._begin()
        chunk = {**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish_reason}]}
        if self._tail is not None:
            chunk.update(self._tail)
        self._out.append(encode_event(orjson.dumps(chunk)))

    def _event(self, event: SSEEvent) -> None:
        data = json_object(event.data)
        kind = data.get("type") or event.event
        if kind == "error" or event.event == "error":
            error = data.get("error", data)
            error_type = _text(error.get("type")) if isinstance(error, dict) else ""
            kind = _ANTHROPIC_ERROR_KINDS.get(error_type, ErrorKind.INTERNAL)
            self._fail(kind, _error_message(error, "upstream error"))
        elif kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self._usage = Usage.from_anthropic(message.get("usage"))
            self._begin()
        elif kind == "content_block_start":
            self._block_start(data.get("index"), data.get("content_block"))
        elif kind == "content_block_delta":
            self._block_delta(data.get("index"), data.get("delta"))
        elif kind == "content_block_stop":
            index = _index(data.get("index"))
            tool = None if index is None else self._tools.get(index)
            if tool is not None and not tool[1] and tool[2]:  # input given whole in the start
                self._chunk({"tool_calls": [{"index": tool[0], "function": {
                    "arguments": orjson.dumps(tool[2]).decode()}}]})
        elif kind == "message_delta":
            self._message_delta(data)
        elif kind == "message_stop":
            self._end()
        # ping and unknown events: nothing to say

    def _block_start(self, index: object, block: object) -> None:
        index = _index(index)
        if not isinstance(block, dict) or index is None:
            return
        if block.get("type") == "text" and _text(block.get("text")):
            self._chunk({"content": block["text"]})
        elif block.get("type") == "tool_use":
            k = len(self._tools)
            start_input = given if isinstance(given := block.get("input"), dict) else None
            self._tools[index] = [k, False, start_input]
            self._chunk({"tool_calls": [{"index": k, "id": _text(block.get("id")), "type": "function",
                                         "function": {"name": _text(block.get("name")), "arguments": ""}}]})
        # thinking, redacted_thinking, server tools: dropped (see the module docstring)

    def _block_delta(self, index: object, delta: object) -> None:
        if not isinstance(delta, dict):
            return
        if delta.get("type") == "text_delta" and _text(delta.get("text")):
            self._chunk({"content": delta["text"]})
        elif delta.get("type") == "input_json_delta" and _index(index) in self._tools:
            tool = self._tools[index]  # type: ignore[index]
            if _text(delta.get("partial_json")):
                tool[1] = True
                self._chunk({"tool_calls": [{"index": tool[0], "function": {"arguments": delta["partial_json"]}}]})

    def _message_delta(self, data: dict) -> None:
        raw = data.get("usage")
        if isinstance(raw, dict):
            # counts here are cumulative and final (an empty answer's 0 replaces message_start's 1);
            # newer servers repeat the input side, older ones leave it to message_start
            new = Usage.from_anthropic(raw)
            self._usage = replace(self._usage, **{field: getattr(new, field) for key, field in _USAGE_FIELDS.items()
                                                  if isinstance(raw.get(key), int)})
        delta = given if isinstance(given := data.get("delta"), dict) else {}
        if self._finish_reason is None:
            self._finish_reason = ANTHROPIC_TO_OPENAI_STOP.get(_text(delta.get("stop_reason")), "stop")
            self._chunk({}, self._finish_reason)

    def _end(self) -> None:
        if self._finish_reason is None:  # message_stop without message_delta
            self._finish_reason = "tool_calls" if self._tools else "stop"
            self._chunk({}, self._finish_reason)
        if self._tail is not None:
            self._out.append(encode_event(orjson.dumps({**self._base, "choices": [],
                                                        "usage": openai_usage_dict(self._usage)})))
        self._out.append(_DONE)
        self._complete = True

    def _fail(self, kind: ErrorKind, message: str) -> None:
        self._out.append(openai.stream_error(kind, message))
        self._error = message

    def _finish(self) -> None:
        if self._finish_reason is not None:  # finished, only message_stop never came
            self._end()
        else:
            self._fail(ErrorKind.BAD_GATEWAY, _CUT)
