"""Rate-limit and budget counters: in memory (one process) or in Redis (every process shares them;
:mod:`cascadeflow.store.redis_counters`).

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

__all__ = ["Scope", "Lease", "Refusal", "Counters", "MemoryCounters", "period_ends", "SpentSince"]

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
