"""OpenAI Responses API for the simulator: the request read as a chat, the answer as Responses.

The request is reduced to the chat shape the engine plans from (``instructions`` and
``developer``/``system`` items as system messages, ``function_call`` /
``custom_tool_call`` items as assistant tool calls, their outputs as tool messages,
custom tools as one-string functions), so scripts, default answers and token counts
are the same as for ``/v1/chat/completions``. Differences that mirror OpenAI:

- prompt caching is automatic, as for chat completions (see :mod:`.prompt_cache`): a
  repeated prefix of 1,024 tokens or more is reported, in 128-token steps, as
  ``input_tokens_details.cached_tokens``;
- a request with ``reasoning`` to a reasoning model (``gpt-5*``, ``o*``) gets a reasoning
  item first (its words count as ``output_tokens_details.reasoning_tokens``), with
  ``encrypted_content`` when ``include`` asks for ``reasoning.encrypted_content``;
  a reasoning input item whose ``encrypted_content`` this simulator did not make is
  refused with a 400, as OpenAI refuses another organisation's or model's;
- ``text.format`` ``json_schema`` makes the default answer a JSON value of the schema,
  ``json_object`` the object ``{"answer": <the default text>}``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..dialects.responses_events import ResponseEmitter
from ..usage import Usage as WireUsage
from .engine import Answer, default_thinking, new_id, plan_answer, schema_value, signature_for, split_tokens
from .prompt_cache import CacheSplit
from .script import ScriptRule

__all__ = ["ENCRYPTED_PREFIX", "check", "neutral_body", "plan", "response_body", "stream_events", "embeddings_body", "error_event"]

_dumps = orjson.dumps

ENCRYPTED_PREFIX = "gAAAAsim:"
_STRING_INPUT = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}


def check(body: dict[str, Any]) -> str | None:
    """What OpenAI would refuse with a 400, or None."""
    value = body.get("input")
    if not isinstance(value, (str, list)):
        return "Missing required parameter: 'input'."
    if body.get("previous_response_id") is not None:
        return f"Previous response with id '{body.get('previous_response_id')}' not found."
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict):
            return "Invalid type for 'input': expected an object."
        if item.get("type") == "reasoning":
            encrypted = item.get("encrypted_content")
            if encrypted is not None and not (isinstance(encrypted, str) and encrypted.startswith(ENCRYPTED_PREFIX)):
                return f"The encrypted content for item {item.get('id')} could not be verified."
    return None


def _content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": part.get("image_url") or part.get("file_id") or ""}})
        else:
            parts.append(part)
    return parts


def _custom_names(body: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        inner = tool.get("tools") or () if tool.get("type") == "namespace" else (tool,)
        names.update(name for t in inner if isinstance(t, dict) and t.get("type") == "custom"
                     and isinstance(name := t.get("name"), str))
    return names


def _tools(body: dict[str, Any]) -> list[dict]:
    out = []
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        inner = tool.get("tools") if tool.get("type") == "namespace" else [tool]
        for t in inner or ():
            if isinstance(t, dict) and t.get("type") in ("function", "custom"):
                params = t.get("parameters") if t.get("type") == "function" else _STRING_INPUT
                out.append({"type": "function", "function": {"name": t.get("name"), "description": t.get("description"),
                                                             "parameters": params}})
    return out


def neutral_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request in the chat shape :func:`plan_answer` reads."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    value = body.get("input")
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    for item in value if isinstance(value, list) else ():
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            messages.append({"role": "system" if role == "developer" else role, "content": _content(item.get("content"))})
        elif kind in ("function_call", "custom_tool_call"):
            arguments = item.get("arguments") if kind == "function_call" else _dumps({"input": item.get("input")}).decode()
            call = {"id": item.get("call_id"), "type": "function", "function": {"name": item.get("name"), "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last.get("role") == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            text = output if isinstance(output, str) else "".join(
                p.get("text", "") for p in output or () if isinstance(p, dict))
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
    neutral: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools = _tools(body)
    if tools:
        neutral["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        neutral["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        neutral["tool_choice"] = choice
    if isinstance(body.get("max_output_tokens"), int):
        neutral["max_tokens"] = body["max_output_tokens"]
    return neutral


def _reasoning_model(model: str) -> bool:
    return model.startswith(("gpt-5", "o1", "o3", "o4"))


def plan(body: dict[str, Any], neutral: dict[str, Any], rule: ScriptRule | None, prompt: str | None,
         cache: CacheSplit | None) -> tuple[Answer, str | None]:
    """The answer, and the reasoning summary (None when the request gets no reasoning item)."""
    answer = plan_answer(neutral, "openai", rule, prompt, cache)
    usage = answer.usage
    usage.input, usage.cache_creation = usage.input + usage.cache_creation, 0  # OpenAI bills no cache writes
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if (isinstance(fmt, dict) and fmt.get("type") == "json_schema" and not answer.tool_calls
            and (rule is None or rule.text is None)):
        answer.text = _dumps(schema_value(fmt.get("schema") or {"type": "object"})).decode()
        answer.usage.output = len(split_tokens(answer.text))
    elif (isinstance(fmt, dict) and fmt.get("type") == "json_object" and not answer.tool_calls
            and (rule is None or (rule.text is None and rule.words is None))):
        answer.text = _dumps({"answer": answer.text}).decode()
    summary = None
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") != "none" and _reasoning_model(answer.model):
        summary = default_thinking(answer.model, prompt or "")
        answer.usage.output += len(summary.split())
    return answer, summary


def _emitter(answer: Answer, body: dict[str, Any], summary: str | None, response_id: str, created: int,
             events: bool = True) -> ResponseEmitter:
    emitter = ResponseEmitter(body, answer.model, response_id=response_id, created_at=created,
                              store=body.get("store") is not False, events=events)
    emitter.start()
    if summary is not None:
        include = body.get("include") or ()
        encrypted = ENCRYPTED_PREFIX + signature_for(summary) if "reasoning.encrypted_content" in include else None
        emitter.reasoning(summary if (body.get("reasoning") or {}).get("summary") else None, encrypted)
    tokens = split_tokens(answer.text)
    for i in range(0, len(tokens), 3):
        emitter.text("".join(tokens[i : i + 3]))
    custom = _custom_names(body)
    for call in answer.tool_calls:
        is_custom = call.name in custom
        emitter.tool(call.id, call.name, custom=is_custom)
        if is_custom:
            value = call.input.get("input") if isinstance(call.input, dict) and "input" in call.input else call.input
            text = value if isinstance(value, str) else _dumps(value).decode()
        else:
            text = call.arguments
        for j in range(0, len(text), 12):
            emitter.tool_input(text[j : j + 12])
    u = answer.usage
    usage = WireUsage(u.input, u.output, u.cache_creation, u.cache_read)
    incomplete = "max_output_tokens" if answer.stop_reason == "max_tokens" else None
    emitter.finish(usage, incomplete=incomplete, reasoning_tokens=len(summary.split()) if summary else 0)
    return emitter


def stream_events(answer: Answer, body: dict[str, Any], summary: str | None, response_id: str,
                  created: int) -> list[bytes]:
    """The SSE events of a streamed response, one encoded event per list item."""
    return _emitter(answer, body, summary, response_id, created).take_events()


def response_body(answer: Answer, body: dict[str, Any], summary: str | None, response_id: str, created: int) -> bytes:
    """The non-streaming Response JSON."""
    return _dumps(_emitter(answer, body, summary, response_id, created, events=False).response())


def error_event(status: int, message: str | None = None, error_type: str | None = None) -> bytes:
    """An in-stream failure as OpenAI sends it: ``response.failed`` (the whole response, with its
    ``error``) when the server failed (5xx), else an ``error`` event (a rate limit, say)."""
    from .openai_sim import error_object

    error = error_object(status, message, error_type)["error"]
    if status >= 500:
        response = {"id": new_id("resp_"), "object": "response", "created_at": int(time.time()), "status": "failed",
                    "model": "", "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                    "error": {"code": "server_error", "message": error["message"]}, "incomplete_details": None,
                    "usage": None}
        payload = {"type": "response.failed", "response": response, "sequence_number": 0}
        return b"event: response.failed\ndata: " + _dumps(payload) + b"\n\n"
    payload = {"type": "error", "code": error["code"] or error["type"], "message": error["message"], "param": None,
               "sequence_number": 0}
    return b"event: error\ndata: " + _dumps(payload) + b"\n\n"


def embeddings_body(body: dict[str, Any]) -> bytes | None:
    """An embeddings answer: 8 deterministic floats per input (None when ``input`` is missing)."""
    import hashlib

    value = body.get("input")
    inputs = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if not inputs:
        return None
    data, tokens = [], 0
    for i, text in enumerate(inputs):
        raw = text if isinstance(text, str) else _dumps(text).decode()
        tokens += max(1, len(raw) // 4)
        digest = hashlib.blake2b(raw.encode(), digest_size=8).digest()
        data.append({"object": "embedding", "index": i, "embedding": [round(b / 255 - 0.5, 6) for b in digest]})
    return _dumps({"object": "list", "data": data, "model": body.get("model"),
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


class StoredResponses:
    """The responses OpenAI would keep (``store`` is true unless the request says false), for
    ``GET`` / ``DELETE /v1/responses/{id}`` and ``POST …/cancel``; the oldest go beyond ``limit``."""

    def __init__(self, limit: int = 1000) -> None:
        self._items: dict[str, bytes] = {}
        self._limit = limit

    def keep(self, body: dict[str, Any], response_id: str, data: bytes) -> None:
        if body.get("store") is False:
            return
        self._items[response_id] = data
        while len(self._items) > self._limit:
            self._items.pop(next(iter(self._items)))

    def clear(self) -> None:
        self._items.clear()

    def call(self, method: str, response_id: str, action: str) -> tuple[int, bytes]:
        """(status, JSON body) of a call on a stored response, with OpenAI's messages."""
        from .openai_sim import error_object

        data = self._items.get(response_id)
        if data is None:
            return 404, _dumps(error_object(404, f"No response found with id '{response_id}'."))
        if action == "cancel":
            return 400, _dumps(error_object(400, "Only responses created with background=true can be cancelled."))
        if method == "DELETE":
            del self._items[response_id]
            return 200, _dumps({"id": response_id, "object": "response", "deleted": True})
        return 200, data
