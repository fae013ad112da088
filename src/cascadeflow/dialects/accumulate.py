"""Rebuild a draft's answer from its stream, and turn a buffered draft back into bytes.

A cascade holds back the cheap model's answer until it is judged. The checks need the
answer as one object (:class:`~cascadeflow.cascade.answer.DraftAnswer`), and an accepted
draft must reach the client as if it had called the model directly: the buffered stream
replayed (optionally under another model name), or, when the draft was fetched whole but
the client asked for a stream, a stream synthesised from the JSON body. The accumulators
rebuild exactly the body a non-streaming call would have returned, so one code path
judges both shapes.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson

from ..usage import Usage
from .answer import DraftAnswer, ToolCall
from .sse import SSEEvent, encode_event

__all__ = [
    "OPENAI_STOP", "AnthropicAccumulator", "OpenAIAccumulator", "answer_from_anthropic", "answer_from_openai",
    "replay_anthropic", "replay_openai", "rewrite_anthropic_message", "rewrite_openai_completion",
    "synthesize_anthropic_stream", "synthesize_openai_stream",
]

#: OpenAI finish reasons in Anthropic's vocabulary (what DraftAnswer speaks)
OPENAI_STOP = MappingProxyType(
    {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
     "function_call": "tool_use", "content_filter": "refusal"}
)
_DONE = b"data: [DONE]\n\n"
_PIECE = 64  # characters per synthesised text delta
_INVALID = object()


def _loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _INVALID


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _pieces(text: str) -> list[str]:
    return [text[i : i + _PIECE] for i in range(0, len(text), _PIECE)]


# ---------------------------------------------------------------------------- Anthropic

#: delta type -> (block field it extends, delta field holding the piece)
_APPENDS = MappingProxyType({"text_delta": ("text", "text"), "thinking_delta": ("thinking", "thinking"),
                             "input_json_delta": ("input", "partial_json")})


class _Block:
    """One content block while it streams: its start object and the pieces of its deltas."""

    __slots__ = ("start", "parts")

    def __init__(self, start: dict) -> None:
        self.start = dict(start)
        self.parts: dict[str, list[str]] = {}

    def raw_input(self) -> str | None:
        return "".join(self.parts["input"]) if "input" in self.parts else None

    def build(self) -> dict:
        out = dict(self.start)
        for field, parts in self.parts.items():
            if field != "input":
                out[field] = (out.get(field) or "") + "".join(parts)
                continue
            # Like the SDK: an empty buffer keeps the start's input ({}); so does broken JSON
            # (a tool call cut by max_tokens), whose text answer() still reports.
            raw = "".join(parts)
            parsed = _loads(raw) if raw.strip() else _INVALID
            if parsed is not _INVALID:
                out["input"] = parsed
        return out


class AnthropicAccumulator:
    """Folds Messages API SSE events into the message a non-streaming call returns.

    ``feed`` returns the index of the content block a ``content_block_stop`` closed (else
    None), so the caller can judge each tool call as soon as it is complete;
    ``closed_blocks`` lists them in order. ``events`` keeps what was fed, for replay.
    ``message`` is rebuilt lazily and shared until the next ``feed``: do not mutate it.
    """

    __slots__ = ("events", "closed_blocks", "done", "error", "_head", "_blocks", "_cache")

    def __init__(self) -> None:
        self.events: list[SSEEvent] = []
        self.closed_blocks: list[int] = []
        self.done = False
        self.error: dict | None = None
        self._head: dict = {}
        self._blocks: dict[int, _Block] = {}
        self._cache: dict | None = None

    def feed(self, event: SSEEvent) -> int | None:
        self.events.append(event)
        data = _loads(event.data)
        if not isinstance(data, dict):
            return None
        self._cache = None
        kind, index = data.get("type") or event.event, data.get("index")
        if kind == "content_block_delta":
            block, delta = self._blocks.get(index), data.get("delta")  # type: ignore[arg-type]
            if block is not None and isinstance(delta, dict):
                _block_delta(block, delta)
        elif kind == "content_block_start" and isinstance(index, int) and isinstance(data.get("content_block"), dict):
            self._blocks[index] = _Block(data["content_block"])
        elif kind == "content_block_stop" and index in self._blocks:
            self.closed_blocks.append(index)  # type: ignore[arg-type]
            return index  # type: ignore[return-value]
        elif kind == "message_start" and isinstance(data.get("message"), dict):
            self._head = dict(data["message"])
            for i, block in enumerate(self._head.get("content") or ()):
                if isinstance(block, dict):
                    self._blocks[i] = _Block(block)
        elif kind == "message_delta":
            self._message_delta(data)
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = data
        return None

    def _message_delta(self, data: dict) -> None:
        delta = data.get("delta")
        if isinstance(delta, dict):
            self._head.update((k, v) for k, v in delta.items()
                              if v is not None or k in ("stop_reason", "stop_sequence", "stop_details"))
        if isinstance(data.get("usage"), dict):
            # counts on message_delta are cumulative: overwrite, but keep message_start's
            # value where the delta omits (or nulls) a field
            usage = dict(self._head.get("usage") or {})
            usage.update((k, v) for k, v in data["usage"].items() if v is not None)
            self._head["usage"] = usage

    @property
    def message(self) -> dict:
        if self._cache is None:
            message: dict = {"id": "", "type": "message", "role": "assistant", "model": "", "content": [],
                             "stop_reason": None, "stop_sequence": None,
                             "usage": {"input_tokens": 0, "output_tokens": 0}}
            message.update(self._head)
            message["content"] = [block.build() for _, block in sorted(self._blocks.items())]
            self._cache = message
        return self._cache

    def answer(self, partial: bool = False) -> DraftAnswer:
        raws = [block.raw_input() for _, block in sorted(self._blocks.items())]
        return _anthropic_answer(self.message, raws, partial)


def _block_delta(block: _Block, delta: dict) -> None:
    kind, start = delta.get("type"), block.start
    if isinstance(kind, str) and kind in _APPENDS:
        field, key = _APPENDS[kind]
        if isinstance(delta.get(key), str):
            block.parts.setdefault(field, []).append(delta[key])
    elif kind == "signature_delta":
        start["signature"] = delta.get("signature", "")  # replaces, as the SDK does
    elif kind == "citations_delta":
        cited = start.get("citations")
        start["citations"] = [*(cited if isinstance(cited, list) else ()), delta.get("citation")]


def _call(call_id: Any, name: Any, args: str) -> ToolCall:
    value = _loads(args)
    return ToolCall(call_id or "", name or "", args, None if value is _INVALID else value, value is not _INVALID)


def _anthropic_answer(message: dict, raws: list[str | None] | None, partial: bool) -> DraftAnswer:
    text, thinking, calls = [], [], []
    content = message.get("content")
    for i, block in enumerate(content if isinstance(content, list) else ()):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use":  # client tools only: server tools ran upstream already
            # judge exactly what the model streamed, not our parse of it
            raw = raws[i] if raws is not None and i < len(raws) else None
            args = raw if raw and raw.strip() else _dumps(block.get("input", {})).decode()
            calls.append(_call(block.get("id"), block.get("name"), args))
    return DraftAnswer(text="".join(text), tool_calls=calls, thinking="".join(thinking),
                       stop_reason=message.get("stop_reason"), usage=Usage.from_anthropic(message.get("usage")),
                       model=message.get("model") or "", partial=partial)


def answer_from_anthropic(message: dict) -> DraftAnswer:
    """A non-streaming Messages API response body, normalised for the checks."""
    return _anthropic_answer(message, None, False)


# ---------------------------------------------------------------------------- OpenAI

_TOP_KEYS = ("id", "created", "model", "service_tier", "system_fingerprint")


class _Choice:
    """One choice while it streams. String deltas (content, refusal, and the
    ``reasoning_content`` of OpenAI-compatible servers) are gathered as pieces; tool
    calls are merged by their ``index``."""

    __slots__ = ("index", "role", "strings", "annotations", "tools", "open", "logprobs", "finish_reason")

    def __init__(self, index: int) -> None:
        self.index, self.role, self.finish_reason = index, "assistant", None
        self.strings: dict[str, list[str]] = {}
        self.annotations: list = []
        self.tools: dict[int, dict] = {}
        self.open: list[int] = []  # tool calls not yet known complete
        self.logprobs: dict | None = None

    def close(self, below: int | None = None) -> list[int]:
        done = [k for k in self.open if below is None or k < below]
        self.open = [k for k in self.open if k not in done]
        return done

    def apply(self, delta: dict) -> list[int]:
        closed: list[int] = []
        for key, value in delta.items():
            if key == "role" and isinstance(value, str):
                self.role = value
            elif isinstance(value, str):
                self.strings.setdefault(key, []).append(value)
            elif key == "annotations" and isinstance(value, list):
                self.annotations.extend(value)
            elif key == "tool_calls" and isinstance(value, list):
                for pos, call in enumerate(value):
                    if isinstance(call, dict):
                        closed += self._tool_delta(call, pos)
        return closed

    def _tool_delta(self, call: dict, pos: int) -> list[int]:
        index = call.get("index", pos)
        index = index if isinstance(index, int) else pos
        closed: list[int] = []
        tool = self.tools.get(index)
        if tool is None:
            closed = self.close(below=index)  # a later call started: the earlier ones are complete
            tool = self.tools[index] = {"id": None, "type": "function", "name": None, "args": []}
            self.open.append(index)
        if call.get("id") and tool["id"] is None:
            tool["id"] = call["id"]
        if isinstance(call.get("type"), str):
            tool["type"] = call["type"]
        fn = call.get("function")
        if isinstance(fn, dict):
            if fn.get("name") and tool["name"] is None:
                tool["name"] = fn["name"]
            if isinstance(fn.get("arguments"), str):
                tool["args"].append(fn["arguments"])
        return closed

    def add_logprobs(self, lp: dict) -> None:
        mine = self.logprobs = self.logprobs or {"content": None, "refusal": None}
        for key in ("content", "refusal"):
            if isinstance(lp.get(key), list):
                mine[key] = mine[key] or []
                mine[key].extend(lp[key])  # in place: build() hands out copies

    def build(self) -> dict:
        strings = {key: "".join(parts) for key, parts in self.strings.items()}
        text, refusal = strings.pop("content", None), strings.pop("refusal", None)
        # OpenAI: content is null beside tool calls or a refusal, "" for an empty answer
        content = text or (None if self.tools or refusal else text)
        message: dict = {"role": self.role, "content": content, "refusal": refusal,
                         "annotations": list(self.annotations), **strings}
        if self.tools:
            message["tool_calls"] = [
                {"id": t["id"] or "", "type": t["type"],
                 "function": {"name": t["name"] or "", "arguments": "".join(t["args"])}}
                for _, t in sorted(self.tools.items())
            ]
        logprobs = self.logprobs and {k: None if v is None else list(v) for k, v in self.logprobs.items()}
        return {"index": self.index, "message": message, "logprobs": logprobs, "finish_reason": self.finish_reason}


class OpenAIAccumulator:
    """Folds ``chat.completion.chunk`` events into the ``chat.completion`` a
    non-streaming call returns.

    Chunks carry no "call done" marker: a tool call of choice 0 is known complete when a
    later call starts, a finish_reason comes, or ``[DONE]``. ``closed_tool_calls`` lists
    them in that order; ``feed`` returns the last one the event completed (usually the
    only one), else None, like :meth:`AnthropicAccumulator.feed`. ``completion`` is shared
    until the next ``feed``: do not mutate it.
    """

    __slots__ = ("events", "closed_tool_calls", "done", "error", "_top", "_usage", "_choices", "_cache")

    def __init__(self) -> None:
        self.events: list[SSEEvent] = []
        self.closed_tool_calls: list[int] = []
        self.done = False
        self.error: dict | None = None
        self._top: dict = {}
        self._usage: dict | None = None
        self._choices: dict[int, _Choice] = {}
        self._cache: dict | None = None

    def feed(self, event: SSEEvent) -> int | None:
        self.events.append(event)
        closed: list[int] = []
        if event.data.strip() == b"[DONE]":
            self.done = True
            if 0 in self._choices:
                closed = self._choices[0].close()
        else:
            data = _loads(event.data)
            if isinstance(data, dict):
                self._cache = None
                closed = self._chunk(data)
        self.closed_tool_calls += closed
        return closed[-1] if closed else None

    def _chunk(self, data: dict) -> list[int]:
        if "error" in data and "choices" not in data:
            self.error = data
            return []
        self._top.update((k, data[k]) for k in _TOP_KEYS if data.get(k) is not None)
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        closed: list[int] = []
        for item in data.get("choices") or ():
            if not isinstance(item, dict):
                continue
            index = item.get("index", 0) if isinstance(item.get("index", 0), int) else 0
            choice = self._choices.get(index) or self._choices.setdefault(index, _Choice(index))
            done = choice.apply(item["delta"]) if isinstance(item.get("delta"), dict) else []
            if isinstance(item.get("logprobs"), dict):
                choice.add_logprobs(item["logprobs"])
            if item.get("finish_reason") is not None:
                choice.finish_reason = item["finish_reason"]
                done += choice.close()
            if index == 0:
                closed += done
        return closed

    @property
    def completion(self) -> dict:
        if self._cache is None:
            top = self._top
            completion: dict = {"id": top.get("id", ""), "object": "chat.completion", "created": top.get("created", 0),
                                "model": top.get("model", ""),
                                "choices": [c.build() for _, c in sorted(self._choices.items())]}
            if self._usage is not None:
                completion["usage"] = self._usage
            if "service_tier" in top:
                completion["service_tier"] = top["service_tier"]
            completion["system_fingerprint"] = top.get("system_fingerprint")
            self._cache = completion
        return self._cache

    def answer(self, partial: bool = False) -> DraftAnswer:
        answer = answer_from_openai(self.completion)
        answer.partial = partial
        return answer


def answer_from_openai(completion: dict) -> DraftAnswer:
    """A non-streaming ``chat.completion`` body (choice 0), normalised for the checks."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if isinstance(choices, list):
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), choice)
    choice = choice if isinstance(choice, dict) else {}
    message = given if isinstance(given := choice.get("message"), dict) else {}
    calls = [_call(c.get("id"), c["function"].get("name"), _str(c["function"].get("arguments")))
             for c in message.get("tool_calls") or () if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    legacy = message.get("function_call")  # the functions API, before tools
    if not calls and isinstance(legacy, dict):
        calls.append(_call("", legacy.get("name"), _str(legacy.get("arguments"))))
    thinking = message.get("reasoning_content") or message.get("reasoning")  # compatible servers' thinking
    finish = choice.get("finish_reason")
    logprobs, lp = None, choice.get("logprobs")
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):
        logprobs = [float(e["logprob"]) for e in lp["content"]
                    if isinstance(e, dict) and isinstance(e.get("logprob"), (int, float))]
    content = message.get("content")
    return DraftAnswer(text=_str(content), tool_calls=calls, thinking=_str(thinking),
                       stop_reason=None if finish is None else OPENAI_STOP.get(finish, "other"), logprobs=logprobs,
                       usage=Usage.from_openai(completion.get("usage")), model=completion.get("model") or "")


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------------- replay


def replay_anthropic(events: list[SSEEvent], model: str | None = None) -> bytes:
    """The buffered events' bytes in order; only ``message_start`` may be re-serialised, every
    other event stays byte-identical.

    ``message_start`` is rewritten to name ``model``, and to carry the input usage the final
    ``message_delta`` reports when it said 0: a stream translated from Chat Completions learns its
    input tokens only at the end, but a replay knows them before the first byte.
    """
    final = _final_input_usage(events)
    out = []
    for event in events:
        if event.event in ("message_start", None) and (model is not None or final):
            data = _loads(event.data)
            if isinstance(data, dict) and data.get("type") == "message_start" and isinstance(data.get("message"), dict):
                head = data["message"]
                usage = given if isinstance(given := head.get("usage"), dict) else {}
                renamed = model is not None and head.get("model") != model
                known = bool(final) and not usage.get("input_tokens")
                if renamed or known:
                    head = {**head, "model": model} if renamed else dict(head)
                    if known:
                        head["usage"] = {**usage, **final}
                    data["message"] = head
                    out.append(encode_event(_dumps(data), event.event))
                    continue
        out.append(event.raw)
    return b"".join(out)


_INPUT_USAGE = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _final_input_usage(events: list[SSEEvent]) -> dict:
    """The input side of the last ``message_delta``'s usage (empty when it reports no input)."""
    for event in reversed(events):
        if event.event not in ("message_delta", None):
            continue
        data = _loads(event.data)
        if isinstance(data, dict) and data.get("type") == "message_delta":
            usage = given if isinstance(given := data.get("usage"), dict) else {}
            found = {k: usage[k] for k in _INPUT_USAGE if isinstance(usage.get(k), int)}
            return found if found.get("input_tokens") else {}
    return {}


def replay_openai(events: list[SSEEvent], model: str | None = None, strip_logprobs: bool = False,
                  strip_usage: bool = False) -> bytes:
    """The buffered chunks' bytes in order, re-serialising only chunks that change.

    ``strip_usage`` (the gateway asked for usage the client did not) drops the usage-only
    chunk and deletes a non-null ``usage`` from other chunks; ``"usage":null`` is left as
    is, like the pass-through tap does. ``strip_logprobs`` sets each choice's ``logprobs``
    to null, the shape OpenAI sends when none were requested.
    """
    if model is None and not strip_logprobs and not strip_usage:
        return b"".join(event.raw for event in events)
    out = []
    for event in events:
        chunk = None if event.data.strip() == b"[DONE]" else _loads(event.data)
        if not isinstance(chunk, dict) or "choices" not in chunk:  # [DONE], errors, junk
            out.append(event.raw)
            continue
        changed = False
        choices = chunk.get("choices")
        if strip_usage and chunk.get("usage") is not None:
            if not choices:
                continue
            del chunk["usage"]
            changed = True
        if model is not None and "model" in chunk and chunk["model"] != model:
            chunk["model"] = model
            changed = True
        if strip_logprobs and isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("logprobs") is not None:
                    choice["logprobs"] = None
                    changed = True
        out.append(encode_event(_dumps(chunk), event.event) if changed else event.raw)
    return b"".join(out)


def rewrite_anthropic_message(body: dict, model: str | None = None) -> dict:
    """A copy of a non-streaming message, under ``model`` if given."""
    out = dict(body)
    if model is not None:
        out["model"] = model
    return out


def rewrite_openai_completion(body: dict, model: str | None = None, strip_logprobs: bool = False) -> dict:
    """A copy of a non-streaming completion, under ``model``, without logprobs if asked."""
    out = dict(body)
    if model is not None:
        out["model"] = model
    if strip_logprobs and isinstance(out.get("choices"), list):
        out["choices"] = [{**c, "logprobs": None} if isinstance(c, dict) else c for c in out["choices"]]
    return out


# ---------------------------------------------------------------------------- synthesis


def _anthropic_block(block: dict) -> tuple[dict, list[dict]]:
    """(content_block_start object, deltas) that rebuild ``block``."""
    kind = block.get("type")
    if kind == "text":
        start = {**block, "text": ""}
        citations = block.get("citations")
        if isinstance(citations, list):
            start["citations"] = []
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block.get("text") or "")]
        deltas += [{"type": "citations_delta", "citation": c} for c in citations or ()]
        return start, deltas
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block.get("thinking") or "")]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return {**block, "thinking": "", "signature": ""}, deltas
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use") and "input" in block:
        return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": _dumps(block["input"]).decode()}]
    return block, []  # redacted_thinking, tool results, ...: arrive whole in their start


def synthesize_anthropic_stream(message: dict) -> bytes:
    """The SSE stream the Messages API would have sent for a non-streaming ``message``."""
    def ev(name: str, payload: dict) -> bytes:
        return encode_event(_dumps({"type": name, **payload}), name)

    usage = given if isinstance(given := message.get("usage"), dict) else {}
    head = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1}}  # the API's message_start counts one output token
    if "stop_details" in head:
        head["stop_details"] = None
    out = [ev("message_start", {"message": head})]
    blocks = [b for b in message.get("content") or () if isinstance(b, dict)]
    for index, block in enumerate(blocks):
        start, deltas = _anthropic_block(block)
        out.append(ev("content_block_start", {"index": index, "content_block": start}))
        if index == 0:
            out.append(ev("ping", {}))
        out.extend(ev("content_block_delta", {"index": index, "delta": d}) for d in deltas)
        out.append(ev("content_block_stop", {"index": index}))
    if not blocks:
        out.append(ev("ping", {}))
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    if "stop_details" in message:
        delta["stop_details"] = message["stop_details"]
    out.append(ev("message_delta", {"delta": delta, "usage": {"output_tokens": usage.get("output_tokens", 0)}}))
    out.append(ev("message_stop", {}))
    return b"".join(out)


def synthesize_openai_stream(completion: dict, include_usage: bool = False) -> bytes:
    """The chunks Chat Completions would have streamed for a non-streaming ``completion``
    (``include_usage``: the client's ``stream_options.include_usage``)."""
    base = {"id": completion.get("id", ""), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": completion.get("model", "")}
    base.update((k, completion[k]) for k in ("service_tier", "system_fingerprint") if k in completion)
    tail = {"usage": None} if include_usage else {}
    out: list[bytes] = []
    for choice in completion.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") or {}
        lp = choice.get("logprobs")
        deltas = [{"role": message.get("role") or "assistant",
                   "content": "" if isinstance(message.get("content"), str) else None}]
        if "refusal" in message:
            deltas[0]["refusal"] = None
        for key, value in message.items():
            if key != "role" and isinstance(value, str) and value:
                # with logprobs, content goes whole: tokens need not split where text pieces do
                pieces = [value] if key != "content" or lp else _pieces(value)
                deltas += [{key: piece} for piece in pieces]
        if message.get("annotations"):
            deltas.append({"annotations": message["annotations"]})
        for k, call in enumerate(message.get("tool_calls") or ()):
            fn = call.get("function") or {}
            deltas.append({"tool_calls": [{"index": k, "id": call.get("id"), "type": call.get("type", "function"),
                                           "function": {"name": fn.get("name"), "arguments": ""}}]})
            if fn.get("arguments"):
                deltas.append({"tool_calls": [{"index": k, "function": {"arguments": fn["arguments"]}}]})
        deltas.append({})
        for i, delta in enumerate(deltas):  # logprobs ride once, on the first chunk after the role's
            item = {"index": choice.get("index", 0), "delta": delta, "logprobs": lp if i == 1 else None,
                    "finish_reason": choice.get("finish_reason") if i == len(deltas) - 1 else None}
            out.append(encode_event(_dumps({**base, "choices": [item], **tail})))
    if include_usage and isinstance(completion.get("usage"), dict):
        out.append(encode_event(_dumps({**base, "choices": [], "usage": completion["usage"]})))
    out.append(_DONE)
    return b"".join(out)
