"""One ledger row per request, through the gateway: pass-through, cascade, errors, cancels, fallbacks, shutdown."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import anthropic
import httpx
import pytest

from cascadeflow import ModelRegistry, ProxyConfig, Usage
from cascadeflow.store import Ledger
from tests.conftest import launch_gateway_process, sim_routes


def rows(url: str, expected: int) -> list[dict]:
    async def read() -> list[dict]:
        ledger = await Ledger(url).start()
        try:
            return await ledger.rows()
        finally:
            await ledger.aclose()

    deadline = time.monotonic() + 5
    while True:
        found = asyncio.run(read())
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture()
def ledger_gw(fresh_sim, start_gateway, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    routes = sim_routes(fresh_sim)
    routes[0]["fallbacks"] = ["openai:gpt-4o-mini"]
    config = ProxyConfig.from_dict({
        "database_url": url, "routes": routes,
        "cascade_rules": [{"name": "opus", "request_model": "claude-opus-5-5", "draft_model": "claude-haiku-5-5"}],
    })
    return start_gateway(config), url


def test_every_kind_of_request_is_recorded_and_priced(ledger_gw, sim):
    gw, url = ledger_gw
    sim.set_script([
        {"match": {"model": "claude-haiku-5-5", "prompt_contains": "good"}, "text": "A fine draft answer."},
        {"match": {"model": "claude-haiku-5-5", "prompt_contains": "bad"}, "text": ""},
        {"match": {"model": "claude-sonnet-5-5", "prompt_contains": "down"}, "status": 529},
    ])
    client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    ask = {"max_tokens": 100}
    plain = client.messages.create(model="claude-sonnet-5-5", messages=[{"role": "user", "content": "plain"}], **ask)
    with client.messages.stream(model="claude-sonnet-5-5", messages=[{"role": "user", "content": "streamed"}], **ask) as s:
        streamed = s.get_final_message()
    accepted = client.messages.create(model="claude-opus-5-5", messages=[{"role": "user", "content": "good"}], **ask)
    with client.messages.stream(model="claude-opus-5-5", messages=[{"role": "user", "content": "bad"}], **ask) as s:
        s.get_final_message()
    fallback = client.messages.create(model="claude-sonnet-5-5", messages=[{"role": "user", "content": "down"}], **ask)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude-sonnet-5-5", messages="not a list", **ask)  # type: ignore[arg-type]
    found = rows(url, 6)
    assert len(found) == 6
    by_model = {(r["requested_model"], r["stream"], r["plan"]): r for r in found if r["status"] == 200 and not r["fallback_model"]}
    registry = ModelRegistry()

    row = by_model[("claude-sonnet-5-5", False, "pass_through")]
    assert (row["input_tokens"], row["output_tokens"]) == (plain.usage.input_tokens, plain.usage.output_tokens)
    assert row["cost"] == pytest.approx(registry.cost("claude-sonnet-5-5", Usage(plain.usage.input_tokens, plain.usage.output_tokens)))
    assert row["status"] == 200 and row["route"] == "anthropic"

    row = by_model[("claude-sonnet-5-5", True, "pass_through")]
    assert row["output_tokens"] == streamed.usage.output_tokens and row["cost"] > 0 and row["ttfb_ms"] is not None

    row = by_model[("claude-opus-5-5", False, "cascade")]
    assert row["accepted"] is True and row["served_model"] == "claude-haiku-5-5" and row["decision"] == "accepted"
    assert row["output_tokens"] == accepted.usage.output_tokens and row["baseline_cost"] > row["cost"]

    row = by_model[("claude-opus-5-5", True, "cascade")]
    assert row["accepted"] is False and row["decision"] == "escalated:structural:empty answer"
    assert row["served_model"] == "claude-opus-5-5" and row["cost"] > row["baseline_cost"]  # the draft was paid too

    fell_back = next(r for r in found if r["fallback_model"])
    assert fell_back["fallback_model"] == "openai:gpt-4o-mini" and fell_back["status"] == 200
    assert fallback.content[0].text.startswith("[gpt-4o-mini]")

    error = next(r for r in found if r["status"] == 400)
    assert error["error_type"] == "invalid_request" and error["cost"] is None


def test_a_cancelled_stream_is_recorded(ledger_gw, sim):
    gw, url = ledger_gw
    sim.set_script([{"match": {"prompt_contains": "long"}, "words": 300, "chunk_delay": 0.02}])
    body = {"model": "claude-sonnet-5-5", "max_tokens": 1000, "stream": True, "messages": [{"role": "user", "content": "long"}]}
    with httpx.Client(base_url=gw.url, timeout=10) as http, http.stream("POST", "/v1/messages", json=body) as response:
        for chunk in response.iter_bytes():
            if b"content_block_delta" in chunk:
                break
    found = rows(url, 1)
    assert len(found) == 1 and found[0]["cancelled"] is True and found[0]["status"] == 499


def test_sigterm_under_load_loses_no_finished_request(sim, tmp_path):
    url = f"sqlite:///{tmp_path / 'shutdown.db'}"
    process, gateway = launch_gateway_process(
        tmp_path, f'database_url: "{url}"\nroutes: [{{name: a, provider: anthropic, base_url: "{sim.url}"}}]'
    )
    try:
        finished = 0
        body = {"model": "claude-haiku-5-5", "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]}
        with httpx.Client(base_url=gateway, timeout=5) as http:
            for i in range(40):
                if i == 30:
                    process.send_signal(signal.SIGTERM)
                try:
                    if http.post("/v1/messages", json=body).status_code == 200:
                        finished += 1
                except httpx.HTTPError:
                    break
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert finished >= 30
    assert len(rows(url, finished)) == finished  # written before the process ended


def test_stats_survive_a_restart_and_the_cli_reads_the_ledger(sim, fresh_sim, start_gateway, tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    config = ProxyConfig.from_dict({"database_url": url, "routes": sim_routes(sim)})
    body = {"model": "claude-haiku-5-5", "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]}
    first = start_gateway(config)
    for _ in range(3):
        assert httpx.post(first.url + "/v1/messages", json=body).status_code == 200
    rows(url, 3)
    second = start_gateway(config)  # a new process would start from the same file
    assert httpx.post(second.url + "/v1/messages", json=body).status_code == 200
    rows(url, 4)
    stats = httpx.get(second.url + "/stats").json()
    assert stats["total_queries"] == 1  # this process
    assert stats["ledger"]["requests"] == 4 and stats["ledger"]["cost"] > 0  # all time
    assert stats["ledger"]["by_model"]["claude-haiku-5-5"]["requests"] == 4
    (tmp_path / "c.yaml").write_text(f'database_url: "{url}"\n')
    result = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "stats", "--config", str(tmp_path / "c.yaml"),
                             "--by", "model", "--since", "1h"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first_table = result.stdout.split("\n\n")[0].splitlines()[3:]  # the --by table; the dashboard's tables follow
    lines = {line.split()[0]: line.split() for line in first_table}
    assert lines["claude-haiku-5-5"][1] == "4" and lines["total"][1] == "4"
