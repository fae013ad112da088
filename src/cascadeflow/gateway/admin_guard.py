"""Who may use the operator endpoints (the admin API, the dashboard): the master key's holder.

The master key (``auth.master_key``) is accepted as ``Authorization: Bearer …`` or
``x-api-key``, compared in constant time. Without a master key the admin API is
closed; the read-only pages (dashboard) are open only while auth is off.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from starlette.responses import Response

from ..errors import ErrorKind
from .errors import error_response

if TYPE_CHECKING:
    from starlette.requests import Request

    from .app import Gateway

__all__ = ["admin_refusal", "presented_credentials"]


def presented_credentials(headers) -> list[str]:  # type: ignore[no-untyped-def]
    """The secrets a caller presented: ``x-api-key`` and the bearer token (Claude Code may send both)."""
    found = []
    key = headers.get("x-api-key")
    if key:
        found.append(key.strip())
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found.append(token.strip())
    return found


def admin_refusal(request: Request, *, read_only: bool = False) -> Response | None:
    """None when the caller holds the master key (or may read without it); else the error to send."""
    gateway: Gateway = request.app.state.gateway
    auth = gateway.config.auth
    master = auth.master_key.get_secret_value() if auth.master_key is not None else None
    if master is None:
        if read_only and auth.mode == "none":
            return None
        return error_response("openai", ErrorKind.PERMISSION,
                              "the admin endpoints need auth.master_key (or CASCADEFLOW_MASTER_KEY) to be set")
    expected = master.encode()
    if any(hmac.compare_digest(given.encode(), expected) for given in presented_credentials(request.headers)):
        return None
    return error_response("openai", ErrorKind.AUTHENTICATION,
                          "this endpoint needs the master key (Authorization: Bearer <master key>)",
                          headers={"www-authenticate": "Bearer"})
