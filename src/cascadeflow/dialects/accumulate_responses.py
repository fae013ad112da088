"""A Responses API answer, buffered and judged: what a cascade needs to draft on it.

:class:`ResponsesAccumulator` folds a Responses event stream into the final Response
(the ``response.completed`` event carries it whole; the items are collected as they
close too, so a stream cut short still yields a partial answer). :func:`answer_from_response`
reduces a Response to the :class:`~.answer.DraftAnswer` the checks read: a custom tool
call becomes a call whose input is ``{"input": …}``, so the checks see a JSON object.
:func:`replay_responses` gives a buffered stream back, byte for byte except the events
that name the model.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..usage import Usage
from .answer import DraftAnswer, ToolCall
from .responses import TERMINAL_EVENTS
from .sse import SSEEvent, encode_event

__all__ = ["ResponsesAccumulator", "answer_from_response", "replay_responses", "rewrite_response"]

#: the events whose data holds the whole response (and so the model's name)
_SNAPSHOTS = frozenset({"response.created", "response.in_progress", "response.queued"}) | TERMINAL_EVENTS


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


class ResponsesAccumulator:
    """Folds Responses events into the Response a non-streaming call returns.

    ``feed`` returns the output index of a tool call the event completed (else None),
    like the other accumulators, so early checks judge only finished calls.
    """

    __slots__ = ("events", "done", "error", "_response", "_items", "_texts")

    def __init__(self) -> None:
        self.events: list[SSEEvent] = []
        self.done = False
        self.error: dict | None = None
        self._response: dict = {}
        self._items: dict[int, dict] = {}  # output index -> the item as it stands
        self._texts: dict[int, list[str]] = {}  # output index -> text deltas of a message being streamed

    def feed(self, event: SSEEvent) -> int | None:
        self.events.append(event)
        data = _loads(event.data)
        if not isinstance(data, dict):
            return None
        kind = data.get("type") or event.event
        index = data.get("output_index")
        if kind in _SNAPSHOTS and isinstance(data.get("response"), dict):
            self._response = data["response"]
            if kind in TERMINAL_EVENTS:
                self.done = True
                if kind == "response.failed":
                    self.error = data
        elif kind == "error":
            self.error = data
        elif kind in ("response.output_item.added", "response.output_item.done") and isinstance(index, int):
            item = data.get("item")
            if isinstance(item, dict):
                self._items[index] = item
                if kind.endswith(".done") and item.get("type") in ("function_call", "custom_tool_call"):
                    return index
        elif kind == "response.output_text.delta" and isinstance(index, int) and isinstance(data.get("delta"), str):
            self._texts.setdefault(index, []).append(data["delta"])
        return None

    @property
    def response(self) -> dict:
        """The final Response, or the items seen so far as one."""
        if self.done and isinstance(self._response.get("output"), list):
            return self._response
        output = []
        for index in sorted(self._items):
            item = self._items[index]
            if item.get("type") == "message" and index in self._texts and not item.get("content"):
                item = {**item, "content": [{"type": "output_text", "text": "".join(self._texts[index])}]}
            output.append(item)
        return {**self._response, "output": output}

    def answer(self, partial: bool = False) -> DraftAnswer:
        answer = answer_from_response(self.response)
        answer.partial = partial
        return answer


def answer_from_response(response: dict) -> DraftAnswer:
    """A Response (JSON, or rebuilt from a stream), normalised for the checks."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif isinstance(part, dict) and isinstance(part.get("refusal"), str):
                    texts.append(part["refusal"])
        elif kind == "reasoning":
            thinking += [s["text"] for s in item.get("summary") or () if isinstance(s, dict) and isinstance(s.get("text"), str)]
        elif kind == "function_call":
            calls.append(_call(item, given if isinstance(given := item.get("arguments"), str) else ""))
        elif kind == "custom_tool_call":
            value = given if isinstance(given := item.get("input"), str) else ""
            calls.append(_call(item, orjson.dumps({"input": value}).decode()))
    status = response.get("status")
    details = response.get("incomplete_details")
    if status == "incomplete":
        reason = details.get("reason") if isinstance(details, dict) else None
        stop = "refusal" if reason == "content_filter" else "max_tokens"
    elif status == "completed":
        stop = "tool_use" if calls else "end_turn"
    else:
        stop = None
    return DraftAnswer(text="".join(texts), tool_calls=calls, thinking="\n".join(thinking), stop_reason=stop,
                       usage=Usage.from_responses(response.get("usage")), model=str(response.get("model") or ""))


def _call(item: dict, arguments: str) -> ToolCall:
    try:
        parsed, valid = orjson.loads(arguments) if arguments else {}, True
    except orjson.JSONDecodeError:
        parsed, valid = None, False
    return ToolCall(str(item.get("call_id") or item.get("id") or ""), str(item.get("name") or ""), arguments, parsed,
                    valid)


def rewrite_response(body: dict, model: str | None = None) -> dict:
    """A copy of a Response under ``model`` if given."""
    return body if model is None or body.get("model") == model else {**body, "model": model}


def replay_responses(events: list[SSEEvent], model: str | None = None) -> bytes:
    """The buffered events' bytes in order; with ``model``, only the events that carry the whole
    response (and so its model) are re-serialised."""
    if model is None:
        return b"".join(event.raw for event in events)
    out = []
    for event in events:
        if event.event in _SNAPSHOTS or (event.event is None and b'"response":{' in event.data):
            data = _loads(event.data)
            response = data.get("response") if isinstance(data, dict) else None
            if isinstance(response, dict) and response.get("model") != model:
                data["response"] = {**response, "model": model}
                out.append(encode_event(orjson.dumps(data), event.event))
                continue
        out.append(event.raw)
    return b"".join(out)
