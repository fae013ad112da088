"""Provider keys at rest: sealed with Fernet (AES-128-CBC and HMAC-SHA256) under ``auth.secret_key``.

The secret key (``CASCADEFLOW_SECRET_KEY``) is a Fernet key: 32 random bytes, url-safe
base64 (``cascadeflow keys new-secret`` prints one). It never touches the database; without
it the stored credentials are unreadable, so every gateway process sharing a database
needs the same one.

Rotation, with no request refused at any step:

1. start every process with the new key as ``CASCADEFLOW_SECRET_KEY`` and the old one as
   ``CASCADEFLOW_SECRET_KEY_PREVIOUS`` (both open what is stored; only the new one seals);
2. ``cascadeflow keys reseal``: every stored credential is sealed again under the new key;
3. drop ``CASCADEFLOW_SECRET_KEY_PREVIOUS`` and restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

if TYPE_CHECKING:
    from ..config import AuthConfig

__all__ = ["Sealer", "SealError", "new_secret_key"]


class SealError(Exception):
    """A sealed value that none of the configured secret keys opens (missing, wrong, or tampered with)."""


def new_secret_key() -> str:
    """A fresh secret key for ``CASCADEFLOW_SECRET_KEY``."""
    return Fernet.generate_key().decode()


class Sealer:
    """Seals with the current secret key; opens with it or any previous one."""

    def __init__(self, current: str, previous: tuple[str, ...] = ()) -> None:
        self._keys = MultiFernet([Fernet(current.encode()), *(Fernet(p.encode()) for p in previous)])

    @classmethod
    def from_config(cls, auth: AuthConfig) -> Sealer | None:
        """The sealer of ``auth.secret_key`` (and ``secret_key_previous``); None when no secret key is set."""
        if auth.secret_key is None:
            return None
        previous = auth.secret_key_previous.get_secret_value() if auth.secret_key_previous is not None else ""
        return cls(auth.secret_key.get_secret_value(), tuple(p.strip() for p in previous.split(",") if p.strip()))

    def seal(self, secret: str) -> str:
        return self._keys.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._keys.decrypt(sealed.encode()).decode()
        except (InvalidToken, ValueError):
            raise SealError("no configured secret key opens it") from None

    def reseal(self, sealed: str) -> str:
        """``sealed`` sealed again under the current key (opened with whichever key sealed it)."""
        try:
            return self._keys.rotate(sealed.encode()).decode()
        except (InvalidToken, ValueError):
            raise SealError("no configured secret key opens it") from None
