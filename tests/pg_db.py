"""Throwaway PostgreSQL databases for the tests: ``cascadeflow_<10 hex digits>``, created and dropped (README)."""

from __future__ import annotations

import asyncio
import uuid

__all__ = ["UNREACHABLE", "create_database", "drop_database"]


def _unreachable() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (OSError, asyncpg.PostgresError)


#: what ``create_database`` raises when the server cannot be used (the caller skips, or fails under CI)
UNREACHABLE = _unreachable()


async def _admin(server: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server.replace("postgresql://", "postgres://"), timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server: str) -> str:
    """A fresh database on the server that ``server`` (a database URL) names; its URL."""
    name = "cascadeflow_" + uuid.uuid4().hex[:10]
    asyncio.run(_admin(server, f"CREATE DATABASE {name}"))
    return server.rsplit("/", 1)[0] + "/" + name


def drop_database(server: str, url: str) -> None:
    """Drop a database :func:`create_database` made on ``server`` (connections to it are closed)."""
    asyncio.run(_admin(server, f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)"))
