"""Messages and content blocks between the two dialects (used by :mod:`.translate`).

Both directions keep each conversation's order and pairing of tool calls with their
results. Text joins: system parts with a blank line, user and tool-result text blocks
with a newline, assistant text blocks with nothing (they are one output split in pieces).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = [
    "ERROR_PREFIX",
    "parse_data_url",
    "anthropic_messages_to_openai",
    "openai_messages_to_anthropic",
    "drop",
    "extras",
    "to_json",
    "blocks_of",
    "text_of",
    "tool_id",
    "tool_call_of",
    "parse_arguments",
]

#: what a tool result with ``is_error: true`` starts with on the OpenAI side (no error flag there)
ERROR_PREFIX = "Error: "
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")  # Anthropic's tool_use id pattern is ^[a-zA-Z0-9_-]+$
_DATA_URL = re.compile(r"data:([^;,]*)((?:;[^;,]*)*?);base64,(.*)", re.DOTALL)


# ---------------------------------------------------------------- helpers (shared with translate)


def drop(dropped: list[str], name: str) -> None:
    if name not in dropped:
        dropped.append(name)


def extras(obj: dict, known: frozenset[str] | set[str], dropped: list[str], where: str = "") -> None:
    """Note the keys of ``obj`` that have no counterpart (``cache_control`` under its own name)."""
    for key in obj:
        if key not in known:
            drop(dropped, key if key == "cache_control" or not where else f"{where}.{key}")


def to_json(value: Any) -> str:
    """Compact JSON, as tool-call arguments are sent."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. an integer beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def blocks_of(content: Any) -> list[dict]:
    """Content as a list of block/part objects (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, dict):
        return [content]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def text_of(content: Any, sep: str) -> str:
    """The text of a string or of text (and refusal) blocks; other blocks are ignored."""
    if isinstance(content, str):
        return content
    parts = []
    for block in blocks_of(content):
        kind = block.get("type")
        value = block.get(kind) if kind in ("text", "refusal") else None
        if isinstance(value, str):
            parts.append(value)
    return sep.join(parts)


def tool_id(raw: Any, fallback: str = "toolu_missing") -> str:
    """A tool call id Anthropic accepts; ids already valid pass unchanged (pairs stay paired)."""
    value = _BAD_ID_CHARS.sub("_", raw) if isinstance(raw, str) else ""
    return value or fallback


def tool_call_of(block: dict) -> dict:
    """A ``tool_use`` block as a Chat Completions tool call (arguments as compact JSON)."""
    args = block.get("input")
    function = {"name": str(block.get("name") or ""), "arguments": to_json(args if args is not None else {})}
    return {"id": str(block.get("id") or ""), "type": "function", "function": function}


def parse_arguments(raw: Any, dropped: list[str] | None = None) -> dict:
    """Parsed tool-call arguments; anything that is not a JSON object becomes ``{}``."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw.strip():
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        if dropped is not None:
            drop(dropped, "tool_calls.arguments (not a JSON object)")
    return {}


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a ``data:…;base64,…`` URL, or None for anything else."""
    match = _DATA_URL.fullmatch(url.strip()) if isinstance(url, str) else None
    if not match:
        return None
    return (match.group(1) or "application/octet-stream").lower(), match.group(3)


# ---------------------------------------------------------------- Anthropic → OpenAI


def anthropic_messages_to_openai(system: Any, messages: Any, dropped: list[str]) -> list[dict]:
    """Chat Completions messages for a Messages API ``system`` and ``messages``.

    Role-``system`` entries inside ``messages`` (Claude Code sends them) stay where they are.
    """
    out: list[dict] = []
    text = _a_system_text(system, dropped)
    if text:
        out.append({"role": "system", "content": text})
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            drop(dropped, "messages (not an object)")
            continue
        role, content = message.get("role"), message.get("content")
        extras(message, {"role", "content"}, dropped, "messages")
        if role == "system":
            out.append({"role": "system", "content": _a_system_text(content, dropped)})
        elif role == "assistant":
            out.extend(_a_assistant(content, dropped))
        elif role == "user":
            out.extend(_a_user(content, dropped))
        else:
            drop(dropped, f"messages.role={role}")
    return out


#: the line Claude Code puts first in its system prompt for Anthropic's billing: meaningless to another
#: provider, and it changes between requests, which would break that provider's prompt-prefix cache
BILLING_LINE = "x-anthropic-billing-header:"


def _a_system_text(content: Any, dropped: list[str]) -> str:
    parts = []
    for block in blocks_of(content):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            text = block["text"]
            if text.startswith(BILLING_LINE):
                drop(dropped, "system.x-anthropic-billing-header")
                text = text.partition("\n")[2].lstrip("\n")
                if not text:
                    continue
            parts.append(text)
            extras(block, {"type", "text"}, dropped, "system")
        else:
            drop(dropped, f"system.{block.get('type')}")
    return "\n\n".join(parts)


def _a_assistant(content: Any, dropped: list[str]) -> list[dict]:
    texts: list[str] = []
    calls: list[dict] = []
    for block in blocks_of(content):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
            extras(block, {"type", "text"}, dropped)
        elif kind == "tool_use":
            calls.append(tool_call_of(block))
            extras(block, {"type", "id", "name", "input", "caller"}, dropped)
        else:  # thinking, redacted_thinking, server_tool_use, web_search_tool_result, …
            drop(dropped, f"content.{kind}")
    if not texts and not calls:
        return []
    message: dict = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _a_user(content: Any, dropped: list[str]) -> list[dict]:
    """Tool results first (one tool message each), then the rest of the turn as one user message.

    Images inside tool results go into that user message: most servers take no image
    in a tool message.
    """
    tool_messages: list[dict] = []
    late: list[dict] = []
    parts: list[dict] = []
    for block in blocks_of(content):
        kind = block.get("type")
        if kind == "tool_result":
            text, images = _a_tool_result(block, dropped)
            tool_messages.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": text})
            late.extend(images)
        else:
            part = _a_part(block, dropped)
            if part is not None:
                parts.append(part)
    rest = late + parts
    if rest:
        tool_messages.append({"role": "user", "content": _collapse(rest)})
    return tool_messages


def _a_part(block: dict, dropped: list[str]) -> dict | None:
    """One user content block as a Chat Completions content part (None when dropped)."""
    kind = block.get("type")
    if kind == "text":
        extras(block, {"type", "text"}, dropped)
        return {"type": "text", "text": block.get("text") or ""}
    source = given if isinstance(given := block.get("source"), dict) else {}
    if kind == "image":
        extras(block, {"type", "source"}, dropped)
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
        elif source.get("type") == "url" and isinstance(source.get("url"), str):
            url = source["url"]
        else:
            drop(dropped, f"content.image.{source.get('type')}")
            return None
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document":
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            text = source["data"]
        elif source.get("type") == "content":
            text = text_of(source.get("content"), "\n")
        else:  # PDFs (base64, url, file): most OpenAI-compatible servers take no files
            drop(dropped, f"content.document.{source.get('type')}")
            return None
        extras(block, {"type", "source"}, dropped, "document")
        return {"type": "text", "text": text}
    drop(dropped, f"content.{kind}")
    return None


def _a_tool_result(block: dict, dropped: list[str]) -> tuple[str, list[dict]]:
    extras(block, {"type", "tool_use_id", "content", "is_error"}, dropped, "tool_result")
    texts: list[str] = []
    images: list[dict] = []
    for inner in blocks_of(block.get("content")):
        part = _a_part(inner, dropped)
        if part is None:
            continue
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    text = "\n".join(texts)
    return (ERROR_PREFIX + text if block.get("is_error") is True else text), images


def _collapse(parts: list[dict]) -> str | list[dict]:
    """Text-only content as one string: every OpenAI-compatible server takes that."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


# ---------------------------------------------------------------- OpenAI → Anthropic


def openai_messages_to_anthropic(messages: Any, dropped: list[str]) -> tuple[str, list[dict]]:
    """The ``system`` text and the alternating turns of Chat Completions ``messages``.

    System and developer messages, wherever they stand, join the system text (later
    ones appended after a blank line). Tool messages become ``tool_result`` blocks of a
    user turn, and consecutive messages of one role merge, since Anthropic wants user
    and assistant turns to alternate. A legacy ``function`` message answers the last
    assistant ``function_call``.
    """
    system: list[str] = []
    turns: list[dict] = []
    pending_function: str | None = None  # id given to the last legacy function_call
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict):
            drop(dropped, "messages (not an object)")
            continue
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            text = text_of(content, "\n")
            if text:
                system.append(text)
            extras(message, {"role", "content"}, dropped, "messages")
        elif role == "user":
            extras(message, {"role", "content"}, dropped, "messages")
            _append_turn(turns, "user", _o_user(content, dropped))
        elif role == "assistant":
            blocks, function_id = _o_assistant(message, index, dropped)
            pending_function = function_id or pending_function
            _append_turn(turns, "assistant", blocks)
        elif role == "tool":
            extras(message, {"role", "content", "tool_call_id"}, dropped, "messages")
            _append_turn(turns, "user", [_o_tool_result(message.get("tool_call_id"), content)])
        elif role == "function" and pending_function:
            _append_turn(turns, "user", [_o_tool_result(pending_function, content)])
            pending_function = None
        else:
            drop(dropped, f"messages.role={role}")
    _finish_turns(turns)
    return "\n\n".join(system), turns


def _append_turn(turns: list[dict], role: str, blocks: list[dict]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": list(blocks)})


def _finish_turns(turns: list[dict]) -> None:
    """Tool results first in each user turn; no trailing whitespace on a final assistant turn;
    a lone text block as a plain string."""
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")  # stable
    if turns and turns[-1]["role"] == "assistant":
        blocks = turns[-1]["content"]
        if blocks[-1]["type"] == "text":
            blocks[-1]["text"] = blocks[-1]["text"].rstrip()
            if not blocks[-1]["text"]:
                blocks.pop()
        if not blocks:
            turns.pop()
    for turn in turns:
        if len(turn["content"]) == 1 and turn["content"][0]["type"] == "text":
            turn["content"] = turn["content"][0]["text"]


def _o_user(content: Any, dropped: list[str]) -> list[dict]:
    blocks: list[dict] = []
    for part in blocks_of(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):  # Anthropic rejects empty text blocks
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            block = _o_image(url)
            if block is None:
                drop(dropped, "content.image_url (not a base64 data: or http(s) URL)")
            else:
                blocks.append(block)
            if isinstance(image, dict):
                extras(image, {"url"}, dropped, "image_url")
        else:
            drop(dropped, f"content.{kind}")  # input_audio, file, …
    return blocks


def _o_image(url: Any) -> dict | None:
    if not isinstance(url, str):
        return None
    parsed = parse_data_url(url)
    if parsed:
        media_type = "image/jpeg" if parsed[0] == "image/jpg" else parsed[0]  # a common misspelling
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": parsed[1]}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    return None


def _o_assistant(message: dict, index: int, dropped: list[str]) -> tuple[list[dict], str | None]:
    blocks: list[dict] = []
    text = text_of(message.get("content"), "")
    if text:
        blocks.append({"type": "text", "text": text})
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        blocks.append({"type": "text", "text": message["refusal"]})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            drop(dropped, "tool_calls.custom")
            continue
        function = given if isinstance(given := call.get("function"), dict) else {}
        blocks.append({
            "type": "tool_use", "id": tool_id(call.get("id")), "name": str(function.get("name") or ""),
            "input": parse_arguments(function.get("arguments"), dropped),
        })
    function_id = None
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and legacy.get("name"):
        function_id = f"toolu_function_{index}"
        blocks.append({"type": "tool_use", "id": function_id, "name": str(legacy["name"]),
                       "input": parse_arguments(legacy.get("arguments"), dropped)})
    extras(message, {"role", "content", "refusal", "tool_calls", "function_call"}, dropped, "messages")
    return blocks, function_id


def _o_tool_result(call_id: Any, content: Any) -> dict:
    text = text_of(content, "\n")
    block: dict = {"type": "tool_result", "tool_use_id": tool_id(call_id)}
    if text.startswith(ERROR_PREFIX):
        block["is_error"] = True
        text = text[len(ERROR_PREFIX):]
    if text:
        block["content"] = text
    return block
