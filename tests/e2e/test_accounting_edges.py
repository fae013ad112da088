"""Issue 15, accounting and its edges: the admin API answers every error as JSON within the body limit,
the model catalogue is per credential and never keeps a failure, and the ledger's queue is bounded.

(The Redis counters' lost replies and reseeding are in tests/unit/test_counters.py and
tests/e2e/test_shared_limits.py; the stream-capacity refusal that costs no rpm in test_limits.py.)
"""

from __future__ import annotations

import logging
import sqlite3

import anthropic
import httpx
import pytest

from cascadeflow import ProxyConfig
from cascadeflow.store import Ledger, LedgerEntry
from tests.conftest import sim_routes

MASTER = "accounting-master-5c2e"
ADMIN = {"authorization": f"Bearer {MASTER}"}


# -- 1. POST /admin/keys -------------------------------------------------------------------------------


@pytest.fixture()
def admin_gateway(fresh_sim, start_gateway, tmp_path):
    """A gateway with the admin API open to the master key; (its URL, its SQLite ledger's path)."""
    path = tmp_path / "admin.db"
    config = ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim), "database_url": f"sqlite:///{path}",
        "auth": {"mode": "api_key", "master_key": MASTER}, "server": {"max_body_bytes": 200_000},
    })
    return start_gateway(config).url, path


def test_an_admin_body_beyond_the_limit_is_a_413_before_it_is_read(admin_gateway):
    url, _ = admin_gateway
    reply = httpx.post(url + "/admin/keys", headers={**ADMIN, "content-type": "application/json"},
                       content=b'{"name": "' + b"a" * 5_000_000 + b'"}')
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"
    assert "the limit is 200000" in reply.json()["error"]["message"]


@pytest.mark.parametrize("spec, field", [
    ({"limits": {"rpm": 10**30}}, "limits.rpm"),  # was stored, then a plain-text 500 (JSON cannot carry it)
    ({"limits": {"daily_budget_usd": 1e300}}, "limits.daily_budget_usd"),
    ({"name": "a\u0000b"}, "name"),  # PostgreSQL stores no NUL: a plain-text 500 there
    ({"models": ["claude-\u0007"]}, "models.0"),
    ({"expires_in_days": 1e308}, "expires_in_days"),  # an expiry of +inf
])
def test_admin_input_the_stores_cannot_hold_is_a_400_naming_the_field(admin_gateway, spec, field):
    url, _ = admin_gateway
    reply = httpx.post(url + "/admin/keys", headers=ADMIN, json=spec)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["message"].startswith(f"{field}:")
    assert httpx.get(url + "/admin/keys", headers=ADMIN).json()["keys"] == []  # and nothing was stored


def test_a_database_that_refuses_the_key_is_a_json_500_that_logs_no_values(admin_gateway, caplog):
    url, path = admin_gateway
    with sqlite3.connect(path) as db:  # the database refuses every new key from now on
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON api_keys BEGIN SELECT RAISE(ABORT, 'disk quota exceeded'); END")
    with caplog.at_level(logging.ERROR, logger="cascadeflow.gateway"):
        reply = httpx.post(url + "/admin/keys", headers=ADMIN, json={"user_id": "olga"})
    assert reply.status_code == 500 and reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["type"] == "server_error" and "see the gateway log" in reply.json()["error"]["message"]
    logged = caplog.text
    assert "POST /admin/keys failed" in logged and "disk quota exceeded" in logged
    assert "parameters" not in logged and "olga" not in logged  # the row's values (a key's hash) stay out
    assert httpx.get(url + "/health").status_code == 200


# -- 2. GET /v1/models: per credential, failures not kept ---------------------------------------------------


@pytest.fixture()
def open_gateway(fresh_sim, start_gateway, tmp_path):
    """Callers bring their own provider keys; the Anthropic route lists what the upstream lists."""
    config = ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim, anthropic_key=None)[:1],  # the Anthropic route alone
        "database_url": f"sqlite:///{tmp_path / 'open.db'}", "auth": {"mode": "pass_through"},
    })
    return start_gateway(config).url


def _listings(sim) -> list[str]:
    """The credential each upstream model listing was asked with."""
    return [r["headers"].get("x-api-key") for r in sim.requests if r["path"] == "/v1/models"]


def _ids(url: str, key: str) -> set[str]:
    reply = httpx.get(url + "/v1/models", headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    assert reply.status_code == 200
    return {entry["id"] for entry in reply.json()["data"]}


def test_one_tenants_model_list_is_not_served_to_another(open_gateway, fresh_sim):
    assert "claude-haiku-5-5" in _ids(open_gateway, "tenant-a-provider-key")
    assert _listings(fresh_sim) == ["tenant-a-provider-key"]
    _ids(open_gateway, "tenant-a-provider-key")  # the same credential within a minute: kept
    assert _listings(fresh_sim) == ["tenant-a-provider-key"]
    _ids(open_gateway, "tenant-b-provider-key")  # another tenant: its own key decides what it sees
    assert _listings(fresh_sim) == ["tenant-a-provider-key", "tenant-b-provider-key"]


def test_a_failed_model_listing_is_not_kept(open_gateway, fresh_sim):
    fresh_sim.set_script([{"match": {"path": "/v1/models"}, "times": 1, "status": 500}])
    assert "claude-haiku-5-5" not in _ids(open_gateway, "tenant-c-provider-key")  # the upstream failed
    assert "claude-haiku-5-5" in _ids(open_gateway, "tenant-c-provider-key")  # asked again, not a kept failure
    assert len(_listings(fresh_sim)) == 2


# -- 3. the ledger's queue ------------------------------------------------------------------------------


def test_the_ledger_queue_is_bounded_while_the_database_does_not_keep_up(tmp_path, caplog):
    """Rows wait for the writer in memory; a database that stops answering must not grow the process
    without bound: beyond ``max_queued`` rows are dropped and counted (``cascadeflow_ledger_rows_dropped``)."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'slow.db'}", max_queued=50)  # not started: nothing is written
    with caplog.at_level(logging.ERROR, logger="cascadeflow.ledger"):
        for i in range(120):
            ledger.record(LedgerEntry("/v1/messages", "anthropic", f"m{i}", "pass_through", False, 200))
    assert ledger._queue.qsize() == 50 and ledger.dropped == 70
    assert caplog.text.count("rows are being dropped") == 1  # one line, not one per row


# -- 4. several workers without Redis ---------------------------------------------------------------------


def _start_banner(tmp_path, config_text: str) -> str:
    """What ``cascadeflow proxy start`` prints before it serves (the process is stopped once it has)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.e2e.test_first_run import free_port

    config = tmp_path / "workers.yaml"
    config.write_text(config_text)
    log = tmp_path / "start.log"
    cli = str(Path(sys.executable).with_name("cascadeflow"))
    env = {**os.environ, "CASCADEFLOW_CONFIG": "", "CASCADEFLOW_PORT": str(free_port())}
    with open(log, "wb") as out:
        process = subprocess.Popen([cli, "proxy", "start", "-c", str(config)], cwd=tmp_path, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text() or "route " not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(0.3)  # the rest of the banner
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return log.read_text()


def test_several_workers_without_redis_are_warned_of_at_start(tmp_path):
    """Each worker counts limits alone: with 2 workers a key's rpm of 60 admits up to 120 a minute."""
    limited = f"server: {{workers: 2}}\ndatabase_url: sqlite:///{tmp_path / 'w.db'}\nlimits: {{per_key: {{rpm: 60}}}}\n"
    text = _start_banner(tmp_path, limited)
    assert ("  WARNING: 2 workers and no redis_url: each worker counts rate limits and budgets on its own, "
            "so each limit admits up to 2 times what it says; set redis_url to share them") in text
    shared = limited + "redis_url: redis://127.0.0.1:6379/2\n"
    assert "WARNING" not in _start_banner(tmp_path, shared)


# -- 5. models with no known price under a budget -------------------------------------------------------------

UNPRICED = "mystery-model-1"  # neither genai-prices nor the config knows it


def _budget_gateway(fresh_sim, start_gateway, tmp_path, **limits):
    config = ProxyConfig.from_dict({
        "routes": sim_routes(fresh_sim), "database_url": f"sqlite:///{tmp_path / 'unpriced.db'}",
        "auth": {"mode": "api_key", "keys": [{"key": "with-budget", "limits": {"daily_budget_usd": 0.05}},
                                             {"key": "no-budget"}]},
        "limits": limits,
    })
    return start_gateway(config).url


def _ask(url: str, key: str, model: str = UNPRICED, max_tokens: int = 20):
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0).messages.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": "hello"}])


def test_a_budget_refuses_a_model_it_cannot_price(fresh_sim, start_gateway, tmp_path):
    """By default a request under a budget for a model with no price is a 403 that says what to set (it used
    to count as $0: a budget that never ran out); without a budget the model is served as before."""
    url = _budget_gateway(fresh_sim, start_gateway, tmp_path)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        _ask(url, "with-budget")
    message = refused.value.message
    assert f"model '{UNPRICED}' has no known price" in message and "limits.unpriced_model_price" in message
    assert _ask(url, "no-budget").content  # no budget: nothing to count it against
    assert _ask(url, "with-budget", "claude-haiku-5-5").content  # a priced model under the budget


def test_unpriced_model_price_counts_such_a_model_against_the_budget(fresh_sim, start_gateway, tmp_path):
    """At $1 per 1,000 tokens each call (10 input + 20 output tokens from the simulator) costs $0.03: a $0.05
    budget admits two (the second while $0.03 is spent), then says it is spent. (max_tokens 1 keeps each
    reservation near $0.03 too, so the outcome does not depend on when a settlement lands.)"""
    fresh_sim.set_script([{"match": {"model": UNPRICED}, "text": "fine", "usage": {"input_tokens": 10,
                                                                                  "output_tokens": 20}}])
    url = _budget_gateway(fresh_sim, start_gateway, tmp_path, unpriced_model_price=1.0)
    assert _ask(url, "with-budget", max_tokens=1).content and _ask(url, "with-budget", max_tokens=1).content
    with pytest.raises(anthropic.APIStatusError) as spent:
        _ask(url, "with-budget", max_tokens=1)
    assert spent.value.status_code == 402 and "daily budget" in spent.value.message
