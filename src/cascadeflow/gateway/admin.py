"""The admin API for virtual keys, guarded by the master key (``cascadeflow keys …`` calls it).

::

    POST   /admin/keys          create: {name, user_id, team, models, limits, expires_in_days, provider_keys, cache}
                                → the key's secret, shown this once, and its record
    GET    /admin/keys          list (config-file keys too; never a secret or a hash)
    GET    /admin/keys/{id}     one key, with its spend today and this month
    DELETE /admin/keys/{id}     revoke (every gateway process refuses it within auth.refresh_seconds)
    POST   /admin/keys/reseal   seal every stored provider key again under the current secret key

A key's ``provider_keys`` are write-only: no answer shows them again, only that one is set.

These endpoints are dispatched like the API's (no middleware), so each answers its own errors: a
body beyond the limit is a 413, one that does not arrive a 408, and anything unexpected (the
database refusing a write) a JSON 500 whose log line names the failure, never the request's values.
"""

from __future__ import annotations

import calendar
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
)
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ..config import Limits
from ..errors import CascadeflowError, ConfigError, ErrorKind
from .admin_guard import admin_refusal
from .errors import error_response, exception_response, request_id_of
from .proxying import read_body

if TYPE_CHECKING:
    from starlette.requests import Request

    from .app import Gateway

__all__ = ["create_key", "list_keys", "show_key", "revoke_key", "reseal_keys"]

log = logging.getLogger("cascadeflow.gateway")

#: an admin body is a few hundred bytes; this bounds what is read (below server.max_body_bytes)
_MAX_ADMIN_BODY = 1 << 20

_ProviderKey = Annotated[SecretStr, StringConstraints(min_length=1, max_length=4096)]


def _printable(value: str) -> str:
    """Names end up in the ledger, logs and PostgreSQL (which stores no NUL): no control characters."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


_Name = Annotated[str, StringConstraints(max_length=128), AfterValidator(_printable)]
_Model = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_printable)]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: _Name | None = None
    user_id: _Name | None = None
    team: _Name | None = None
    models: list[_Model] | None = Field(default=None, max_length=1000)
    limits: Limits | None = None
    expires_in_days: float | None = Field(default=None, gt=0, le=36500)
    #: the key's own provider keys, by route name or provider kind (stored sealed, never shown again)
    provider_keys: dict[str, _ProviderKey] | None = None
    #: the response cache for this key's requests (None: as the rule says; docs/cache.md)
    cache: bool | None = None


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _not_found(key_id: str) -> Response:
    return error_response("openai", ErrorKind.NOT_FOUND, f"no key {key_id!r}")


def _answers_its_errors(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Every error of ``endpoint`` as a JSON answer (the API's shape); never a plain-text 500."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except CascadeflowError as exc:
            return exception_response("openai", exc, request_id_of(request))
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001 - the database refused, or a bug: say so, keep serving
            cause = getattr(exc, "orig", None) or exc  # a driver's own message carries no SQL parameters
            first = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
            log.error("%s %s failed: %s%s", request.method, request.url.path, type(cause).__name__,
                      f": {first}" if first else "")
            return error_response("openai", ErrorKind.INTERNAL, "the admin request failed; see the gateway log",
                                  request_id=request_id_of(request))

    return guarded


@_answers_its_errors
async def create_key(request: Request) -> Response:
    if (refusal := admin_refusal(request)) is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    server = gateway.config.server
    body = await read_body(request, min(server.max_body_bytes, _MAX_ADMIN_BODY), server.request_read_timeout)
    try:
        spec = NewKey.model_validate_json(body or b"{}")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False))
        return error_response("openai", ErrorKind.INVALID_REQUEST, problems)
    expires_at = time.time() + spec.expires_in_days * 86400 if spec.expires_in_days else None
    if spec.provider_keys and (unknown := sorted(set(spec.provider_keys) - (known := gateway.config.provider_key_names()))):
        return error_response("openai", ErrorKind.INVALID_REQUEST,
                              f"provider_keys: {unknown[0]!r} is neither a route nor a provider kind "
                              f"(routes and kinds: {', '.join(sorted(known))})")
    try:
        secret, record = await gateway.keys.create(
            name=spec.name, user_id=spec.user_id, team=spec.team, models=spec.models, limits=spec.limits,
            expires_at=expires_at, cache=spec.cache,
            provider_keys={name: key.get_secret_value() for name, key in (spec.provider_keys or {}).items()},
        )
    except ConfigError as exc:  # no secret key to seal provider keys with
        return error_response("openai", ErrorKind.INVALID_REQUEST, exc.message)
    created = {"key": secret, **record.public()}
    if gateway.config.auth.mode not in ("api_key", "hybrid"):
        created["warning"] = (f"auth.mode is {gateway.config.auth.mode!r}: this gateway does not check virtual keys; "
                              "set auth.mode to api_key or hybrid")
    return _json(created, 201)


@_answers_its_errors
async def list_keys(request: Request) -> Response:
    if (refusal := admin_refusal(request)) is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    return _json({"keys": [record.public() for record in gateway.keys.all()]})


@_answers_its_errors
async def show_key(request: Request) -> Response:
    if (refusal := admin_refusal(request)) is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    key_id = request.path_params["key_id"]
    record = gateway.keys.get(key_id)
    if record is None:
        return _not_found(key_id)
    t = time.gmtime()
    day_start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    month_start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    spend = {
        "today_usd": await gateway.ledger.spent_since(f"key:{key_id}", day_start),
        "this_month_usd": await gateway.ledger.spent_since(f"key:{key_id}", month_start),
    }
    return _json({**record.public(), "spend": spend})


@_answers_its_errors
async def revoke_key(request: Request) -> Response:
    if (refusal := admin_refusal(request)) is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    key_id = request.path_params["key_id"]
    if gateway.keys.from_config(key_id):
        return error_response("openai", ErrorKind.INVALID_REQUEST,
                              f"key {key_id} is written in the config file; remove it there and restart")
    record = await gateway.keys.revoke(key_id)
    if record is None:
        return _not_found(key_id)
    return _json(record.public())


@_answers_its_errors
async def reseal_keys(request: Request) -> Response:
    """The second step of a secret key rotation (see store/sealing.py)."""
    if (refusal := admin_refusal(request)) is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    try:
        resealed, unreadable = await gateway.keys.reseal()
    except ConfigError as exc:
        return error_response("openai", ErrorKind.INVALID_REQUEST, exc.message)
    return _json({"resealed": resealed, "unreadable": unreadable})
