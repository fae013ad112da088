"""Which model wrote each thinking block the gateway handed to a client.

A thinking block is signed by the model that wrote it, and a model reads only its own
blocks (and a few others', see :mod:`cascadeflow.cascade.thinking`). When a cascade's
draft is accepted, the client receives the draft's blocks and sends them back next
turn; before each upstream call the engine must know whose they are. Only blocks a
draft wrote are recorded: a block the gateway never recorded came from the model the
client asked for (the verifier), which is the default.

Keyed by a digest of the signature (no conversation id needed: signatures are unique).
In memory for one process (bounded, least recently used first out), in Redis when
``redis_url`` is set so that every gateway process sees every draft's blocks.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Protocol

__all__ = ["ThinkingOrigins", "MemoryThinkingOrigins", "RedisThinkingOrigins", "thinking_origins"]

log = logging.getLogger("cascadeflow.sessions")
_PREFIX = "cf:thinking:"


def _key(signature: str) -> str:
    return hashlib.blake2b(signature.encode(), digest_size=16).hexdigest()


class ThinkingOrigins(Protocol):
    async def record(self, signatures: list[str], model: str) -> None: ...

    async def lookup(self, signatures: list[str]) -> dict[str, str]:
        """The known writer of each signature (unknown ones are left out)."""
        ...

    async def aclose(self) -> None: ...


class MemoryThinkingOrigins:
    """One process's record: at most ``max_entries``, each kept ``ttl_seconds`` after its last use."""

    def __init__(self, *, max_entries: int = 100_000, ttl_seconds: float = 7 * 86400) -> None:
        self.max_entries, self.ttl_seconds = max_entries, ttl_seconds
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def record(self, signatures: list[str], model: str) -> None:
        expires = time.monotonic() + self.ttl_seconds
        for signature in signatures:
            key = _key(signature)
            self._entries[key] = (model, expires)
            self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def lookup(self, signatures: list[str]) -> dict[str, str]:
        now, found = time.monotonic(), {}
        for signature in signatures:
            key = _key(signature)
            entry = self._entries.get(key)
            if entry is None:
                continue
            if entry[1] < now:
                del self._entries[key]
                continue
            self._entries[key] = (entry[0], now + self.ttl_seconds)
            self._entries.move_to_end(key)
            found[signature] = entry[0]
        return found

    async def aclose(self) -> None:
        self._entries.clear()


class RedisThinkingOrigins:
    """Shared by every gateway process: one key per signature with a TTL, read with one MGET.

    Redis errors are logged and the lookup answers nothing (the blocks count as the
    verifier's): a conversation then loses a draft's reasoning, never its answer.
    """

    def __init__(self, url: str, *, ttl_seconds: float = 7 * 86400, timeout: float = 0.5) -> None:
        import redis.asyncio as redis

        self.ttl_seconds = int(ttl_seconds)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    async def record(self, signatures: list[str], model: str) -> None:
        if not signatures:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for signature in signatures:
                    pipe.set(_PREFIX + _key(signature), model, ex=self.ttl_seconds)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis down must not fail the request
            log.warning("could not record thinking origins in Redis: %s", exc)

    async def lookup(self, signatures: list[str]) -> dict[str, str]:
        if not signatures:
            return {}
        try:
            values = await self.client.mget([_PREFIX + _key(s) for s in signatures])
        except Exception as exc:  # noqa: BLE001
            log.warning("could not read thinking origins from Redis: %s", exc)
            return {}
        return {s: v.decode() for s, v in zip(signatures, values) if isinstance(v, bytes)}  # the client's are bytes

    async def aclose(self) -> None:
        await self.client.aclose()


def thinking_origins(redis_url: str | None) -> ThinkingOrigins:
    return RedisThinkingOrigins(redis_url) if redis_url else MemoryThinkingOrigins()
