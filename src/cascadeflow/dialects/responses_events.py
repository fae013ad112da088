"""Building a Responses API answer piece by piece: its stream events and its final object.

One :class:`ResponseEmitter` serves a translated stream (fed as upstream chunks arrive),
a translated JSON answer (fed all at once, then :meth:`ResponseEmitter.response`), and the
simulated provider, so every path produces the same well-formed sequence:
``response.created``, ``response.in_progress``, per output item ``output_item.added`` …
``output_item.done``, then ``response.completed`` / ``response.incomplete`` (or an
``error`` event when the upstream failed mid-way).

A custom (freeform) tool crosses to function-only upstreams as a function taking one
string, ``{"input": …}``; with ``wrapped=True`` the emitter collects that JSON and emits
the bare string as the custom tool call's input when the call closes.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from ..errors import ErrorKind
from ..usage import Usage
from .responses import error_event, usage_dict
from .sse import encode_event

__all__ = ["ResponseEmitter", "response_base", "new_item_id"]

_dumps = orjson.dumps

#: request fields a Response object echoes back (with their defaults when absent)
_ECHOED: dict[str, Any] = {
    "instructions": None, "max_output_tokens": None, "max_tool_calls": None, "metadata": {},
    "parallel_tool_calls": True, "previous_response_id": None, "prompt_cache_key": None, "reasoning": None,
    "safety_identifier": None, "service_tier": "default", "temperature": None, "text": {"format": {"type": "text"}},
    "tool_choice": "auto", "tools": [], "top_logprobs": None, "top_p": None, "truncation": "disabled", "user": None,
}


#: what an echoed field must be to be echoed (anything else gets the default)
_ECHO_TYPES: dict[str, tuple[type, ...]] = {
    "instructions": (str, list), "max_output_tokens": (int,), "max_tool_calls": (int,), "metadata": (dict,),
    "parallel_tool_calls": (bool,), "previous_response_id": (str,), "prompt_cache_key": (str,), "reasoning": (dict,),
    "safety_identifier": (str,), "service_tier": (str,), "temperature": (int, float), "text": (dict,),
    "tool_choice": (str, dict), "tools": (list,), "top_logprobs": (int,), "top_p": (int, float), "truncation": (str,),
    "user": (str,),
}


def _fits(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def new_item_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def response_base(request: dict, response_id: str, model: str, created_at: int, *, store: bool = False) -> dict:
    """The Response object's fields that do not depend on the answer."""
    out: dict[str, Any] = {"id": response_id, "object": "response", "created_at": created_at, "status": "in_progress",
                           "background": False, "error": None, "incomplete_details": None}
    for key, default in _ECHOED.items():
        value = request.get(key)
        kinds = _ECHO_TYPES.get(key)
        out[key] = default if value is None or (kinds is not None and not _fits(value, kinds)) else value
    out["model"] = model
    out["output"] = []
    out["store"] = store
    out["usage"] = None
    return out


class ResponseEmitter:
    """Turns answer pieces into Responses events (see the module docstring)."""

    __slots__ = ("base", "output", "_out", "_seq", "_item", "_parts", "_wrapped", "_custom", "started", "finished",
                 "status", "_events", "_annotations")

    def __init__(self, request: dict, model: str, *, response_id: str | None = None, created_at: int | None = None,
                 store: bool = False, events: bool = True) -> None:
        """``events=False`` builds only the final object (a JSON answer): no event is encoded."""
        self.base = response_base(request, response_id or new_item_id("resp_"), model,
                                  int(time.time()) if created_at is None else created_at, store=store)
        self.output: list[dict] = []
        self._out: list[bytes] = []
        self._seq = 0
        self._item: dict | None = None  # the open output item
        self._parts: list[str] = []  # its text / arguments so far
        self._annotations: list[dict] = []  # its text's annotations (url citations)
        self._wrapped = False
        self._custom = False
        self.started = False
        self.finished = False
        self.status = "in_progress"
        self._events = events

    # -- output -------------------------------------------------------------------

    def take(self) -> bytes:
        """The encoded events produced since the last call."""
        out, self._out = self._out, []
        return b"".join(out)

    def take_events(self) -> list[bytes]:
        """The events produced since the last call, one encoded event each."""
        out, self._out = self._out, []
        return out

    def response(self, status: str | None = None) -> dict:
        return {**self.base, "status": status or self.status, "output": list(self.output)}

    def _emit(self, kind: str, payload: dict) -> None:
        if not self._events:
            return
        payload = {"type": kind, **payload, "sequence_number": self._seq}
        self._seq += 1
        self._out.append(encode_event(_dumps(payload), kind))

    # -- pieces ---------------------------------------------------------------------

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        snapshot = self.response("in_progress")
        self._emit("response.created", {"response": snapshot})
        self._emit("response.in_progress", {"response": snapshot})

    def reasoning(self, summary: str | None, encrypted_content: str | None = None) -> None:
        """A whole reasoning item (summary text and/or the upstream's opaque encrypted content)."""
        self.start()
        self.close_item()
        item: dict[str, Any] = {"id": new_item_id("rs_"), "type": "reasoning",
                                "summary": [{"type": "summary_text", "text": summary}] if summary else []}
        if encrypted_content is not None:
            item["encrypted_content"] = encrypted_content
        index = len(self.output)
        self._emit("response.output_item.added", {"output_index": index, "item": {**item, "summary": []}})
        self.output.append(item)
        self._emit("response.output_item.done", {"output_index": index, "item": item})

    def text(self, delta: str) -> None:
        if not delta:
            return
        self.start()
        item = self._item
        if item is None or item["type"] != "message":
            self.close_item()
            item = self._open({"id": new_item_id("msg_"), "type": "message", "status": "in_progress",
                               "role": "assistant", "content": []})
            self._emit("response.content_part.added", {
                "item_id": item["id"], "output_index": len(self.output), "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
        self._parts.append(delta)
        self._emit("response.output_text.delta", {"item_id": item["id"], "output_index": len(self.output),
                                                  "content_index": 0, "delta": delta, "logprobs": []})

    def text_length(self) -> int:
        """Characters of text in the open message so far (0 when none is open: the next text opens one)."""
        item = self._item
        return sum(map(len, self._parts)) if item is not None and item["type"] == "message" else 0

    def annotate(self, annotation: dict) -> None:
        """An annotation (a ``url_citation``) of the open message's text; none open: dropped."""
        item = self._item
        if item is None or item["type"] != "message":
            return
        self._emit("response.output_text.annotation.added", {
            "item_id": item["id"], "output_index": len(self.output), "content_index": 0,
            "annotation_index": len(self._annotations), "annotation": annotation})
        self._annotations.append(annotation)

    def web_search(self, query: str, sources: list[dict], *, failed: bool = False) -> None:
        """A whole ``web_search_call`` item (a search the upstream ran): its events, one after another."""
        self.start()
        self.close_item()
        item_id = new_item_id("ws_")
        index = len(self.output)
        ref = {"item_id": item_id, "output_index": index}
        self._emit("response.output_item.added", {"output_index": index, "item": {
            "id": item_id, "type": "web_search_call", "status": "in_progress", "action": {"type": "search",
                                                                                          "query": query}}})
        self._emit("response.web_search_call.in_progress", ref)
        self._emit("response.web_search_call.searching", ref)
        if not failed:
            self._emit("response.web_search_call.completed", ref)
        action: dict[str, Any] = {"type": "search", "query": query}
        if sources:
            action["sources"] = sources
        item = {"id": item_id, "type": "web_search_call", "status": "failed" if failed else "completed",
                "action": action}
        self.output.append(item)
        self._emit("response.output_item.done", {"output_index": index, "item": item})

    def tool(self, call_id: str, name: str, *, custom: bool = False, wrapped: bool = False,
             namespace: str | None = None) -> None:
        """Open a tool call; ``custom`` makes it a custom (freeform) tool call."""
        self.start()
        self.close_item()
        if custom:
            item: dict[str, Any] = {"id": new_item_id("ctc_"), "type": "custom_tool_call", "status": "in_progress",
                                    "call_id": call_id, "name": name, "input": ""}
        else:
            item = {"id": new_item_id("fc_"), "type": "function_call", "status": "in_progress",
                    "call_id": call_id, "name": name, "arguments": ""}
        if namespace:
            item["namespace"] = namespace
        self._open(item)
        self._custom, self._wrapped = custom, custom and wrapped

    def tool_input(self, delta: str) -> None:
        item = self._item
        if item is None or item["type"] not in ("function_call", "custom_tool_call") or not delta:
            return
        self._parts.append(delta)
        if self._wrapped:
            return  # sent whole when the call closes
        kind = "response.custom_tool_call_input.delta" if self._custom else "response.function_call_arguments.delta"
        self._emit(kind, {"item_id": item["id"], "output_index": len(self.output), "delta": delta})

    def _open(self, item: dict) -> dict:
        self._item, self._parts, self._annotations = item, [], []
        self._emit("response.output_item.added", {"output_index": len(self.output), "item": item})
        return item

    def close_item(self, status: str = "completed") -> None:
        item = self._item
        if item is None:
            return
        self._item = None
        index = len(self.output)
        joined = "".join(self._parts)
        ref = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = {"type": "output_text", "text": joined, "annotations": self._annotations, "logprobs": []}
            self._emit("response.output_text.done", {**ref, "content_index": 0, "text": joined, "logprobs": []})
            self._emit("response.content_part.done", {**ref, "content_index": 0, "part": part})
            item = {**item, "status": status, "content": [part]}
        elif item["type"] == "custom_tool_call":
            text = _unwrap(joined) if self._wrapped else joined
            if self._wrapped and text:
                self._emit("response.custom_tool_call_input.delta", {**ref, "delta": text})
            self._emit("response.custom_tool_call_input.done", {**ref, "input": text})
            item = {**item, "status": status, "input": text}
        else:
            arguments = joined or "{}"
            self._emit("response.function_call_arguments.done", {**ref, "arguments": arguments})
            item = {**item, "status": status, "arguments": arguments}
        self.output.append(item)
        self._emit("response.output_item.done", {"output_index": index, "item": item})

    def finish(self, usage: Usage, *, incomplete: str | None = None, reasoning_tokens: int = 0) -> None:
        """Close the open item and end with ``response.completed`` (or ``.incomplete``)."""
        if self.finished:
            return
        self.start()
        self.close_item("incomplete" if incomplete else "completed")
        self.finished = True
        self.status = "incomplete" if incomplete else "completed"
        self.base["usage"] = usage_dict(usage, reasoning_tokens)
        if incomplete:
            self.base["incomplete_details"] = {"reason": incomplete}
        else:
            self.base["completed_at"] = int(time.time())
        self._emit("response.incomplete" if incomplete else "response.completed", {"response": self.response()})

    def fail(self, kind: ErrorKind, message: str) -> None:
        """End a stream that failed after it began: an ``error`` event, as OpenAI sends."""
        if self.finished:
            return
        self.finished = True
        self.status = "failed"
        payload = error_event(kind, message, self._seq)
        self._seq += 1
        self._out.append(encode_event(_dumps(payload), "error"))


def _unwrap(arguments: str) -> str:
    """The string a function-shaped custom tool call carried (``{"input": "…"}``)."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(value, dict):
        inner = value.get("input")
        if isinstance(inner, str):
            return inner
        if len(value) == 1:
            only = next(iter(value.values()))
            return only if isinstance(only, str) else _dumps(only).decode()
    return value if isinstance(value, str) else arguments
