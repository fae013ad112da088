"""Throwaway PostgreSQL databases for the tests: ``cascadeflow_<10 hex digits>``, created and dropped (README)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["UNREACHABLE", "create_database", "drop_database", "throwaway_ledger"]


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


@contextlib.contextmanager
def throwaway_ledger(kind: str, sqlite_file: Path, server: str) -> Iterator[str]:
    """A ledger URL of ``kind``: SQLite at ``sqlite_file``, or a fresh PostgreSQL database on ``server``, dropped
    afterwards (the test skips, naming the fix, when the server is unreachable; under CI it fails)."""
    if kind == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        return
    import pytest

    from tests import needs

    try:
        database = create_database(server)
    except UNREACHABLE as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(needs.postgres(server, exc))
    try:
        yield database
    finally:
        drop_database(server, database)
