"""The usage ledger: one row per request, written off the request path in batches.

SQLite (a file, WAL mode) needs no setup and is the default; a ``postgresql://`` URL
switches to PostgreSQL so several gateway processes share one ledger. Both go through
SQLAlchemy's async engine (aiosqlite / asyncpg). The schema is versioned: migrations
run at start, each once. Rows older than the retention period are deleted at start
and then hourly.

``record()`` only queues the entry; a background task writes up to ``batch_size`` rows
at a time, at least every ``flush_interval`` seconds, and ``aclose()`` writes what is
left, so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import Any

from sqlalchemy import String, Table, case, delete, func, insert, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .schema import MIGRATIONS, requests_table, schema_version, shadow_pairs_table

__all__ = ["RequestRecord", "LedgerEntry", "Ledger", "ShadowPair", "database_url", "GROUPABLE", "stage_skips"]

log = logging.getLogger("cascadeflow.ledger")

@dataclass(slots=True)
class RequestRecord:
    """The one event every request ends in, made once by the gateway (``Gateway.finish``): the ledger
    writes it as a row, and ``/stats``, ``/metrics``, the request log line and the trace span are all
    derived from it, so no figure is counted in two places (None where not known or not applicable).
    """

    endpoint: str
    dialect: str
    requested_model: str
    plan: str
    stream: bool
    status: int
    ts: float = field(default_factory=time.time)
    request_id: str | None = None
    key_id: str | None = None
    user_id: str | None = None
    team: str | None = None
    rule: str | None = None
    draft_model: str | None = None
    decision: str | None = None
    accepted: bool | None = None
    confidence: float | None = None
    served_model: str | None = None
    route: str | None = None
    fallback_model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cost: float | None = None
    baseline_cost: float | None = None
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    #: time spent waiting on upstreams (latency_ms minus this is the gateway's own overhead)
    upstream_ms: float | None = None
    error_type: str | None = None
    cancelled: bool = False
    detail: str | None = None
    #: this request's verdict on the conversation's last drafted and accepted turn, when it went badly
    #: (``tool_error``, ``tool_loop``, ``correction``), and that turn's request id: a draft judged by what followed
    session_signal: str | None = None
    signal_request_id: str | None = None
    #: the response cache: ``hit`` (answered from it, priced 0), ``miss``, ``bypass``; None: it did not apply
    cache: str | None = None
    #: the draft stages passed over while another stage drafted, ``model=why,…`` (:func:`stage_skips` reads it)
    skipped_stages: str | None = None
    #: drafts judged (one per cascade stage tried) and the time spent on drafts that were escalated (ms):
    #: for ``/stats``' per-rule figures; not ledger columns
    drafts: int = 0
    draft_ms: float = 0.0
    #: (model, failed) of each draft stage tried, in order: each stage's failure rate (not a ledger column)
    stages_tried: tuple[tuple[str, bool], ...] = ()


def stage_skips(text: str | None) -> list[tuple[str, str]]:
    """(stage model, why) of each stage named in a record's ``skipped_stages`` (``model=why,…``).

    Why is one of a fixed set (``context_too_long``, ``capability:<what>``, ``cache_economics``) and holds
    no ``=``; a model name comes from the config, so it is split at the last ``=``.
    """
    if not text:
        return []
    pairs = []
    for item in text.split(","):
        model, _, why = item.rpartition("=")
        if model:
            pairs.append((model, why))
    return pairs


#: the record under the name the ledger has always given it
LedgerEntry = RequestRecord


@dataclass(slots=True)
class ShadowPair:
    """Shadow mode: a judged draft and the verifier's answer to the same request, and whether the draft held up."""

    request_id: str
    rule: str
    draft_model: str
    verifier_model: str
    confidence: float | None
    accepted: bool
    draft_answer: str
    verifier_answer: str
    label: bool | None = None
    method: str | None = None
    draft_cost: float | None = None
    verifier_cost: float | None = None
    shadow_cost: float = 0.0
    ts: float = field(default_factory=time.time)


_Entry = LedgerEntry | ShadowPair


@dataclass(frozen=True, slots=True)
class _Insert:
    """One table's INSERT, compiled once for the engine's dialect and fed rows as tuples in its parameter order.

    ``conn.execute(insert(table), dicts)`` cost ~55-70 µs of CPU a row, half of it SQLAlchemy's
    per-row parameter processing; the driver takes these tuples as they are (~25-37 µs a row,
    ``benchmarks/ledger_writes.py``). Each row still gets what that processing gave it, the dialect's
    bind processors (SQLite's float and boolean conversions), and text is fitted to its column.
    """

    sql: str
    values: Callable[[_Entry], tuple]
    #: (position, column length or None) of each text column
    texts: tuple[tuple[int, int | None], ...]
    #: (position, processor) of each column the dialect converts
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    #: the bind names, where the driver's paramstyle is named rather than positional
    names: tuple[str, ...] | None

    @classmethod
    def compile(cls, table: Table, kind: type, dialect: Dialect) -> _Insert:
        """The INSERT of ``kind``'s fields that are columns of ``table``; refuses one that would need more."""
        fields_ = [f.name for f in fields(kind) if f.name in table.c]
        # executemany: no ``RETURNING id`` (PostgreSQL's single-row INSERT would add it)
        compiled = insert(table).compile(dialect=dialect, column_keys=fields_, for_executemany=True)
        order = list(compiled.positiontup or compiled.binds)
        if sorted(order) != sorted(fields_) or compiled.effective_returning:  # a Python-side default, RETURNING
            raise RuntimeError(f"the {table.name} INSERT needs more than the entry's fields: {compiled}")
        processors = []
        for position, name in enumerate(order):
            column_type = compiled.binds[name].type
            process = column_type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors.append((position, process))
        texts = tuple((position, getattr(table.c[name].type, "length", None)) for position, name in enumerate(order)
                      if isinstance(table.c[name].type, String))
        return cls(str(compiled), attrgetter(*order), texts, tuple(processors),
                   None if compiled.positiontup else tuple(order))

    def row(self, entry: _Entry) -> tuple:
        """The entry's values in parameter order, fitted and converted.

        Text is fitted to its column: cut to the column's length, NUL removed (PostgreSQL refuses
        it) and lone surrogates replaced (no database can store them), so one odd request cannot
        fail the batch of rows written with it.
        """
        values = list(self.values(entry))
        for position, length in self.texts:
            value = values[position]
            if isinstance(value, str) and ((length is not None and len(value) > length) or not value.isprintable()):
                values[position] = _fit(value, length)
        for position, process in self.processors:
            values[position] = process(values[position])
        return tuple(values)

    async def write(self, conn: AsyncConnection, entries: Sequence[_Entry]) -> None:
        rows: list[Any] = [self.row(entry) for entry in entries]
        if self.names is not None:
            rows = [dict(zip(self.names, row, strict=True)) for row in rows]
        await conn.exec_driver_sql(self.sql, rows)


def _fit(value: str, length: int | None) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")  # one U+FFFD each
    return value if length is None else value[:length]


#: what ``summary(by=…)`` can group on
GROUPABLE = {
    "model": requests_table.c.requested_model,
    "served": requests_table.c.served_model,
    "rule": requests_table.c.rule,
    "user": requests_table.c.user_id,
    "key": requests_table.c.key_id,
    "team": requests_table.c.team,
    "route": requests_table.c.route,
}


def _figures(row) -> dict:  # type: ignore[no-untyped-def]
    figures = {k: (row[k] or 0) for k in row.keys() if k not in ("key", "first", "last")}
    figures["saving"] = figures["baseline_cost"] - figures["cost"]
    figures["first"], figures["last"] = row["first"], row["last"]
    return figures


def database_url(url: str) -> str:
    """The SQLAlchemy async URL for a plain one (``postgresql://`` → asyncpg, ``sqlite://`` → aiosqlite)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


@contextlib.contextmanager
def _sqlite_file_lock(path: str | None) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite file while migrating, so processes migrate one at a time."""
    if not path or path == ":memory:":
        yield
        return
    with open(f"{path}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks only while another process migrates (at start)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Ledger:
    """Queue entries with :meth:`record`; they reach the database in batches."""

    def __init__(
        self, url: str, *, batch_size: int = 200, flush_interval: float = 0.5, retention_days: float | None = 90,
        max_queued: int = 100_000,
    ) -> None:
        self.url = database_url(url)
        #: rows that may wait for a database that has stopped answering; beyond that they are dropped
        #: (counted in ``dropped``), so a hung database cannot grow the process without bound
        self.max_queued = max_queued
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retention_days = retention_days
        self.engine: AsyncEngine | None = None
        self._inserts: dict[type, _Insert] = {}  # per kind of entry, compiled at start
        self._queue: asyncio.Queue[LedgerEntry | ShadowPair] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._ready = asyncio.Event()  # something was queued
        self._closing = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.written = 0
        self.dropped = 0
        self._warned_full = 0.0

    async def start(self) -> Ledger:
        """Connect, migrate, apply retention, and start the background writer."""
        is_sqlite = self.url.startswith("sqlite")
        self.engine = create_async_engine(self.url, pool_pre_ping=not is_sqlite)
        if is_sqlite and self.engine.url.database not in (None, "", ":memory:"):
            Path(self.engine.url.database).parent.mkdir(parents=True, exist_ok=True)  # the per-user data directory
        with _sqlite_file_lock(self.engine.url.database if is_sqlite else None):  # workers starting together
            async with self.engine.begin() as conn:
                if is_sqlite:
                    await conn.execute(text("PRAGMA journal_mode=WAL"))
                await self._migrate(conn)
        self._inserts = {kind: _Insert.compile(table, kind, self.engine.dialect)
                         for kind, table in ((LedgerEntry, requests_table), (ShadowPair, shadow_pairs_table))}
        await self.prune()
        self._writer = asyncio.create_task(self._write_forever(), name="cascadeflow-ledger")
        return self

    def record(self, entry: LedgerEntry | ShadowPair) -> None:
        """Queue one entry, or one shadow pair (never blocks the request; dropped when the queue is full)."""
        if self._queue.qsize() >= self.max_queued:
            self.dropped += 1
            now = time.monotonic()
            if now - self._warned_full > 10:  # one line per 10 s, however many are dropped
                self._warned_full = now
                log.error("the ledger is %d rows behind (the database is not keeping up); rows are being dropped",
                          self.max_queued)
            return
        self._queue.put_nowait(entry)
        self._ready.set()

    async def flush(self) -> None:
        """Write everything queued so far (waiting for a batch the writer has in hand)."""
        async with self._write_lock:
            while not self._queue.empty():
                await self._write_batch()

    async def aclose(self) -> None:
        """Stop the writer and write what is left (a graceful shutdown loses nothing)."""
        self._closing.set()
        self._ready.set()
        if self._writer is not None:
            await self._writer
        if self.engine is not None:
            await self.flush()
            await self.engine.dispose()

    async def prune(self) -> int:
        """Delete rows older than the retention period; the number deleted."""
        if not self.retention_days or self.engine is None:
            return 0
        cutoff = time.time() - self.retention_days * 86400
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(requests_table).where(requests_table.c.ts < cutoff))
        return result.rowcount or 0

    async def rows(self, since: float | None = None) -> list[dict]:
        """Ledger rows (oldest first), optionally since a timestamp."""
        assert self.engine is not None
        query = select(requests_table).order_by(requests_table.c.id)
        if since is not None:
            query = query.where(requests_table.c.ts >= since)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def summary(self, since: float | None = None, by: str | None = None) -> dict:
        """Totals since ``since`` (epoch seconds), and per value of column ``by`` when given."""
        assert self.engine is not None
        c = requests_table.c
        measures = [
            func.count().label("requests"),
            func.sum(func.coalesce(c.cost, 0.0)).label("cost"),
            func.sum(func.coalesce(c.baseline_cost, c.cost, 0.0)).label("baseline_cost"),
            func.sum(case((c.plan == "cascade", 1), else_=0)).label("cascaded"),
            func.sum(case((c.accepted.is_(True), 1), else_=0)).label("drafts_accepted"),
            func.sum(case((c.status >= 400, 1), else_=0)).label("errors"),
            func.sum(case((c.cancelled.is_(True), 1), else_=0)).label("cancelled"),
            func.sum(case((c.cache == "hit", 1), else_=0)).label("cache_hits"),
            func.sum(c.input_tokens).label("input_tokens"),
            func.sum(c.output_tokens).label("output_tokens"),
            func.sum(c.cache_write_tokens).label("cache_write_tokens"),
            func.sum(c.cache_read_tokens).label("cache_read_tokens"),
            func.min(c.ts).label("first"),
            func.max(c.ts).label("last"),
        ]
        where = [c.ts >= since] if since is not None else []
        async with self.engine.connect() as conn:
            total = _figures((await conn.execute(select(*measures).where(*where))).one()._mapping)
            result = {"total": total}
            if by is not None:
                column = GROUPABLE[by]
                query = select(column.label("key"), *measures).where(*where).group_by(column).order_by(column)
                result["by"] = {
                    "(none)" if row.key is None else str(row.key): _figures(row._mapping)
                    for row in await conn.execute(query)
                }
        return result

    async def spent_since(self, scope: str, since: float) -> float:
        """USD recorded since ``since`` for a limits scope (``key:<id>``, ``user:<id>``, ``team:<name>``, ``total``)."""
        assert self.engine is not None
        c = requests_table.c
        kind, _, value = scope.partition(":")
        where = [c.ts >= since]
        if kind != "total":
            where.append({"key": c.key_id, "user": c.user_id, "team": c.team}[kind] == value)
        async with self.engine.connect() as conn:
            spent = (await conn.execute(select(func.sum(func.coalesce(c.cost, 0.0))).where(*where))).scalar_one()
        return float(spent or 0.0)

    async def shadow_pairs(self, rule: str | None = None, since: float | None = None) -> list[dict]:
        """Shadow mode's pairs (oldest first), of one rule and since a timestamp when given."""
        assert self.engine is not None
        c = shadow_pairs_table.c
        query = select(shadow_pairs_table).order_by(c.id)
        if rule is not None:
            query = query.where(c.rule == rule)
        if since is not None:
            query = query.where(c.ts >= since)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def count(self) -> int:
        assert self.engine is not None
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(requests_table))).scalar_one()

    async def _migrate(self, conn: AsyncConnection) -> None:
        if conn.dialect.name == "postgresql":  # processes starting together migrate one at a time
            await conn.execute(text("SELECT pg_advisory_xact_lock(7263021)"))
        await conn.run_sync(lambda sync: schema_version.metadata.create_all(sync, tables=[schema_version]))
        done = {row[0] for row in await conn.execute(select(schema_version.c.version))}
        for version, migration in MIGRATIONS:
            if version not in done:
                await migration(conn)
                await conn.execute(insert(schema_version).values(version=version))
                log.info("ledger schema migrated to version %d", version)

    async def _write_forever(self) -> None:
        """Entries stay queued until written, so stopping at any point loses none."""
        last_prune = time.monotonic()
        while not self._closing.is_set():
            await self._ready.wait()
            self._ready.clear()
            if self._queue.qsize() < self.batch_size:  # gather a batch, unless closing
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.flush_interval)
            await self.flush()
            if time.monotonic() - last_prune > 3600:
                last_prune = time.monotonic()
                await self.prune()

    async def _write_batch(self) -> None:
        batch: list[LedgerEntry | ShadowPair] = []
        while len(batch) < self.batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if not batch or self.engine is None:
            return
        entries = [entry for entry in batch if isinstance(entry, LedgerEntry)]
        pairs = [pair for pair in batch if isinstance(pair, ShadowPair)]
        try:  # rows are made in here too: a value the dialect refuses fails its batch, not the writer
            async with self.engine.begin() as conn:
                if entries:
                    await self._inserts[LedgerEntry].write(conn, entries)
                if pairs:
                    await self._inserts[ShadowPair].write(conn, pairs)
            self.written += len(batch)
        except Exception:  # the database is down: say so, keep serving requests
            self.dropped += len(batch)
            log.exception("could not write %d ledger rows", len(batch))
