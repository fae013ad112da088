"""SIGTERM with requests that outlive ``server.shutdown_timeout``: nothing is lost, nothing is cut silently.

A real ``cascadeflow proxy start`` process, a slow simulator upstream, 24 requests in flight of
both dialects — JSON and streams, passed through and cascaded, some whose answer has started and
some not — then SIGTERM with a 1 s deadline. Every caller gets an answer in its own dialect: a
503 (``retry-after``) when its answer had not started, the dialect's error event ending a stream
that had; never uvicorn's plain-text 500. Every request has its ledger row (SQLite and
PostgreSQL), cancelled, with what it used.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import orjson
import pytest
import yaml

from tests.conftest import launch_gateway_process, ledger_rows, sim_routes
from tests.pg_db import throwaway_ledger

POSTGRES = os.environ.get("CASCADEFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
SCRIPT = [
    {"match": {"prompt_contains": "slow json"}, "latency": 20},
    {"match": {"prompt_contains": "late headers"}, "first_byte_delay": 20},
    {"match": {"prompt_contains": "long stream"}, "words": 400, "chunk_delay": 0.1},
    {"match": {"path": "/v1/models"}, "latency": 20},  # the model list waits on the upstreams' listings
]
#: (name, path, model, stream, prompt): each sent 3 times; JSON not started, streams started or not
KINDS = [
    ("anthropic json", "/v1/messages", SONNET, False, "slow json"),
    ("anthropic stream", "/v1/messages", SONNET, True, "long stream"),
    ("anthropic stream, headers late", "/v1/messages", SONNET, True, "late headers"),
    ("anthropic cascade json", "/v1/messages", OPUS, False, "slow json"),
    ("anthropic cascade stream, draft", "/v1/messages", OPUS, True, "long stream"),
    ("openai json", "/v1/chat/completions", "gpt-4o-mini", False, "slow json"),
    ("openai stream", "/v1/chat/completions", "gpt-4o-mini", True, "long stream"),
    ("openai cascade json", "/v1/chat/completions", "gpt-4o", False, "slow json"),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    with throwaway_ledger(request.param, tmp_path / "ledger.db", POSTGRES) as url:
        yield url


def _send(url: str, index: int, kind: tuple, results: dict) -> None:
    name, path, model, stream, prompt = kind
    body: dict = {"model": model, "max_tokens": 1000, "stream": stream,
                  "messages": [{"role": "user", "content": f"{prompt} #{index}"}]}
    headers = {"x-request-id": f"shutdown-{index}", "anthropic-version": "2023-06-01"}
    try:
        with httpx.stream("POST", url + path, json=body, headers=headers, timeout=30) as response:
            raw = b"".join(response.iter_bytes())
            results[index] = (name, response.status_code, response.headers.get("content-type", ""), raw,
                              dict(response.headers))
    except httpx.HTTPError as exc:
        results[index] = (name, None, "", repr(exc).encode(), {})


def _list_models(url: str, dialect: str, results: dict) -> None:
    headers = {"anthropic-version": "2023-06-01"} if dialect == "anthropic" else {}
    try:
        response = httpx.get(url + "/v1/models", headers=headers, timeout=30)
        results[dialect] = (response.status_code, response.headers.get("content-type", ""), response.content)
    except httpx.HTTPError as exc:
        results[dialect] = (None, "", repr(exc).encode())


def _check_answer(name: str, path: str, stream: bool, status, content_type: str, raw: bytes, headers: dict) -> None:
    assert status is not None, f"{name}: no HTTP answer ({raw!r})"
    assert not content_type.startswith("text/plain"), f"{name}: a plain-text answer {status}: {raw[:80]!r}"
    anthropic = path == "/v1/messages"
    if status == 503:  # the answer had not started
        error = orjson.loads(raw)
        assert headers.get("retry-after") == "1"
        if anthropic:
            assert error["type"] == "error" and error["error"]["type"] == "api_error"
        else:
            assert error["error"]["code"] and "shutting down" in error["error"]["message"]
        return
    assert status == 200 and stream, f"{name}: {status} {raw[:200]!r}"
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    if anthropic:
        assert events[-1].startswith(b"event: error\n"), f"{name}: the stream ended {events[-1][:120]!r}"
        assert orjson.loads(events[-1].split(b"data: ", 1)[1])["error"]["type"] == "api_error"
    else:
        last = orjson.loads(events[-1].removeprefix(b"data: "))
        assert "shutting down" in last["error"]["message"], f"{name}: the stream ended {events[-1][:120]!r}"
        assert b"[DONE]" not in raw


def test_requests_past_the_shutdown_deadline_are_answered_and_recorded(sim, fresh_sim, tmp_path, ledger_url):
    fresh_sim.set_script(SCRIPT)
    config = {
        "routes": sim_routes(sim, anthropic_key="k", openai_key="k"), "database_url": ledger_url,
        "cascade_rules": [{"name": "opus", "request_model": OPUS, "draft_model": HAIKU},
                          {"name": "gpt", "request_model": "gpt-4o", "draft_model": "gpt-4o-mini"}],
    }
    process, url = launch_gateway_process(tmp_path, yaml.safe_dump(config), tmp_path / "gateway.log",
                                          server={"shutdown_timeout": 1})
    try:
        results: dict[int, tuple] = {}
        sends = [(i, kind) for i, kind in enumerate(KINDS * 3)]
        threads = [threading.Thread(target=_send, args=(url, i, kind, results)) for i, kind in sends]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(fresh_sim.requests) < len(sends) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(fresh_sim.requests) == len(sends), "every request reached the upstream"
        listings: dict[str, tuple] = {}
        threads += [threading.Thread(target=_list_models, args=(url, d, listings)) for d in ("anthropic", "openai")]
        for thread in threads[-2:]:
            thread.start()
        time.sleep(0.5)  # the started streams are streaming, the listings wait on the upstream
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        for thread in threads:
            thread.join(10)
    finally:
        if process.poll() is None:
            process.kill()
    log = (tmp_path / "gateway.log").read_text()
    assert "Exception in ASGI application" not in log, log[-3000:]
    started = 0
    for index, kind in sends:
        name, status, content_type, raw, headers = results[index]
        _check_answer(name, kind[1], kind[3], status, content_type, raw, headers)
        started += status == 200
    assert started >= 6, "the long streams had started (their error event was checked)"
    for dialect, (status, content_type, raw) in listings.items():  # not an API call of the ledger, same answer
        assert status == 503 and content_type == "application/json", (dialect, status, raw[:200])
        assert (orjson.loads(raw).get("type") == "error") == (dialect == "anthropic")
    rows = {row["request_id"]: row for row in ledger_rows(ledger_url, at_least=len(sends))}
    assert len(rows) == len(sends), f"{len(sends) - len(rows)} rows missing"
    for index, kind in sends:
        row = rows[f"shutdown-{index}"]
        assert row["status"] == 503 and row["cancelled"], (kind[0], row)
        assert row["input_tokens"] > 0 and row["cost"] > 0, f"{kind[0]}: what it used is priced ({row})"
        if kind[2] in (OPUS, "gpt-4o"):
            assert row["plan"] == "cascade" and row["rule"] in ("opus", "gpt")
