"""CPU per ledger row: what ``Ledger.flush`` costs the gateway process for each row it writes, on SQLite and PostgreSQL.

Queues N entries like the gateway's (cascaded and pass-through, most columns set), then measures the
process's CPU time (user + system, the driver's threads included) while ``flush`` writes them in batches.
Each run is a process of its own on a fresh table. With ``--baseline`` (the ``src`` folder of another
checkout, e.g. ``git worktree add /tmp/before HEAD~1``) runs alternate between that code and this
checkout's, so the two columns see the same machine load.

    python benchmarks/ledger_writes.py [--rows 20000] [--runs 5] [--baseline /tmp/before/src]
                                       [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve()
SOURCE = HERE.parents[1] / "src"


def entries(n: int) -> list:
    """Entries as the gateway records them: two in three cascaded (draft, decision, confidence), the rest passed through."""
    from cascadeflow.store import LedgerEntry

    made = []
    for i in range(n):
        cascade = i % 3 != 0
        made.append(LedgerEntry(
            endpoint="/v1/messages", dialect="anthropic", requested_model="claude-opus-4-5", stream=bool(i % 2),
            plan="cascade" if cascade else "pass_through", status=200 if i % 50 else 502,
            request_id=uuid.UUID(int=i).hex, key_id=f"k{i % 50:011d}", user_id=f"user-{i % 200}", team="backend",
            rule="opus" if cascade else None, draft_model="claude-haiku-4-5" if cascade else None,
            decision="accepted" if cascade and i % 4 else ("escalated:low_confidence" if cascade else None),
            accepted=bool(i % 4) if cascade else None, confidence=0.8 if cascade else None,
            served_model="claude-haiku-4-5" if cascade and i % 4 else "claude-opus-4-5", route="anthropic",
            input_tokens=1200 + i % 100, output_tokens=300, cache_read_tokens=40_000, cost=0.0123,
            baseline_cost=0.0456, latency_ms=812.5, ttfb_ms=240.0, upstream_ms=805.0, cache="miss",
            error_type=None if i % 50 else "api_error", detail=None if i % 50 else "upstream said 502\nretry later"))
    return made


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(url: str, rows: int, batch: int) -> float:
    """µs of CPU per row written (one run, in this process)."""
    from sqlalchemy import delete

    from cascadeflow.store import Ledger
    from cascadeflow.store.schema import requests_table

    ledger = await Ledger(url, batch_size=batch, flush_interval=3600, retention_days=None).start()
    assert ledger.engine is not None
    async with ledger.engine.begin() as conn:  # a fresh table (PostgreSQL's database is shared by the runs)
        await conn.execute(delete(requests_table))
    for entry in entries(batch):  # warm up: connections, prepared statements
        ledger.record(entry)
    await ledger.flush()
    queued = entries(rows)
    for entry in queued:
        ledger.record(entry)
    started = cpu()
    await ledger.flush()
    spent = cpu() - started
    assert await ledger.count() == rows + batch and ledger.dropped == 0
    await ledger.aclose()
    return spent / rows * 1e6


def run_once(source: Path, url: str, rows: int, batch: int) -> float:
    done = subprocess.run([sys.executable, str(HERE), "--one", url, "--rows", str(rows), "--batch", str(batch)],
                          env={**os.environ, "PYTHONPATH": str(source)}, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.splitlines()[-1]))


def figures(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def table(urls: dict[str, str], sources: dict[str, Path], args: argparse.Namespace) -> None:
    print(f"µs of CPU per row, {args.rows:,} rows in batches of {args.batch}; median (min-max) of {args.runs} runs")
    print("| database | " + " | ".join(sources) + " |")
    print("|---|" + "---|" * len(sources))
    for database, url in urls.items():
        results: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.runs):  # alternating, so both see the same load
            for name, source in sources.items():
                results[name].append(run_once(source, url, args.rows, args.batch))
        print(f"| {database} | " + " | ".join(figures(values) for values in results.values()) + " |", flush=True)


async def _admin(server: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server.replace("postgresql://", "postgres://"), timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200, help="the ledger's batch size (its default: 200)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="the src folder of a checkout to compare with")
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a throwaway database is made there)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one run on this URL, in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(measure(args.one, args.rows, args.batch))))
        return
    sources = {"baseline": args.baseline, "this checkout": SOURCE} if args.baseline else {"this checkout": SOURCE}
    with tempfile.TemporaryDirectory() as folder:
        urls = {"SQLite": f"sqlite:///{Path(folder) / 'ledger.db'}"}
        name = None
        if args.postgres:
            name = "cascadeflow_bench_" + uuid.uuid4().hex[:8]
            asyncio.run(_admin(args.postgres, f"CREATE DATABASE {name}"))
            urls["PostgreSQL"] = args.postgres.rsplit("/", 1)[0] + "/" + name
        try:
            table(urls, sources, args)
        finally:
            if name:
                asyncio.run(_admin(args.postgres, f"DROP DATABASE {name} WITH (FORCE)"))


if __name__ == "__main__":
    main()
