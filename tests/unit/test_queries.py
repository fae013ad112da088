"""The dashboard's overview against real databases: every figure equals the one computed here from the raw rows."""

from __future__ import annotations

import random
import time

import orjson
import pytest

from cascadeflow.store import Ledger, LedgerEntry
from cascadeflow.store.queries import bucket_seconds, overview, percentile
from tests.unit.test_ledger import pg_url  # noqa: F401  (fixture: a throwaway PostgreSQL database)

RULES = ("opus", "gpt")
DECISIONS = ("accepted", "escalated:structural:empty answer", "escalated:low_confidence", "skipped:forced_tool_choice")
#: draft stages passed over while another drafted (a multi-stage rule), as the gateway records them
STAGE_SKIPS = (None, "local-coder=capability:image", None, "local-coder=context_too_long,claude-sonnet-5-5=cache_economics")


def workload(now: float, n: int = 400, seed: int = 7) -> list[LedgerEntry]:
    """A mix of pass-throughs, accepted, escalated, skipped and failed requests from a few keys over 10 days."""
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        ts = now - rng.choice((rng.uniform(0, 3000), rng.uniform(0, 86000), rng.uniform(0, 10 * 86400)))
        who = dict(key_id=rng.choice(("k-alice", "k-bob", None)), user_id=rng.choice(("alice", "bob", None)),
                   team=rng.choice(("core", None)))
        if i % 5 == 0:
            entries.append(LedgerEntry(endpoint="/v1/chat/completions", dialect="openai", requested_model="gpt-4o-mini",
                                       plan="pass_through", stream=False, status=200, ts=ts, cost=0.0004, baseline_cost=0.0004,
                                       latency_ms=rng.uniform(5, 80), ttfb_ms=rng.uniform(2, 20), served_model="gpt-4o-mini",
                                       input_tokens=30, output_tokens=12, request_id=f"r{i}", **who))
        elif i % 17 == 0:
            entries.append(LedgerEntry(endpoint="/v1/messages", dialect="anthropic", requested_model="claude-opus-5-5",
                                       plan="cascade", stream=False, status=502, ts=ts, error_type="bad_gateway",
                                       latency_ms=3.0, request_id=f"r{i}", **who))
        else:
            decision = rng.choice(DECISIONS)
            accepted = decision == "accepted"
            entries.append(LedgerEntry(
                endpoint="/v1/messages", dialect="anthropic", requested_model=rng.choice(("claude-opus-5-5", "gpt-5.4")),
                plan="cascade", stream=i % 2 == 0, status=200, ts=ts, rule=rng.choice(RULES), decision=decision,
                accepted=None if decision.startswith("skipped") else accepted, confidence=rng.random(),
                served_model="claude-haiku-5-5" if accepted else "claude-opus-5-5", draft_model="claude-haiku-5-5",
                cost=rng.uniform(0.0001, 0.002) if accepted else rng.uniform(0.004, 0.01),
                baseline_cost=rng.uniform(0.003, 0.009), latency_ms=rng.uniform(50, 900),
                ttfb_ms=rng.uniform(20, 300) if i % 3 else None, input_tokens=100, output_tokens=40,
                cache_read_tokens=7, request_id=f"r{i}", skipped_stages=None if decision.startswith("skipped") else
                STAGE_SKIPS[i % len(STAGE_SKIPS)], **who))
    return entries


def expected(rows: list[dict], since: float | None) -> dict:
    """The overview, computed the slow way from the rows themselves."""
    rows = [r for r in rows if since is None or r["ts"] >= since]
    base = lambda r: r["baseline_cost"] if r["baseline_cost"] is not None else (r["cost"] or 0.0)  # noqa: E731
    cost = sum(r["cost"] or 0.0 for r in rows)
    baseline = sum(base(r) for r in rows)
    rules: dict[str, dict] = {}
    for r in (r for r in rows if r["rule"]):
        rule = rules.setdefault(r["rule"], {"requests": 0, "accepted": 0, "escalated": 0, "skipped": 0, "errors": 0,
                                            "cost": 0.0, "saving": 0.0, "escalations": {}, "skips": {},
                                            "skipped_stages": {}})
        rule["requests"] += 1
        rule["cost"] += r["cost"] or 0.0
        rule["saving"] += base(r) - (r["cost"] or 0.0)
        rule["accepted"] += r["accepted"] is True
        rule["errors"] += r["status"] >= 400
        kind, _, reason = (r["decision"] or "").partition(":")
        if kind in ("escalated", "skipped"):
            rule[kind] += 1
            reasons = rule["escalations" if kind == "escalated" else "skips"]
            reasons[reason] = reasons.get(reason, 0) + 1
        for item in (r["skipped_stages"] or "").split(",") if r["skipped_stages"] else []:
            model, why = item.split("=")
            stages = rule["skipped_stages"].setdefault(model, {})
            stages[why] = stages.get(why, 0) + 1
    spend = {}
    for name, column in (("key", "key_id"), ("user", "user_id"), ("team", "team"), ("model", "requested_model")):
        groups: dict = {}
        for r in rows:
            g = groups.setdefault(r[column], [0, 0.0, 0.0])
            g[0] += 1
            g[1] += r["cost"] or 0.0
            g[2] += base(r)
        spend[name] = groups
    answered = [r for r in rows if r["status"] < 400]
    latency = {}
    for name, column in (("latency", "latency_ms"), ("ttfb", "ttfb_ms")):
        values = sorted(r[column] for r in answered if r[column] is not None)
        latency[name] = {"count": len(values), **{k: percentile(values, q) for k, q in (("p50", .5), ("p90", .9), ("p99", .99))}}
    recent = [r["request_id"] for r in sorted(rows, key=lambda r: (r["ts"], r["id"]), reverse=True)[:50]]
    return {"requests": len(rows), "cost": cost, "baseline": baseline, "rules": rules, "spend": spend,
            "latency": latency, "recent": recent, "accepted": sum(r["accepted"] is True for r in rows),
            "errors": sum(r["status"] >= 400 for r in rows), "pass_through": sum(r["plan"] == "pass_through" for r in rows),
            "cascaded": sum(r["plan"] == "cascade" for r in rows), "cancelled": sum(r["cancelled"] for r in rows),
            "escalated": sum((r["decision"] or "").startswith("escalated:") for r in rows)}


async def check(url: str) -> None:
    now = time.time()
    ledger = await Ledger(url, retention_days=None).start()
    for entry in workload(now):
        ledger.record(entry)
    await ledger.aclose()  # everything written (flush() may race the background writer)
    ledger = await Ledger(url, retention_days=None).start()
    rows = await ledger.rows()
    assert len(rows) == 400
    try:
        for since in (now - 3600, now - 86400, now - 7 * 86400, None):
            got, want = await overview(ledger.engine, since=since), expected(rows, since)
            assert orjson.loads(orjson.dumps(got)) == got  # what the dashboard API sends, unchanged
            totals = got["totals"]
            assert totals["requests"] == want["requests"] > 0
            assert totals["cost"] == pytest.approx(want["cost"]) and totals["baseline_cost"] == pytest.approx(want["baseline"])
            assert totals["saving"] == pytest.approx(want["baseline"] - want["cost"])
            assert totals["saving_pct"] == pytest.approx(100 * (want["baseline"] - want["cost"]) / want["baseline"])
            assert (totals["accepted"], totals["errors"], totals["pass_through"]) == (want["accepted"], want["errors"], want["pass_through"])
            assert totals["cascaded"] + totals["pass_through"] == totals["requests"]
            summary = (await ledger.summary(since=since))["total"]
            assert summary["requests"] == totals["requests"] and summary["cost"] == pytest.approx(totals["cost"])
            assert summary["baseline_cost"] == pytest.approx(totals["baseline_cost"])

            assert {r["rule"] for r in got["rules"]} == set(want["rules"])
            for rule in got["rules"]:
                w = want["rules"][rule["rule"]]
                for field in ("requests", "accepted", "escalated", "skipped", "errors", "escalations", "skips",
                              "skipped_stages"):
                    assert rule[field] == w[field], (rule["rule"], field)
                assert rule["cost"] == pytest.approx(w["cost"]) and rule["saving"] == pytest.approx(w["saving"])
                drafted = w["accepted"] + w["escalated"]  # skipped requests drafted nothing
                assert rule["drafted"] == drafted
                assert rule["accepted_pct"] == pytest.approx(100 * w["accepted"] / drafted)
                assert rule["escalated_pct"] == pytest.approx(100 * w["escalated"] / drafted)
            assert totals["accepted_pct"] == pytest.approx(100 * want["accepted"] / totals["drafted"])
            assert totals["drafted"] < totals["cascaded"]  # the workload skips some drafts: the two differ

            for name, groups in want["spend"].items():
                assert {g["name"]: g["requests"] for g in got["spend"][name]} == {k: v[0] for k, v in groups.items()}
                for g in got["spend"][name]:
                    assert g["cost"] == pytest.approx(groups[g["name"]][1])
                costs = [g["cost"] for g in got["spend"][name]]
                assert costs == sorted(costs, reverse=True)

            for name, figures in want["latency"].items():
                for field, value in figures.items():
                    assert got["latency"][name][field] == pytest.approx(value), (name, field)

            assert [r["request_id"] for r in got["recent"]] == want["recent"]

            series = got["series"]
            step = got["range"]["bucket"]
            assert sum(b["requests"] for b in series) == totals["requests"]
            assert sum(b["cost"] for b in series) == pytest.approx(totals["cost"])
            assert sum(b["baseline_cost"] for b in series) == pytest.approx(totals["baseline_cost"])
            assert all(b["t"] % step == 0 for b in series) and [b["t"] for b in series] == sorted({b["t"] for b in series})
            assert all(b2["t"] - b1["t"] == step for b1, b2 in zip(series, series[1:], strict=False))  # no gaps
            assert len(series) <= 98
            for b in series:  # each bucket holds exactly the rows whose ts falls in it
                inside = [r for r in rows if b["t"] <= r["ts"] < b["t"] + step and (since is None or r["ts"] >= since)]
                assert b["requests"] == len(inside)
        empty = await overview(ledger.engine, since=now + 10)
        assert empty["totals"]["requests"] == 0 and empty["totals"]["saving_pct"] is None and empty["rules"] == []
        assert empty["latency"]["latency"]["p50"] is None and empty["recent"] == []
    finally:
        await ledger.aclose()


async def test_overview_on_sqlite(tmp_path):
    await check(f"sqlite:///{tmp_path / 'ledger.db'}")


async def test_overview_on_postgresql(pg_url):  # noqa: F811
    await check(pg_url[0])


async def test_sqlite_latency_beyond_the_sample_is_close(tmp_path, monkeypatch):
    """Past LATENCY_SAMPLE rows SQLite reads an even stride of them; the percentiles stay close."""
    from cascadeflow.store import queries

    monkeypatch.setattr(queries, "LATENCY_SAMPLE", 200)
    ledger = await Ledger(f"sqlite:///{tmp_path / 'big.db'}", retention_days=None).start()
    rng = random.Random(1)
    for i in range(3000):
        ledger.record(LedgerEntry(endpoint="/v1/messages", dialect="anthropic", requested_model="m", plan="pass_through",
                                  stream=False, status=200, latency_ms=rng.expovariate(1 / 100), ttfb_ms=None,
                                  request_id=str(i)))
    await ledger.aclose()
    ledger = await Ledger(f"sqlite:///{tmp_path / 'big.db'}", retention_days=None).start()
    latency = (await overview(ledger.engine))["latency"]["latency"]
    values = sorted(r["latency_ms"] for r in await ledger.rows())
    await ledger.aclose()
    assert latency["count"] == 3000 and latency["sampled"] == 200
    assert latency["p50"] == pytest.approx(percentile(values, 0.5), rel=0.15)
    assert latency["p90"] == pytest.approx(percentile(values, 0.9), rel=0.15)


def test_buckets_are_round_and_bounded():
    assert bucket_seconds(3600) == 60 and bucket_seconds(86400) == 900 and bucket_seconds(7 * 86400) == 7200
    for span in (1, 59, 3600, 86400, 30 * 86400, 400 * 86400):
        assert span / bucket_seconds(span) <= 96 or bucket_seconds(span) == 30 * 86400
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5 and percentile([5.0], 0.99) == 5.0 and percentile([], 0.5) is None
