"""How long the dashboard's overview takes on a large ledger, per time range, on SQLite and PostgreSQL.

Fills a throwaway ledger with N synthetic rows spread over 30 days (default one
million), then times ``store.queries.overview`` for each range the dashboard offers.

    python benchmarks/dashboard_queries.py [--rows 1000000] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert

from cascadeflow.store import Ledger
from cascadeflow.store.queries import RANGES, overview
from cascadeflow.store.schema import requests_table

DECISIONS = ("accepted", "accepted", "escalated:structural:empty answer", "escalated:low_confidence", "skipped:forced_tool_choice")


def synthetic(n: int, now: float, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        cascade = i % 3 != 0
        decision = rng.choice(DECISIONS) if cascade else None
        rows.append({
            "ts": now - rng.uniform(0, 30 * 86400), "request_id": f"r{i}", "endpoint": "/v1/messages", "dialect": "anthropic",
            "key_id": f"k{i % 50}", "user_id": f"u{i % 200}", "team": f"t{i % 5}", "requested_model": rng.choice(("opus", "gpt")),
            "plan": "cascade" if cascade else "pass_through", "rule": rng.choice(("opus", "gpt")) if cascade else None,
            "draft_model": "haiku" if cascade else None, "decision": decision, "accepted": decision == "accepted" if cascade else None,
            "confidence": rng.random() if cascade else None, "served_model": "haiku", "route": "a", "fallback_model": None,
            "stream": bool(i % 2), "input_tokens": 100, "output_tokens": 50, "cache_write_tokens": 0, "cache_read_tokens": 0,
            "cost": rng.uniform(0.0001, 0.01), "baseline_cost": rng.uniform(0.001, 0.01), "latency_ms": rng.expovariate(1 / 300),
            "ttfb_ms": rng.expovariate(1 / 80), "status": 200 if i % 50 else 502, "error_type": None, "cancelled": False,
            "detail": None, "upstream_ms": None,
        })
    return rows


async def bench(url: str, n: int) -> None:
    ledger = await Ledger(url, retention_days=None).start()
    assert ledger.engine is not None
    now = time.time()
    started = time.perf_counter()
    for offset in range(0, n, 50_000):
        async with ledger.engine.begin() as conn:
            await conn.execute(insert(requests_table), synthetic(min(50_000, n - offset), now, seed=offset))
    print(f"\n{url.split('://')[0]}: {n:,} rows written in {time.perf_counter() - started:.1f} s")
    print(f"{'range':>6} {'rows':>10} {'seconds':>8}")
    for name, seconds in RANGES.items():
        started = time.perf_counter()
        result = await overview(ledger.engine, since=None if seconds is None else time.time() - seconds)
        print(f"{name:>6} {result['totals']['requests']:>10,} {time.perf_counter() - started:>8.2f}")
    await ledger.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a throwaway database is made there)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        await bench(f"sqlite:///{Path(folder) / 'ledger.db'}", args.rows)
    if args.postgres:
        import asyncpg

        admin = await asyncpg.connect(args.postgres.replace("postgresql://", "postgres://"))
        name = "cascadeflow_bench_" + uuid.uuid4().hex[:8]
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            await bench(args.postgres.rsplit("/", 1)[0] + "/" + name, args.rows)
        finally:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
