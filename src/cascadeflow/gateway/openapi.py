"""The gateway's OpenAPI description (``GET /openapi.json``), for clients, tooling and fuzzers.

It describes what the gateway itself checks; the full request schemas are the
providers' own (Anthropic Messages, OpenAI Chat Completions), which bodies follow.
The operator endpoints (the admin API for virtual keys, metrics, the dashboard's
data) are described too, behind the master key; ``/docs`` renders all of it.
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
    content: dict[str, dict] = {"application/json": {}} if not stream else {"application/json": {}, "text/event-stream": {}}
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


_LIMITS = {
    "type": "object",
    "properties": {name: {"type": kind, "minimum": low} for name, kind, low in (
        ("rpm", "integer", 1), ("tpm", "integer", 1), ("max_concurrent", "integer", 1),
        ("daily_budget_usd", "number", 0), ("monthly_budget_usd", "number", 0))},
    "additionalProperties": False,
}
_NEW_KEY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 128},
        "user_id": {"type": "string", "maxLength": 128},
        "team": {"type": "string", "maxLength": 128},
        "models": {"type": "array", "items": {"type": "string"}},
        "limits": _LIMITS,
        "expires_in_days": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
        "provider_keys": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 4096},
                          "description": "the key's own provider keys by route name or provider kind (anthropic, "
                                         "openai); stored encrypted, never shown again; needs CASCADEFLOW_SECRET_KEY"},
        "cache": {"type": "boolean", "nullable": True, "description": "answer this key's repeated requests from the "
                  "response cache (true), never (false), or as its rule says (null)"},
    },
    "additionalProperties": False,
    "example": {"name": "alice-laptop", "user_id": "alice", "team": "core", "limits": {"rpm": 60, "daily_budget_usd": 20}},
}
_ADMIN_ERRORS = {str(status): _ERROR for status in (400, 401, 403, 404)}
_MASTER: list[dict[str, list[str]]] = [{"masterKey": []}]


def _admin(method: str, summary: str, *, body: dict | None = None, parameters: list | None = None,
           media: str = "application/json") -> dict:
    operation: dict = {"tags": ["admin"], "summary": summary, "security": _MASTER,
                       "responses": {"200": {"description": "OK", "content": {media: {}}}, **_ADMIN_ERRORS}}
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    if parameters:
        operation["parameters"] = parameters
    return {method: operation}


def _tagged(paths: dict, tag: str) -> dict:
    for item in paths.values():
        for operation in item.values():
            operation.setdefault("tags", [tag])
    return paths


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
    messages["example"] = {"model": "claude-sonnet-5-5", "max_tokens": 256,
                           "messages": [{"role": "user", "content": "What is Python?"}]}
    count["example"] = {"model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": "What is Python?"}]}
    chat["example"] = {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": "What is Python?"}]}
    responses = {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
            "instructions": {"type": "string"},
            "stream": {"type": "boolean"},
            "store": {"type": "boolean"},
            "max_output_tokens": {"type": "integer", "minimum": 1},
            "tools": {"type": "array", "items": {"type": "object"}},
        },
        "example": {"model": "gpt-5.4-mini", "input": "What is Python?", "store": False},
    }
    embeddings = {
        "type": "object",
        "required": ["model", "input"],
        "properties": {"model": {"type": "string", "minLength": 1},
                       "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}},
        "example": {"model": "text-embedding-3-small", "input": "What is Python?"},
    }
    model_id = [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
    response_id = [{"name": "response_id", "in": "path", "required": True,
                    "schema": {"type": "string", "minLength": 1}}]
    key_id = [{"name": "key_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
    overview = [
        {"name": "range", "in": "query", "schema": {"type": "string", "enum": ["1h", "6h", "24h", "7d", "30d", "all"]}},
        {"name": "recent", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 500}},
    ]
    api = _tagged({
        "/v1/messages": _post("Anthropic Messages API (cascaded per the rules)", messages),
        "/v1/messages/count_tokens": _post("Anthropic token counting", count, stream=False),
        "/v1/chat/completions": _post("OpenAI Chat Completions API (cascaded per the rules)", chat),
        "/v1/responses": _post("OpenAI Responses API (forwarded, or translated for chat-only and Anthropic routes)",
                               responses),
        "/v1/responses/{response_id}": {
            **_get("A stored response (forwarded to the routes whose upstream stores responses)", response_id),
            "delete": {**_get("Delete a stored response (forwarded likewise)", response_id)["get"]}},
        "/v1/embeddings": _post("OpenAI embeddings (OpenAI-compatible routes)", embeddings, stream=False),
        "/v1/models": _get("Models the gateway serves (OpenAI shape, Anthropic's with anthropic-version)"),
        "/v1/models/{model_id}": _get("One model", model_id),
    }, "API")
    gateway = _tagged({
        "/health": _get("Liveness, routes and circuit breakers"),
        "/stats": _get("Requests, tokens, cost and cascade decisions since start, and the ledger's totals"),
    }, "gateway")
    admin = {
        "/admin/keys": {**_admin("post", "Issue a virtual key (its secret is in this answer only)", body=_NEW_KEY),
                        **_admin("get", "All virtual keys (never a secret or a hash)")},
        "/admin/keys/reseal": _admin("post", "Encrypt every stored provider key again under the current secret key "
                                             "(the second step of a secret key rotation)"),
        "/admin/keys/{key_id}": {**_admin("get", "One key, with what it spent today and this month", parameters=key_id),
                                 **_admin("delete", "Revoke a key (every gateway process refuses it from then on)",
                                          parameters=key_id)},
        "/metrics": _admin("get", "Prometheus metrics (text exposition format)", media="text/plain"),
        "/dashboard/api/overview": _admin("get", "The dashboard's figures from the ledger", parameters=overview),
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "cascadeflow gateway", "version": __version__,
                 "description": "Anthropic and OpenAI APIs with cascades, and the gateway's operator endpoints. "
                                "The admin endpoints need the master key (Authorization: Bearer <master key>)."},
        "tags": [{"name": "API", "description": "the provider APIs, as the official SDKs call them"},
                 {"name": "gateway", "description": "health and running totals"},
                 {"name": "admin", "description": "virtual keys, metrics and the ledger (master key)"}],
        "components": {"securitySchemes": {"masterKey": {"type": "http", "scheme": "bearer",
                                                         "description": "auth.master_key / CASCADEFLOW_MASTER_KEY"}}},
        "paths": {**api, **gateway, **admin},
    }
