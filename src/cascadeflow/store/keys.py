"""Virtual keys: issued by cascadeflow, kept only as SHA-256 hashes, checked in memory.

A key reads ``cfk_<key id>_<secret>``. The key id is public (lists, the ledger, logs);
the secret is shown once, at creation, and never stored. Keys written in the config
file may be any string; their id is ``cfg_`` and the first 12 hex digits of their hash.

Every process holds the whole table in memory (a team has thousands of keys, not
millions) and re-reads the rows changed since its last look every
``refresh_seconds``, so a key revoked through one process is refused by all of them
within that time. Requests never wait on the database, but for one case: a
``cfk_`` key whose id is unknown may have just been issued by another process, so it
triggers one immediate re-read (:meth:`KeyStore.catch_up`) before it is refused.
Concurrent callers share that read, and such reads happen at most once per
``_CATCH_UP_INTERVAL``, so a flood of bad keys cannot hammer the database.

A key may carry its own provider keys (by route name or provider kind), used for its
requests instead of the route's. Stored keys keep them sealed under ``auth.secret_key``
(:mod:`.sealing`) and open them once, when the row is read, so a request pays nothing;
they are never logged and never shown again (the admin API says only that one is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import orjson
from pydantic import SecretStr
from sqlalchemy import insert, select, update

from ..errors import ConfigError
from .schema import keys_table
from .sealing import SealError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..config import Limits, VirtualKey
    from .sealing import Sealer

__all__ = ["KeyRecord", "KeyStore", "hash_key", "key_id_of"]

log = logging.getLogger("cascadeflow.keys")

_PREFIX = "cfk_"
#: rows changed this close to the last refresh are read again (clocks of several hosts differ a little)
_CLOCK_SLACK = 5.0
#: the least time between two re-reads triggered by unknown keys
_CATCH_UP_INTERVAL = 0.05


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
    #: the key's own provider keys, opened (by route name or provider kind)
    provider_keys: Mapping[str, SecretStr] = field(default_factory=dict)
    #: provider keys stored for it that no configured secret key opens
    unreadable: tuple[str, ...] = ()
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
            # only that one is set, never the key itself
            "provider_keys": {**{name: "set" for name in self.provider_keys},
                              **{name: "unreadable" for name in self.unreadable}},
        }


def _record(row, sealer: Sealer | None) -> KeyRecord:  # type: ignore[no-untyped-def]
    from ..config import Limits

    limits = orjson.loads(row.limits) if row.limits else None
    opened: dict[str, SecretStr] = {}
    unreadable: list[str] = []
    for name, sealed in (orjson.loads(row.provider_keys) if row.provider_keys else {}).items():
        try:
            if sealer is None:
                raise SealError("no secret key")
            opened[name] = SecretStr(sealer.open(sealed))
        except SealError:
            unreadable.append(name)
    return KeyRecord(
        key_id=row.key_id, key_hash=row.key_hash, name=row.name, user_id=row.user_id, team=row.team,
        models=tuple(orjson.loads(row.models)) if row.models else None,
        limits=Limits(**limits) if limits else None,
        created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at,
        provider_keys=opened, cache=row.cache, unreadable=tuple(sorted(unreadable)),
    )


def no_secret_key() -> ConfigError:
    return ConfigError("provider keys are stored encrypted and this gateway has no secret key: set "
                       "CASCADEFLOW_SECRET_KEY (auth.secret_key) on every gateway process and restart; "
                       "`cascadeflow keys new-secret` prints one")


class KeyStore:
    """The keys from the config file plus the ``api_keys`` table, looked up without I/O."""

    def __init__(self, config_keys: list[VirtualKey] = (), *, refresh_seconds: float = 0.5,  # type: ignore[assignment]
                 sealer: Sealer | None = None) -> None:
        self.refresh_seconds = refresh_seconds
        #: seals and opens stored provider keys (None: no ``auth.secret_key``)
        self.sealer = sealer
        self.engine: AsyncEngine | None = None
        self._keys: dict[str, KeyRecord] = {}
        for entry in config_keys:
            secret = entry.key.get_secret_value()
            self._keys[key_id_of(secret)] = KeyRecord(
                key_id=key_id_of(secret), key_hash=hash_key(secret), name=entry.name, user_id=entry.user_id,
                team=entry.team, models=tuple(entry.models) if entry.models is not None else None,
                limits=entry.limits, expires_at=entry.expires_at, provider_keys=dict(entry.provider_keys),
                cache=entry.cache,
            )
        self._config_ids = frozenset(self._keys)
        self._seen_until = 0.0
        self._refresher: asyncio.Task | None = None
        #: the on-demand re-read that callers arriving now will share (None: none pending)
        self._next_read: asyncio.Task | None = None
        self._last_read = float("-inf")

    async def start(self, engine: AsyncEngine, *, watch: bool = True) -> KeyStore:
        """Load the table; with ``watch``, keep following changes made by any process."""
        self.engine = engine
        await self.refresh()
        if watch:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="cascadeflow-keys")
        return self

    async def aclose(self) -> None:
        for task in (self._refresher, self._next_read):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def unknown(self, secret: str) -> bool:
        """Whether ``secret`` is shaped like an issued key whose id this process has not seen (yet)."""
        return secret.startswith(_PREFIX) and key_id_of(secret) not in self._keys

    async def catch_up(self) -> None:
        """Re-read the changed rows now: an unknown key may have just been issued by another process.

        Callers that arrive before a pending read starts share it; one that arrives after it
        has started waits for the next (that read may have begun before its key was written).
        Reads this way are at least ``_CATCH_UP_INTERVAL`` apart. A database error is logged
        and the keys already known stay in force.
        """
        if self.engine is None:
            return
        pending = self._next_read
        if pending is None:
            pending = self._next_read = asyncio.get_running_loop().create_task(self._read_soon())
        try:
            await asyncio.shield(pending)  # a caller that goes away does not cancel the others' read
        except Exception as exc:  # the database is away: refuse as we would have
            log.warning("could not re-read the key table: %s", type(exc).__name__)

    async def _read_soon(self) -> None:
        wait = self._last_read + _CATCH_UP_INTERVAL - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_read = None  # from here on, newcomers wait for the next read
        self._last_read = time.monotonic()
        await self.refresh()

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
        provider_keys: Mapping[str, str] | None = None,
        cache: bool | None = None,
    ) -> tuple[str, KeyRecord]:
        """Issue a key: returns the secret (shown once, never stored) and its record.

        ``provider_keys`` (route name or provider kind → key) are sealed before they are
        stored; a :class:`ConfigError` when there is no secret key to seal them with.
        """
        assert self.engine is not None, "start() the key store first"
        sealed: dict[str, str] | None = None
        if provider_keys:
            if self.sealer is None:
                raise no_secret_key()
            sealer = self.sealer
            sealed = {name: sealer.seal(key) for name, key in provider_keys.items()}
        key_id = secrets.token_hex(6)
        secret = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
        key_hash = hash_key(secret)
        now = time.time()
        limit_fields = limits.model_dump(exclude_none=True) if limits is not None else {}
        row = {
            "key_id": key_id, "key_hash": key_hash, "name": name, "user_id": user_id, "team": team,
            "models": orjson.dumps(models).decode() if models is not None else None,
            "limits": orjson.dumps(limit_fields).decode() if limit_fields else None,
            "created_at": now, "expires_at": expires_at, "revoked_at": None, "updated_at": now, "cache": cache,
            "provider_keys": orjson.dumps(sealed).decode() if sealed else None,
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert(keys_table), [row])
        record = KeyRecord(key_id=key_id, key_hash=key_hash, name=name, user_id=user_id, team=team,
                           models=tuple(models) if models is not None else None,
                           limits=limits if limit_fields else None, created_at=now, expires_at=expires_at,
                           provider_keys={n: SecretStr(k) for n, k in (provider_keys or {}).items()},
                           cache=cache)
        self._keys[key_id] = record
        log.info("key %s created (user %s, team %s%s)", key_id, user_id, team,
                 f"; own provider keys for {', '.join(sorted(provider_keys))}" if provider_keys else "")
        return secret, record

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Revoke a stored key and delete its provider keys (None if there is no such key; config keys are
        removed from the file instead)."""
        assert self.engine is not None, "start() the key store first"
        now = time.time()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(keys_table).where(keys_table.c.key_id == key_id, keys_table.c.revoked_at.is_(None))
                .values(revoked_at=now, updated_at=now, provider_keys=None)  # its provider keys are of no more use
            )
        if not result.rowcount:  # no such key, or revoked already
            return self._keys.get(key_id) if key_id not in self._config_ids else None
        await self.refresh()
        log.info("key %s revoked", key_id)
        return self._keys.get(key_id)

    async def reseal(self) -> tuple[int, list[str]]:
        """Seal every stored provider key again under the current secret key (the rotation's second step).

        Returns how many keys were resealed and the ids of those no configured secret key opens
        (left as they are). Every process re-reads the rows within ``refresh_seconds``.
        """
        assert self.engine is not None, "start() the key store first"
        if self.sealer is None:
            raise no_secret_key()
        resealed, unreadable = 0, []
        now = time.time()
        async with self.engine.begin() as conn:
            query = select(keys_table.c.key_id, keys_table.c.provider_keys).where(keys_table.c.provider_keys.is_not(None))
            for key_id, stored in (await conn.execute(query)).all():
                try:
                    sealed = {name: self.sealer.reseal(token) for name, token in orjson.loads(stored).items()}
                except SealError:
                    unreadable.append(key_id)
                    continue
                await conn.execute(update(keys_table).where(keys_table.c.key_id == key_id)
                                   .values(provider_keys=orjson.dumps(sealed).decode(), updated_at=now))
                resealed += 1
        await self.refresh()
        log.info("provider keys of %d key(s) resealed under the current secret key; %d unreadable", resealed,
                 len(unreadable))
        return resealed, unreadable

    async def refresh(self) -> None:
        """Read the rows changed since the last look (created or revoked by any process)."""
        assert self.engine is not None
        started = time.time()
        query = select(keys_table).where(keys_table.c.updated_at >= self._seen_until - _CLOCK_SLACK)
        unreadable = []
        async with self.engine.connect() as conn:
            for row in await conn.execute(query):
                if row.key_id not in self._config_ids:
                    known = self._keys.get(row.key_id)
                    record = self._keys[row.key_id] = _record(row, self.sealer)
                    if record.unreadable and record.revoked_at is None and (known is None or not known.unreadable):
                        unreadable.append(record.key_id)  # said once per key, not at every refresh
        self._seen_until = started
        if unreadable:
            log.warning("%d key(s) carry provider keys that no configured secret key opens (%s): auth.secret_key "
                        "(CASCADEFLOW_SECRET_KEY) is missing or not the one they were stored with; their requests "
                        "are refused with 503 until it is set", len(unreadable), ", ".join(sorted(unreadable)[:10]))

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:  # the database is away: keep the keys we know, try again
                log.warning("could not refresh the key table: %s", type(exc).__name__)
