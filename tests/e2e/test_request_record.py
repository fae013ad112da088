"""Issue 15, structure: every request ends in one ``RequestRecord``, and ``/stats``, ``/metrics`` and the
ledger are all derived from it, so after any mix of requests they agree exactly on counts and costs.

The mix drives every way a request can end through a real gateway with the official SDKs (and raw
HTTP to hang up early): pass-through JSON and stream, accepted and escalated drafts (JSON and
stream), a rule that skips drafting, a stream, a JSON call and a cascade whose clients left, an
upstream error and a stream the upstream cut,
a refusal by the key's limits and one for bad input. A path that counted in one place and not in
another (as ``/stats``' own counters once did) makes one of the comparisons below fail.
"""

from __future__ import annotations

import time
from collections import Counter

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cascadeflow import ProxyConfig
from tests.conftest import ledger_rows, sim_routes

OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
KEY, LIMITED, MASTER = "k-record-all", "k-record-rpm", "record-master-7d1f"
ADMIN = {"authorization": f"Bearer {MASTER}"}
SCRIPT = [
    {"match": {"model": HAIKU, "prompt_contains": "capital of France"}, "text": "Paris is the capital of France."},
    {"match": {"model": HAIKU, "prompt_contains": "say nothing"}, "text": ""},
    {"match": {"prompt_contains": "upstream breaks"}, "status": 500},
    {"match": {"prompt_contains": "slow answer"}, "latency": 5},
    {"match": {"prompt_contains": "held stream"}, "stall_after": 3, "stall_seconds": 30},
    {"match": {"prompt_contains": "cut stream"}, "cut_after": 3, "words": 40},
]


@pytest.fixture()
def setup(fresh_sim, start_gateway, tmp_path):
    fresh_sim.set_script(SCRIPT)
    url = f"sqlite:///{tmp_path / 'record.db'}"
    gw = start_gateway(ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim),
        "auth": {"mode": "api_key", "master_key": MASTER, "keys": [{"key": KEY}, {"key": LIMITED, "limits": {"rpm": 1}}]},
        "cascade_rules": [{"name": "opus", "request_model": OPUS, "draft_model": HAIKU},
                          {"name": "never", "request_model": "gpt-4o", "draft_model": "gpt-4o-mini",
                           "never_draft": True}],
        "database_url": url,
    }))
    return gw, url


def _metrics(url: str) -> list:
    text = httpx.get(url + "/metrics", headers=ADMIN).raise_for_status().text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _sum(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def _drive(gw) -> int:
    """Send the mix; how many requests were sent (each must leave exactly one record)."""
    claude = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)
    gpt = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)

    def ask(prompt: str, model: str = SONNET, client: anthropic.Anthropic = claude) -> str | None:
        """The request's cascade decision (None: passed through)."""
        raw = client.messages.with_raw_response.create(model=model, max_tokens=100,
                                                       messages=[{"role": "user", "content": prompt}])
        raw.parse()
        return raw.headers.get("x-cascadeflow-decision")

    ask("hello there")  # pass-through
    assert list(gpt.chat.completions.create(model="gpt-4o-mini", stream=True,  # pass-through stream
                                            messages=[{"role": "user", "content": "hi"}]))
    assert ask("What is the capital of France?", OPUS) == "accepted"
    assert ask("please say nothing", OPUS).startswith("escalated:")  # type: ignore[union-attr]
    with claude.messages.with_streaming_response.create(  # accepted draft, streamed
            model=OPUS, max_tokens=100, stream=True,
            messages=[{"role": "user", "content": "The capital of France?"}]) as stream:
        assert stream.headers["x-cascadeflow-decision"] == "accepted"
        list(stream.iter_bytes())
    gpt.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}])  # skipped
    with pytest.raises(anthropic.InternalServerError):
        ask("the upstream breaks now")  # relayed upstream error
    limited = anthropic.Anthropic(base_url=gw.url, api_key=LIMITED, max_retries=0)
    ask("first of the minute", client=limited)
    with pytest.raises(anthropic.RateLimitError):
        ask("second of the minute", client=limited)  # refused by the key's limits
    refused = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": KEY},  # refused as bad input: no model
                         json={"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]})
    assert refused.status_code == 400
    # a stream whose client leaves after its first events
    body = {"model": SONNET, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "held stream"}]}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=10) as reply:
        assert reply.status_code == 200
        next(reply.iter_bytes())
    # a stream the upstream cuts midway: relayed with an error event at its end
    body = {"model": SONNET, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "cut stream"}]}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=10) as reply:
        assert reply.status_code == 200 and b"event: error" in reply.read()
    # a JSON call and a cascade whose clients leave before their answers (the draft still being written)
    for model in (SONNET, OPUS):
        body = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "a slow answer please"}]}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": KEY},
                       timeout=httpx.Timeout(10, read=0.4))
    return 14


def test_stats_metrics_and_ledger_agree_on_every_kind_of_request(setup):
    gw, url = setup
    sent = _drive(gw)
    rows = ledger_rows(url, at_least=sent)
    deadline = time.monotonic() + 5  # the last two are recorded once the gateway sees their clients gone
    while len(rows) < sent and time.monotonic() < deadline:
        rows = ledger_rows(url, at_least=sent)
    assert len(rows) == sent, Counter(r["status"] for r in rows)
    statuses = Counter(r["status"] for r in rows)
    assert statuses == {200: 7, 500: 1, 429: 1, 400: 1, 502: 1, 499: 3}, statuses
    stats = httpx.get(gw.url + "/stats", headers=ADMIN).json()
    samples = _metrics(gw.url)

    # counts: every request once, the same in all three
    assert _sum(samples, "cascadeflow_requests_total") == sent
    for status, count in statuses.items():
        assert _sum(samples, "cascadeflow_requests_total", status=str(status)) == count, status
    assert stats["errors"] == {str(s): n for s, n in sorted(statuses.items()) if s >= 400}
    assert stats["ledger"]["requests"] == sent and stats["ledger"]["errors"] == sum(
        n for s, n in statuses.items() if s >= 400)
    cancelled = [r for r in rows if r["cancelled"]]
    assert len(cancelled) == 3 and stats["ledger"]["cancelled"] == 3
    assert stats["cancelled_streams"] == sum(r["stream"] for r in cancelled) == 1
    reached = [r for r in rows if r["route"] is not None or r["decision"]]
    assert stats["total_queries"] == len(reached) == sent - 2  # the refusals reached no upstream
    assert stats["streaming_queries"] == sum(r["stream"] for r in reached)
    assert stats["cascade_used_count"] == sum(bool(r["accepted"]) for r in rows) == stats["ledger"]["drafts_accepted"]

    # cost and tokens: the same figures, to the rounding of each report
    cost = sum(r["cost"] or 0.0 for r in rows)
    baseline = sum(r["baseline_cost"] if r["baseline_cost"] is not None else r["cost"] or 0.0 for r in rows)
    assert all(r["cost"] for r in reached if r["status"] in (200, 499))  # what was answered or cut is priced
    assert stats["total_cost"] == pytest.approx(cost, abs=1e-9)
    assert stats["ledger"]["cost"] == pytest.approx(cost, abs=1e-9)
    assert _sum(samples, "cascadeflow_cost_usd_total") == pytest.approx(cost, abs=1e-9)
    assert _sum(samples, "cascadeflow_baseline_cost_usd_total") == pytest.approx(baseline, abs=1e-9)
    assert stats["ledger"]["baseline_cost"] == pytest.approx(baseline, abs=1e-9)
    assert _sum(samples, "cascadeflow_unpriced_requests_total") == 0
    for kind in ("input", "output", "cache_write", "cache_read"):
        tokens = sum(r[f"{kind}_tokens"] for r in rows)
        assert stats["tokens"][f"{kind}_tokens"] == tokens == stats["ledger"][f"{kind}_tokens"], kind
        assert _sum(samples, "cascadeflow_tokens_total", kind=kind) == tokens, kind

    # each rule's decisions: /stats' per-rule totals are the records' decision fields, as the metrics count them
    for name in ("opus", "never"):
        decided = [r for r in rows if r["rule"] == name and r["decision"]]
        rule = stats["cascade"][name]
        assert rule["requests"] == len(decided) == _sum(samples, "cascadeflow_cascade_decisions_total", rule=name)
        assert rule["accepted"] == sum(bool(r["accepted"]) for r in decided) == _sum(
            samples, "cascadeflow_cascade_decisions_total", rule=name, decision="accepted")
        escalated = Counter(r["decision"].removeprefix("escalated:") for r in decided
                            if r["decision"].startswith("escalated:"))
        assert rule["escalated_by_reason"] == dict(escalated)
        assert rule["escalated"] == _sum(samples, "cascadeflow_cascade_decisions_total", rule=name, decision="escalated")
        skipped = Counter(r["decision"].removeprefix("skipped:") for r in decided if r["decision"].startswith("skipped:"))
        assert rule["skipped_by_policy"] == dict(skipped)
        assert rule["cancelled"] == sum(r["cancelled"] for r in decided)
        assert rule["cost"] == pytest.approx(sum(r["cost"] for r in decided), abs=1e-9)
        assert rule["cost"] == pytest.approx(_sum(samples, "cascadeflow_cost_usd_total", rule=name), abs=1e-9)
        assert rule["baseline_cost"] == pytest.approx(
            _sum(samples, "cascadeflow_baseline_cost_usd_total", rule=name), abs=1e-9)
        assert rule["baseline_cost"] == pytest.approx(stats["ledger"]["by_rule"][name]["baseline_cost"], abs=1e-9)
    opus = stats["cascade"]["opus"]
    assert opus["accepted"] == 2 and opus["escalated"] == 1 and opus["cancelled"] == 1
    assert opus["drafts_tried"] == 3  # the cancelled request's draft was never judged
    assert stats["cascade"]["never"]["skipped_by_policy"] == {"never_draft": 1}
