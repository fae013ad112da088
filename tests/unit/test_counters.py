"""The counters' rules, run against both implementations: in memory, and Lua in a real Redis."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from cascadeflow.config import Limits
from cascadeflow.store.counters import Lease, MemoryCounters, Refusal, Scope, period_ends
from cascadeflow.store.redis_counters import RedisCounters
from tests import needs
from tests.unit.redis_db import REDIS, stall


@pytest.fixture(params=["memory", "redis"])
async def make(request):
    made = []

    async def factory(*, redis_timeout: float | None = None, **kwargs) -> MemoryCounters | RedisCounters:
        """``redis_timeout``: the Redis client's connect and read timeout (the gateway's default: 0.5 s)."""
        if request.param == "memory":
            counters = MemoryCounters(**kwargs)
        else:
            counters = await empty_redis(**kwargs, **({"timeout": redis_timeout} if redis_timeout else {}))
        made.append(counters)
        return counters

    yield factory
    for counters in made:
        await counters.aclose()


async def empty_redis(**kwargs) -> RedisCounters:
    """Counters on a flushed Redis database (skipped where Redis is not running, except in CI)."""
    counters = RedisCounters(REDIS, **kwargs)
    try:
        await counters.client.flushdb()
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(needs.redis(REDIS, "CASCADEFLOW_TEST_REDIS_UNIT", exc))
    return counters


def scope(name: str = "key:k", **limits) -> tuple[Scope, ...]:
    return (Scope(name, Limits(**limits)),)


async def test_rpm_admits_a_minutes_worth_then_says_when_to_retry(make):
    counters = await make()
    leases = [await counters.admit(scope(rpm=5), 10, 0.0) for _ in range(5)]
    assert all(isinstance(lease, Lease) for lease in leases)
    refused = await counters.admit(scope(rpm=5), 10, 0.0)
    assert isinstance(refused, Refusal) and refused.limit == "rpm" and refused.scope == "key:k"
    assert 11.0 < refused.retry_after <= 12.0  # one request comes back every 12 s


async def test_tpm_reserves_the_estimate_and_settles_the_real_count(make):
    counters = await make()
    first = await counters.admit(scope(tpm=1000), 700, 0.0)
    assert isinstance(first, Lease)
    refused = await counters.admit(scope(tpm=1000), 700, 0.0)  # 300 left of the minute
    assert isinstance(refused, Refusal) and refused.limit == "tpm"
    await counters.settle(first, 100, 0.0)  # it used far fewer than estimated: 600 come back
    assert isinstance(await counters.admit(scope(tpm=1000), 700, 0.0), Lease)
    over = await counters.admit(scope(tpm=1000), 5000, 0.0)  # a request larger than the limit needs a full bucket
    assert isinstance(over, Refusal)


async def test_concurrency_leases_are_released_by_settle_or_expire(make):
    counters = await make(lease_seconds=0.3)
    held = [await counters.admit(scope(max_concurrent=2), 1, 0.0) for _ in range(2)]
    assert isinstance(await counters.admit(scope(max_concurrent=2), 1, 0.0), Refusal)
    await counters.settle(held[0], 1, 0.0)
    assert isinstance(await counters.admit(scope(max_concurrent=2), 1, 0.0), Lease)
    await asyncio.sleep(0.35)  # a process that died never settles: its leases expire
    assert isinstance(await counters.admit(scope(max_concurrent=2), 1, 0.0), Lease)


async def test_budgets_count_reservations_then_real_spend(make):
    counters = await make()
    budget = scope(daily_budget_usd=1.0, monthly_budget_usd=10.0)
    a = await counters.admit(budget, 1, 0.6)
    b = await counters.admit(budget, 1, 0.6)  # 0.6 reserved < 1.0: admitted, may overshoot by one request
    assert isinstance(a, Lease) and isinstance(b, Lease)
    refused = await counters.admit(budget, 1, 0.6)
    assert isinstance(refused, Refusal) and refused.budget and refused.limit == "daily_budget_usd"
    _, _, day_end, _ = period_ends(time.time())
    assert refused.retry_after == pytest.approx(day_end - time.time(), abs=2)
    assert await counters.budget("key:k", "daily_budget_usd") == pytest.approx((0.0, 1.2))
    await counters.settle(a, 1, 0.1)
    await counters.settle(b, 1, 0.2)
    assert await counters.budget("key:k", "daily_budget_usd") == pytest.approx((0.3, 0.0))
    assert await counters.budget("key:k", "monthly_budget_usd") == pytest.approx((0.3, 0.0))
    assert isinstance(await counters.admit(budget, 1, 0.6), Lease)


async def test_all_scopes_admit_or_none_is_charged(make):
    counters = await make()
    scopes = (Scope("key:k", Limits(rpm=100)), Scope("user:u", Limits(rpm=1)))
    assert isinstance(await counters.admit(scopes, 1, 0.0), Lease)
    refused = await counters.admit(scopes, 1, 0.0)
    assert isinstance(refused, Refusal) and refused.scope == "user:u"
    only_key = await counters.admit((Scope("key:k", Limits(rpm=2)),), 1, 0.0)  # the refusal took nothing from key:k
    assert isinstance(only_key, Lease)


async def test_budgets_start_from_the_ledgers_spend(make):
    asked = []

    async def spent_since(name: str, since: float) -> float:
        asked.append((name, since))
        return 0.95

    counters = await make(spent_since=spent_since)
    budget = scope(daily_budget_usd=1.0)
    assert isinstance(await counters.admit(budget, 1, 0.01), Lease)
    assert isinstance(await counters.admit(budget, 1, 0.1), Lease)  # 0.95 + 0.01 reserved < 1.0
    assert isinstance(await counters.admit(budget, 1, 0.1), Refusal)
    assert len(asked) == 1 and asked[0][0] == "key:k" and asked[0][1] % 86400 == 0  # once, from midnight UTC


async def test_concurrent_admissions_never_overspend(make):
    # 100 admissions at once go to Redis as a few pipelines of up to 100 scripts each: on a loaded machine a
    # connect or a reply can take longer than the gateway's 0.5 s timeout. What is tested is atomicity.
    counters = await make(redis_timeout=10.0)
    budget = scope(daily_budget_usd=1.0)
    outcomes = await asyncio.gather(*(counters.admit(budget, 1, 0.125) for _ in range(100)))
    admitted = [o for o in outcomes if isinstance(o, Lease)]
    assert len(admitted) == 8
    await asyncio.gather(*(counters.settle(lease, 1, 0.125) for lease in admitted))
    spent, reserved = await counters.budget("key:k", "daily_budget_usd")
    assert spent == pytest.approx(1.0) and reserved == pytest.approx(0.0)


async def test_redis_budgets_start_again_from_the_ledger_after_redis_loses_them():
    asked = []

    async def spent_since(name: str, since: float) -> float:
        asked.append(name)
        return 0.95

    counters = await empty_redis(spent_since=spent_since)
    budget = scope(daily_budget_usd=1.0)
    assert isinstance(await counters.admit(budget, 1, 0.01), Lease)
    assert isinstance(await counters.admit(budget, 1, 0.01), Lease)
    assert asked == ["key:k"]  # seeded once, held in Redis since
    await counters.client.flushdb()  # Redis restarted without persistence
    outcomes = [await counters.admit(budget, 1, 0.03) for _ in range(3)]
    assert asked == ["key:k", "key:k"]  # seeded again from the ledger, not from zero
    assert [type(o) for o in outcomes] == [Lease, Lease, Refusal]  # 0.95 + 0.03 + 0.03 reaches 1.0
    await counters.aclose()


async def test_leases_whose_replies_were_lost_in_a_redis_stall_are_released_when_it_resumes():
    """Redis stalls 1.5 s: two processes' admissions time out there, and one settlement; Redis runs them
    when it resumes. Before issue 15's fix the late admissions held both of the key's concurrency slots
    (and their budget reservations) for lease_seconds: every request got 429 for 900 s, nothing in flight."""
    a, b, c = await empty_redis(lease_seconds=900), *(RedisCounters(REDIS, lease_seconds=900) for _ in "bc")
    limit = scope(max_concurrent=3, daily_budget_usd=10.0)
    for counters in (a, b, c):  # each process holds a connection, as a serving gateway does
        await counters.settle(await counters.admit(limit, 1, 0.01), 1, 0.01)
    settling = await a.admit(limit, 1, 0.5)
    assert isinstance(settling, Lease)
    stalled = stall(REDIS, 1.5)
    outcomes = await asyncio.gather(a.admit(limit, 1, 0.5), b.admit(limit, 1, 0.5), c.settle(settling, 1, 0.01),
                                    return_exceptions=True)
    assert all(isinstance(o, Exception) for o in outcomes), outcomes  # timeouts: whether the scripts ran is unknown
    stalled.join()
    deadline = time.monotonic() + 5
    while await a.client.zcard("cf:c:key:k") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await a.client.zcard("cf:c:key:k") == 0  # nothing is in flight, and nothing is held
    spent, reserved = await a.budget("key:k", "daily_budget_usd")
    assert reserved == pytest.approx(0.0) and spent == pytest.approx(spent)
    held = [await a.admit(limit, 1, 0.01) for _ in range(3)]
    assert [type(lease) for lease in held] == [Lease, Lease, Lease]
    await b.aclose()
    await c.aclose()


async def test_an_admission_that_runs_after_its_lease_was_abandoned_takes_nothing():
    """The abandonment may reach Redis first (another connection): the late admission is then a no-op."""
    counters = await empty_redis()
    limit = scope(rpm=10, max_concurrent=1, daily_budget_usd=10.0)
    await counters.settle(await counters.admit(limit, 1, 0.0), 1, 0.0)  # the budget is seeded
    lease = Lease("late", limit, 1, 0.5, period_ends(time.time())[:2])
    keys = ["cf:r:key:k:rpm", "cf:r:key:k:tpm", "cf:c:key:k", *(f"cf:b:key:k:{p}" for p in lease.periods)]
    counters._abandon(lease, keys, [10, -1, 1, 10.0, -1])
    assert await counters.abandoned.send_once() and not counters.abandoned.pending
    now = time.time()
    late = await counters._batcher.call(counters._admit, [*keys, "cf:gone:late"],
                                        [now, "late", now + 900, 1, 0.5, now + 60, now + 60, 10, -1, 1, 10.0, -1])
    assert late == [-3]
    assert await counters.client.zcard("cf:c:key:k") == 0
    assert await counters.budget("key:k", "daily_budget_usd") == pytest.approx((0.0, 0.0))
    assert isinstance(await counters.admit(limit, 1, 0.0), Lease)  # the one slot is free


async def test_a_settlement_never_recreates_a_budget_redis_lost():
    """Redis loses its data while a request is in flight; the request's settlement must not start the
    budget again from its own cost (with no expiry): the next admission seeds it from the ledger."""
    async def spent_since(name: str, since: float) -> float:
        return 0.95

    counters = await empty_redis(spent_since=spent_since)
    budget = scope(daily_budget_usd=1.0)
    in_flight = await counters.admit(budget, 1, 0.01)
    assert isinstance(in_flight, Lease)
    await counters.client.flushdb()  # Redis restarted without persistence
    await counters.settle(in_flight, 1, 0.01)
    day_key = f"cf:b:key:k:{in_flight.periods[0]}"
    assert await counters.client.exists(day_key) == 0
    outcomes = [await counters.admit(budget, 1, 0.03) for _ in range(3)]
    assert [type(o) for o in outcomes] == [Lease, Lease, Refusal]  # from 0.95, not from 0.01
    assert 0 < await counters.client.ttl(day_key) <= 2 * 86400 + 60  # the seeded budget expires
    await counters.aclose()
