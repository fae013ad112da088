"""Between the OpenAI Responses API and Chat Completions (and, through it, Anthropic Messages).

A Responses request for an upstream that speaks only Chat Completions — or, one step
further with :mod:`.translate`, the Anthropic Messages API — is rewritten as a chat
request; the answer comes back as a Response, built by
:class:`~.responses_events.ResponseEmitter`, JSON or stream alike.

Choices, each holding in both directions:

- **Custom (freeform) tools** such as Codex's ``apply_patch`` become function tools with
  one string parameter ``input`` (their grammar, if any, goes into the description); a
  call of one comes back as a ``custom_tool_call`` carrying that string.
- **Namespaced tools** are flattened to ``{namespace}__{name}`` and split again on the
  way back.
- **Reasoning items never cross**: their ``encrypted_content`` is sealed for the model
  that made it, and a chat upstream has nowhere to put it. Reasoning text a chat upstream
  streams back is dropped too (a client would resend it as an item no other upstream knows).
- Hosted tools (``web_search``, ``file_search``, …) cannot run on a chat-only upstream: dropped,
  and named in the ``dropped`` list like every other field that does not cross. (An Anthropic
  upstream runs a web search of its own: see :mod:`.web_search`.)
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import ErrorKind
from ..usage import Usage
from .responses_events import ResponseEmitter
from .sse import SSEEvent, json_object
from .translate_content import drop
from .translate_stream import _error_message, _openai_error_kind, _Translator

__all__ = ["ToolNames", "responses_to_chat_request", "chat_to_responses_response", "ChatToResponsesStream",
           "anthropic_cache_breakpoints"]

_dumps = orjson.dumps
_SEPARATOR = "__"
_STRING_INPUT = {"type": "object", "properties": {"input": {"type": "string", "description": "the tool's input"}},
                 "required": ["input"], "additionalProperties": False}
_TOP_HANDLED = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens", "stream",
    "temperature", "top_p", "text", "reasoning", "user", "safety_identifier", "store", "include",
    "prompt_cache_key", "stream_options",
})
_CACHE = {"type": "ephemeral"}


class ToolNames:
    """Which flattened function names stand for custom tools or namespaced ones."""

    __slots__ = ("custom", "namespaced")

    def __init__(self) -> None:
        self.custom: set[str] = set()
        self.namespaced: dict[str, tuple[str, str]] = {}  # flat name -> (namespace, name)

    def flat(self, name: str, namespace: str | None) -> str:
        if not namespace:
            return name
        flat = f"{namespace}{_SEPARATOR}{name}"
        self.namespaced[flat] = (namespace, name)
        return flat

    def split(self, flat: str) -> tuple[str, str | None]:
        pair = self.namespaced.get(flat)
        return (pair[1], pair[0]) if pair else (flat, None)


# ---------------------------------------------------------------- requests


def responses_to_chat_request(body: dict) -> tuple[dict, list[str], ToolNames]:
    """A Responses request as a Chat Completions request, the fields dropped, and the tool names."""
    dropped: list[str] = []
    names = ToolNames()
    tools = _tools(body.get("tools"), names, dropped)
    messages: list[dict] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        _items(instructions, messages, names, dropped)
    value = body.get("input")
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    elif isinstance(value, list):
        _items(value, messages, names, dropped)
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), names, dropped)
        if choice is not None:
            out["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    elif body.get("tool_choice") not in (None, "auto", "none"):
        drop(dropped, "tool_choice")
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool):
        out["max_tokens"] = limit
    for key in ("temperature", "top_p"):
        if isinstance(body.get(key), (int, float)) and not isinstance(body.get(key), bool):
            out[key] = body[key]
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["user"] = user
    _text_format(body.get("text"), out, dropped)
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    for key in body:
        if key not in _TOP_HANDLED and body[key] is not None:
            drop(dropped, key)
    return out, dropped, names


def _tools(tools: Any, names: ToolNames, dropped: list[str]) -> list[dict]:
    out: list[dict] = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        if kind == "namespace":
            for inner in tool.get("tools") or ():
                if isinstance(inner, dict):
                    out.extend(_tool(inner, names, dropped, str(tool.get("name") or "")))
        else:
            out.extend(_tool(tool, names, dropped, None))
    return out


def _tool(tool: dict, names: ToolNames, dropped: list[str], namespace: str | None) -> list[dict]:
    kind = tool.get("type")
    name = tool.get("name")
    if not isinstance(name, str) or kind not in ("function", "custom"):
        drop(dropped, f"tools.{kind}")
        return []
    flat = names.flat(name, namespace)
    description = given if isinstance(given := tool.get("description"), str) else ""
    if kind == "custom":
        names.custom.add(flat)
        fmt = tool.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
            description += (f"\n\nPut the whole input in the `input` string. It must follow this "
                            f"{fmt.get('syntax') or ''} grammar:\n{fmt['definition']}")
        function: dict[str, Any] = {"name": flat, "parameters": _STRING_INPUT}
    else:
        params = tool.get("parameters")
        function = {"name": flat, "parameters": params if isinstance(params, dict) else {"type": "object", "properties": {}}}
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
    if description:
        function["description"] = description
    return [{"type": "function", "function": function}]


def _tool_choice(choice: Any, names: ToolNames, dropped: list[str]) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": names.flat(choice["name"], choice.get("namespace"))}}
        if kind == "allowed_tools":
            drop(dropped, "tool_choice.allowed_tools")
            return "required" if choice.get("mode") == "required" else "auto"
    if choice is not None:
        drop(dropped, "tool_choice")
    return None


def _text_format(text: Any, out: dict, dropped: list[str]) -> None:
    if not isinstance(text, dict):
        return
    fmt = text.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema: dict[str, Any] = {"name": fmt.get("name") or "output", "schema": fmt.get("schema") or {}}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    if text.get("verbosity") is not None:
        drop(dropped, "text.verbosity")


def _items(items: list, messages: list[dict], names: ToolNames, dropped: list[str]) -> None:
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            _message(item, messages, dropped)
        elif kind in ("function_call", "custom_tool_call"):
            flat = names.flat(str(item.get("name") or ""), item.get("namespace"))
            if kind == "custom_tool_call":
                names.custom.add(flat)
                arguments = _dumps({"input": given if isinstance(given := item.get("input"), str) else ""}).decode()
            else:
                arguments = given if isinstance(given := item.get("arguments"), str) else "{}"
            call = {"id": str(item.get("call_id") or item.get("id") or ""), "type": "function",
                    "function": {"name": flat, "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""),
                             "content": _output_text(item.get("output"), dropped)})
        elif kind == "reasoning":
            drop(dropped, "input.reasoning")  # sealed for the model that made it: never crosses
        else:
            drop(dropped, f"input.{kind}")


def _message(item: dict, messages: list[dict], dropped: list[str]) -> None:
    role = item.get("role")
    content = item.get("content")
    if role in ("system", "developer"):
        text = content if isinstance(content, str) else "".join(
            p.get("text", "") for p in content or () if isinstance(p, dict) and isinstance(p.get("text"), str))
        messages.append({"role": "system", "content": text})
        return
    if role == "assistant":
        text = content if isinstance(content, str) else "".join(
            p.get("text") or p.get("refusal") or "" for p in content or () if isinstance(p, dict))
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and not last.get("tool_calls"):
            last["content"] = (last.get("content") or "") + text
        else:
            messages.append({"role": "assistant", "content": text})
        return
    if isinstance(content, str):
        messages.append({"role": "user", "content": content})
        return
    parts: list[dict] = []
    for part in content if isinstance(content, list) else ():
        converted = _part(part, dropped) if isinstance(part, dict) else None
        if converted is not None:
            parts.append(converted)
    if all(p["type"] == "text" for p in parts):
        messages.append({"role": "user", "content": "".join(p["text"] for p in parts)})
    else:
        messages.append({"role": "user", "content": parts})


def _part(part: dict, dropped: list[str]) -> dict | None:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": given if isinstance(given := part.get("text"), str) else ""}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            drop(dropped, "input_image.file_id")
            return None
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        file: dict[str, Any] = {"file_data": part["file_data"]}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    drop(dropped, f"content.{kind}")
    return None


def _output_text(output: Any, dropped: list[str]) -> str:
    if isinstance(output, str):
        return output
    texts = []
    for part in output if isinstance(output, list) else ():
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, dict):
            drop(dropped, f"function_call_output.{part.get('type')}")
    return "".join(texts)


# ---------------------------------------------------------------- Anthropic extras


def anthropic_cache_breakpoints(body: dict) -> None:
    """Mark the system prompt (else the tools) and the conversation's last two messages for Anthropic's
    prompt cache.

    Responses callers (Codex) never mark anything, and Anthropic caches only marked
    prefixes; with these breakpoints each turn reads the previous turn's prefix from the
    cache, as Claude Code's requests do. The tools come first in the prefix, so the system
    prompt's breakpoint caches them too: the last tool is marked only where there is no
    system prompt, which leaves one of Anthropic's four breakpoints free for the cascade's
    bridge (:mod:`cascadeflow.cascade.bridge`).
    """
    system = body.get("system")
    marked = isinstance(system, str) and bool(system)
    if marked:
        body["system"] = [{"type": "text", "text": system, "cache_control": _CACHE}]
    tools = body.get("tools")
    if not marked and isinstance(tools, list) and tools and isinstance(tools[-1], dict):
        tools[-1] = {**tools[-1], "cache_control": _CACHE}
    messages = given if isinstance(given := body.get("messages"), list) else []
    for message in messages:  # one form for every turn, so a prefix reads the same bytes turn after turn
        if isinstance(message, dict) and isinstance(message.get("content"), str) and message["content"]:
            message["content"] = [{"type": "text", "text": message["content"]}]
    for message in messages[-2:]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for i in range(len(content) - 1, -1, -1):
                block = content[i]
                if isinstance(block, dict) and block.get("type") not in ("thinking", "redacted_thinking") and (
                        block.get("type") != "text" or block.get("text")):
                    content[i] = {**block, "cache_control": _CACHE}
                    break


# ---------------------------------------------------------------- answers


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _reasoning_tokens(usage: Any) -> int:
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    value = details.get("reasoning_tokens") if isinstance(details, dict) else 0
    return value if isinstance(value, int) and value > 0 else 0


def _call(emitter: ResponseEmitter, names: ToolNames, call_id: str, flat: str) -> None:
    name, namespace = names.split(flat)
    emitter.tool(call_id, name, custom=flat in names.custom, wrapped=True, namespace=namespace)


def chat_to_responses_response(completion: dict, request: dict, model: str, names: ToolNames,
                               searches: Any = None) -> dict:
    """A chat completion (first choice) as a Response object; ``searches`` (a
    :class:`~.web_search.SearchResults`) adds the upstream's web searches and its text's citations."""
    emitter = ResponseEmitter(request, model, events=False)
    if searches is not None:
        searches.emit_calls(emitter)
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = given if isinstance(given := choice.get("message"), dict) else {}
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str):
        emitter.text(content)
        for annotation in searches.annotations if searches is not None else ():
            emitter.annotate(annotation)
    if isinstance(message.get("refusal"), str):
        emitter.text(message["refusal"])
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        _call(emitter, names, str(call.get("id") or f"call_{i}"), str(function.get("name") or ""))
        emitter.tool_input(given if isinstance(given := function.get("arguments"), str) else "")
    usage = completion.get("usage")
    emitter.finish(Usage.from_openai(usage), incomplete=_INCOMPLETE.get(choice.get("finish_reason") or ""),
                   reasoning_tokens=_reasoning_tokens(usage))
    return emitter.response()


class ChatToResponsesStream(_Translator):
    """``chat.completion.chunk`` SSE in, Responses events out (see :class:`ResponseEmitter`)."""

    __slots__ = ("_emitter", "_names", "_calls", "_finish_reason", "_reasoning")

    def __init__(self, request: dict, model: str, names: ToolNames) -> None:
        super().__init__()
        self._emitter = ResponseEmitter(request, model)
        self._names = names
        self._calls: dict[int, str] = {}  # tool call index -> call id
        self._finish_reason: str | None = None
        self._reasoning = 0

    @property
    def emitter(self) -> ResponseEmitter:
        """Where the Responses events are built (a step before this one may add items of its own)."""
        return self._emitter

    def _event(self, event: SSEEvent) -> None:
        data = event.data
        if data == b"[DONE]":
            self._end()
            return
        chunk = json_object(data)
        if "error" in chunk:
            error = chunk["error"]
            self._fail(_openai_error_kind(error), _error_message(error, "upstream error"))
            return
        emitter = self._emitter
        emitter.start()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = Usage.from_openai(usage)
            self._reasoning = _reasoning_tokens(usage)
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is not None:
            delta = given if isinstance(given := choice.get("delta"), dict) else {}
            if isinstance(delta.get("content"), str):
                emitter.text(delta["content"])
            for call in delta.get("tool_calls") or ():
                self._tool_delta(call)
            if choice.get("finish_reason"):
                self._finish_reason = str(choice["finish_reason"])
        self._out.append(emitter.take())

    def _tool_delta(self, call: Any) -> None:
        if not isinstance(call, dict):
            return
        index = given if isinstance(given := call.get("index"), int) else len(self._calls)
        function = given if isinstance(given := call.get("function"), dict) else {}
        if index not in self._calls:
            self._calls[index] = str(call.get("id") or f"call_{index}")
            _call(self._emitter, self._names, self._calls[index], str(function.get("name") or ""))
        if isinstance(function.get("arguments"), str):
            self._emitter.tool_input(function["arguments"])

    def _end(self) -> None:
        emitter = self._emitter
        emitter.finish(self._usage, incomplete=_INCOMPLETE.get(self._finish_reason or ""),
                       reasoning_tokens=self._reasoning)
        self._out.append(emitter.take())
        self._complete = True

    def _fail(self, kind: ErrorKind, message: str) -> None:
        self._emitter.fail(kind, message)
        self._out.append(self._emitter.take())
        self._error = message

    def _finish(self) -> None:
        if self._finish_reason is not None:  # finished; only the usage chunk or [DONE] never came
            self._end()
        else:
            self._fail(ErrorKind.BAD_GATEWAY, "upstream stream ended before the answer was complete")


class ChainedStream:
    """Two stream translators in a row (Anthropic → chat → Responses)."""

    __slots__ = ("first", "second")

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def feed(self, chunk: bytes) -> bytes:
        middle = self.first.feed(chunk)
        return self.second.feed(middle) if middle else b""

    def finish(self) -> bytes:
        out = self.second.feed(self.first.finish())
        return out + self.second.finish()

    @property
    def usage(self) -> Usage:
        return self.first.usage

    @property
    def complete(self) -> bool:
        return self.first.complete and self.second.complete

    @property
    def error(self) -> str | None:
        return self.first.error or self.second.error
