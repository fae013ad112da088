"""Who may use the operator endpoints (the admin API, the dashboard): the master key's holder.

The master key (``auth.master_key``) is accepted as ``Authorization: Bearer …``,
``x-api-key`` or ``api-key``, compared in constant time. Without a master key the admin API is
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

__all__ = ["admin_refusal", "presented_credentials", "credential_headers", "CREDENTIAL_HEADERS"]

#: every header a caller may send a key in (the gateway's own or a provider's)
CREDENTIAL_HEADERS = ("x-api-key", "authorization", "api-key")


def credential_headers(headers) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(header, secret) for each key a caller presented, in :data:`CREDENTIAL_HEADERS` order:
    ``x-api-key``, the bearer token (Claude Code may send both), Azure-style ``api-key``."""
    found = []
    for name in CREDENTIAL_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        if name == "authorization":
            scheme, _, value = value.partition(" ")
            if scheme.lower() != "bearer":
                continue
        if value.strip():
            found.append((name, value.strip()))
    return found


def presented_credentials(headers) -> list[str]:  # type: ignore[no-untyped-def]
    """The secrets a caller presented (see :func:`credential_headers`)."""
    return [secret for _, secret in credential_headers(headers)]


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
