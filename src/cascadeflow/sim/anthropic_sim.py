"""Anthropic Messages API wire format for the simulator (JSON bodies and SSE events)."""

from __future__ import annotations

from typing import Any

import orjson

from ..dialects.sse import encode_event
from .engine import Answer, split_tokens

__all__ = [
    "ERROR_TYPES",
    "error_body",
    "error_event",
    "message_body",
    "model_object",
    "models_page",
    "stream_events",
    "usage_dict",
]

_dumps = orjson.dumps

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_DEFAULT_MESSAGES = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "The requested resource could not be found.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit.",
    "api_error": "Internal server error.",
    "overloaded_error": "Overloaded",
}


def error_type_for(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_object(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    etype = error_type or error_type_for(status)
    return {
        "type": "error",
        "error": {"type": etype, "message": message or _DEFAULT_MESSAGES.get(etype, f"Error {status}")},
    }


def error_body(status: int, message: str | None = None, error_type: str | None = None) -> bytes:
    """``{"type":"error","error":{"type":...,"message":...}}``."""
    return _dumps(error_object(status, message, error_type))


def error_event(status: int, message: str | None = None, error_type: str | None = None) -> bytes:
    """An in-stream ``event: error`` SSE event."""
    return encode_event(error_body(status, message, error_type), "error")


def usage_dict(answer: Answer, output_tokens: int | None = None) -> dict[str, Any]:
    """The Messages API usage, with the cache writes split by TTL as the API reports them."""
    u = answer.usage
    return {
        "input_tokens": u.input,
        "cache_creation_input_tokens": u.cache_creation,
        "cache_read_input_tokens": u.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_creation - u.cache_creation_1h,
            "ephemeral_1h_input_tokens": u.cache_creation_1h,
        },
        "output_tokens": u.output if output_tokens is None else output_tokens,
        **({"server_tool_use": {"web_search_requests": 1}} if answer.server_blocks else {}),
    }


def _content(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.thinking is not None:
        blocks.append({"type": "thinking", "thinking": answer.thinking, "signature": answer.signature})
    blocks += answer.server_blocks
    if answer.text:
        blocks.append({"type": "text", "text": answer.text, **({"citations": answer.citations} if answer.citations else {})})
    for call in answer.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input})
    return blocks


def message_body(answer: Answer, msg_id: str) -> bytes:
    """The non-streaming ``message`` JSON."""
    return _dumps(
        {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": _content(answer),
            "stop_reason": answer.stop_reason,
            "stop_sequence": answer.stop_sequence,
            "usage": usage_dict(answer),
        }
    )


def _ev(name: str, payload: dict[str, Any]) -> bytes:
    return encode_event(_dumps(payload), name)


def _pieces(text: str, per: int = 3) -> list[str]:
    tokens = split_tokens(text)
    return ["".join(tokens[i : i + per]) for i in range(0, len(tokens), per)]


def _json_pieces(data: str, size: int = 12) -> list[str]:
    return [data[i : i + size] for i in range(0, len(data), size)]


_PING = _ev("ping", {"type": "ping"})


def stream_events(answer: Answer, msg_id: str) -> list[bytes]:
    """The exact SSE event sequence of a streamed message, one bytes per event."""
    events = [
        _ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": answer.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage_dict(answer, output_tokens=1),
                },
            },
        )
    ]
    index = 0

    def start(block: dict[str, Any]) -> None:
        events.append(_ev("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        if index == 0:
            events.append(_PING)

    def delta(delta: dict[str, Any]) -> None:
        events.append(_ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))

    def stop() -> None:
        events.append(_ev("content_block_stop", {"type": "content_block_stop", "index": index}))

    if answer.thinking is not None:
        start({"type": "thinking", "thinking": "", "signature": ""})
        for piece in _pieces(answer.thinking):
            delta({"type": "thinking_delta", "thinking": piece})
        delta({"type": "signature_delta", "signature": answer.signature})
        stop()
        index += 1
    for block in answer.server_blocks:  # the search's call (its query streamed as JSON), then its results whole
        if block["type"] == "server_tool_use":
            start({**block, "input": {}})
            delta({"type": "input_json_delta", "partial_json": _dumps(block["input"]).decode()})
        else:
            start(block)
        stop()
        index += 1
    if answer.text:
        start({"type": "text", "text": ""})
        for citation in answer.citations:
            delta({"type": "citations_delta", "citation": citation})
        for piece in _pieces(answer.text):
            delta({"type": "text_delta", "text": piece})
        stop()
        index += 1
    for call in answer.tool_calls:
        start({"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
        delta({"type": "input_json_delta", "partial_json": ""})
        for piece in _json_pieces(call.arguments):
            delta({"type": "input_json_delta", "partial_json": piece})
        stop()
        index += 1
    if index == 0:
        events.append(_PING)
    events.append(
        _ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
                "usage": {"output_tokens": answer.usage.output},
            },
        )
    )
    events.append(_ev("message_stop", {"type": "message_stop"}))
    return events


def _yes() -> dict[str, bool]:
    return {"supported": True}


def _capabilities() -> dict[str, Any]:
    """Every capability key the Models API always sends, all supported (the simulated models are current ones)."""
    levels = {level: _yes() for level in ("low", "medium", "high", "max")}
    return {
        "batch": _yes(), "citations": _yes(), "code_execution": _yes(),
        "context_management": {"supported": True, "clear_tool_uses_20250919": _yes()},
        "effort": {"supported": True, **levels}, "image_input": _yes(), "pdf_input": _yes(),
        "server_tools": {"supported": True, "code_execution": _yes(), "web_search": _yes(), "web_fetch": _yes()},
        "structured_outputs": _yes(),
        "thinking": {"supported": True, "types": {"adaptive": _yes(), "enabled": _yes()}},
    }


def model_object(model: dict[str, Any]) -> dict[str, Any]:
    """A ``ModelInfo`` as the Models API sends it: limits and capabilities included."""
    return {
        "type": "model",
        "id": model["id"],
        "display_name": model["display_name"],
        "created_at": model["created_at"],
        "lifecycle": "active",
        "max_input_tokens": model.get("max_input_tokens"),
        "max_tokens": model.get("max_tokens"),
        "capabilities": _capabilities(),
    }


def models_page(models: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    """``GET /v1/models`` with ``limit`` / ``after_id`` / ``before_id`` paging."""
    items = [model_object(m) for m in models]
    ids = [m["id"] for m in items]
    try:
        limit = max(1, min(1000, int(query.get("limit", 20))))
    except ValueError:
        limit = 20
    after, before = query.get("after_id"), query.get("before_id")
    if after in ids:
        items = items[ids.index(after) + 1 :]
        page = items[:limit]
        has_more = len(items) > limit
    elif before in ids:
        items = items[: ids.index(before)]
        page = items[-limit:]
        has_more = len(items) > limit
    else:
        page = items[:limit]
        has_more = len(items) > limit
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
