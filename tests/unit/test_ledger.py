"""The usage ledger against real databases: a SQLite file, and PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest

from cascadeflow.store import Ledger, LedgerEntry, database_url
from cascadeflow.store.ledger import ShadowPair
from cascadeflow.store.schema import MIGRATIONS, requests_table, shadow_pairs_table
from tests import needs

POSTGRES = os.environ.get("CASCADEFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def entry(**extra) -> LedgerEntry:
    base = dict(endpoint="/v1/messages", dialect="anthropic", requested_model="claude-opus-5-5", plan="cascade",
                stream=False, status=200, input_tokens=10, output_tokens=5, cost=0.001, baseline_cost=0.004)
    return LedgerEntry(**{**base, **extra})


def test_urls_pick_the_async_drivers():
    assert database_url("postgresql://u@h:5432/db") == "postgresql+asyncpg://u@h:5432/db"
    assert database_url("sqlite:///tmp/x.db") == "sqlite+aiosqlite:///tmp/x.db"
    assert database_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"


async def test_sqlite_batches_survive_a_restart_and_migrate_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = await Ledger(url, flush_interval=0.05).start()
    for i in range(250):
        ledger.record(entry(request_id=f"r{i}", accepted=i % 2 == 0))
    await asyncio.sleep(0.3)
    assert ledger.written == 250  # written in the background, in batches
    ledger.record(entry(request_id="last", cancelled=True, status=499))
    await ledger.aclose()  # what is still queued is written on close
    reopened = await Ledger(url).start()  # the schema is not created twice
    rows = await reopened.rows()
    assert len(rows) == 251 and rows[-1]["request_id"] == "last" and rows[-1]["cancelled"] is True
    assert sum(1 for r in rows if r["accepted"]) == 125
    assert rows[0]["cost"] == pytest.approx(0.001) and rows[0]["baseline_cost"] == pytest.approx(0.004)
    await reopened.aclose()


async def test_retention_deletes_old_rows(tmp_path):
    ledger = await Ledger(f"sqlite:///{tmp_path / 'old.db'}", retention_days=1).start()
    ledger.record(entry(ts=time.time() - 3 * 86400, request_id="old"))
    ledger.record(entry(request_id="new"))
    await ledger.flush()
    assert await ledger.prune() == 1
    assert [r["request_id"] for r in await ledger.rows()] == ["new"]
    await ledger.aclose()


async def test_a_broken_database_loses_the_batch_but_not_the_gateway(tmp_path):
    ledger = await Ledger(f"sqlite:///{tmp_path / 'x.db'}").start()
    await ledger.engine.dispose()
    (tmp_path / "x.db").unlink()
    (tmp_path / "x.db").mkdir()  # the file is now a directory: writes fail
    ledger.record(entry())
    await ledger.flush()
    assert ledger.dropped == 1
    await ledger.aclose()


@pytest.fixture()
async def pg_url():
    """A database of its own on the PostgreSQL server, dropped afterwards."""
    import asyncpg

    try:
        admin = await asyncpg.connect(POSTGRES.replace("postgresql://", "postgres://"), timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(needs.postgres(POSTGRES, exc))
    name = "cascadeflow_" + uuid.uuid4().hex[:10]
    await admin.execute(f"CREATE DATABASE {name}")
    url = POSTGRES.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
    yield url, conn
    await conn.close()
    await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    await admin.close()


async def test_two_ledgers_share_one_postgresql(pg_url):
    url, conn = pg_url
    first, second = await Ledger(url).start(), await Ledger(url).start()  # two gateway processes
    for i in range(30):
        (first if i % 2 else second).record(entry(request_id=f"p{i}"))
    await first.aclose()
    await second.aclose()
    count = await conn.fetchval("SELECT count(*) FROM requests")
    version = await conn.fetchval("SELECT max(version) FROM schema_version")
    assert count == 30 and version == len(MIGRATIONS)


async def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    """A ledger written by the first release keeps its rows and gains the new columns and tables."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_async_engine(database_url(url))
    async with engine.begin() as conn:
        await MIGRATIONS[0][1](conn)
        await conn.execute(text("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO schema_version VALUES (1)"))
        await conn.execute(text(
            "INSERT INTO requests (ts, endpoint, dialect, requested_model, plan, stream, input_tokens, output_tokens,"
            " cache_write_tokens, cache_read_tokens, status, cancelled) VALUES (1.0, '/v1/messages', 'anthropic',"
            " 'm', 'pass_through', 0, 5, 7, 0, 0, 200, 0)"))
    await engine.dispose()
    ledger = await Ledger(url, retention_days=None).start()
    ledger.record(entry(team="backend", upstream_ms=12.5))
    await ledger.aclose()
    ledger = await Ledger(url, retention_days=None).start()
    rows = await ledger.rows()
    await ledger.aclose()
    assert [r["output_tokens"] for r in rows] == [7, rows[1]["output_tokens"]]
    assert rows[0]["team"] is None and rows[1]["team"] == "backend" and rows[1]["upstream_ms"] == 12.5


async def test_a_version_2_key_table_is_upgraded_in_place_and_keeps_its_keys(tmp_path):
    """Keys issued before provider keys existed still authenticate; the table gains its sealed column."""
    from cryptography.fernet import Fernet
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from cascadeflow.store.keys import KeyStore, hash_key
    from cascadeflow.store.sealing import Sealer

    url = f"sqlite:///{tmp_path / 'v2.db'}"
    engine = create_async_engine(database_url(url))
    async with engine.begin() as conn:
        for _, migration in MIGRATIONS[:2]:
            await migration(conn)
        await conn.execute(text("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO schema_version VALUES (1), (2)"))
        await conn.execute(text("INSERT INTO api_keys (key_id, key_hash, user_id, created_at, updated_at) "
                                f"VALUES ('0123456789ab', '{hash_key('cfk_0123456789ab_old')}', 'olga', 1.0, 1.0)"))
    await engine.dispose()
    ledger = await Ledger(url, retention_days=None).start()
    sealer = Sealer(Fernet.generate_key().decode())
    try:
        async with ledger.engine.connect() as conn:
            assert (await conn.execute(text("SELECT max(version) FROM schema_version"))).scalar() == len(MIGRATIONS)
        keys = await KeyStore(sealer=sealer).start(ledger.engine, watch=False)
        old = keys.authenticate("cfk_0123456789ab_old")
        assert old is not None and old.user_id == "olga" and old.provider_keys == {} and old.unreadable == ()
        secret, _ = await keys.create(user_id="pia", provider_keys={"anthropic": "sk-ant-pia"})
        reread = await KeyStore(sealer=sealer).start(ledger.engine, watch=False)  # another process, same secret key
        assert reread.authenticate(secret).provider_keys["anthropic"].get_secret_value() == "sk-ant-pia"
        keyless = await KeyStore().start(ledger.engine, watch=False)  # one without the secret key
        assert keyless.authenticate(secret).unreadable == ("anthropic",)
        assert keyless.authenticate(secret).public()["provider_keys"] == {"anthropic": "unreadable"}
    finally:
        await ledger.aclose()


async def test_a_version_2_database_gains_the_cache_columns_in_place(tmp_path):
    """Version 6 (the response cache): a ledger row's ``cache`` and a key's ``cache`` setting, old rows kept."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from cascadeflow.store.keys import KeyStore

    url = f"sqlite:///{tmp_path / 'v2.db'}"
    engine = create_async_engine(database_url(url))
    async with engine.begin() as conn:
        for _, migrate in MIGRATIONS[:2]:
            await migrate(conn)
        await conn.execute(text("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO schema_version VALUES (1), (2)"))
        await conn.execute(text(
            "INSERT INTO requests (ts, endpoint, dialect, requested_model, plan, stream, input_tokens, output_tokens,"
            " cache_write_tokens, cache_read_tokens, status, cancelled, team) VALUES (1.0, '/v1/messages',"
            " 'anthropic', 'm', 'pass_through', 0, 5, 7, 0, 0, 200, 0, 'backend')"))
        await conn.execute(text("INSERT INTO api_keys (key_id, key_hash, created_at, updated_at)"
                                " VALUES ('old', 'h', 1.0, 1.0)"))
    await engine.dispose()
    ledger = await Ledger(url, retention_days=None).start()
    ledger.record(entry(cache="hit", cost=0.0))
    keys = await KeyStore().start(ledger.engine, watch=False)
    _, made = await keys.create(name="cached", cache=True)
    await ledger.aclose()
    ledger = await Ledger(url, retention_days=None).start()
    rows = await ledger.rows()
    keys = await KeyStore().start(ledger.engine, watch=False)
    summary = (await ledger.summary())["total"]
    await ledger.aclose()
    assert [(r["team"], r["cache"]) for r in rows] == [("backend", None), (None, "hit")]
    assert keys.get("old").cache is None and keys.get(made.key_id).cache is True
    assert summary["cache_hits"] == 1


async def test_flush_waits_for_the_batch_the_writer_has_in_hand(tmp_path):
    ledger = await Ledger(f"sqlite:///{tmp_path / 'f.db'}", batch_size=50, flush_interval=0.0).start()
    for round_ in range(5):
        for i in range(120):
            ledger.record(entry(request_id=f"{round_}-{i}"))
        await asyncio.sleep(0)  # the writer takes its first batch
        await ledger.flush()
        assert await ledger.count() == 120 * (round_ + 1)
    await ledger.aclose()


def test_processes_starting_together_on_a_new_sqlite_file_migrate_once(tmp_path):
    """`--workers N` on a fresh ledger: every worker starts, the schema is made once."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = f"import asyncio; from cascadeflow.store import Ledger\n" \
           f"async def main():\n    await (await Ledger({url!r}).start()).aclose()\nasyncio.run(main())"
    workers = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(6)]
    errors = [w.communicate(timeout=60)[1].decode() for w in workers]
    assert [w.returncode for w in workers] == [0] * 6, errors

    async def versions() -> list[int]:
        ledger = await Ledger(url).start()
        async with ledger.engine.connect() as conn:
            found = [row[0] for row in await conn.exec_driver_sql("SELECT version FROM schema_version ORDER BY version")]
        await ledger.aclose()
        return found

    assert asyncio.run(versions()) == [version for version, _ in MIGRATIONS]


async def _odd_rows(url: str) -> None:
    """Over-long names, a NUL and a lone surrogate are fitted to the columns; the rows beside them are written."""
    ledger = await Ledger(url).start()
    ledger.record(entry(request_id="before"))
    ledger.record(entry(request_id="odd" * 40, requested_model="m" * 300, served_model="s\x00x", rule="r\ud83d",
                        detail="nul \x00 and \udc00 surrogate " * 3, error_type="e" * 100))
    ledger.record(entry(request_id="after"))
    await ledger.flush()
    rows = await ledger.rows()
    await ledger.aclose()
    assert [r["request_id"] for r in rows][::2] == ["before", "after"] and len(rows) == 3
    odd = rows[1]
    assert odd["requested_model"] == "m" * 256 and odd["served_model"] == "sx" and len(odd["request_id"]) == 64
    assert "\x00" not in odd["detail"] and odd["rule"] == "r\ufffd" and len(odd["error_type"]) == 64


async def test_an_odd_row_never_fails_its_sqlite_batch(tmp_path):
    await _odd_rows(f"sqlite:///{tmp_path / 'odd.db'}")


async def test_an_odd_row_never_fails_its_postgresql_batch(pg_url):
    await _odd_rows(pg_url[0])


def every_column() -> tuple[LedgerEntry, dict]:
    """An entry with every ledger column set, odd text among them, and the row it must be stored as."""
    odd = dict(request_id="odd" * 40, requested_model="m" * 300, served_model="s\x00x", rule="r\ud83d",
               detail="nul \x00 and \udc00 surrogate\n", key_id="k" * 64, decision="two\nlines",
               skipped_stages="haiku=context_too_long," * 40)
    plain = dict(ts=1_700_000_000.125, endpoint="/v1/chat/completions", dialect="openai", user_id="ulla",
                 team="backend", plan="cascade", draft_model="gpt-5-mini", accepted=True, confidence=0.8125,
                 route="openai", fallback_model="gpt-5", stream=True, input_tokens=1234, output_tokens=56,
                 cache_write_tokens=7, cache_read_tokens=40_000, cost=0, baseline_cost=0.0456, latency_ms=812.5,
                 ttfb_ms=240.25, upstream_ms=800.0, status=499, error_type="e" * 100, cancelled=True,
                 session_signal="tool_error", signal_request_id="before", cache="miss")
    stored = {**plain, **odd, "request_id": ("odd" * 40)[:64], "requested_model": "m" * 256, "served_model": "sx",
              "rule": "r\ufffd", "detail": "nul  and \ufffd surrogate\n", "error_type": "e" * 64}
    return LedgerEntry(**{**plain, **odd}), stored


def every_pair_column() -> tuple[ShadowPair, dict]:
    values = dict(request_id="p" * 70, rule="mini", draft_model="haiku", verifier_model="v" * 300, confidence=0.5,
                  accepted=False, draft_answer="a\x00b \ud800", verifier_answer="fine", label=True, method="judge",
                  draft_cost=0.001, verifier_cost=0.01, shadow_cost=0.002, ts=1_700_000_001.5)
    return ShadowPair(**values), {**values, "request_id": "p" * 64, "verifier_model": "v" * 256,
                                  "draft_answer": "ab \ufffd"}


async def _every_column_round_trips(url: str) -> None:
    """Each column comes back as written (text fitted); a value the database refuses fails its batch, not the writer."""
    entry_, stored = every_column()
    pair, pair_stored = every_pair_column()
    assert {c.name for c in requests_table.c} - {"id"} == {k for k in stored if getattr(entry_, k) is not None}
    assert {c.name for c in shadow_pairs_table.c} - {"id"} == set(pair_stored)
    ledger = await Ledger(url, retention_days=None).start()
    ledger.record(entry_)
    ledger.record(pair)
    await ledger.flush()
    ledger.record(entry(accepted="yes"))  # not a boolean: refused
    await ledger.flush()
    assert (ledger.written, ledger.dropped) == (2, 1)
    ledger.record(entry(request_id="after"))
    await ledger.flush()
    rows, pairs = await ledger.rows(), await ledger.shadow_pairs()
    await ledger.aclose()
    assert [r["request_id"] for r in rows] == [stored["request_id"], "after"]
    assert {k: v for k, v in rows[0].items() if k != "id"} == stored
    assert {k: v for k, v in pairs[0].items() if k != "id"} == pair_stored
    booleans = [rows[0][k] for k in ("accepted", "stream", "cancelled")] + [pairs[0]["accepted"], pairs[0]["label"]]
    assert [type(value) for value in booleans] == [bool] * 5 and isinstance(rows[0]["cost"], float)


async def test_every_column_round_trips_on_sqlite(tmp_path):
    await _every_column_round_trips(f"sqlite:///{tmp_path / 'every.db'}")


async def test_every_column_round_trips_on_postgresql(pg_url):
    await _every_column_round_trips(pg_url[0])


async def test_a_driver_with_named_parameters_gets_rows_by_name(tmp_path):
    """The INSERT is compiled for the engine's paramstyle: a named one is fed dicts, not tuples."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from cascadeflow.store.ledger import _Insert

    url = f"sqlite:///{tmp_path / 'named.db'}"
    ledger = await Ledger(url, retention_days=None).start()
    engine = create_async_engine(database_url(url), paramstyle="named")
    insert = _Insert.compile(requests_table, LedgerEntry, engine.dialect)
    entry_, stored = every_column()
    async with engine.begin() as conn:
        await insert.write(conn, [entry_])
    await engine.dispose()
    rows = await ledger.rows()
    await ledger.aclose()
    assert insert.names is not None and ":request_id" in insert.sql
    assert {k: v for k, v in rows[0].items() if k != "id"} == stored
