"""Which ``anthropic-beta`` values each draft model refused, learned from the upstream's own 400s.

Anthropic's documentation lists no per-model betas for the current models (the 1M context
window is native on every 5.x model, so ``context-1m-2025-08-07`` asks nothing of them; see
:mod:`cascadeflow.model_features`), so no table is guessed. Instead, when a draft call is
refused with a 400 whose message names a beta the draft carried, the pair (draft model, beta)
is remembered and later requests carrying that beta are not drafted on that model
(``skipped:capability:beta``): the refused request itself escalates at once (a draft error),
the next ones cost no draft call. A beta is never stripped from a draft: it can change what
the model does.

The two shapes of the refusal that are known (the parser reads both):

- ``Unsupported beta header: <name>`` — the error Anthropic's Beta headers page documents for
  "an invalid or unavailable beta header" (platform.claude.com/docs/en/api/beta-headers);
- ``Unexpected value(s) `<a>`, `<b>` for the `anthropic-beta` header. Please consult our
  documentation at docs.claude.com or try again without the header.`` — what the live API and
  gateways in front of it answer (anthropics/claude-code#46105, QuantumNous/new-api#2975).

The memory is bounded (least recently refused pairs go first) and forgets a pair after ``ttl``
seconds, so a beta the model gains later is found again at the cost of one refused draft per
pair and ``ttl``. With ``redis_url`` it is shared (:class:`RedisBetaRefusals`): what one gateway
process learns, the others honour. The request path reads only the process's own copy; that copy
is refreshed from Redis (one read of a bounded set) at most every ``refresh`` seconds, and only by
a request that carries an ``anthropic-beta`` header. A Redis fault never fails a request: the
process then goes on with what it learned itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import orjson

from ..errors import ProxyError, ProxyUpstreamError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["BETA_HEADER", "BetaRefusals", "RedisBetaRefusals", "beta_refusals", "refused_betas", "requested_betas"]

log = logging.getLogger("cascadeflow.cascade")

BETA_HEADER = "anthropic-beta"
_UNEXPECTED = re.compile(r"Unexpected values?(?:\(s\))? (.+?) for the `?anthropic-beta`? header", re.IGNORECASE)
_UNSUPPORTED = re.compile(r"Unsupported beta header: *([^\s\"']+(?: *, *[^\s\"']+)*)", re.IGNORECASE)
_QUOTED = re.compile(r"`([^`]+)`")
#: an error message longer than this is not read (a refusal is one sentence)
_MAX_MESSAGE = 4096
#: a longer beta name is not remembered (real ones are ~30 characters): entries stay small
_MAX_BETA = 128


def requested_betas(headers: Mapping[str, str]) -> list[str]:
    """The beta names a request's (lower-cased) headers ask for, in order."""
    value = headers.get(BETA_HEADER)
    if not value:
        return []
    return [name for name in (part.strip() for part in value.split(",")) if name]


def _message(exc: ProxyUpstreamError) -> str:
    try:
        body = orjson.loads(exc.payload) if exc.payload else None
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else exc.payload.decode("utf-8", "replace")


def refused_betas(exc: ProxyError, sent: list[str]) -> list[str]:
    """The betas among ``sent`` that an upstream's 400 ``exc`` says it refuses (empty when it says none)."""
    if not sent or not isinstance(exc, ProxyUpstreamError) or exc.upstream_status != 400:
        return []
    message = _message(exc)[:_MAX_MESSAGE]
    named: set[str] = set()
    if (found := _UNEXPECTED.search(message)) is not None:
        named.update(_QUOTED.findall(found.group(1)) or [found.group(1).strip()])
    if (found := _UNSUPPORTED.search(message)) is not None:
        named.update(part.strip().strip("`.") for part in found.group(1).split(","))
    return [beta for beta in sent if beta in named]  # only what the draft carried: the message is the upstream's


class BetaRefusals:
    """(model, beta) pairs a model refused, bounded and forgotten after ``ttl`` seconds (one process's memory)."""

    def __init__(self, max_entries: int = 1024, ttl: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._clock = clock
        self._until: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    async def ready(self, headers: Mapping[str, str]) -> None:
        """Before :meth:`refused` is asked about a request: nothing to fetch for one process's memory."""

    async def learn(self, model: str, headers: Mapping[str, str], exc: ProxyError) -> list[str]:
        """Remember the betas ``model`` refused with ``exc`` (a draft sent with ``headers``); returns them."""
        return self._learn(model, headers, exc)[0]

    def _learn(self, model: str, headers: Mapping[str, str], exc: ProxyError) -> tuple[list[str], float]:
        betas = [beta for beta in refused_betas(exc, requested_betas(headers)) if len(beta) <= _MAX_BETA]
        until = self._clock() + self._ttl
        for beta in betas:
            self._keep((model, beta), until)
        return betas, until

    def _keep(self, pair: tuple[str, str], until: float) -> None:
        self._until[pair] = until
        self._until.move_to_end(pair)
        while len(self._until) > self._max:
            self._until.popitem(last=False)

    def refused(self, model: str, headers: Mapping[str, str]) -> str | None:
        """The first beta of a request (its ``headers``) that ``model`` is known to refuse, else None."""
        if not self._until or BETA_HEADER not in headers:
            return None
        now = None
        for beta in requested_betas(headers):
            until = self._until.get((model, beta))
            if until is None:
                continue
            now = self._clock() if now is None else now
            if until > now:
                return beta
            del self._until[(model, beta)]  # forgotten: the next draft finds out again
        return None

    async def aclose(self) -> None:
        self._until.clear()


#: one sorted set: member ``model\nbeta``, score the time (epoch seconds) the refusal is forgotten
_KEY = "cf:beta-refusals"


class RedisBetaRefusals(BetaRefusals):
    """The refusals every gateway process learned, through one bounded, TTL'd sorted set in Redis.

    :meth:`refused` still reads this process's copy (no round trip); :meth:`ready` refreshes the
    copy when it is older than ``refresh`` seconds and the request carries a beta (concurrent
    requests share one read). A refusal learned here is written at once (a refused draft's
    path, off the common one). Redis down or slow (``timeout``): logged, and this process's own
    refusals still count.
    """

    def __init__(self, url: str, max_entries: int = 1024, ttl: float = 3600.0, *, refresh: float = 2.0,
                 timeout: float = 0.25, clock: Callable[[], float] = time.time) -> None:
        import redis.asyncio as redis

        super().__init__(max_entries, ttl, clock)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._refresh = refresh
        self._fresh_until = float("-inf")  # never read yet: the first request with a beta reads
        self._reading: asyncio.Future[None] | None = None

    async def ready(self, headers: Mapping[str, str]) -> None:
        if BETA_HEADER not in headers or self._clock() < self._fresh_until:
            return
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        reading = self._reading
        await asyncio.shield(reading)  # a cancelled request leaves the read to the others

    async def _read(self) -> None:
        now = self._clock()
        found: list[tuple[bytes, float]] = []
        try:
            found = await self.client.zrangebyscore(_KEY, now, "+inf", withscores=True)  # type: ignore[assignment]
        except Exception as exc:  # noqa: BLE001 - Redis down: this process's own refusals still count
            log.warning("could not read learned beta refusals from Redis: %s", exc)
        finally:
            self._fresh_until = now + self._refresh  # also after a fault: Redis is tried again later, not per request
            self._reading = None
        for member, until in found[-self._max:]:
            model, _, beta = member.decode("utf-8", "replace").partition("\n")
            if beta and float(until) > self._until.get((model, beta), 0.0):
                self._keep((model, beta), float(until))

    async def learn(self, model: str, headers: Mapping[str, str], exc: ProxyError) -> list[str]:
        betas, until = self._learn(model, headers, exc)
        if not betas:
            return betas
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zadd(_KEY, {f"{model}\n{beta}": until for beta in betas})
                pipe.zremrangebyscore(_KEY, "-inf", self._clock())  # forgotten ones
                pipe.zremrangebyrank(_KEY, 0, -self._max - 1)  # bounded: the soonest forgotten go first
                pipe.expire(_KEY, int(self._ttl) + 1)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis down must not fail the request
            log.warning("could not share a learned beta refusal through Redis: %s", exc)
        return betas

    async def aclose(self) -> None:
        await super().aclose()
        await self.client.aclose()


def beta_refusals(redis_url: str | None) -> BetaRefusals:
    """Shared through Redis when ``redis_url`` is set, else one process's memory."""
    return RedisBetaRefusals(redis_url) if redis_url else BetaRefusals()
