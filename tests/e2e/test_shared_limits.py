"""Two gateway processes sharing one PostgreSQL ledger and one set of Redis counters.

Real servers on loopback: PostgreSQL (a database made for each test) and Redis (a
database index flushed for each test). In CI both must be up (``.ci/run`` starts them).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import anthropic
import httpx
import pytest
import yaml

from cascadeflow import ModelRegistry, ProxyConfig, Usage, create_app
from cascadeflow.sim import ServerThread
from tests import needs
from tests.conftest import launch_gateway_processes, sim_routes
from tests.pg_db import UNREACHABLE, create_database, drop_database
from tests.unit.redis_db import stall

POSTGRES = os.environ.get("CASCADEFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("CASCADEFLOW_TEST_REDIS", "redis://127.0.0.1:6379/7")
MASTER = "shared-master-9d1e"
ASK = {"max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytest.skip(reason)


@pytest.fixture()
def stores():
    """(PostgreSQL URL of a fresh database, Redis URL of an empty database index)."""
    import redis

    try:
        database = create_database(POSTGRES)
        redis.Redis.from_url(REDIS, socket_timeout=2).flushdb()
    except (*UNREACHABLE, redis.RedisError) as exc:
        _unavailable(needs.postgres_or_redis(POSTGRES, REDIS, "CASCADEFLOW_TEST_REDIS", exc))
    yield database, REDIS
    drop_database(POSTGRES, database)
    redis.Redis.from_url(REDIS).flushdb()


@pytest.fixture()
def pair(sim, fresh_sim, stores, tmp_path):
    """Two gateway processes on one config; their logs are kept for the secrets test."""
    pg, rd = stores
    config = {
        "routes": sim_routes(sim), "database_url": pg, "redis_url": rd,
        "auth": {"mode": "api_key", "master_key": MASTER, "keys": [
            {"key": "shared-rpm-key", "user_id": "ursula", "limits": {"rpm": 10}},
            {"key": "shared-budget-key", "user_id": "victor", "limits": {"daily_budget_usd": 20 * _COST - 1e-9}},
            {"key": "shared-free-key", "user_id": "wanda"},
        ]},
    }
    text = yaml.safe_dump(config)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = launch_gateway_processes(tmp_path, text, logs)
    yield [url for _, url in processes], pg, logs
    for process, _ in processes:
        process.send_signal(signal.SIGTERM)
    for process, _ in processes:
        process.wait(timeout=15)


#: what one scripted budget request costs: 10 input and 20 output tokens of claude-sonnet-5-5
_COST = ModelRegistry().cost("claude-sonnet-5-5", Usage(input_tokens=10, output_tokens=20)) or 0.0


def _client(url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)


def test_requests_per_minute_hold_across_both_processes(pair):
    (a, b), _, _ = pair
    outcomes = []
    for i in range(16):
        try:
            _client((a, b)[i % 2], "shared-rpm-key").messages.create(model="claude-haiku-5-5", **ASK)
            outcomes.append(200)
        except anthropic.RateLimitError:
            outcomes.append(429)
    # 10 a minute: the bucket holds 10, and refills one every 6 s (the loop takes about a second)
    assert outcomes.count(200) in (10, 11) and outcomes[:10] == [200] * 10


async def test_200_concurrent_requests_cannot_overspend_a_shared_budget(pair, fresh_sim):
    (a, b), pg, _ = pair
    usage = {"input_tokens": 10, "output_tokens": 20}
    fresh_sim.set_script([{"match": {"prompt_contains": "budget"}, "text": "spend", "usage": usage, "latency": 0.5}])
    body = {"model": "claude-sonnet-5-5", "max_tokens": 20, "messages": [{"role": "user", "content": "budget"}]}
    limits = httpx.Limits(max_connections=250)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers={"x-api-key": "shared-budget-key"}) as client:
        replies = await asyncio.gather(*(client.post(f"{(a, b)[i % 2]}/v1/messages", json=body) for i in range(200)))
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 402} and statuses.count(402) >= 150
    budget = 20 * _COST
    ledger = await _ledger_rows(pg, where="user_id = 'victor'", expected=200)
    spent = sum(r["cost"] or 0 for r in ledger)
    assert len(ledger) == 200 and spent == pytest.approx(statuses.count(200) * _COST)
    print(f"admitted {statuses.count(200)} of 200; spent ${spent:.6f} of a ${budget:.6f} budget")  # shown with -s
    assert spent <= budget + _COST  # never more than the budget plus one request
    assert statuses.count(200) >= 15  # and the budget is usable, not refused from the start
    assert {r["error_type"] for r in ledger if r["status"] == 402} == {"budget_exceeded"}


def test_a_key_revoked_through_one_process_is_refused_by_the_other_within_a_second(pair):
    (a, b), _, _ = pair
    admin = httpx.Client(base_url=a, headers={"authorization": f"Bearer {MASTER}"})
    secret = admin.post("/admin/keys", json={"user_id": "xena"}).json()["key"]
    deadline = time.monotonic() + 3
    while True:  # process b learns of the new key from the shared table
        try:
            _client(b, secret).messages.create(model="claude-haiku-5-5", **ASK)
            break
        except anthropic.AuthenticationError:
            assert time.monotonic() < deadline, "process b never accepted the new key"
            time.sleep(0.05)
    key_id = secret.split("_")[1]
    assert admin.delete(f"/admin/keys/{key_id}").status_code == 200
    revoked_at = time.monotonic()
    while True:
        try:
            _client(b, secret).messages.create(model="claude-haiku-5-5", **ASK)
        except anthropic.AuthenticationError as exc:
            assert "revoked" in exc.message
            break
        time.sleep(0.02)
    assert time.monotonic() - revoked_at < 1.0
    with pytest.raises(anthropic.AuthenticationError):  # and process a at once
        _client(a, secret).messages.create(model="claude-haiku-5-5", **ASK)


async def test_both_processes_write_one_ledger_and_no_secret_is_logged_or_stored(pair):
    (a, b), pg, logs = pair
    admin = httpx.Client(base_url=b, headers={"authorization": f"Bearer {MASTER}"})
    issued = admin.post("/admin/keys", json={"user_id": "yuri"}).json()["key"]
    await asyncio.sleep(0.7)
    for url in (a, b, a):
        _client(url, "shared-free-key").messages.create(model="claude-haiku-5-5", **ASK)
        _client(url, issued).messages.create(model="claude-sonnet-5-5", **ASK)
    with pytest.raises(anthropic.AuthenticationError):
        _client(a, "pasted-provider-credential-3f2a").messages.create(model="claude-haiku-5-5", **ASK)
    rows = await _ledger_rows(pg, expected=7)
    assert [r["user_id"] for r in rows].count("wanda") == 3 and [r["user_id"] for r in rows].count("yuri") == 3
    assert httpx.get(b + "/stats").status_code == 401  # auth is on: the operator endpoints need the master key
    totals = httpx.get(b + "/stats", headers={"authorization": f"Bearer {MASTER}"}).json()["ledger"]
    assert totals["requests"] == 7  # process b sees what process a recorded

    # a key is cfk_<id>_<secret>, and the secret (base64url) may itself hold or end in "_": split at the first two
    secrets = ["shared-rpm-key", "shared-budget-key", "shared-free-key", issued, issued.split("_", 2)[2], MASTER,
               "sk-ant-route-key", "sk-openai-route-key", "pasted-provider-credential-3f2a"]
    dumped = await _dump_database(pg)
    import redis

    stored = dumped + " ".join(k.decode() for k in redis.Redis.from_url(REDIS).keys("*"))
    for process in (a, b):
        assert httpx.get(process + "/metrics", headers={"authorization": f"Bearer {MASTER}"}).status_code == 200
    time.sleep(0.3)
    logged = "".join(path.read_text(errors="replace") for path in logs)
    assert "yuri" in dumped and "wanda" in dumped and logged  # there is something to search
    for secret in secrets:
        assert secret not in stored, f"{secret[:6]}… is stored in the clear"
        assert secret not in logged, f"{secret[:6]}… reached a log"


def test_redis_unreachable_fails_open_or_closed_as_configured(fresh_sim, start_gateway, tmp_path):
    for policy, expected in (("open", 200), ("closed", 503)):
        config = ProxyConfig.from_dict({
            "routes": sim_routes(fresh_sim), "database_url": f"sqlite:///{tmp_path / f'{policy}.db'}",
            "redis_url": "redis://127.0.0.1:1/0",  # nothing listens there
            "auth": {"mode": "api_key", "keys": [{"key": "k", "limits": {"rpm": 100}}]},
            "limits": {"on_store_error": policy},
        })
        server = ServerThread(create_app(config)).start()
        try:
            replies = [httpx.post(server.url + "/v1/messages", headers={"x-api-key": "k"},
                                  json={"model": "claude-haiku-5-5", **ASK}) for _ in range(3)]
            assert [r.status_code for r in replies] == [expected] * 3
            if expected == 503:
                assert "rate-limit store is unreachable" in replies[0].json()["error"]["message"]
                assert replies[0].headers["retry-after"] == "5"
            assert httpx.get(server.url + "/health").status_code == 200  # the worker is fine
        finally:
            server.stop()


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_a_redis_stall_leaves_no_phantom_leases(fresh_sim, tmp_path, policy):
    """Redis stops answering for 1.5 s while two gateways admit a request each for a key with
    ``max_concurrent: 2``; Redis runs those admissions when it resumes, after both gateways gave up on
    them (and admitted the requests uncounted, or refused them with 503). Before issue 15's fix the
    late leases held both slots: 429 on every request for 900 s with nothing in flight. Now the
    gateways release them as soon as Redis answers again."""
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_timeout=2).flushdb()
    except redis.RedisError as exc:
        _unavailable(needs.redis(REDIS, "CASCADEFLOW_TEST_REDIS", exc))
    config = ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim), "database_url": f"sqlite:///{tmp_path / 'gw.db'}", "redis_url": REDIS,
        "auth": {"mode": "api_key", "keys": [{"key": "two-at-once", "limits": {"max_concurrent": 2}}]},
        "limits": {"on_store_error": policy},
    })
    servers = [ServerThread(create_app(config)).start() for _ in range(2)]
    try:
        def ask(server: ServerThread) -> int:
            return httpx.post(server.url + "/v1/messages", headers={"x-api-key": "two-at-once"}, timeout=10,
                              json={"model": "claude-haiku-5-5", **ASK}).status_code

        assert [ask(server) for server in servers] == [200, 200]  # each gateway holds a Redis connection
        stalled = stall(REDIS, 1.5)
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            during = list(pool.map(ask, servers))
        assert during == [200 if policy == "open" else 503] * 2
        stalled.join()
        deadline = time.monotonic() + 5
        after = [ask(server) for server in servers]
        while after != [200, 200] and time.monotonic() < deadline:
            time.sleep(0.2)
            after = [ask(server) for server in servers]
        assert after == [200, 200], f"still refused {time.monotonic() - deadline + 5:.1f} s after Redis resumed"
        assert [ask(server) for server in servers * 3] == [200] * 6
        assert redis.Redis.from_url(REDIS).keys("cf:c:*") == []  # no lease is held: every set of them is empty
    finally:
        for server in servers:
            server.stop()


async def _ledger_rows(pg: str, where: str = "true", expected: int = 0) -> list[dict]:
    import asyncpg

    deadline = time.monotonic() + 10
    conn = await asyncpg.connect(pg.replace("postgresql://", "postgres://"))
    try:
        while True:
            rows = [dict(r) for r in await conn.fetch(f"SELECT * FROM requests WHERE {where} ORDER BY id")]
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _dump_database(pg: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(pg.replace("postgresql://", "postgres://"))
    try:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert {"requests", "api_keys", "schema_version"} <= set(tables)
        lines = []
        for table in tables:
            lines += [str(dict(row)) for row in await conn.fetch(f"SELECT * FROM {table}")]
        return "\n".join(lines)
    finally:
        await conn.close()
