"""The admin API for virtual keys, guarded by the master key (``cascadeflow keys …`` calls it).

::

    POST   /admin/keys          create: {name, user_id, team, models, limits, expires_in_days, cache}
                                → the key's secret, shown this once, and its record
    GET    /admin/keys          list (config-file keys too; never a secret or a hash)
    GET    /admin/keys/{id}     one key, with its spend today and this month
    DELETE /admin/keys/{id}     revoke (every gateway process refuses it within auth.refresh_seconds)
"""

from __future__ import annotations

import calendar
import time
from typing import TYPE_CHECKING

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from ..config import Limits
from ..errors import ErrorKind
from .admin_guard import admin_refusal
from .errors import error_response

if TYPE_CHECKING:
    from starlette.requests import Request

    from .app import Gateway

__all__ = ["create_key", "list_keys", "show_key", "revoke_key"]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=128)
    user_id: str | None = Field(default=None, max_length=128)
    team: str | None = Field(default=None, max_length=128)
    models: list[str] | None = None
    limits: Limits | None = None
    expires_in_days: float | None = Field(default=None, gt=0)
    #: the response cache for this key's requests (None: as the rule says; docs/cache.md)
    cache: bool | None = None


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _not_found(key_id: str) -> Response:
    return error_response("openai", ErrorKind.NOT_FOUND, f"no key {key_id!r}")


async def create_key(request: Request) -> Response:
    if (refusal := admin_refusal(request)) is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    try:
        spec = NewKey.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False))
        return error_response("openai", ErrorKind.INVALID_REQUEST, problems)
    expires_at = time.time() + spec.expires_in_days * 86400 if spec.expires_in_days else None
    secret, record = await gateway.keys.create(
        name=spec.name, user_id=spec.user_id, team=spec.team, models=spec.models, limits=spec.limits,
        expires_at=expires_at, cache=spec.cache,
    )
    created = {"key": secret, **record.public()}
    if gateway.config.auth.mode not in ("api_key", "hybrid"):
        created["warning"] = (f"auth.mode is {gateway.config.auth.mode!r}: this gateway does not check virtual keys; "
                              "set auth.mode to api_key or hybrid")
    return _json(created, 201)


async def list_keys(request: Request) -> Response:
    if (refusal := admin_refusal(request)) is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    return _json({"keys": [record.public() for record in gateway.keys.all()]})


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
