"""Counters every gateway process shares, in Redis: each admission and settlement one Lua script.

The rules are those of :mod:`cascadeflow.store.counters` (the memory counters). What Redis adds
is a reply that can be lost: a call that times out on the gateway's side may still run in Redis
later (a Redis that stalled for a second runs the commands queued on its sockets when it
resumes). An admission that runs after its caller gave up would hold a concurrency lease and a
budget reservation that nobody settles, for ``lease_seconds``. So every lease whose admission
or settlement got no reply is *abandoned*: a third script, sent until Redis confirms it, removes
the lease wherever it is held and leaves a marker (for ``lease_seconds``) that makes a late
admission of that lease a no-op. It is idempotent, so it cannot release anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from .counters import (
    _BUDGETS,
    Lease,
    Refusal,
    Scope,
    SpentSince,
    _budget_key,
    _Seeding,
    period_ends,
)

__all__ = ["RedisCounters"]

log = logging.getLogger("cascadeflow.limits")

# KEYS: five per scope (rpm bucket, tpm bucket, concurrency set, day budget, month budget), then the
# lease's abandonment marker. ARGV: now, lease, expiry, tokens, cost, day_end, month_end, then five
# limits per scope (-1: none). Answers {-1} (admitted), {scope index, limit, retry after} (refused),
# {-2, scope index, budget} when a budget has no spend recorded yet (the caller seeds it from the
# ledger and asks again), or {-3} for a lease already abandoned (its caller gave up: nothing is taken).
_ADMIT = """
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return {-3} end
local now, lease, expiry = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local tokens, cost = tonumber(ARGV[4]), tonumber(ARGV[5])
local ends = {tonumber(ARGV[6]), tonumber(ARGV[7])}
local names = {'rpm', 'tpm', 'max_concurrent', 'daily_budget_usd', 'monthly_budget_usd'}
local function level(key, cap)
  local v = redis.call('HMGET', key, 'level', 'at')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * cap / 60)
end
local function purge(key)
  local expired = redis.call('ZRANGEBYSCORE', key .. ':leases', '-inf', now)
  for _, id in ipairs(expired) do
    redis.call('HINCRBYFLOAT', key, 'reserved', -tonumber(redis.call('HGET', key, 'l:' .. id) or '0'))
    redis.call('HDEL', key, 'l:' .. id)
  end
  redis.call('ZREMRANGEBYSCORE', key .. ':leases', '-inf', now)
end
local n = (#KEYS - 1) / 5
for i = 0, n - 1 do
  local k, a = i * 5, 8 + i * 5
  local rpm, tpm, conc = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if rpm >= 0 then
    local l = level(KEYS[k + 1], rpm)
    if l < 1 then return {i, names[1], tostring((1 - l) * 60 / rpm)} end
  end
  if tpm >= 0 then
    local need, l = math.min(tokens, tpm), level(KEYS[k + 2], tpm)
    if l < need then return {i, names[2], tostring((need - l) * 60 / tpm)} end
  end
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 3]) >= conc then return {i, names[3], '1'} end
  end
  for b = 1, 2 do
    local cap = tonumber(ARGV[a + 2 + b])
    if cap >= 0 then
      if redis.call('HEXISTS', KEYS[k + 3 + b], 'spent') == 0 then return {-2, i, b} end
      purge(KEYS[k + 3 + b])
      local v = redis.call('HMGET', KEYS[k + 3 + b], 'spent', 'reserved')
      if (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0) >= cap then
        return {i, names[3 + b], tostring(ends[b] - now)}
      end
    end
  end
end
for i = 0, n - 1 do
  local k, a = i * 5, 8 + i * 5
  local rpm, tpm, conc = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if rpm >= 0 then
    redis.call('HSET', KEYS[k + 1], 'level', level(KEYS[k + 1], rpm) - 1, 'at', now)
    redis.call('EXPIRE', KEYS[k + 1], 120)
  end
  if tpm >= 0 then
    local l = level(KEYS[k + 2], tpm) - tokens
    redis.call('HSET', KEYS[k + 2], 'level', l, 'at', now)
    redis.call('EXPIRE', KEYS[k + 2], math.ceil(120 + math.max(0, -l) * 60 / tpm))
  end
  if conc >= 0 then
    redis.call('ZADD', KEYS[k + 3], expiry, lease)
    redis.call('EXPIRE', KEYS[k + 3], math.ceil(expiry - now) + 60)
  end
  for b = 1, 2 do
    if tonumber(ARGV[a + 2 + b]) >= 0 then
      local key = KEYS[k + 3 + b]
      redis.call('HINCRBYFLOAT', key, 'reserved', cost)
      redis.call('HSET', key, 'l:' .. lease, cost)
      redis.call('ZADD', key .. ':leases', expiry, lease)
      local ttl = math.ceil(ends[b] - now) + 86400
      redis.call('EXPIRE', key, ttl)
      redis.call('EXPIRE', key .. ':leases', ttl)
    end
  end
end
return {-1}
"""

# KEYS as for admit, without the marker. ARGV: now, lease, tokens - estimated tokens, cost, then five
# limits per scope. A budget Redis does not hold (it lost its data) is not recreated here, with this
# request's cost alone and no expiry: the next admission seeds it from the ledger.
_SETTLE = """
local now, lease, extra, cost = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 0, #KEYS / 5 - 1 do
  local k, a = i * 5, 5 + i * 5
  local tpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if tpm >= 0 and extra ~= 0 then
    local v = redis.call('HMGET', KEYS[k + 2], 'level', 'at')
    local l = tpm
    if v[1] then l = math.min(tpm, tonumber(v[1]) + (now - tonumber(v[2])) * tpm / 60) end
    l = l - extra
    redis.call('HSET', KEYS[k + 2], 'level', l, 'at', now)
    redis.call('EXPIRE', KEYS[k + 2], math.ceil(120 + math.max(0, -l) * 60 / tpm))
  end
  if conc >= 0 then redis.call('ZREM', KEYS[k + 3], lease) end
  for b = 1, 2 do
    if tonumber(ARGV[a + 2 + b]) >= 0 then
      local key = KEYS[k + 3 + b]
      local held = redis.call('HGET', key, 'l:' .. lease)
      if held then
        redis.call('HINCRBYFLOAT', key, 'reserved', -tonumber(held))
        redis.call('HDEL', key, 'l:' .. lease)
        redis.call('ZREM', key .. ':leases', lease)
      end
      if redis.call('HEXISTS', key, 'spent') == 1 then redis.call('HINCRBYFLOAT', key, 'spent', cost) end
    end
  end
end
return 1
"""

# KEYS as for admit (the marker last). ARGV: lease, the marker's lifetime in seconds, five limits per
# scope. Releases the lease's concurrency slot and budget reservation wherever they are, and marks it.
_ABANDON = """
local lease = ARGV[1]
redis.call('SET', KEYS[#KEYS], '1', 'EX', tonumber(ARGV[2]))
for i = 0, (#KEYS - 1) / 5 - 1 do
  local k, a = i * 5, 3 + i * 5
  if tonumber(ARGV[a + 2]) >= 0 then redis.call('ZREM', KEYS[k + 3], lease) end
  for b = 1, 2 do
    if tonumber(ARGV[a + 2 + b]) >= 0 then
      local key = KEYS[k + 3 + b]
      local held = redis.call('HGET', key, 'l:' .. lease)
      if held then
        redis.call('HINCRBYFLOAT', key, 'reserved', -tonumber(held))
        redis.call('HDEL', key, 'l:' .. lease)
      end
      redis.call('ZREM', key .. ':leases', lease)
    end
  end
end
return 1
"""

# KEYS: a budget. ARGV: the ledger's spend, the key's lifetime. Seeds a budget Redis does not hold.
_SEED = """
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
"""


#: what the admission script answers for a budget it holds no spend for (the caller seeds it)
_UNSEEDED = -2
#: ... and for a lease that was abandoned before the admission ran
_ABANDONED = -3


def _limit_args(scopes: tuple[Scope, ...]) -> list[float]:
    args: list[float] = []
    for scope in scopes:
        limits = scope.limits
        for name in ("rpm", "tpm", "max_concurrent", "daily_budget_usd", "monthly_budget_usd"):
            value = getattr(limits, name)
            args.append(-1 if value is None else value)
    return args


def _keys(scopes: tuple[Scope, ...], periods: tuple[str, str]) -> list[str]:
    keys: list[str] = []
    for scope in scopes:
        keys += [f"cf:r:{scope.name}:rpm", f"cf:r:{scope.name}:tpm", f"cf:c:{scope.name}",
                 _budget_key(scope.name, "daily_budget_usd", periods),
                 _budget_key(scope.name, "monthly_budget_usd", periods)]
    return keys


class _Batcher:
    """Script calls made in the same moment go to Redis in one pipeline: one round trip, not one each.

    Under load many requests are admitted and settled in the same turn of the event loop;
    each call waits for its own result, as if it had been sent alone.
    """

    def __init__(self, client) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self._calls: list[tuple[object, list, list, asyncio.Future]] = []
        self._sending: set[asyncio.Task] = set()

    async def call(self, script, keys: list, args: list):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._calls.append((script, keys, args, future))
        if len(self._calls) == 1:  # the first of this moment sends, once the others have joined
            loop.call_soon(self._send_soon)
        return await future

    def _send_soon(self) -> None:
        calls, self._calls = self._calls, []
        task = asyncio.create_task(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list) -> None:
        try:
            if len(calls) == 1:
                script, keys, args, future = calls[0]
                results = [await script(keys=keys, args=args)]  # type: ignore[operator]
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    for script, keys, args, _ in calls:
                        await script(keys=keys, args=args, client=pipe)  # type: ignore[operator]  # queues it
                    results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # Redis is away: every caller hears it
            for *_, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        for index, (*_, future) in enumerate(calls):
            result = results[index] if index < len(results) else RuntimeError("Redis sent no reply for this call")
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


class _Abandonments:
    """Leases to abandon (their admission or settlement got no reply), sent until Redis confirms each.

    One task sends them all, in one pipeline, backing off while Redis stays away; at most
    ``limit`` wait (beyond that a lease is left to expire after ``lease_seconds``, as a dead
    process's would).
    """

    def __init__(self, batcher: _Batcher, script, limit: int = 10_000) -> None:  # type: ignore[no-untyped-def]
        self._batcher = batcher
        self._script = script
        self._limit = limit
        self.pending: dict[str, tuple[list, list]] = {}  # lease → (keys, args)
        self.dropped = 0
        self._task: asyncio.Task | None = None

    def add(self, lease: str, keys: list, args: list) -> None:
        if len(self.pending) >= self._limit and lease not in self.pending:
            self.dropped += 1
            return
        self.pending[lease] = (keys, args)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send_until_done())

    async def _send_until_done(self) -> None:
        delay = 0.1
        while self.pending:
            await asyncio.sleep(delay)
            if await self.send_once():
                delay = 0.1
            else:
                delay = min(delay * 2, 2.0)

    async def send_once(self) -> bool:
        """One attempt for every pending lease (at most 1,000); True when all of them were confirmed."""
        batch = list(self.pending.items())[:1000]
        results = await asyncio.gather(*(self._batcher.call(self._script, keys, args) for _, (keys, args) in batch),
                                       return_exceptions=True)
        failed = 0
        for (lease, _), result in zip(batch, results):
            if isinstance(result, BaseException):
                failed += 1
            else:
                self.pending.pop(lease, None)
        return failed == 0

    async def aclose(self, within: float) -> None:
        """A last attempt for what is still pending (bounded: Redis may be gone), then stop."""
        if self._task is not None:
            self._task.cancel()
        if self.pending:
            with contextlib.suppress(Exception):  # Redis is away: the leases expire after lease_seconds
                async with asyncio.timeout(within):
                    await self.send_once()
            if self.pending:
                log.warning("%d concurrency leases could not be released in Redis; they expire by themselves",
                            len(self.pending))


class RedisCounters:
    """Counters every gateway process shares, each admission one Lua script (atomic in Redis).

    Errors from Redis propagate; the caller decides to fail open or closed. A lease whose
    admission or settlement failed is abandoned in the background (see the module's docstring).
    """

    def __init__(self, url: str, *, lease_seconds: float = 900, spent_since: SpentSince | None = None,
                 timeout: float = 0.5) -> None:
        import redis.asyncio as redis

        self.lease_seconds = lease_seconds
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._admit = self.client.register_script(_ADMIT)
        self._settle = self.client.register_script(_SETTLE)
        self._seed = self.client.register_script(_SEED)
        self._batcher = _Batcher(self.client)
        self.abandoned = _Abandonments(self._batcher, self.client.register_script(_ABANDON))
        self._seeding = _Seeding(spent_since)

    async def admit(self, scopes: tuple[Scope, ...], tokens: int, cost: float) -> Lease | Refusal:
        lease, now, day_end, month_end = await self._seeding.begin(scopes, tokens, cost, None)
        limits = _limit_args(scopes)
        args = [now, lease.id, now + self.lease_seconds, tokens, cost, day_end, month_end, *limits]
        keys = _keys(scopes, lease.periods)
        try:
            for _ in range(len(keys)):
                result = await self._batcher.call(self._admit, [*keys, _marker(lease.id)], args)
                index = int(result[0])
                if index != _UNSEEDED:
                    break
                # a budget Redis does not hold (first use today, or Redis restarted): start it from the ledger
                scope, limit = scopes[int(result[1])], _BUDGETS[int(result[2]) - 1][0]
                spent = await self._seeding.spent(scope.name, limit, now)
                ttl = math.ceil((day_end if limit == "daily_budget_usd" else month_end) - now) + 86400
                await self._batcher.call(self._seed, [_budget_key(scope.name, limit, lease.periods)], [spent, ttl])
        except Exception:
            self._abandon(lease, keys, limits)  # the admission may still run in Redis: undo it when it does
            raise
        if index == _ABANDONED:  # only a lease id used twice gets here
            raise RuntimeError("this lease was abandoned")
        if index < 0:
            return lease
        limit = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        return Refusal(scopes[index].name, limit, float(result[2]))

    async def settle(self, lease: Lease, tokens: int, cost: float) -> None:
        limits = _limit_args(lease.scopes)
        keys = _keys(lease.scopes, lease.periods)
        try:
            await self._batcher.call(self._settle, keys, [time.time(), lease.id, tokens - lease.tokens, cost, *limits])
        except Exception:
            self._abandon(lease, keys, limits)  # whether or not it ran, the lease must not stay held
            raise

    def _abandon(self, lease: Lease, keys: list[str], limits: list[float]) -> None:
        self.abandoned.add(lease.id, [*keys, _marker(lease.id)], [lease.id, math.ceil(self.lease_seconds), *limits])

    async def budget(self, scope: str, limit: str) -> tuple[float, float]:
        day, month, _, _ = period_ends(time.time())
        spent, reserved = await self.client.hmget(_budget_key(scope, limit, (day, month)), "spent", "reserved")
        return float(spent or 0), float(reserved or 0)

    async def aclose(self) -> None:
        await self.abandoned.aclose(within=1.0)
        await self.client.aclose()


def _marker(lease: str) -> str:
    """The key that marks an abandoned lease (a late admission of it then takes nothing)."""
    return f"cf:gone:{lease}"
