"""Who is calling: the auth modes of ``auth.mode``.

- ``none``: anyone; the route's key is used (or the caller's, on routes without one).
- ``api_key``: a virtual key issued by cascadeflow is required; the caller's credential
  headers are dropped and the route's provider key is used, so provider keys never
  leave the server and virtual keys never reach a provider.
- ``pass_through``: the caller's own provider key is required and forwarded.
- ``hybrid``: a virtual key, or else the caller's own provider key (forwarded). A
  credential that looks like a cascadeflow key (``cfk_…``) is never forwarded.

Keys come from ``x-api-key`` or ``Authorization: Bearer`` (Claude Code may send both).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ErrorKind, RequestError
from ..proxy.types import FORWARD_CREDENTIALS
from .admin_guard import presented_credentials

if TYPE_CHECKING:
    from ..config import AuthConfig
    from ..store.keys import KeyRecord, KeyStore

__all__ = ["Identity", "Authenticator", "ANONYMOUS"]

_CREDENTIAL_HEADERS = ("x-api-key", "authorization", "api-key")


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller as far as limits and the ledger are concerned."""

    key: KeyRecord | None = None

    @property
    def key_id(self) -> str | None:
        return self.key.key_id if self.key is not None else None

    @property
    def user_id(self) -> str | None:
        return self.key.user_id if self.key is not None else None

    @property
    def team(self) -> str | None:
        return self.key.team if self.key is not None else None


ANONYMOUS = Identity()


class Authenticator:
    def __init__(self, config: AuthConfig, keys: KeyStore) -> None:
        self.mode = config.mode
        self.keys = keys

    def identify(self, headers: dict[str, str]) -> Identity:
        """The caller's identity; raises a 401 :class:`RequestError` when the mode refuses it.

        ``headers`` become what goes upstream: in ``api_key`` mode, and for virtual keys in
        ``hybrid``, the credential headers are removed; when the caller's own key must be
        forwarded, the :data:`FORWARD_CREDENTIALS` marker is set (a caller's own is dropped).
        """
        headers.pop(FORWARD_CREDENTIALS, None)
        if self.mode == "none":
            return ANONYMOUS
        presented = presented_credentials(headers)
        if self.mode == "pass_through":
            if not presented:
                raise _unauthenticated("this gateway forwards your provider API key; send it as x-api-key or Authorization: Bearer")
            headers[FORWARD_CREDENTIALS] = "1"
            return ANONYMOUS
        record = None
        for secret in presented:
            record = self.keys.authenticate(secret)
            if record is not None:
                break
        if record is None:
            ours = any(s.startswith("cfk_") for s in presented)
            if self.mode == "hybrid" and presented and not ours:
                headers[FORWARD_CREDENTIALS] = "1"
                return ANONYMOUS
            raise _unauthenticated("invalid API key" if presented else
                                   "an API key is required (x-api-key or Authorization: Bearer)")
        problem = record.usable(time.time())
        if problem is not None:
            raise _unauthenticated(f"API key {record.key_id} is {problem}")
        for name in _CREDENTIAL_HEADERS:
            headers.pop(name, None)
        return Identity(key=record)

    @staticmethod
    def check_model(identity: Identity, model: str) -> None:
        """A 403 when the caller's key may not use ``model``."""
        if identity.key is not None and not identity.key.allows(model):
            raise RequestError(f"API key {identity.key.key_id} may not use model {model!r}", kind=ErrorKind.PERMISSION)


def _unauthenticated(message: str) -> RequestError:
    return RequestError(message, kind=ErrorKind.AUTHENTICATION)
