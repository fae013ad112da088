"""The ledger's overview, as the dashboard and ``cascadeflow stats`` show it.

Everything is aggregated in SQL (one pass per section, time bucketed as
``floor(ts / bucket)``), so a ledger of millions of rows answers in a few scans
of the ``ts`` index range, on SQLite and PostgreSQL alike. Latency percentiles
come from ``percentile_cont`` on PostgreSQL (exact); SQLite has no such function,
so they are computed here from at most :data:`LATENCY_SAMPLE` values (exact up to
that many rows, an even stride of rows by id beyond it).

Definitions, shared by both views: *baseline* is what the request would have cost
sent straight to the requested model (a pass-through's baseline is its cost);
*saving* is baseline minus cost; *drafted* counts the requests whose draft was judged
(accepted or escalated; a skipped request drafted nothing), and *accepted %* and
*escalated %* are over those, so they add up to 100; *skipped stages* counts, per rule, stage
model and reason, the draft stages passed over while another stage drafted (a request that skipped
drafting altogether is under *skips*, by its reason); latency counts answered requests (status below 400).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Integer, case, cast, func, select

from ..telemetry import stage_skip_counts
from .ledger import stage_skips
from .schema import requests_table, shadow_pairs_table

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["RANGES", "LATENCY_SAMPLE", "bucket_seconds", "overview", "percentile", "shadow_quality", "wilson"]

#: the time ranges the dashboard offers (seconds back from now; None: the whole ledger)
RANGES: dict[str, float | None] = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "all": None}

#: SQLite: latency percentiles are computed from at most this many rows
LATENCY_SAMPLE = 20_000

_STEPS = (60, 300, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400)
_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
_SPEND = {"key": "key_id", "user": "user_id", "team": "team", "model": "requested_model"}
_RECENT = ("ts", "request_id", "requested_model", "plan", "rule", "decision", "accepted", "confidence", "draft_model",
           "served_model", "cost", "baseline_cost", "latency_ms", "status", "key_id", "user_id", "stream")

c = requests_table.c
_COST = func.sum(func.coalesce(c.cost, 0.0))
_BASELINE = func.sum(func.coalesce(c.baseline_cost, c.cost, 0.0))


def bucket_seconds(span: float, target: int = 96) -> int:
    """A round bucket width giving at most ``target`` buckets over ``span`` seconds."""
    return next((step for step in _STEPS if span / step <= target), _STEPS[-1])


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks of sorted ``values`` (PostgreSQL's ``percentile_cont``)."""
    if not values:
        return None
    position = q * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def _money(figures: dict) -> dict:
    figures["saving"] = figures["baseline_cost"] - figures["cost"]
    figures["saving_pct"] = 100 * figures["saving"] / figures["baseline_cost"] if figures["baseline_cost"] else None
    return figures


def _pct(part: int, whole: int) -> float | None:
    return 100 * part / whole if whole else None


async def overview(engine: AsyncEngine, *, since: float | None = None, until: float | None = None,
                   recent: int = 50, top: int = 20, buckets: int = 96) -> dict:
    """Totals, saving over time, per-rule decisions, spend, latency and the latest decisions since ``since``."""
    now = time.time()
    async with engine.connect() as conn:
        where = await _range_filter(conn, since, until)
        start = since if since is not None else (await conn.execute(select(func.min(c.ts)).where(*where))).scalar()
        end = until if until is not None else now
        start = end if start is None else min(start, end)
        step = bucket_seconds(max(end - start, 1), buckets)
        totals, rules = await _decisions(conn, where)
        return {
            "range": {"since": since, "until": until, "start": start, "end": end, "bucket": step, "generated_at": now},
            "totals": totals,
            "series": await _series(conn, where, start, end, step),
            "rules": rules,
            "spend": {name: await _spend(conn, where, column, top) for name, column in _SPEND.items()},
            "latency": await _latency(conn, where),
            "recent": await _recent(conn, where, recent),
            "shadow": await _shadow(conn, since, until),
        }


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None without observations."""
    if n <= 0:
        return None
    p = successes / n
    centre, spread = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n)), min(1.0, (centre + spread) / (1 + z * z / n))


async def shadow_quality(engine: AsyncEngine, since: float | None = None) -> dict[str, dict]:
    """Per rule, the quality shadow mode measured on live traffic (see :func:`_shadow`)."""
    async with engine.connect() as conn:
        return await _shadow(conn, since, None)


async def _shadow(conn: AsyncConnection, since: float | None, until: float | None) -> dict[str, dict]:
    """Per rule: pairs, labelled pairs, accepted drafts found wrong, the quality retained and its 95% interval.

    Pairs are a uniform sample of the rule's judged drafts, accepted or escalated, so the share of
    labelled pairs whose accepted draft was wrong estimates the share of judged requests answered
    worse than the verifier would have: quality retained = 1 − that share (Wilson interval).
    """
    s = shadow_pairs_table.c
    where = [s.ts >= since] if since is not None else []
    if until is not None:
        where.append(s.ts < until)
    query = select(
        s.rule, func.count().label("pairs"), func.sum(case((s.label.is_not(None), 1), else_=0)).label("labelled"),
        func.sum(case(((s.accepted.is_(True)) & (s.label.is_(False)), 1), else_=0)).label("wrong"),
        func.sum(case((s.accepted.is_(True), 1), else_=0)).label("accepted"),
        func.sum(s.shadow_cost).label("shadow_cost"),
    ).where(*where).group_by(s.rule).order_by(s.rule)
    out: dict[str, dict] = {}
    for row in await conn.execute(query):
        labelled, wrong = int(row.labelled or 0), int(row.wrong or 0)
        interval = wilson(wrong, labelled)
        out[str(row.rule)] = {
            "pairs": int(row.pairs), "labelled": labelled, "accepted": int(row.accepted or 0), "accepted_wrong": wrong,
            "quality_retained": 1 - wrong / labelled if labelled else None,
            "quality_retained_ci": [1 - interval[1], 1 - interval[0]] if interval else None,
            "shadow_cost": float(row.shadow_cost or 0.0),
        }
    return out


async def _range_filter(conn: AsyncConnection, since: float | None, until: float | None) -> list:
    """``since <= ts <= until``, written so that SQLite scans the table when the range holds most of it.

    SQLite walks the ``ts`` index for any range, a table lookup per row: for most of a
    large table that is several times slower than a plain scan. Past a quarter of the
    rows (counted on the index alone), ``ts + 0`` keeps it off the index. PostgreSQL's
    planner makes that choice itself.
    """
    ts: ColumnElement[Any] = c.ts
    if since is not None and conn.dialect.name == "sqlite":
        inside = (await conn.execute(select(func.count()).where(c.ts >= since))).scalar() or 0
        low, high = (await conn.execute(select(func.min(c.id), func.max(c.id)))).one()
        if high is not None and inside > 0.25 * (high - low + 1):
            ts = c.ts + 0
    return ([ts >= since] if since is not None else []) + ([ts <= until] if until is not None else [])


async def _decisions(conn: AsyncConnection, where: list) -> tuple[dict, list[dict]]:
    """One pass grouped by plan, rule and decision; the totals and the per-rule table both derive from it."""
    query = select(
        c.plan, c.rule, c.decision, c.skipped_stages, func.count().label("requests"), _COST.label("cost"),
        _BASELINE.label("baseline_cost"),
        func.sum(case((c.accepted.is_(True), 1), else_=0)).label("accepted"),
        func.sum(case((c.status >= 400, 1), else_=0)).label("errors"),
        func.sum(case((c.cancelled.is_(True), 1), else_=0)).label("cancelled"),
        func.sum(c.input_tokens + c.cache_write_tokens + c.cache_read_tokens).label("input_tokens"),
        func.sum(c.output_tokens).label("output_tokens"),
    ).where(*where).group_by(c.plan, c.rule, c.decision, c.skipped_stages)
    fields = ("requests", "cost", "baseline_cost", "accepted", "errors", "cancelled", "input_tokens", "output_tokens")
    totals = dict.fromkeys(fields, 0) | {"cascaded": 0, "pass_through": 0, "escalated": 0, "skipped": 0}
    rules: dict[str, dict] = {}
    stage_skips_by_rule: dict[str, Counter] = {}
    for row in await conn.execute(query):
        m = row._mapping
        decision = m["decision"] or ""
        kind = decision.split(":", 1)[0] if decision.startswith(("escalated:", "skipped:")) else None
        for target in [totals] + ([_rule(rules, m["rule"])] if m["rule"] is not None else []):
            for name in fields:
                target[name] += m[name] or 0
            if kind:
                target[kind] += m["requests"]
        totals["cascaded" if m["plan"] == "cascade" else "pass_through"] += m["requests"]
        if kind:
            reasons = rules[m["rule"]]["escalations" if kind == "escalated" else "skips"] if m["rule"] is not None else {}
            reason = decision.split(":", 1)[1]
            reasons[reason] = reasons.get(reason, 0) + m["requests"]
        if m["skipped_stages"] and m["rule"] is not None:
            counts = stage_skips_by_rule.setdefault(m["rule"], Counter())
            for pair in stage_skips(m["skipped_stages"]):
                counts[pair] += m["requests"]
    for figures in [totals, *rules.values()]:
        _money(figures)
        figures["drafted"] = figures["accepted"] + figures["escalated"]
        figures["accepted_pct"] = _pct(figures["accepted"], figures["drafted"])
        figures["escalated_pct"] = _pct(figures["escalated"], figures["drafted"])
    for name, figures in rules.items():
        for part in ("escalations", "skips"):
            figures[part] = dict(sorted(figures[part].items(), key=lambda item: (-item[1], item[0])))
        figures["skipped_stages"] = stage_skip_counts(stage_skips_by_rule.get(name, Counter()))
    return totals, sorted(rules.values(), key=lambda r: (-r["requests"], r["rule"]))


def _rule(rules: dict[str, dict], name: str) -> dict:
    if name not in rules:
        rules[name] = {"rule": name, "requests": 0, "cost": 0.0, "baseline_cost": 0.0, "accepted": 0, "escalated": 0,
                       "skipped": 0, "errors": 0, "cancelled": 0, "input_tokens": 0, "output_tokens": 0,
                       "escalations": {}, "skips": {}}
    return rules[name]


async def _series(conn: AsyncConnection, where: list, start: float, end: float, step: int) -> list[dict]:
    """Cost and baseline per time bucket, every bucket of the range present (empty ones as zeros)."""
    index = func.floor(c.ts / step) if conn.dialect.name == "postgresql" else cast(c.ts / step, Integer)
    query = (select(index.label("bucket"), func.count().label("requests"), _COST.label("cost"),
                    _BASELINE.label("baseline_cost")).where(*where).group_by(index))
    found = {int(row.bucket): row for row in await conn.execute(query)}
    first, last = math.floor(start / step), math.floor(end / step)
    for bucket in found:  # rows outside [start, end] (only possible with clock skew) widen the range
        first, last = min(first, bucket), max(last, bucket)
    series = []
    for bucket in range(first, last + 1):
        row = found.get(bucket)
        series.append({"t": bucket * step, "requests": row.requests if row else 0,
                       "cost": (row.cost or 0.0) if row else 0.0, "baseline_cost": (row.baseline_cost or 0.0) if row else 0.0})
    return series


async def _spend(conn: AsyncConnection, where: list, column: str, top: int) -> list[dict]:
    col = c[column]
    query = (select(col.label("name"), func.count().label("requests"), _COST.label("cost"), _BASELINE.label("baseline_cost"))
             .where(*where).group_by(col).order_by(_COST.desc(), func.count().desc()).limit(top))
    return [_money({"name": row.name, "requests": row.requests, "cost": row.cost or 0.0,
                    "baseline_cost": row.baseline_cost or 0.0}) for row in await conn.execute(query)]


async def _latency(conn: AsyncConnection, where: list) -> dict:
    """p50/p90/p99 of total latency and time to first byte, over answered requests."""
    answered = [*where, c.status < 400]
    columns = {"latency": c.latency_ms, "ttfb": c.ttfb_ms}
    if conn.dialect.name == "postgresql":
        measures = [func.count(col).label(f"{name}_count") for name, col in columns.items()]
        measures += [func.percentile_cont(q).within_group(col).label(f"{name}_{label}")
                     for name, col in columns.items() for label, q in _QUANTILES]
        row = (await conn.execute(select(*measures).where(*answered))).one()._mapping
        return {name: {"count": row[f"{name}_count"], "sampled": row[f"{name}_count"],
                       **{label: row[f"{name}_{label}"] for label, _ in _QUANTILES}} for name in columns}
    counts = (await conn.execute(select(*(func.count(col) for col in columns.values())).where(*answered))).one()
    stride = max(1, math.ceil(max(counts) / LATENCY_SAMPLE))
    sample = [*answered, c.id % stride == 0] if stride > 1 else answered
    rows = (await conn.execute(select(*columns.values()).where(*sample))).all()
    result = {}
    for i, name in enumerate(columns):
        values = sorted(row[i] for row in rows if row[i] is not None)
        result[name] = {"count": counts[i], "sampled": len(values), **{label: percentile(values, q) for label, q in _QUANTILES}}
    return result


async def _recent(conn: AsyncConnection, where: list, limit: int) -> list[dict]:
    query = select(*(c[name] for name in _RECENT)).where(*where).order_by(c.ts.desc(), c.id.desc()).limit(limit)
    return [dict(zip(_RECENT, row, strict=True)) for row in await conn.execute(query)]  # plain str keys, for orjson
