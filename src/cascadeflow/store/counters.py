"""Rate-limit and budget counters: in memory (one process) or in Redis (every process shares them).

Each request is admitted against a list of :class:`Scope` (its key, user, team, and
the gateway as a whole), all at once or not at all:

- ``rpm`` / ``tpm``: token buckets holding a minute's allowance, refilled continuously.
  A request takes 1 request and its estimated tokens; when it ends, the difference
  between real and estimated tokens is taken (or given back), so the bucket may go
  below zero and the next requests wait for the refill.
- ``max_concurrent``: leases held until the request ends (or ``lease_seconds`` pass,
  for a process that died).
- ``daily_budget_usd`` / ``monthly_budget_usd``: a request is admitted while what was
  spent plus what is reserved by requests in flight is below the budget; it reserves
  its estimated cost, and when it ends the reservation becomes the real cost. So
  however many arrive together, the spend passes the budget by at most one request.

Both implementations run the same check-then-apply logic atomically: the memory one
because nothing awaits inside it, the Redis one because it is a Lua script.
"""

from __future__ import annotations

import asyncio
import calendar
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import Limits

__all__ = ["Scope", "Lease", "Refusal", "Counters", "MemoryCounters", "RedisCounters", "period_ends"]

#: (scope name, since epoch) → USD already spent, from the ledger (budgets survive restarts)
SpentSince = Callable[[str, float], Awaitable[float]]
_BUDGETS = (("daily_budget_usd", "d"), ("monthly_budget_usd", "m"))


@dataclass(frozen=True, slots=True)
class Scope:
    """Who a request counts against: ``key:<id>``, ``user:<id>``, ``team:<name>`` or ``total``."""

    name: str
    limits: Limits


@dataclass(slots=True)
class Lease:
    """An admitted request's hold on the counters, released by :meth:`Counters.settle`."""

    id: str
    scopes: tuple[Scope, ...]
    tokens: int
    cost: float
    periods: tuple[str, str]  # the UTC day and month it was admitted in
    synced: bool = True  # False when admitted without the store (Redis down, fail-open)


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str
    limit: str  # the Limits field that refused
    retry_after: float

    @property
    def budget(self) -> bool:
        return self.limit.endswith("budget_usd")


class Counters(Protocol):
    async def admit(self, scopes: tuple[Scope, ...], tokens: int, cost: float) -> Lease | Refusal: ...

    async def settle(self, lease: Lease, tokens: int, cost: float) -> None: ...

    async def budget(self, scope: str, limit: str) -> tuple[float, float]:
        """(spent, reserved) in the current period of ``limit`` (a budget field)."""

    async def aclose(self) -> None: ...


def period_ends(now: float) -> tuple[str, str, float, float]:
    """Day id, month id, and the epoch seconds when this UTC day and month end."""
    t = time.gmtime(now)
    day_start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    next_month = (t.tm_year + (t.tm_mon == 12), t.tm_mon % 12 + 1)
    month_end = calendar.timegm((*next_month, 1, 0, 0, 0))
    return time.strftime("%Y%m%d", t), time.strftime("%Y%m", t), day_start + 86400.0, float(month_end)


def _period_start(limit: str, now: float) -> float:
    t = time.gmtime(now)
    return float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday if limit == "daily_budget_usd" else 1, 0, 0, 0)))


def _budget_key(scope: str, limit: str, periods: tuple[str, str]) -> str:
    return f"cf:b:{scope}:{periods[0] if limit == 'daily_budget_usd' else periods[1]}"


class _Seeding:
    """Budget counters start from the ledger's spend for the period.

    In memory: once per process and key. In Redis: whenever Redis holds no spend for a budget
    (its first use, or after Redis lost its data), so a Redis restart cannot reset budgets.
    """

    def __init__(self, spent_since: SpentSince | None) -> None:
        self._spent_since = spent_since
        self._seeded: set[str] = set()
        self._lock = asyncio.Lock()
        self._period: tuple[str, str, float, float] = ("", "", 0.0, 0.0)  # period_ends() of today

    async def begin(self, scopes: tuple[Scope, ...], tokens: int, cost: float,
                    store: Callable[[str, float], Awaitable[None]] | None) -> tuple[Lease, float, float, float]:
        """A new lease (with the time, and when its day and month end); with ``store``, budgets seeded first."""
        now = time.time()
        if not self._period[2] - 86400 <= now < self._period[2]:  # a new UTC day (or the first call)
            self._period = period_ends(now)
            current = (f":{self._period[0]}", f":{self._period[1]}")
            self._seeded = {key for key in self._seeded if key.endswith(current)}
        day, month, day_end, month_end = self._period
        if store is not None:
            await self.missing(scopes, now, (day, month), store)
        return Lease(uuid.uuid4().hex, scopes, tokens, cost, (day, month)), now, day_end, month_end

    async def spent(self, scope: str, limit: str, now: float) -> float:
        """What the ledger says ``scope`` spent in the current period of ``limit``."""
        return await self._spent_since(scope, _period_start(limit, now)) if self._spent_since else 0.0

    async def missing(self, scopes: tuple[Scope, ...], now: float, periods: tuple[str, str],
                      store: Callable[[str, float], Awaitable[None]]) -> None:
        wanted = [(s.name, limit) for s in scopes for limit, _ in _BUDGETS if getattr(s.limits, limit) is not None]
        if not wanted or all(_budget_key(n, lim, periods) in self._seeded for n, lim in wanted):
            return
        async with self._lock:
            for name, limit in wanted:
                key = _budget_key(name, limit, periods)
                if key in self._seeded:
                    continue
                await store(key, await self.spent(name, limit, now))
                self._seeded.add(key)


@dataclass(slots=True)
class _Budget:
    spent: float = 0.0
    reserved: float = 0.0
    leases: dict[str, tuple[float, float]] = field(default_factory=dict)  # lease → (amount, expiry)

    def purge(self, now: float) -> None:
        for lease, (amount, expiry) in list(self.leases.items()):
            if expiry <= now:
                self.reserved -= amount
                del self.leases[lease]


class MemoryCounters:
    """Counters for one process (the default). Budgets start from the ledger after a restart."""

    def __init__(self, *, lease_seconds: float = 900, spent_since: SpentSince | None = None) -> None:
        self.lease_seconds = lease_seconds
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (level, at)
        self._leases: dict[str, dict[str, float]] = {}  # key → lease → expiry
        self._budgets: dict[str, _Budget] = {}
        self._periods: tuple[str, str] = ("", "")
        self._seeding = _Seeding(spent_since)

    async def admit(self, scopes: tuple[Scope, ...], tokens: int, cost: float) -> Lease | Refusal:
        lease, now, day_end, month_end = await self._seeding.begin(scopes, tokens, cost, self._seed)
        if lease.periods != self._periods:  # a new day: forget the budgets of days and months gone
            self._periods = lease.periods
            current = tuple(f":{period}" for period in lease.periods)
            self._budgets = {k: v for k, v in self._budgets.items() if k.endswith(current)}
        for scope in scopes:  # check everything first: a refused request leaves no trace
            refusal = self._check(scope, lease, now, day_end, month_end)
            if refusal is not None:
                return refusal
        expiry = now + self.lease_seconds
        for scope in scopes:
            limits = scope.limits
            if limits.rpm is not None:
                self._take(f"{scope.name}:rpm", limits.rpm, 1, now)
            if limits.tpm is not None:
                self._take(f"{scope.name}:tpm", limits.tpm, tokens, now)
            if limits.max_concurrent is not None:
                self._leases.setdefault(f"{scope.name}:conc", {})[lease.id] = expiry
            for limit, _ in _BUDGETS:
                if getattr(limits, limit) is not None:
                    budget = self._budgets.setdefault(_budget_key(scope.name, limit, lease.periods), _Budget())
                    budget.reserved += cost
                    budget.leases[lease.id] = (cost, expiry)
        return lease

    async def settle(self, lease: Lease, tokens: int, cost: float) -> None:
        now = time.time()
        for scope in lease.scopes:
            limits = scope.limits
            if limits.tpm is not None:
                self._take(f"{scope.name}:tpm", limits.tpm, tokens - lease.tokens, now)
            if limits.max_concurrent is not None:
                self._leases.get(f"{scope.name}:conc", {}).pop(lease.id, None)
            for limit, _ in _BUDGETS:
                if getattr(limits, limit) is not None:
                    budget = self._budgets.setdefault(_budget_key(scope.name, limit, lease.periods), _Budget())
                    amount, _expiry = budget.leases.pop(lease.id, (0.0, 0.0))
                    budget.reserved -= amount
                    budget.spent += cost

    async def budget(self, scope: str, limit: str) -> tuple[float, float]:
        day, month, _, _ = period_ends(time.time())
        found = self._budgets.get(_budget_key(scope, limit, (day, month)), _Budget())
        return found.spent, found.reserved

    async def aclose(self) -> None:
        return None

    # -- the parts ---------------------------------------------------------------

    def _check(self, scope: Scope, lease: Lease, now: float, day_end: float, month_end: float) -> Refusal | None:
        limits = scope.limits
        if limits.rpm is not None:
            level = self._level(f"{scope.name}:rpm", limits.rpm, now)
            if level < 1:
                return Refusal(scope.name, "rpm", (1 - level) * 60 / limits.rpm)
        if limits.tpm is not None:
            need = min(lease.tokens, limits.tpm)
            level = self._level(f"{scope.name}:tpm", limits.tpm, now)
            if level < need:
                return Refusal(scope.name, "tpm", (need - level) * 60 / limits.tpm)
        if limits.max_concurrent is not None:
            held = self._leases.setdefault(f"{scope.name}:conc", {})
            for lease_id in [k for k, expiry in held.items() if expiry <= now]:
                del held[lease_id]
            if len(held) >= limits.max_concurrent:
                return Refusal(scope.name, "max_concurrent", 1.0)
        for limit, end in (("daily_budget_usd", day_end), ("monthly_budget_usd", month_end)):
            cap = getattr(limits, limit)
            if cap is not None:
                budget = self._budgets.setdefault(_budget_key(scope.name, limit, lease.periods), _Budget())
                budget.purge(now)
                if budget.spent + budget.reserved >= cap:
                    return Refusal(scope.name, limit, end - now)
        return None

    def _level(self, key: str, capacity: int, now: float) -> float:
        level, at = self._buckets.get(key, (float(capacity), now))
        return min(float(capacity), level + (now - at) * capacity / 60)

    def _take(self, key: str, capacity: int, amount: float, now: float) -> None:
        self._buckets[key] = (self._level(key, capacity, now) - amount, now)

    async def _seed(self, key: str, spent: float) -> None:
        self._budgets.setdefault(key, _Budget()).spent += spent


# -- Redis ---------------------------------------------------------------------

# KEYS: five per scope (rpm bucket, tpm bucket, concurrency set, day budget, month budget).
# ARGV: now, lease, expiry, tokens, cost, day_end, month_end, then five limits per scope (-1: none).
# Answers {-1} (admitted), {scope index, limit, retry after} (refused), or {-2, scope index, budget}
# when a budget has no spend recorded yet (the caller seeds it from the ledger and asks again).
_ADMIT = """
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
local n = #KEYS / 5
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

# KEYS as for admit. ARGV: now, lease, tokens - estimated tokens, cost, then five limits per scope.
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
      redis.call('HINCRBYFLOAT', key, 'spent', cost)
    end
  end
end
return 1
"""


#: what the admission script answers for a budget it holds no spend for (the caller seeds it)
_UNSEEDED = -2


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


class RedisCounters:
    """Counters every gateway process shares, each admission one Lua script (atomic in Redis).

    Errors from Redis propagate; the caller decides to fail open or closed.
    """

    def __init__(self, url: str, *, lease_seconds: float = 900, spent_since: SpentSince | None = None,
                 timeout: float = 0.5) -> None:
        import redis.asyncio as redis

        self.lease_seconds = lease_seconds
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._admit = self.client.register_script(_ADMIT)
        self._settle = self.client.register_script(_SETTLE)
        self._batcher = _Batcher(self.client)
        self._seeding = _Seeding(spent_since)

    async def admit(self, scopes: tuple[Scope, ...], tokens: int, cost: float) -> Lease | Refusal:
        lease, now, day_end, month_end = await self._seeding.begin(scopes, tokens, cost, None)
        args = [now, lease.id, now + self.lease_seconds, tokens, cost, day_end, month_end, *_limit_args(scopes)]
        keys = _keys(scopes, lease.periods)
        for _ in range(len(keys)):
            result = await self._batcher.call(self._admit, keys, args)
            index = int(result[0])
            if index != _UNSEEDED:
                break
            # a budget Redis does not hold (first use today, or Redis restarted): start it from the ledger
            scope, limit = scopes[int(result[1])], _BUDGETS[int(result[2]) - 1][0]
            spent = await self._seeding.spent(scope.name, limit, now)
            await self.client.hsetnx(_budget_key(scope.name, limit, lease.periods), "spent", spent)
        if index < 0:
            return lease
        limit = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        return Refusal(scopes[index].name, limit, float(result[2]))

    async def settle(self, lease: Lease, tokens: int, cost: float) -> None:
        args = [time.time(), lease.id, tokens - lease.tokens, cost, *_limit_args(lease.scopes)]
        await self._batcher.call(self._settle, _keys(lease.scopes, lease.periods), args)

    async def budget(self, scope: str, limit: str) -> tuple[float, float]:
        day, month, _, _ = period_ends(time.time())
        spent, reserved = await self.client.hmget(_budget_key(scope, limit, (day, month)), "spent", "reserved")
        return float(spent or 0), float(reserved or 0)

    async def aclose(self) -> None:
        await self.client.aclose()

