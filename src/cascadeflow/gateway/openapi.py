"""The gateway's OpenAPI description (``GET /openapi.json``), for clients, tooling and fuzzers.

It describes what the gateway itself checks; the full request schemas are the
providers' own (Anthropic Messages, OpenAI Chat Completions), which bodies follow.
"""

from __future__ import annotations

from .. import __version__

__all__ = ["openapi_spec"]

_ERROR = {"description": "an error in the caller's dialect", "content": {"application/json": {"schema": {"type": "object"}}}}
_ERRORS = {str(status): _ERROR for status in (400, 404, 413, 429, 500, 502, 503, 504, 529)}
_CONTENT = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {"role": {"type": "string", "enum": ["user", "assistant", "system", "tool"]}, "content": _CONTENT},
}


def _post(summary: str, schema: dict, stream: bool = True) -> dict:
    success = {"description": "the upstream's answer (JSON, or server-sent events when streaming)"}
    content = {"application/json": {}} if not stream else {"application/json": {}, "text/event-stream": {}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {"200": {**success, "content": content}, **_ERRORS},
        }
    }


def _get(summary: str, parameters: list | None = None) -> dict:
    operation: dict = {"summary": summary, "responses": {"200": {"description": "JSON", "content": {"application/json": {}}}, **_ERRORS}}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def openapi_spec() -> dict:
    messages = {
        "type": "object",
        "required": ["model", "messages", "max_tokens"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {"type": "array", "items": _MESSAGE},
            "system": _CONTENT,
            "stream": {"type": "boolean"},
            "tools": {"type": "array", "items": {"type": "object"}},
        },
    }
    count = {**messages, "required": ["model", "messages"]}
    chat = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
            "stream": {"type": "boolean"},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
            "max_tokens": {"type": "integer", "minimum": 1},
            "tools": {"type": "array", "items": {"type": "object"}},
        },
    }
    model_id = [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "cascadeflow gateway", "version": __version__},
        "paths": {
            "/v1/messages": _post("Anthropic Messages API (cascaded per the rules)", messages),
            "/v1/messages/count_tokens": _post("Anthropic token counting", count, stream=False),
            "/v1/chat/completions": _post("OpenAI Chat Completions API (cascaded per the rules)", chat),
            "/v1/models": _get("Models the gateway serves (OpenAI shape, Anthropic's with anthropic-version)"),
            "/v1/models/{model_id}": _get("One model", model_id),
            "/health": _get("Liveness, routes and circuit breakers"),
            "/stats": _get("Requests, tokens, cost and cascade decisions since start"),
        },
    }
