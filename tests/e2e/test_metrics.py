"""GET /metrics end to end: the official SDKs send requests of every kind through a real
gateway, and the Prometheus text (parsed with prometheus_client's own parser) must move
by exactly what happened; with two worker processes, any worker's scrape counts all.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cascadeflow import ProxyConfig
from cascadeflow.gateway.metrics import mark_dead_workers
from tests.conftest import launch_gateway_process, sim_routes, stop_gateway_process

OPUS, SONNET, HAIKU, MINI = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "gpt-5.4-mini"

SCRIPT = [
    {"match": {"model": HAIKU, "prompt_contains": "capital of France"}, "text": "Paris is the capital of France."},
    {"match": {"model": HAIKU, "prompt_contains": "say nothing"}, "text": ""},
    {"match": {"prompt_contains": "upstream breaks"}, "status": 500},
    {"match": {"prompt_contains": "upstream busy"}, "status": 429},
    {"match": {"prompt_contains": "flaky once"}, "times": 1, "status": 529},
    {"match": {"prompt_contains": "very slow"}, "first_byte_delay": 2.0},
    {"match": {"prompt_contains": "slow stream"}, "chunk_delay": 0.05, "words": 20},
    {"match": {"prompt_contains": "held stream"}, "stall_after": 3, "stall_seconds": 30},  # until its client leaves
    {"match": {"model": "made-up-*"}, "status": 404, "error_type": "not_found_error"},
]


class Scrape:
    """One /metrics scrape, parsed."""

    def __init__(self, url: str, master_key: str | None = None) -> None:
        headers = {"authorization": f"Bearer {master_key}"} if master_key else {}
        text = httpx.get(url + "/metrics", headers=headers).raise_for_status().text
        self.samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items())


@pytest.fixture(scope="module")
def metrics_gw(sim, start_gateway):
    routes = sim_routes(sim)
    routes[0] = {**routes[0], "retry": {"attempts": 2, "backoff": 0.01}, "first_byte_timeout": 0.5}
    config = ProxyConfig.from_dict({
        "routes": routes,
        "server": {"max_concurrent_streams": 1},
        "cascade_rules": [{"name": "opus", "request_model": "claude-opus-*", "draft_model": HAIKU}],
    })
    return start_gateway(config)


@pytest.fixture()
def gw(metrics_gw, fresh_sim):
    fresh_sim.set_script(SCRIPT)
    return metrics_gw


def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)


def ask(gw, prompt: str, model: str = SONNET, **extra):
    raw = claude(gw).messages.with_raw_response.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": prompt}], **extra)
    return raw.parse(), raw.headers


def test_pass_through_counts_request_tokens_cost_and_latency(gw):
    before = Scrape(gw.url)
    message, headers = ask(gw, "hello there")
    after = Scrape(gw.url)
    labels = {"endpoint": "/v1/messages", "dialect": "anthropic", "plan": "pass_through", "route": "anthropic",
              "model": SONNET, "served_model": SONNET, "status": "200"}
    assert after.value("cascadeflow_requests_total", **labels) - before.value("cascadeflow_requests_total", **labels) == 1
    for kind, count in (("input", message.usage.input_tokens), ("output", message.usage.output_tokens)):
        delta = after.value("cascadeflow_tokens_total", model=SONNET, kind=kind) - before.value(
            "cascadeflow_tokens_total", model=SONNET, kind=kind)
        assert delta == count > 0
    cost = float(headers["x-cascadeflow-cost-usd"])
    assert after.value("cascadeflow_cost_usd_total", model=SONNET, rule="") - before.value(
        "cascadeflow_cost_usd_total", model=SONNET, rule="") == pytest.approx(cost, rel=1e-6)
    # a pass-through costs its own baseline: no saving
    assert after.value("cascadeflow_saving_usd_total", model=SONNET) == before.value("cascadeflow_saving_usd_total", model=SONNET)
    for histogram in ("cascadeflow_request_duration_seconds_count", "cascadeflow_time_to_first_byte_seconds_count"):
        assert after.value(histogram, model=SONNET, plan="pass_through", stream="false") - before.value(
            histogram, model=SONNET, plan="pass_through", stream="false") == 1
    overhead = "cascadeflow_gateway_overhead_seconds"
    assert after.value(overhead + "_count", plan="pass_through") - before.value(overhead + "_count", plan="pass_through") == 1
    added = after.value(overhead + "_sum", plan="pass_through") - before.value(overhead + "_sum", plan="pass_through")
    total = after.value("cascadeflow_request_duration_seconds_sum", model=SONNET) - before.value(
        "cascadeflow_request_duration_seconds_sum", model=SONNET)
    assert 0 <= added < total  # the gateway's share is part of the whole


def test_openai_stream_is_counted_when_it_ends(gw):
    before = Scrape(gw.url)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="caller", max_retries=0)
    chunks = list(client.chat.completions.create(model=MINI, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert chunks
    after = Scrape(gw.url)
    labels = {"endpoint": "/v1/chat/completions", "dialect": "openai", "route": "openai", "model": MINI, "status": "200"}
    assert after.value("cascadeflow_requests_total", **labels) - before.value("cascadeflow_requests_total", **labels) == 1
    assert after.value("cascadeflow_request_duration_seconds_count", model=MINI, stream="true") - before.value(
        "cascadeflow_request_duration_seconds_count", model=MINI, stream="true") == 1
    assert after.value("cascadeflow_active_streams") == 0
    assert after.value("cascadeflow_requests_in_flight") == 0


def test_accepted_draft_counts_decision_confidence_and_saving(gw):
    before = Scrape(gw.url)
    _, headers = ask(gw, "What is the capital of France?", model=OPUS)
    after = Scrape(gw.url)
    assert headers["x-cascadeflow-draft-accepted"] == "true"
    decision = {"rule": "opus", "decision": "accepted", "reason": ""}
    assert after.value("cascadeflow_cascade_decisions_total", **decision) - before.value(
        "cascadeflow_cascade_decisions_total", **decision) == 1
    assert after.value("cascadeflow_draft_confidence_count", rule="opus") - before.value(
        "cascadeflow_draft_confidence_count", rule="opus") == 1
    labels = {"plan": "cascade", "model": OPUS, "served_model": HAIKU, "status": "200"}
    assert after.value("cascadeflow_requests_total", **labels) - before.value("cascadeflow_requests_total", **labels) == 1
    cost, baseline = float(headers["x-cascadeflow-cost-usd"]), float(headers["x-cascadeflow-baseline-cost-usd"])
    money = {"model": OPUS, "rule": "opus"}
    for name, expected in (("cost_usd", cost), ("baseline_cost_usd", baseline), ("saving_usd", baseline - cost)):
        delta = after.value(f"cascadeflow_{name}_total", **money) - before.value(f"cascadeflow_{name}_total", **money)
        assert delta == pytest.approx(expected, rel=1e-6), name
    assert baseline > cost


@pytest.mark.parametrize("stream", [False, True])
def test_escalation_counts_its_reason_and_the_draft_it_paid_for(gw, stream):
    before = Scrape(gw.url)
    kwargs = {"model": OPUS, "max_tokens": 100, "messages": [{"role": "user", "content": "Please say nothing at all"}]}
    if stream:
        with claude(gw).messages.stream(**kwargs) as s:
            s.get_final_message()
            headers = s.response.headers
    else:
        headers = claude(gw).messages.with_raw_response.create(**kwargs).headers
    after = Scrape(gw.url)
    assert headers["x-cascadeflow-decision"] == "escalated:structural:empty answer"
    decision = {"rule": "opus", "decision": "escalated", "reason": "structural:empty answer"}
    assert after.value("cascadeflow_cascade_decisions_total", **decision) - before.value(
        "cascadeflow_cascade_decisions_total", **decision) == 1
    labels = {"plan": "cascade", "model": OPUS, "served_model": OPUS, "status": "200"}
    assert after.value("cascadeflow_requests_total", **labels) - before.value("cascadeflow_requests_total", **labels) == 1
    money = {"model": OPUS, "rule": "opus"}
    overspend = after.value("cascadeflow_overspend_usd_total", **money) - before.value("cascadeflow_overspend_usd_total", **money)
    assert overspend > 0  # the draft was paid for and did not save anything
    net = (after.value("cascadeflow_baseline_cost_usd_total", **money) - before.value("cascadeflow_baseline_cost_usd_total", **money)) - (
        after.value("cascadeflow_cost_usd_total", **money) - before.value("cascadeflow_cost_usd_total", **money))
    assert net == pytest.approx(-overspend, rel=1e-6)


def test_upstream_errors_retries_and_timeouts(gw):
    before = Scrape(gw.url)
    with pytest.raises(anthropic.InternalServerError):
        ask(gw, "the upstream breaks")
    _, headers = ask(gw, "flaky once, then fine")  # a 529, retried
    with pytest.raises(anthropic.APIStatusError) as info:
        ask(gw, "a very slow answer")
    assert info.value.status_code == 504
    after = Scrape(gw.url)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("cascadeflow_requests_total", route="anthropic", status="500") == 1
    assert delta("cascadeflow_requests_total", route="anthropic", status="504") == 1
    assert delta("cascadeflow_requests_total", route="anthropic", model=SONNET, status="200") == 1
    # the 500 is tried twice (the route retries), the 529 once, the slow answer times out twice
    assert delta("cascadeflow_upstream_errors_total", route="anthropic", kind="500") == 2
    assert delta("cascadeflow_upstream_errors_total", route="anthropic", kind="529") == 1
    assert delta("cascadeflow_upstream_errors_total", route="anthropic", kind="timeout") == 2
    assert delta("cascadeflow_upstream_retries_total", route="anthropic") == 3
    assert delta("cascadeflow_refusals_total") == 0  # upstream errors are not the gateway's refusals


def test_refusals_are_told_apart_from_upstream_rate_limits(gw):
    before = Scrape(gw.url)
    # the first stream stalls until the test leaves it, so the second one meets it however slow the machine
    body = {"model": SONNET, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "a held stream"}]}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers={"x-api-key": "k"}, timeout=10) as first:
        assert first.status_code == 200  # holds the one stream this gateway allows
        assert Scrape(gw.url).value("cascadeflow_active_streams") == 1
        with pytest.raises(anthropic.RateLimitError):
            with claude(gw).messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as s:
                s.get_final_message()
    deadline = time.monotonic() + 10  # leaving the block closed the first stream; the gateway lets it go
    while Scrape(gw.url).value("cascadeflow_active_streams") != 0:
        assert time.monotonic() < deadline, "the stream the client left is still counted as active"
        time.sleep(0.05)
    with pytest.raises(anthropic.RateLimitError):  # the upstream's own 429, relayed
        ask(gw, "the upstream busy signal")
    after = Scrape(gw.url)
    assert after.value("cascadeflow_refusals_total", reason="rate_limit") - before.value(
        "cascadeflow_refusals_total", reason="rate_limit") == 1
    assert after.value("cascadeflow_requests_total", route="", status="429") - before.value(
        "cascadeflow_requests_total", route="", status="429") == 1
    assert after.value("cascadeflow_requests_total", route="anthropic", status="429") - before.value(
        "cascadeflow_requests_total", route="anthropic", status="429") == 1
    assert after.value("cascadeflow_upstream_errors_total", kind="429") - before.value(
        "cascadeflow_upstream_errors_total", kind="429") == 2  # tried twice: the route retries a 429
    assert after.value("cascadeflow_active_streams") == 0


def test_key_limit_and_budget_refusals_are_counted_by_reason(fresh_sim, start_gateway, tmp_path):
    config = ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim), "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
        "auth": {"mode": "api_key", "master_key": "m-key", "keys": [{"key": "k-rpm", "limits": {"rpm": 1}},
                                              {"key": "k-budget", "limits": {"daily_budget_usd": 0.00001}},
                                              {"key": "k-sonnet-only", "models": [SONNET]}]},
    })
    gw = start_gateway(config)

    def send(key: str, model: str = SONNET) -> None:
        anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0).messages.create(
            model=model, max_tokens=20, messages=[{"role": "user", "content": "hello"}])

    send("k-rpm")
    with pytest.raises(anthropic.RateLimitError):
        send("k-rpm")
    send("k-budget")  # admitted while under budget, then past it
    for _ in range(2):
        with pytest.raises(anthropic.APIStatusError, match="daily budget"):
            send("k-budget")
    with pytest.raises(anthropic.AuthenticationError):
        send("sk-not-a-key")
    with pytest.raises(anthropic.PermissionDeniedError):
        send("k-sonnet-only", model=HAIKU)
    assert httpx.get(gw.url + "/metrics").status_code == 401  # auth is on: the master key's holder only
    scrape = Scrape(gw.url, "m-key")
    refusals = {s.labels["reason"]: s.value for s in scrape.samples if s.name == "cascadeflow_refusals_total"}
    assert refusals == {"rate_limit": 1, "budget_exceeded": 2, "authentication": 1, "permission": 1}
    assert scrape.value("cascadeflow_requests_total", status="402", route="") == 2
    assert scrape.value("cascadeflow_requests_total", status="200") == 2
    assert scrape.value("cascadeflow_upstream_errors_total") == 0
    text = httpx.get(gw.url + "/metrics", headers={"x-api-key": "m-key"}).text
    assert "k-rpm" not in text and "k-budget" not in text  # keys are never labels


def test_made_up_model_names_do_not_become_labels(gw):
    for i in range(3):
        with pytest.raises(anthropic.NotFoundError):
            ask(gw, "hi", model=f"made-up-{i}")
    scrape = Scrape(gw.url)
    models = {s.labels.get("model") for s in scrape.samples if s.name == "cascadeflow_requests_total"}
    assert not any(m.startswith("made-up") for m in models)
    assert scrape.value("cascadeflow_requests_total", model="other", status="404") >= 3


def test_dead_workers_lose_their_live_gauges(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    files = [f"gauge_livesum_{gone.pid}.db", f"gauge_livemax_{gone.pid}.db", f"gauge_livesum_{os.getpid()}.db",
             f"counter_{gone.pid}.db"]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    mark_dead_workers(str(tmp_path))
    # counters of a dead worker still count (its requests happened); its in-flight gauges do not
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"gauge_livesum_{os.getpid()}.db", f"counter_{gone.pid}.db"])


def test_two_workers_report_the_totals_of_both(tmp_path, fresh_sim):
    """Every wait has a deadline (a request 30 s, the senders 120 s, the stop 20 s): a stuck worker fails
    the test with what it was waiting for, not after pytest's 300 s, and no process outlives it."""
    sim = fresh_sim
    routes = "\n".join(f"  - {{name: {r['name']}, provider: {r['provider']}, base_url: '{r['base_url']}', api_key: k, "
                       f"retry: {{attempts: 1}}}}" for r in sim_routes(sim))
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    # a new ledger: the workers migrate it one at a time as they start
    config = f"routes:\n{routes}\ndatabase_url: '{ledger_url}'\n"
    log_path = tmp_path / "gateway.log"
    process, url = launch_gateway_process(tmp_path, config, log_path=log_path,
                                          server={"workers": 2, "log_level": "warning"})
    try:
        deadline = time.monotonic() + 60
        while Scrape(url).value("cascadeflow_workers") < 2:  # the second may still be starting
            assert time.monotonic() < deadline, f"the second worker did not start: {log_path.read_text()[-2000:]}"
            time.sleep(0.1)
        n, errors = 40, []

        def send(count: int) -> None:
            for _ in range(count):
                try:  # a client (and connection) per request, so the kernel spreads them over the workers
                    anthropic.Anthropic(base_url=url, api_key="k", max_retries=0, timeout=30).messages.create(
                        model=SONNET, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
                except Exception as exc:  # noqa: BLE001 (reported below)
                    errors.append(exc)

        threads = [threading.Thread(target=send, args=(n // 4,), daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        for t in threads:
            t.join(max(deadline - time.monotonic(), 0))
        assert not any(t.is_alive() for t in threads), f"requests still unanswered after 120 s: {log_path.read_text()[-2000:]}"
        assert not errors, errors
        # each worker's own /stats counts only what it answered: both answered some
        per_worker = {httpx.get(url + "/stats").json()["total_queries"] for _ in range(30)}
        assert per_worker <= set(range(1, n + 1)), per_worker  # no worker's own count is the total of both
        assert len(per_worker) == 1 or sum(per_worker) == n, per_worker  # (equal shares look like one value)
        for _ in range(10):  # whichever worker answers the scrape, it reports both
            scrape = Scrape(url)
            assert scrape.value("cascadeflow_requests_total", status="200") == n
            assert scrape.value("cascadeflow_request_duration_seconds_count") == n
            assert scrape.value("cascadeflow_workers") == 2
    finally:
        stop_gateway_process(process)
