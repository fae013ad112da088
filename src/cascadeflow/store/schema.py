"""The database schema (ledger and virtual keys) and its migrations, each run once, in order.

A new version appends a migration; existing ones never change, so a database made
by any earlier release upgrades in place at start.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["metadata", "requests_table", "keys_table", "shadow_pairs_table", "schema_version", "MIGRATIONS"]

metadata = MetaData()


def _request_columns_v1() -> list[Column]:
    """The ledger's first columns (fresh objects each call: a Column belongs to one table)."""
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("ts", Float, nullable=False, index=True),
        Column("request_id", String(64)),
        Column("endpoint", String(64), nullable=False),
        Column("dialect", String(16), nullable=False),
        Column("key_id", String(64)),
        Column("user_id", String(128)),
        Column("requested_model", String(256), nullable=False),
        Column("plan", String(16), nullable=False),  # pass_through | cascade
        Column("rule", String(256)),
        Column("draft_model", String(256)),
        Column("decision", String(256)),
        Column("accepted", Boolean),
        Column("confidence", Float),
        Column("served_model", String(256)),
        Column("route", String(128)),
        Column("fallback_model", String(256)),
        Column("stream", Boolean, nullable=False),
        Column("input_tokens", Integer, nullable=False),
        Column("output_tokens", Integer, nullable=False),
        Column("cache_write_tokens", Integer, nullable=False),
        Column("cache_read_tokens", Integer, nullable=False),
        Column("cost", Float),
        Column("baseline_cost", Float),
        Column("latency_ms", Float),
        Column("ttfb_ms", Float),
        Column("status", Integer, nullable=False),
        Column("error_type", String(64)),
        Column("cancelled", Boolean, nullable=False),
        Column("detail", Text),
    ]


requests_table = Table(
    "requests",
    metadata,
    *_request_columns_v1(),
    # version 2
    Column("team", String(128)),
    Column("upstream_ms", Float),
    # version 4
    Column("session_signal", String(32)),
    Column("signal_request_id", String(64)),
    # version 6
    Column("cache", String(8)),  # hit | miss | bypass; NULL: the response cache did not apply
    # version 7
    Column("skipped_stages", Text),  # draft stages passed over while another drafted: ``model=why,…``
)


def _key_columns_v2() -> list[Column]:
    """The key table's first columns (fresh objects each call, as for the ledger)."""
    return [
        Column("key_id", String(32), primary_key=True),
        Column("key_hash", String(64), nullable=False),
        Column("name", String(128)),
        Column("user_id", String(128)),
        Column("team", String(128)),
        Column("models", Text),  # JSON list of allowed model globs; NULL: any model
        Column("limits", Text),  # JSON object of Limits fields
        Column("created_at", Float, nullable=False),
        Column("expires_at", Float),
        Column("revoked_at", Float),
        Column("updated_at", Float, nullable=False, index=True),
    ]


#: virtual keys: only a SHA-256 of the secret is kept; ``key_id`` is the public part of the key
keys_table = Table(
    "api_keys",
    metadata,
    *_key_columns_v2(),
    # version 3: JSON object {route name or provider kind: Fernet token}; each provider key sealed
    # under auth.secret_key (see store/sealing.py), never in the clear
    Column("provider_keys", Text),
    # version 6
    Column("cache", Boolean),  # the key's response-cache setting; NULL: as its rule says
)

def _shadow_columns_v5() -> list[Column]:
    """Shadow mode's pairs as version 5 made them (fresh objects each call)."""
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("ts", Float, nullable=False, index=True),
        Column("request_id", String(64)),
        Column("rule", String(256), index=True),
        Column("draft_model", String(256)),
        Column("verifier_model", String(256)),
        Column("confidence", Float),
        Column("accepted", Boolean, nullable=False),
        Column("draft_answer", Text),
        Column("verifier_answer", Text),
        Column("label", Boolean),  # the draft is as good as the verifier's answer; NULL: could not be told
        Column("method", String(32)),  # final_answer | same_calls | judge
        Column("draft_cost", Float),
        Column("verifier_cost", Float),
        Column("shadow_cost", Float, nullable=False),  # paid for the pair alone (a verifier or judge call made for it)
    ]


#: shadow mode: a judged draft and the verifier's answer to the same request, labelled (version 5)
shadow_pairs_table = Table("shadow_pairs", metadata, *_shadow_columns_v5())

schema_version = Table("schema_version", metadata, Column("version", Integer, primary_key=True))

async def _v1(conn: AsyncConnection) -> None:
    v1 = Table("requests", MetaData(), *_request_columns_v1())
    await conn.run_sync(lambda sync: v1.metadata.create_all(sync))


async def _v2(conn: AsyncConnection) -> None:
    """Teams and upstream time on the ledger; the virtual keys table."""
    for name, sql_type in (("team", "VARCHAR(128)"), ("upstream_ms", "FLOAT")):
        await conn.exec_driver_sql(f"ALTER TABLE requests ADD COLUMN {name} {sql_type}")
    v2 = Table("api_keys", MetaData(), *_key_columns_v2())
    await conn.run_sync(lambda sync: v2.metadata.create_all(sync))


async def _v3(conn: AsyncConnection) -> None:
    """Virtual keys may carry their own provider keys (sealed)."""
    await conn.exec_driver_sql("ALTER TABLE api_keys ADD COLUMN provider_keys TEXT")


async def _v4(conn: AsyncConnection) -> None:
    """Session signals: a request's verdict on the conversation's last drafted turn, and that turn's request id."""
    for name, sql_type in (("session_signal", "VARCHAR(32)"), ("signal_request_id", "VARCHAR(64)")):
        await conn.exec_driver_sql(f"ALTER TABLE requests ADD COLUMN {name} {sql_type}")


async def _v5(conn: AsyncConnection) -> None:
    """Shadow mode's labelled pairs."""
    v5 = Table("shadow_pairs", MetaData(), *_shadow_columns_v5())
    await conn.run_sync(lambda sync: v5.metadata.create_all(sync))


async def _v6(conn: AsyncConnection) -> None:
    """The response cache: whether a request was answered from it; a key's cache setting."""
    await conn.exec_driver_sql("ALTER TABLE requests ADD COLUMN cache VARCHAR(8)")
    await conn.exec_driver_sql("ALTER TABLE api_keys ADD COLUMN cache BOOLEAN")


async def _v7(conn: AsyncConnection) -> None:
    """The draft stages a request passed over while another stage drafted (counted per stage and reason)."""
    await conn.exec_driver_sql("ALTER TABLE requests ADD COLUMN skipped_stages TEXT")


#: (version, migration); each runs once, in order, inside one transaction
MIGRATIONS: tuple[tuple[int, Callable], ...] = ((1, _v1), (2, _v2), (3, _v3), (4, _v4), (5, _v5), (6, _v6),
                                                (7, _v7))
