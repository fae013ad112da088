"""``GET /v1/models``: the models the gateway can serve, in the caller's shape.

The list is the union of the routes' allowlists, the virtual cascade models, and,
for open routes (no allowlist), the upstream's own list, fetched with the route's credentials and
cached for a minute. An upstream that cannot list its models is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import CascadeflowError, ErrorKind, RequestError
from ..proxy import ProxyRequest
from .errors import caller_dialect, error_response, exception_response

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["ModelCatalog", "list_models", "get_model"]

log = logging.getLogger("cascadeflow.gateway")
_TTL_SECONDS = 60.0
_EPOCH = "1970-01-01T00:00:00Z"


class ModelCatalog:
    """Collects model entries (``id``, ``route``, ``display_name``, ``created``) from all routes."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._cached: tuple[float, list[dict]] | None = None

    async def entries(self, headers: dict[str, str]) -> list[dict]:
        if self._cached and time.monotonic() - self._cached[0] < _TTL_SECONDS:
            return self._cached[1]
        routes = self._gateway.service.router.routes
        seen: dict[str, dict] = {}
        for route in routes:
            for model in sorted(route.models or ()):
                if not any(c in model for c in "*?["):
                    seen.setdefault(model, {"id": model, "route": route.name})
        fetched = await asyncio.gather(
            *(self._fetch(route, headers) for route in routes if route.models is None)
        )
        for entries in fetched:
            for entry in entries:
                seen.setdefault(entry["id"], entry)
        for name in self._gateway.virtual_models:
            seen.setdefault(name, {"id": name, "route": "cascade", "display_name": f"{name} (cascade)"})
        result = list(seen.values())
        self._cached = (time.monotonic(), result)
        return result

    async def _fetch(self, route, headers: dict[str, str]) -> list[dict]:
        request = ProxyRequest("GET", "/v1/models", _listing_headers(route.provider, headers))
        try:
            result = await self._gateway.service.handler.send(route, "", request)
        except CascadeflowError as exc:
            log.info("route %r did not list its models: %s", route.name, exc.message)
            return []
        data = result.data.get("data") if isinstance(result.data, dict) else None
        entries = []
        for item in data if isinstance(data, list) else []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                entries.append(
                    {
                        "id": item["id"],
                        "route": route.name,
                        "display_name": item.get("display_name"),
                        "created": item.get("created"),
                        "created_at": item.get("created_at"),
                    }
                )
        return entries


def _listing_headers(provider: str, headers: dict[str, str]) -> dict[str, str]:
    keep = ("x-api-key", "authorization", "anthropic-version") if provider == "anthropic" else ("authorization",)
    return {k: v for k, v in headers.items() if k in keep}


def _anthropic_entry(entry: dict) -> dict:
    created_at = entry.get("created_at")
    if not isinstance(created_at, str):
        created = entry.get("created")
        created_at = (
            datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(created, int) else _EPOCH
        )
    return {
        "type": "model",
        "id": entry["id"],
        "display_name": entry.get("display_name") or entry["id"],
        "created_at": created_at,
    }


def _openai_entry(entry: dict) -> dict:
    created = entry.get("created")
    if not isinstance(created, int):
        created_at = entry.get("created_at")
        try:
            created = int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp())  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            created = 0
    return {"id": entry["id"], "object": "model", "created": created, "owned_by": entry["route"]}


async def _visible_entries(request: Request) -> list[dict]:
    """The models this caller may use (auth applies here as on the API endpoints)."""
    gateway: Gateway = request.app.state.gateway
    headers = dict(request.headers)
    identity = gateway.auth.identify(headers)
    entries = await gateway.models.entries(headers)
    return [e for e in entries if identity.key is None or identity.key.allows(e["id"])]


async def list_models(request: Request) -> Response:
    try:
        entries = await _visible_entries(request)
    except RequestError as exc:
        return exception_response(caller_dialect(request.url.path, request.headers), exc)
    if caller_dialect(request.url.path, request.headers) == "anthropic":
        data = [_anthropic_entry(e) for e in entries]
        body = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    else:
        body = {"object": "list", "data": [_openai_entry(e) for e in entries]}
    return Response(orjson.dumps(body), media_type="application/json")


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    dialect = caller_dialect(request.url.path, request.headers)
    try:
        entries = await _visible_entries(request)
    except RequestError as exc:
        return exception_response(dialect, exc)
    for entry in entries:
        if entry["id"] == model_id:
            shaped = _anthropic_entry(entry) if dialect == "anthropic" else _openai_entry(entry)
            return Response(orjson.dumps(shaped), media_type="application/json")
    return error_response(dialect, ErrorKind.NOT_FOUND, f"model {model_id!r} not found")
