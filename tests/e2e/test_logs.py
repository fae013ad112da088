"""Request logs: the gateway as its own process, JSON lines on stderr, one per request, no secrets."""

from __future__ import annotations

import json
import logging

import anthropic
import httpx
import openai
import pytest

from cascadeflow.config import ServerConfig
from cascadeflow.gateway.logs import REQUEST_LOGGER, JsonFormatter, RequestLog, TextFormatter, logging_config
from cascadeflow.store import LedgerEntry
from tests.conftest import launch_gateway_process

ROUTE_KEY, OPENAI_ROUTE_KEY = "sk-ant-route-SECRET-4242", "sk-openai-route-SECRET-4343"
CLIENT_KEY, PROMPT = "sk-client-SECRET-5151", "PROMPT-MARKER-6161 tell me a secret"
OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"


def test_each_request_is_one_json_line_without_secrets(tmp_path, fresh_sim):
    sim = fresh_sim
    sim.set_script([{"match": {"model": HAIKU}, "text": "A fine, complete answer to the question."}])
    config = f"""
routes:
  - {{name: anthropic, provider: anthropic, base_url: "{sim.url}", api_key: {ROUTE_KEY}, retry: {{attempts: 1}}}}
  - {{name: openai, provider: openai, base_url: "{sim.url}/v1", api_key: {OPENAI_ROUTE_KEY}, retry: {{attempts: 1}}}}
cascade_rules:
  - {{name: opus, request_model: "claude-opus-*", draft_model: {HAIKU}}}
database_url: "sqlite:///{tmp_path}/ledger.db"
"""
    log_path = tmp_path / "gateway.log"
    process, url = launch_gateway_process(tmp_path, config, log_path=log_path,
                                          server={"log_format": "json", "log_level": "info"})
    try:
        client = anthropic.Anthropic(base_url=url, api_key=CLIENT_KEY, max_retries=0,
                                     default_headers={"x-request-id": "req-log-1"})
        passed = client.messages.with_raw_response.create(
            model=SONNET, max_tokens=50, messages=[{"role": "user", "content": PROMPT}])
        cascaded = client.messages.with_raw_response.create(
            model=OPUS, max_tokens=50, messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-request-id": "req-log-2"})
        bad = httpx.post(url + "/v1/messages", json={"model": SONNET, "messages": [{"role": "user", "content": PROMPT}]},
                         headers={"x-api-key": CLIENT_KEY, "x-request-id": "req-log-3"})  # no max_tokens
        assert bad.status_code == 400 and bad.headers["x-request-id"] == "req-log-3"
        oai = openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        list(oai.chat.completions.create(model="gpt-5.4-mini", messages=[{"role": "user", "content": PROMPT}],
                                         stream=True, extra_headers={"x-request-id": "req-log-4",
                                                                     "authorization": f"Bearer {CLIENT_KEY}"}))
        generated = [httpx.post(url + "/v1/messages", headers={"x-api-key": CLIENT_KEY},
                                json={"model": SONNET, "max_tokens": 20, "messages": [{"role": "user", "content": PROMPT}]}
                                ).headers["x-request-id"] for _ in range(2)]  # no id sent: the gateway makes one
        httpx.get(url + "/health")  # not an API request: no line
    finally:
        process.terminate()
        process.wait(20)
    text = log_path.read_text()
    for secret in (ROUTE_KEY, OPENAI_ROUTE_KEY, CLIENT_KEY, "PROMPT-MARKER", "tell me a secret"):
        assert secret not in text
    lines = [line for line in text.splitlines() if line.strip()]
    banner = [line for line in lines if not line.startswith("{")]  # what the CLI prints before logging starts
    assert all(line.startswith(("cascadeflow ", "  ")) for line in banner), banner  # the banner: indented lines
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's own lines are JSON too
    assert not any(r["logger"] == "uvicorn.access" for r in records)  # the request line replaces the access log
    requests = {r["request_id"]: r for r in records if r["logger"] == REQUEST_LOGGER}
    assert generated[0] != generated[1] and all(g.startswith("req_") for g in generated)
    assert sorted(requests) == sorted(["req-log-1", "req-log-2", "req-log-3", "req-log-4", *generated])  # one line each

    one = requests["req-log-1"]
    assert one["level"] == "info" and one["status"] == 200 and one["plan"] == "pass_through"
    assert one["model"] == SONNET and one["served_model"] == SONNET and one["route"] == "anthropic"
    assert one["endpoint"] == "/v1/messages" and one["dialect"] == "anthropic" and one["stream"] is False
    assert one["cost_usd"] == pytest.approx(float(passed.headers["x-cascadeflow-cost-usd"]), rel=1e-6)
    assert one["input_tokens"] > 0 and one["output_tokens"] > 0 and one["latency_ms"] > 0
    assert 0 <= one["overhead_ms"] <= one["latency_ms"]

    two = requests["req-log-2"]
    assert two["plan"] == "cascade" and two["rule"] == "opus" and two["draft_model"] == HAIKU
    assert two["decision"] == cascaded.headers["x-cascadeflow-decision"]
    assert two["served_model"] == cascaded.headers["x-cascadeflow-served-model"]
    assert two["confidence"] == pytest.approx(float(cascaded.headers["x-cascadeflow-confidence"]), abs=1e-4)
    assert two["saving_usd"] == pytest.approx(
        float(cascaded.headers["x-cascadeflow-baseline-cost-usd"]) - float(cascaded.headers["x-cascadeflow-cost-usd"]), abs=1e-8)

    three = requests["req-log-3"]
    assert three["status"] == 400 and three["error_type"] == "invalid_request" and "max_tokens" in three["error"]

    four = requests["req-log-4"]
    assert four["dialect"] == "openai" and four["stream"] is True and four["status"] == 200


def _entry(**fields) -> LedgerEntry:
    base = {"endpoint": "/v1/messages", "dialect": "anthropic", "requested_model": OPUS, "plan": "cascade",
            "stream": False, "status": 200, "request_id": "r-1", "latency_ms": 412.3, "upstream_ms": 400.0}
    return LedgerEntry(**{**base, **fields})


def _record(entry: LedgerEntry, caplog) -> logging.LogRecord:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        RequestLog().write(entry)
    (record,) = [r for r in caplog.records if r.name == REQUEST_LOGGER]
    return record


def test_text_line_reads_as_a_sentence(caplog):
    entry = _entry(rule="opus", draft_model=HAIKU, decision="accepted", accepted=True, confidence=0.9123,
                   served_model=HAIKU, cost=0.0012, baseline_cost=0.0061, key_id="key_7")
    line = TextFormatter().format(_record(entry, caplog))
    assert f"/v1/messages 200 {OPUS} → {HAIKU} accepted (0.91) 412 ms $0.001200 saved $0.004900 id=r-1 key=key_7" in line


def test_error_details_are_scrubbed_and_server_errors_warn(caplog):
    entry = _entry(status=502, error_type="bad_gateway", detail="upstream said: invalid x-api-key sk-ant-abcdef123456 "
                   "(Authorization: Bearer eyJhbGciOi.abc)")
    record = _record(entry, caplog)
    assert record.levelno == logging.WARNING
    line = json.loads(JsonFormatter().format(record))
    assert "abcdef123456" not in line["error"] and "eyJhbGciOi" not in line["error"]
    assert "[redacted]" in line["error"] and line["status"] == 502


@pytest.mark.parametrize(("fmt", "formatter"), [("json", "JsonFormatter"), ("text", "TextFormatter")])
def test_log_format_setting_picks_the_formatter(fmt, formatter):
    config = logging_config(ServerConfig(log_format=fmt, log_level="warning"))
    assert config["formatters"]["cascadeflow"]["()"].endswith(formatter)
    assert config["root"]["level"] == "WARNING"
