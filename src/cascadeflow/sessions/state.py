"""What the gateway remembers of one conversation, and where it keeps it.

Per conversation: a cache shadow per model really called, the counterfactual shadow of
the requested model (as if it had served every turn), what the conversation's drafts
led to (in all, and per draft stage), its tokens-per-character ratio and output length,
and the last drafted turn's tool calls (the next request's tool results say how that
turn went).

In memory for one process (an LRU over conversations, each entry bounded), or in Redis
when ``redis_url`` is set, so a conversation whose requests reach different processes
or hosts is one conversation. A conversation id is hashed before use: a client that
sends a new or malformed id on every request costs one bounded entry each, never an
error.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from .cache import CacheShadow

__all__ = ["MemorySessions", "RedisSessions", "SessionState", "Sessions", "session_store"]

log = logging.getLogger("cascadeflow.sessions")
_PREFIX = "cf:session:"
#: the shadow of the requested model as if it had served every turn
BASELINE = "@baseline"
_MAX_SHADOWS = 6


@dataclass(slots=True)
class SessionState:
    shadows: dict[str, CacheShadow] = field(default_factory=dict)
    #: drafted turns that were judged, and those that failed (escalated, or a failure signal next turn);
    #: both fade with every turn, so old failures weigh less than new ones
    drafts: float = 0.0
    failures: float = 0.0
    #: tokens per character of prompt JSON, from the upstreams' usage (a moving average)
    per_char: float = 0.0
    #: output tokens per answer (a moving average)
    output: float = 0.0
    last_at: float = 0.0
    #: the last drafted and accepted turn: its model and tool call ids
    pending_model: str = ""
    pending_calls: list[str] = field(default_factory=list)
    #: the requested model the conversation is priced against
    requested: str = ""
    #: turns so far, and the previous turn's prompt: characters up to its last breakpoint
    turns: int = 0
    last_chars: int = 0
    #: the request id of the last drafted and accepted turn (a later signal is recorded against it)
    pending_request: str = ""
    #: per draft stage's model: [its drafts, its failures], fading like ``drafts`` and ``failures`` (which count
    #: a turn's chain as one draft, failed when every stage failed); a multi-stage rule prices each stage on its own
    stages: dict[str, list[float]] = field(default_factory=dict)

    def shadow(self, model: str) -> CacheShadow:
        shadow = self.shadows.get(model)
        if shadow is None:
            if len(self.shadows) >= _MAX_SHADOWS:  # a bounded set of models per conversation
                self.shadows.pop(next(k for k in self.shadows if k != BASELINE))
            shadow = self.shadows[model] = CacheShadow()
        return shadow

    def learn(self, prompt_tokens: int, chars: int, output_tokens: int) -> None:
        if prompt_tokens > 0 and chars > 0:
            ratio = prompt_tokens / chars
            self.per_char = ratio if self.per_char <= 0 else 0.5 * self.per_char + 0.5 * ratio
        if output_tokens > 0:
            self.output = output_tokens if self.output <= 0 else 0.7 * self.output + 0.3 * output_tokens

    def to_json(self) -> bytes:
        return orjson.dumps({
            "s": {m: {h.hex(): list(v) for h, v in s.entries.items()} for m, s in self.shadows.items()},
            "d": self.drafts, "f": self.failures, "c": self.per_char, "o": self.output, "t": self.last_at,
            "pm": self.pending_model, "pc": self.pending_calls, "r": self.requested, "n": self.turns,
            "lc": self.last_chars, "pr": self.pending_request, "st": self.stages,
        })

    @classmethod
    def from_json(cls, raw: bytes) -> SessionState:
        data = orjson.loads(raw)
        shadows = {m: CacheShadow({bytes.fromhex(h): (int(v[0]), float(v[1])) for h, v in s.items()})
                   for m, s in data.get("s", {}).items()}
        return cls(shadows, float(data.get("d", 0)), float(data.get("f", 0)), float(data.get("c", 0.0)),
                   float(data.get("o", 0.0)), float(data.get("t", 0.0)), str(data.get("pm", "")),
                   [str(c) for c in data.get("pc", [])][:64], str(data.get("r", "")), int(data.get("n", 0)),
                   int(data.get("lc", 0)), str(data.get("pr", ""))[:64], _stage_record(data.get("st")))


def _stage_record(raw: object) -> dict[str, list[float]]:
    """The per-stage record as stored (absent in a state an older gateway wrote: then empty, and each stage is
    priced on the rule's record until the conversation has its own); at most :data:`_MAX_SHADOWS` stages."""
    if not isinstance(raw, dict):
        return {}
    record = {}
    for model, counts in list(raw.items())[:_MAX_SHADOWS]:
        if isinstance(counts, list) and len(counts) == 2:
            record[str(model)] = [float(counts[0]), float(counts[1])]
    return record


def _key(conversation: str) -> str:
    return hashlib.blake2b(conversation.encode("utf-8", "replace"), digest_size=16).hexdigest()


class Sessions(Protocol):
    async def get(self, conversation: str) -> SessionState: ...

    async def put(self, conversation: str, state: SessionState) -> None: ...

    async def aclose(self) -> None: ...


class MemorySessions:
    """One process's conversations: at most ``max_sessions``, each forgotten ``ttl_seconds`` after its last request.

    The ``live`` most recently used are kept as objects; the older ones as their JSON (:meth:`SessionState.to_json`),
    decoded again when their conversation comes back. Bytes are one object the garbage collector never scans, where a
    conversation's state is about eight containers it does: 10,000 remembered as objects made every full collection
    take 55-77 ms with the event loop stopped (``benchmarks/gc_pauses.py --kept``; docs/operations.md).
    """

    def __init__(self, *, max_sessions: int = 10_000, ttl_seconds: float = 7200.0, live: int = 1_024) -> None:
        self.max_sessions, self.ttl_seconds, self.live = max_sessions, ttl_seconds, live
        #: key → (state, expiry): the most recently used, newest last
        self._live: OrderedDict[str, tuple[SessionState, float]] = OrderedDict()
        #: key → (the state's JSON, expiry): the others, newest last (each newer than none of the live ones)
        self._stored: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def get(self, conversation: str) -> SessionState:
        key = _key(conversation)
        entry = self._live.get(key)
        if entry is not None:
            return entry[0] if entry[1] >= time.monotonic() else SessionState()
        stored = self._stored.get(key)
        if stored is None or stored[1] < time.monotonic():
            return SessionState()
        del self._stored[key]  # live again, so that every request of the conversation gets the same state
        state = SessionState.from_json(stored[0])
        self._live[key] = (state, stored[1])
        self._spill()
        return state

    async def put(self, conversation: str, state: SessionState) -> None:
        self.keep(conversation, state)

    def keep(self, conversation: str, state: SessionState) -> None:
        """:meth:`put` without a coroutine: nothing here waits, so the engine calls it inline."""
        key = _key(conversation)
        self._stored.pop(key, None)
        self._live[key] = (state, time.monotonic() + self.ttl_seconds)
        self._live.move_to_end(key)
        self._spill()
        while len(self._live) + len(self._stored) > self.max_sessions:
            (self._stored or self._live).popitem(last=False)

    def _spill(self) -> None:
        """Store the least recently used live states past ``live`` as JSON."""
        while len(self._live) > self.live:
            key, (state, expiry) = self._live.popitem(last=False)
            self._stored[key] = (state.to_json(), expiry)

    def __len__(self) -> int:
        return len(self._live) + len(self._stored)

    async def aclose(self) -> None:
        self._live.clear()
        self._stored.clear()


class RedisSessions:
    """Every gateway process's conversations: one key each, with a TTL.

    A Redis error costs the conversation its memory for that request (a fresh state), never the request.
    """

    def __init__(self, url: str, *, ttl_seconds: float = 7200.0, timeout: float = 0.5, memo: int = 1024) -> None:
        import redis.asyncio as redis

        self.ttl_seconds = int(ttl_seconds)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        #: key → (the bytes this process last wrote, the state they encode), for at most ``memo`` conversations:
        #: when Redis still holds those bytes (no other process wrote since), the state is not decoded again
        self._written: OrderedDict[str, tuple[bytes, SessionState]] = OrderedDict()
        self._memo = memo

    async def get(self, conversation: str) -> SessionState:
        key = _key(conversation)
        try:
            raw = await self.client.get(_PREFIX + key)
            if not isinstance(raw, bytes) or not raw:
                return SessionState()
            written = self._written.pop(key, None)  # handed to one request only: that request may change it
            return written[1] if written is not None and written[0] == raw else SessionState.from_json(raw)
        except Exception as exc:  # noqa: BLE001 - Redis down or a damaged entry: start afresh
            log.warning("could not read session state from Redis: %s", exc)
            return SessionState()

    async def put(self, conversation: str, state: SessionState) -> None:
        key, raw = _key(conversation), state.to_json()
        try:
            await self.client.set(_PREFIX + key, raw, ex=self.ttl_seconds)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not write session state to Redis: %s", exc)
            self._written.pop(key, None)
            return
        self._written[key] = (raw, state)
        self._written.move_to_end(key)
        while len(self._written) > self._memo:
            self._written.popitem(last=False)

    async def aclose(self) -> None:
        await self.client.aclose()


def session_store(redis_url: str | None) -> Sessions:
    return RedisSessions(redis_url) if redis_url else MemorySessions()
