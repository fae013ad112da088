"""Virtual keys: issued by cascadeflow, kept only as SHA-256 hashes, checked in memory.

A key reads ``cfk_<key id>_<secret>``. The key id is public (lists, the ledger, logs);
the secret is shown once, at creation, and never stored. Keys written in the config
file may be any string; their id is ``cfg_`` and the first 12 hex digits of their hash.

Every process holds the whole table in memory (a team has thousands of keys, not
millions) and re-reads the rows changed since its last look every
``refresh_seconds``, so a key revoked through one process is refused by all of them
within that time. Requests never wait on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import insert, select, update

from .schema import keys_table

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..config import Limits, VirtualKey

__all__ = ["KeyRecord", "KeyStore", "hash_key", "key_id_of"]

log = logging.getLogger("cascadeflow.keys")

_PREFIX = "cfk_"
#: rows changed this close to the last refresh are read again (clocks of several hosts differ a little)
_CLOCK_SLACK = 5.0


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str:
    """The public id a presented key claims (issued keys carry it; config keys derive it)."""
    if secret.startswith(_PREFIX):
        key_id, sep, _ = secret[len(_PREFIX):].partition("_")
        if sep and key_id:
            return key_id
    return "cfg_" + hash_key(secret)[:12]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    key_hash: str
    name: str | None = None
    user_id: str | None = None
    team: str | None = None
    models: tuple[str, ...] | None = None
    limits: Limits | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    #: the response cache for this key's requests: on, off, or None (as the rule says)
    cache: bool | None = None

    def usable(self, now: float) -> str | None:
        """None if the key may be used now, else why not."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return None

    def allows(self, model: str) -> bool:
        return self.models is None or any(model == m or fnmatchcase(model, m) for m in self.models)

    def public(self) -> dict:
        """What the admin API and the CLI show: everything but the hash."""
        return {
            "key_id": self.key_id, "name": self.name, "user_id": self.user_id, "team": self.team,
            "models": list(self.models) if self.models is not None else None,
            "limits": self.limits.model_dump(exclude_none=True) if self.limits is not None else None,
            "created_at": self.created_at, "expires_at": self.expires_at, "revoked_at": self.revoked_at,
            "status": self.usable(time.time()) or "active", "cache": self.cache,
        }


def _record(row) -> KeyRecord:  # type: ignore[no-untyped-def]
    from ..config import Limits

    limits = orjson.loads(row.limits) if row.limits else None
    return KeyRecord(
        key_id=row.key_id, key_hash=row.key_hash, name=row.name, user_id=row.user_id, team=row.team,
        models=tuple(orjson.loads(row.models)) if row.models else None,
        limits=Limits(**limits) if limits else None,
        created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at, cache=row.cache,
    )


class KeyStore:
    """The keys from the config file plus the ``api_keys`` table, looked up without I/O."""

    def __init__(self, config_keys: list[VirtualKey] = (), *, refresh_seconds: float = 0.5) -> None:  # type: ignore[assignment]
        self.refresh_seconds = refresh_seconds
        self.engine: AsyncEngine | None = None
        self._keys: dict[str, KeyRecord] = {}
        for entry in config_keys:
            secret = entry.key.get_secret_value()
            self._keys[key_id_of(secret)] = KeyRecord(
                key_id=key_id_of(secret), key_hash=hash_key(secret), name=entry.name, user_id=entry.user_id,
                team=entry.team, models=tuple(entry.models) if entry.models is not None else None,
                limits=entry.limits, expires_at=entry.expires_at, cache=entry.cache,
            )
        self._config_ids = frozenset(self._keys)
        self._seen_until = 0.0
        self._refresher: asyncio.Task | None = None

    async def start(self, engine: AsyncEngine, *, watch: bool = True) -> KeyStore:
        """Load the table; with ``watch``, keep following changes made by any process."""
        self.engine = engine
        await self.refresh()
        if watch:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="cascadeflow-keys")
        return self

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    def authenticate(self, secret: str) -> KeyRecord | None:
        """The record of a presented key, compared in constant time; None if it is not a key of ours."""
        record = self._keys.get(key_id_of(secret))
        if record is None or not hmac.compare_digest(hash_key(secret), record.key_hash):
            return None
        return record

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def from_config(self, key_id: str) -> bool:
        return key_id in self._config_ids

    def all(self) -> list[KeyRecord]:
        return sorted(self._keys.values(), key=lambda r: (r.created_at, r.key_id))

    async def create(
        self, *, name: str | None = None, user_id: str | None = None, team: str | None = None,
        models: list[str] | None = None, limits: Limits | None = None, expires_at: float | None = None,
        cache: bool | None = None,
    ) -> tuple[str, KeyRecord]:
        """Issue a key: returns the secret (shown once, never stored) and its record."""
        assert self.engine is not None, "start() the key store first"
        key_id = secrets.token_hex(6)
        secret = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
        now = time.time()
        limit_fields = limits.model_dump(exclude_none=True) if limits is not None else {}
        row = {
            "key_id": key_id, "key_hash": hash_key(secret), "name": name, "user_id": user_id, "team": team,
            "models": orjson.dumps(models).decode() if models is not None else None,
            "limits": orjson.dumps(limit_fields).decode() if limit_fields else None,
            "created_at": now, "expires_at": expires_at, "revoked_at": None, "updated_at": now, "cache": cache,
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert(keys_table), [row])
        record = KeyRecord(key_id=key_id, key_hash=row["key_hash"], name=name, user_id=user_id, team=team,
                           models=tuple(models) if models is not None else None,
                           limits=limits if limit_fields else None, created_at=now, expires_at=expires_at,
                           cache=cache)
        self._keys[key_id] = record
        log.info("key %s created (user %s, team %s)", key_id, user_id, team)
        return secret, record

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Revoke a stored key (None if there is no such key; config keys are removed from the file instead)."""
        assert self.engine is not None, "start() the key store first"
        now = time.time()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(keys_table).where(keys_table.c.key_id == key_id, keys_table.c.revoked_at.is_(None))
                .values(revoked_at=now, updated_at=now)
            )
        if not result.rowcount:  # no such key, or revoked already
            return self._keys.get(key_id) if key_id not in self._config_ids else None
        await self.refresh()
        log.info("key %s revoked", key_id)
        return self._keys.get(key_id)

    async def refresh(self) -> None:
        """Read the rows changed since the last look (created or revoked by any process)."""
        assert self.engine is not None
        started = time.time()
        query = select(keys_table).where(keys_table.c.updated_at >= self._seen_until - _CLOCK_SLACK)
        async with self.engine.connect() as conn:
            for row in await conn.execute(query):
                if row.key_id not in self._config_ids:
                    self._keys[row.key_id] = _record(row)
        self._seen_until = started

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:  # the database is away: keep the keys we know, try again
                log.warning("could not refresh the key table: %s", type(exc).__name__)
