"""Errors as the caller's SDK expects them: its dialect's body, the right status."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response

from ..dialects import anthropic as anthropic_wire
from ..dialects import openai as openai_wire
from ..errors import CascadeflowError, ErrorKind, ProxyUpstreamError

__all__ = ["error_response", "upstream_error_response", "caller_dialect", "request_id_of"]

#: refusals of the gateway's own that the same request would get again at once
_FINAL = frozenset({ErrorKind.AUTHENTICATION, ErrorKind.PERMISSION, ErrorKind.BUDGET_EXCEEDED})

_RELAYED_HEADERS = ("retry-after", "retry-after-ms", "request-id", "x-request-id")


def request_id_of(request: HTTPConnection) -> str:
    """The caller's ``x-request-id``, or a new one of the gateway's."""
    return (request.headers.get("x-request-id") or request.app.state.gateway.new_request_id())[:64]


def caller_dialect(path: str, headers: Mapping[str, str]) -> str:
    """The dialect to answer in: by endpoint, else by the ``anthropic-version`` header."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith(("/v1/chat/", "/v1/completions", "/v1/responses", "/v1/embeddings")):
        return "openai"
    return "anthropic" if "anthropic-version" in headers else "openai"


def error_response(
    dialect: str, kind: ErrorKind, message: str, headers: dict[str, str] | None = None, status: int | None = None,
    request_id: str | None = None,
) -> Response:
    """The error body of ``dialect``; with ``request_id``, named in the body as Anthropic's API does
    (OpenAI's carries none) and in the ``x-request-id`` header."""
    wire = anthropic_wire if dialect == "anthropic" else openai_wire
    if request_id:
        headers = {**(headers or {}), "x-request-id": request_id}
    return Response(wire.error_body(kind, message, request_id), status or kind.status, headers=headers,
                    media_type="application/json")


def exception_response(dialect: str, exc: CascadeflowError, request_id: str | None = None) -> Response:
    if isinstance(exc, ProxyUpstreamError):
        return upstream_error_response(dialect, exc, request_id)
    retry_after = getattr(exc, "retry_after", None)
    headers = {"retry-after": str(max(1, round(retry_after)))} if retry_after is not None else {}
    if exc.kind in _FINAL or exc.final:
        headers["x-should-retry"] = "false"  # the SDKs (and Claude Code) honour it: retrying cannot help
    elif exc.kind is ErrorKind.REQUEST_TIMEOUT:
        headers["connection"] = "close"  # what is left of the body must not be read as the next request
    return error_response(dialect, exc.kind, exc.message, headers or None, request_id=request_id)


def upstream_error_response(dialect: str, exc: ProxyUpstreamError, request_id: str | None = None) -> Response:
    """Relay the upstream's error: same status, same body when it is a JSON error of this dialect.

    A body that is not such JSON (an HTML page from a load balancer, say) is replaced
    by a proper error in the caller's dialect carrying the same status.
    """
    headers = {k: v for k, v in exc.headers.items() if k in _RELAYED_HEADERS or k.startswith("x-ratelimit") or k.startswith("anthropic-ratelimit")}
    body = _json_object(exc.payload)
    if body is not None and _is_dialect_error(dialect, body):
        return Response(exc.payload, exc.upstream_status, headers=headers, media_type="application/json")
    detail = _message(body) or (exc.payload[:200].decode("utf-8", "replace").strip() or "no body")
    kind = ErrorKind.from_status(exc.upstream_status)
    wire = anthropic_wire if dialect == "anthropic" else openai_wire
    message = f"upstream {exc.route or ''} answered {exc.upstream_status}: {detail}".replace("  ", " ")
    return Response(wire.error_body(kind, message, request_id), exc.upstream_status, headers=headers,
                    media_type="application/json")


def _json_object(payload: bytes) -> dict | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _is_dialect_error(dialect: str, body: dict) -> bool:
    error = body.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return False
    return (body.get("type") == "error") == (dialect == "anthropic")


def _message(body: dict | None) -> str | None:
    if not body:
        return None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    message = body.get("message") or body.get("detail")
    return message if isinstance(message, str) else None
