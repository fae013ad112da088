"""``GET /v1/models``: the models the gateway can serve, in the caller's shape.

The list is the union of the routes' allowlists (plain names), the virtual cascade models,
and, for open routes (no allowlist) and routes whose allowlist has globs, the upstream's own
list (only what the globs admit), fetched with the credentials the caller's requests would
use there (the route's key, the caller's own, or its virtual key's) and cached for a minute per
route and credential: one tenant's upstream list is never shown to another. An upstream that
cannot list its models is skipped, and asked again by the next caller (a failure is not cached).
Claude Code's model picker shows only ids starting with ``claude``/``anthropic``: a cascade model
meant for it is named so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import CascadeflowError, ErrorKind, RequestError
from ..proxy import ProxyRequest
from ..proxy.types import ROUTE_AUTH, UpstreamAuth
from .errors import caller_dialect, error_response, exception_response, request_id_of

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["ModelCatalog", "list_models", "get_model"]

log = logging.getLogger("cascadeflow.gateway")
_TTL_SECONDS = 60.0
#: upstream listings kept (one per route and credential), least recently used dropped first
_LISTINGS_KEPT = 256
_EPOCH = "1970-01-01T00:00:00Z"
#: fields of Anthropic's ModelInfo beyond the id, name and date (kept from an upstream's listing)
_MODEL_FACTS = ("max_input_tokens", "max_tokens", "capabilities", "lifecycle", "line", "deprecated_at", "retires_at")


class ModelCatalog:
    """Collects model entries (``id``, ``route``, ``display_name``, ``created``) from all routes."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        #: (route, digest of the credentials used) → (when listed, the upstream's entries)
        self._listings: OrderedDict[tuple[str, str], tuple[float, list[dict]]] = OrderedDict()

    async def entries(self, headers: dict[str, str], auth: UpstreamAuth = ROUTE_AUTH) -> list[dict]:
        """The models a caller sending ``headers`` (credentials as ``auth`` decided) can be served."""
        routes = self._gateway.service.router.routes
        seen: dict[str, dict] = {}
        for route in routes:
            for model in sorted(route.models or ()):
                if not _is_glob(model):
                    seen.setdefault(model, {"id": model, "route": route.name})
        # open routes list what their upstream lists; a route allowed globs (``claude-*``) lists the
        # upstream's models those globs admit, so Claude Code's model picker finds its claude- ids
        listed = [route for route in routes if route.models is None or any(_is_glob(m) for m in route.models)]
        fetched = await asyncio.gather(*(self._listing(route, headers, auth) for route in listed))
        for route, entries in zip(listed, fetched):
            for entry in entries:
                if route.allows(entry["id"]):
                    seen.setdefault(entry["id"], entry)
        for name, verifier in self._gateway.virtual_models.items():
            answering = seen.get(verifier, {})  # a virtual model can do what its verifier can
            seen.setdefault(name, {"id": name, "route": "cascade", "display_name": f"{name} (cascade)",
                                   "capabilities": answering.get("capabilities"), "answered_by": verifier})
        registry = self._gateway.registry
        for entry in seen.values():
            if entry.get("max_tokens") is None or entry.get("max_input_tokens") is None:
                info = registry.info(entry.get("answered_by") or entry["id"])
                if info is not None:
                    entry.setdefault("max_tokens", None)
                    entry.setdefault("max_input_tokens", None)
                    entry["max_tokens"] = entry["max_tokens"] or info.max_output_tokens
                    entry["max_input_tokens"] = entry["max_input_tokens"] or info.context_window
        return list(seen.values())

    async def _listing(self, route, headers: dict[str, str], auth: UpstreamAuth) -> list[dict]:  # type: ignore[no-untyped-def]
        """The route's upstream list as these credentials see it: from the cache, else fetched (and kept
        if the upstream answered)."""
        request = ProxyRequest("GET", "/v1/models", _listing_headers(route.provider, headers), auth=auth)
        key = (route.name, _credentials_digest(route, request))
        kept = self._listings.get(key)
        if kept is not None and time.monotonic() - kept[0] < _TTL_SECONDS:
            self._listings.move_to_end(key)
            return [dict(entry) for entry in kept[1]]
        entries = await self._fetch(route, request)
        if entries is None:
            return []
        self._listings[key] = (time.monotonic(), entries)
        self._listings.move_to_end(key)
        while len(self._listings) > _LISTINGS_KEPT:
            self._listings.popitem(last=False)
        return [dict(entry) for entry in entries]

    async def _fetch(self, route, request: ProxyRequest) -> list[dict] | None:  # type: ignore[no-untyped-def]
        """The upstream's entries; None when it could not list them (nothing is kept then)."""
        try:
            result = await self._gateway.service.handler.send(route, "", request)
        except CascadeflowError as exc:
            log.info("route %r did not list its models: %s", route.name, exc.message)
            return None
        if result.status >= 400:
            return None
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
                        # what Anthropic's listing says of the model, passed on as it is
                        **{k: item[k] for k in _MODEL_FACTS if item.get(k) is not None},
                    }
                )
        return entries


def _credentials_digest(route, request: ProxyRequest) -> str:  # type: ignore[no-untyped-def]
    """Who is asking, as far as the upstream can tell: the credentials this request would carry there
    (a digest: the catalogue keeps no secret)."""
    auth = request.auth
    own = auth.key_for(route)
    parts = [str(auth.forward_caller), own.get_secret_value() if own is not None else "",
             *(f"{k}={request.headers[k]}" for k in sorted(request.headers) if k != "anthropic-version")]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def _is_glob(model: str) -> bool:
    return any(c in model for c in "*?[")


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
    shaped = {
        "type": "model",
        "id": entry["id"],
        "display_name": entry.get("display_name") or entry["id"],
        "created_at": created_at,
        "lifecycle": entry.get("lifecycle") or "active",
        "max_input_tokens": entry.get("max_input_tokens"),  # the registry's figures where no upstream gave any
        "max_tokens": entry.get("max_tokens"),
        "capabilities": entry.get("capabilities"),  # only as an Anthropic upstream lists them: never guessed
    }
    shaped.update((k, entry[k]) for k in ("line", "deprecated_at", "retires_at") if entry.get(k) is not None)
    return shaped


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
    identity = await gateway.auth.identify(headers)
    entries = await gateway.models.entries(headers, identity.upstream)
    return [e for e in entries if identity.key is None or identity.key.allows(e["id"])]


async def list_models(request: Request) -> Response:
    try:
        entries = await _visible_entries(request)
    except RequestError as exc:
        return exception_response(caller_dialect(request.url.path, request.headers), exc, request_id_of(request))
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
        return exception_response(dialect, exc, request_id_of(request))
    for entry in entries:
        if entry["id"] == model_id:
            shaped = _anthropic_entry(entry) if dialect == "anthropic" else _openai_entry(entry)
            return Response(orjson.dumps(shaped), media_type="application/json")
    return error_response(dialect, ErrorKind.NOT_FOUND, f"model {model_id!r} not found", request_id=request_id_of(request))
