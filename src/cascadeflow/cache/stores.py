"""Where cached answers live: this process's memory (bounded, LRU, TTL) or Redis (shared, TTL).

Both take and give opaque bytes under a digest. A store that fails (Redis away) answers
a miss and stores nothing: the cache never fails a request.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["MemoryStore", "RedisStore"]

log = logging.getLogger("cascadeflow.cache")

#: Redis key prefix (the digest follows)
PREFIX = "cascadeflow:cache:"


class MemoryStore:
    """Entries in a dict kept in least-recently-used order, bounded in count and in bytes."""

    def __init__(self, *, ttl_seconds: float, max_entries: int, max_bytes: int, max_entry_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds, self.max_entries, self.max_bytes = ttl_seconds, max_entries, max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> bool:
        if len(value) > self.max_entry_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + self.ttl_seconds, value)
        self.bytes += len(value)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return True

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= len(value)

    async def aclose(self) -> None:
        self._entries.clear()
        self.bytes = 0


class RedisStore:
    """Entries in Redis with their TTL set by Redis itself: every gateway process sees each other's."""

    def __init__(self, url: str, *, ttl_seconds: float, max_entry_bytes: int, timeout: float = 0.5) -> None:
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.max_entry_bytes = max_entry_bytes

    async def get(self, key: str) -> bytes | None:
        try:
            found = await self.client.get(PREFIX + key)
            return found if isinstance(found, bytes) else None  # bytes, as the client does not decode
        except Exception as exc:  # noqa: BLE001 - Redis away: a miss, never a failed request
            log.warning("response cache: Redis read failed (%s); answering without the cache", type(exc).__name__)
            return None

    async def set(self, key: str, value: bytes) -> bool:
        if len(value) > self.max_entry_bytes:
            return False
        try:
            await self.client.set(PREFIX + key, value, px=self.ttl_ms)
        except Exception as exc:  # noqa: BLE001
            log.warning("response cache: Redis write failed (%s); the answer is not cached", type(exc).__name__)
            return False
        return True

    async def aclose(self) -> None:
        await self.client.aclose()
