"""Who is calling: the auth modes of ``auth.mode``.

- ``none``: anyone; the route's key is used (or the caller's, on routes without one).
- ``api_key``: a virtual key issued by cascadeflow is required; the caller's credential
  headers are dropped and the route's provider key is used (or the key's own provider key
  for that route, when it carries one), so provider keys never leave the server and
  virtual keys never reach a provider.
- ``pass_through``: the caller's own provider key is required and forwarded.
- ``hybrid``: a virtual key, or else the caller's own provider key (forwarded).

Keys come from ``x-api-key``, ``Authorization: Bearer`` or ``api-key`` (Claude Code may send
two). A valid virtual key in any of them wins and every credential header is consumed; a
credential shaped like a cascadeflow key (``cfk_…``) never goes upstream, in any mode.
A ``cfk_`` key this process does not know yet (issued a moment ago through another
process) makes :meth:`Authenticator.identify` wait for one re-read of the key table
before it refuses (:meth:`~cascadeflow.store.keys.KeyStore.catch_up`, shared and rate-bounded).
The decision reaches the proxy as :class:`~cascadeflow.proxy.types.UpstreamAuth`, a typed
field of the request, never as a header.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ErrorKind, RequestError
from ..proxy.types import CALLER_AUTH, ROUTE_AUTH, UpstreamAuth
from .admin_guard import CREDENTIAL_HEADERS, credential_headers

if TYPE_CHECKING:
    from ..config import AuthConfig
    from ..store.keys import KeyRecord, KeyStore

__all__ = ["Identity", "Authenticator", "ANONYMOUS"]

_OURS = "cfk_"


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller as far as limits and the ledger are concerned, and whose key goes upstream."""

    key: KeyRecord | None = None
    upstream: UpstreamAuth = ROUTE_AUTH

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
#: an anonymous caller whose own provider key is forwarded
_FORWARDING = Identity(upstream=CALLER_AUTH)


class Authenticator:
    def __init__(self, config: AuthConfig, keys: KeyStore) -> None:
        self.mode = config.mode
        self.keys = keys

    async def identify(self, headers: dict[str, str]) -> Identity:
        """The caller's identity; raises a 401 :class:`RequestError` when the mode refuses it.

        Only a presented ``cfk_`` key of unknown id costs a wait (one shared re-read of the key table).
        """
        try:
            return self._identify(headers)
        except RequestError as exc:
            if exc.kind is not ErrorKind.AUTHENTICATION or self.mode not in ("api_key", "hybrid") or not any(
                    self.keys.unknown(secret) for _, secret in credential_headers(headers)):
                raise
        await self.keys.catch_up()
        return self._identify(headers)

    def _identify(self, headers: dict[str, str]) -> Identity:
        """:meth:`identify` with the keys this process knows now.

        ``headers`` become what goes upstream: a virtual key's credential headers are all
        removed; when the caller's own key is forwarded, headers holding a ``cfk_…`` key are
        removed first, so only the provider key goes on.
        """
        presented = credential_headers(headers)
        if self.mode == "none":
            _drop_ours(headers, presented)
            return ANONYMOUS
        if self.mode == "pass_through":
            if not _drop_ours(headers, presented):
                raise _unauthenticated("this gateway forwards your provider API key; send it as x-api-key or "
                                       "Authorization: Bearer")
            return _FORWARDING
        record = None
        for _, secret in presented:
            record = self.keys.authenticate(secret)
            if record is not None:
                break
        if record is None:
            ours = any(secret.startswith(_OURS) for _, secret in presented)
            if self.mode == "hybrid" and presented and not ours:
                return _FORWARDING
            raise _unauthenticated("invalid API key" if presented else
                                   "an API key is required (x-api-key or Authorization: Bearer)")
        problem = record.usable(time.time())
        if problem is not None:
            raise _unauthenticated(f"API key {record.key_id} is {problem}")
        for name in CREDENTIAL_HEADERS:
            headers.pop(name, None)
        if record.unreadable:  # never fall back to the route's key: the key was meant to use its own
            raise RequestError(
                f"API key {record.key_id} carries provider keys this gateway cannot decrypt "
                f"({', '.join(record.unreadable)}): the gateway's secret key (CASCADEFLOW_SECRET_KEY) is missing or "
                "not the one they were stored with; tell its operator", kind=ErrorKind.UNAVAILABLE, final=True)
        if record.provider_keys:
            return Identity(key=record, upstream=UpstreamAuth(provider_keys=record.provider_keys))
        return Identity(key=record)

    @staticmethod
    def check_model(identity: Identity, model: str) -> None:
        """A 403 when the caller's key may not use ``model``."""
        if identity.key is not None and not identity.key.allows(model):
            raise RequestError(f"API key {identity.key.key_id} may not use model {model!r}", kind=ErrorKind.PERMISSION)


def _unauthenticated(message: str) -> RequestError:
    return RequestError(message, kind=ErrorKind.AUTHENTICATION)


def _drop_ours(headers: dict[str, str], presented: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Remove the headers that hold a cascadeflow key (they must never reach a provider); the rest."""
    kept = []
    for name, secret in presented:
        if secret.startswith(_OURS):
            headers.pop(name, None)
        else:
            kept.append((name, secret))
    return kept
