"""The response cache as the gateway uses it: who opts in, the look-up, and storing an answer.

A request gets a :class:`CacheTicket` only when the cache applies to it: its key's
``cache`` setting when the key has one, else its rule's, else ``cache.default``. The
ticket says whether the cache may be read and written (``cache-control: no-cache``:
not read, still written; ``no-store``: neither), and travels with the request to the
place its answer is complete, where :meth:`ResponseCache.remember` stores it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from .answer import CachedAnswer, cacheable
from .key import request_digest, tenant_of
from .stores import MemoryStore, RedisStore

if TYPE_CHECKING:
    from ..config import CacheConfig, CascadeRule
    from ..store import LedgerEntry
    from ..store.keys import KeyRecord
    from .semantic import SemanticIndex, SemanticProbe

__all__ = ["ResponseCache", "CacheTicket"]

log = logging.getLogger("cascadeflow.cache")


@dataclass(slots=True)
class CacheTicket:
    """The cache's part in one request."""

    #: hit | miss | bypass (the ``x-cascadeflow-cache`` header and the ledger's ``cache``)
    status: str
    key: str | None = None
    read: bool = False
    write: bool = False
    #: tool calls may be stored (the request's tools may be cached)
    tools: bool = False
    #: the semantic look-up of a single-shot prompt (None: exact matches only)
    semantic: SemanticProbe | None = None
    #: how a hit matched: ``exact``, or ``semantic:0.981`` (the cosine similarity)
    match: str | None = None


class ResponseCache:
    """Exact-match answers (memory or Redis), and optionally the semantic layer over them."""

    def __init__(self, config: CacheConfig, redis_url: str | None = None,
                 semantic: SemanticIndex | None = None) -> None:
        self.config = config
        use_redis = config.store == "redis" or (config.store == "auto" and redis_url is not None)
        if use_redis:
            assert redis_url is not None
            self.store: MemoryStore | RedisStore = RedisStore(redis_url, ttl_seconds=config.ttl_seconds,
                                                              max_entry_bytes=config.max_entry_bytes)
        else:
            self.store = MemoryStore(ttl_seconds=config.ttl_seconds, max_entries=config.max_entries,
                                     max_bytes=config.max_bytes, max_entry_bytes=config.max_entry_bytes)
        self.semantic = semantic

    def ticket(self, key: KeyRecord | None, rule: CascadeRule | None, endpoint: str, dialect: str,
               headers: dict[str, str], body: dict) -> CacheTicket | None:
        """The cache's part in this request; None when the cache does not apply to it (no work at all)."""
        if key is not None and key.cache is not None:
            wanted = key.cache
        elif rule is not None and (rule.cache is not None or rule.semantic_cache):
            wanted = rule.cache is not False
        else:
            wanted = self.config.default
        if not wanted:
            return None
        control = headers.get("cache-control", "").lower()
        if "no-store" in control:
            return CacheTicket("bypass")
        tools = rule.cache_tools if rule is not None and rule.cache_tools is not None else self.config.tools
        if body.get("tools") and not tools:
            return CacheTicket("bypass")
        scope = self.config.scope
        if scope == "shared":
            tenant = "*"
        elif scope == "team" and key is not None and key.team:
            tenant = "t:" + key.team
        else:
            tenant = tenant_of(key.key_id if key is not None else None, headers)
        digest = request_digest(endpoint, tenant, headers, body)
        if digest is None:
            return CacheTicket("bypass")
        read = "no-cache" not in control
        probe = None
        if read and rule is not None and rule.semantic_cache and self.semantic is not None:
            probe = self.semantic.probe(endpoint, tenant, dialect, headers, body, rule.semantic_threshold)
        return CacheTicket("miss" if read else "bypass", digest, read, True, tools, probe)

    async def lookup(self, ticket: CacheTicket, dialect: str, stream: bool) -> CachedAnswer | None:
        """The stored answer for this request, if any (a semantic match when no exact one)."""
        found = await self._get(ticket.key, dialect, stream)  # type: ignore[arg-type]
        match = "exact"
        if found is None and ticket.semantic is not None:
            for key, score in self.semantic.nearest(ticket.semantic):  # type: ignore[union-attr]
                found = await self._get(key, dialect, stream)
                if found is not None:
                    match = f"semantic:{score:.3f}"
                    break
        if found is not None:
            ticket.status, ticket.match = "hit", match
        return found

    async def _get(self, key: str, dialect: str, stream: bool) -> CachedAnswer | None:
        raw = await self.store.get(key)
        answer = CachedAnswer.decode(raw) if raw is not None else None
        if answer is None or (stream and dialect == "responses" and answer.stream is None):
            return None  # a Responses stream is replayed from its own events: this entry was stored as JSON
        return answer

    async def remember(self, ticket: CacheTicket, dialect: str, body: bytes | dict, stream: bytes | None,
                       entry: LedgerEntry) -> bool:
        """Store a complete answer if it may be (see :func:`.answer.cacheable`); never raises."""
        if not ticket.write or ticket.key is None or entry.status != 200 or entry.cancelled:
            return False
        try:
            data = orjson.loads(body) if isinstance(body, bytes) else body
            if not cacheable(dialect, data, ticket.tools):
                return False
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            answer = CachedAnswer(raw, stream, entry.served_model, entry.baseline_cost, time.time())
            stored = await self.store.set(ticket.key, answer.encode())
            if stored and ticket.semantic is not None:
                self.semantic.add(ticket.semantic, ticket.key)  # type: ignore[union-attr]
            return stored
        except Exception:  # storing is a favour: the answer has been given, whatever happens here
            log.exception("response cache: could not store an answer")
            return False

    async def aclose(self) -> None:
        await self.store.aclose()
