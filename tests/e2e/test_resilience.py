"""Retries, circuit breakers, fallbacks, stream limits and cancellation, under scripted faults."""

from __future__ import annotations

import threading
import time

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cascadeflow import ProxyConfig

BODY = {"model": "claude-haiku-5-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}
FAST_RETRY = {"attempts": 3, "backoff": 0.05, "max_backoff": 2, "max_total": 5}


def config(sim, *, retry=None, breaker=None, fallbacks=None, server=None) -> ProxyConfig:
    route = {"name": "primary", "provider": "anthropic", "base_url": sim.url, "api_key": "k",
             "retry": retry or FAST_RETRY, "breaker": breaker or {"failure_threshold": 1000}}
    routes = [route, {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k",
                      "retry": retry or FAST_RETRY}]
    if fallbacks is not None:
        route["fallbacks"] = fallbacks
        route["models"] = ["claude-haiku-5-5"]
        routes.append({"name": "backup", "provider": "anthropic", "base_url": sim.url, "api_key": "k"})
    return ProxyConfig.from_dict({"routes": routes, **({"server": server} if server else {})})


def calls(sim) -> int:
    return sum(1 for r in sim.requests if r["path"] in ("/v1/messages", "/v1/chat/completions"))


def client(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", [{"status": 529}, {"status": 500}, {"status": 503}, {"reset": "before_headers"}])
def test_transient_failures_are_retried_before_the_first_byte(fresh_sim, start_gateway, stream, fault):
    sim = fresh_sim
    sim.set_script([{"match": {"prompt_contains": "hello"}, "times": 2, **fault}])
    gw = start_gateway(config(sim))
    if stream:
        with client(gw).messages.stream(**BODY) as s:
            message = s.get_final_message()
    else:
        message = client(gw).messages.create(**BODY)
    assert message.content[0].text.startswith("[claude-haiku-5-5]")
    assert calls(sim) == 3  # two failures, then the answer
    assert httpx.get(gw.url + "/health").json()["retries"] == 2


def test_retry_after_is_honoured(fresh_sim, start_gateway):
    sim = fresh_sim
    sim.set_script([{"match": {"prompt_contains": "hello"}, "times": 1, "status": 429, "retry_after": 0.4}])
    gw = start_gateway(config(sim))
    started = time.monotonic()
    client(gw).messages.create(**BODY)
    assert time.monotonic() - started >= 0.4
    assert calls(sim) == 2


def test_attempts_are_bounded_and_the_last_error_is_relayed(fresh_sim, start_gateway):
    sim = fresh_sim
    sim.set_script([{"match": {"prompt_contains": "hello"}, "status": 529}])
    gw = start_gateway(config(sim))
    with pytest.raises(anthropic.APIStatusError) as info:
        client(gw).messages.create(**BODY)
    assert info.value.status_code == 529 and calls(sim) == 3
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(gw.url + "/metrics").text)}
    assert families["cascadeflow_upstream_retries"].samples[0].value == 2


def test_client_errors_are_not_retried(fresh_sim, start_gateway):
    sim = fresh_sim
    sim.set_script([{"match": {"prompt_contains": "hello"}, "status": 400}])
    gw = start_gateway(config(sim))
    with pytest.raises(anthropic.BadRequestError):
        client(gw).messages.create(**BODY)
    assert calls(sim) == 1


def test_breaker_opens_fails_fast_then_probes(fresh_sim, start_gateway):
    """With a fallback to go to, an open breaker skips the failing model at once; a probe closes it.

    The cooldown is long enough (3 s) for the checks made while it is open to fit on a loaded machine;
    the probe waits until /health says half-open rather than sleeping a guessed time.
    """
    sim = fresh_sim
    sim.set_script([{"match": {"model": "claude-haiku-5-5"}, "times": 2, "status": 500}])
    gw = start_gateway(config(sim, retry={"attempts": 1}, breaker={"failure_threshold": 2, "cooldown": 3.0},
                              fallbacks=["backup:claude-sonnet-5-5"]))
    for _ in range(2):  # each failure is answered by the fallback
        assert client(gw).messages.create(**BODY).content[0].text.startswith("[claude-sonnet-5-5]")
    raw = client(gw).messages.with_raw_response.create(**BODY)  # fails fast: haiku is not called
    health = httpx.get(gw.url + "/health").json()
    assert raw.headers["x-cascadeflow-fallback-model"] == "backup:claude-sonnet-5-5"
    assert [r["body"]["model"] for r in sim.requests].count("claude-haiku-5-5") == 2
    # still inside the cooldown: had it ended before the request above, haiku would have been probed (and answered)
    assert health["status"] == "degraded" and health["breakers"]["primary"]["state"] == "open", health
    assert health["breakers"]["primary"]["models"]["claude-haiku-5-5"]["last_failure"] == "500 from the upstream"
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(gw.url + "/metrics").text)}
    states = {s.labels["state"]: s.value for s in families["cascadeflow_upstream_breaker_state"].samples
              if s.labels["route"] == "primary"}
    assert states == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    deadline = time.monotonic() + 15
    while httpx.get(gw.url + "/health").json()["breakers"]["primary"]["state"] != "half_open":
        assert time.monotonic() < deadline, "the breaker never became half-open after its 3 s cooldown"
        time.sleep(0.1)
    assert client(gw).messages.create(**BODY).content[0].text.startswith("[claude-haiku-5-5]")  # the probe closes it
    assert httpx.get(gw.url + "/health").json()["breakers"]["primary"]["state"] == "closed"
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(gw.url + "/metrics").text)}
    states = {s.labels["state"]: s.value for s in families["cascadeflow_upstream_breaker_state"].samples
              if s.labels["route"] == "primary"}
    assert states == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    assert [r["body"]["model"] for r in sim.requests].count("claude-haiku-5-5") == 3


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_model_answers_when_the_route_keeps_failing(fresh_sim, start_gateway, stream):
    sim = fresh_sim
    sim.set_script([{"match": {"model": "claude-haiku-5-5"}, "status": 529}])
    gw = start_gateway(config(sim, retry={"attempts": 2, "backoff": 0.01}, fallbacks=["backup:claude-sonnet-5-5"]))
    if stream:
        with client(gw).messages.stream(**BODY) as s:
            message, headers = s.get_final_message(), s.response.headers
    else:
        raw = client(gw).messages.with_raw_response.create(**BODY)
        message, headers = raw.parse(), raw.headers
    assert message.content[0].text.startswith("[claude-sonnet-5-5]")
    assert headers["x-cascadeflow-fallback-model"] == "backup:claude-sonnet-5-5"
    assert httpx.get(gw.url + "/stats").json()["fallbacks"] == 1
    assert [r["body"]["model"] for r in sim.requests] == ["claude-haiku-5-5", "claude-haiku-5-5", "claude-sonnet-5-5"]


def test_concurrent_stream_limit_refuses_in_the_callers_dialect(fresh_sim, start_gateway):
    sim = fresh_sim
    sim.set_script([{"match": {"prompt_contains": "slow"}, "words": 30, "chunk_delay": 0.05}])
    gw = start_gateway(config(sim, server={"max_concurrent_streams": 1}))
    slow = {**BODY, "stream": True, "messages": [{"role": "user", "content": "slow one"}]}
    with httpx.Client(base_url=gw.url, timeout=10) as http, http.stream("POST", "/v1/messages", json=slow) as first:
        chunks = first.iter_bytes()  # keep the iterator: dropping it would close the stream
        next(chunks)  # the first stream is open
        refused = http.post("/v1/messages", json=slow)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        oai = http.post("/v1/chat/completions", json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]})
        assert oai.status_code == 429 and oai.json()["error"]["code"] == "rate_limit_exceeded"
        assert b"".join(chunks).rstrip().endswith(b'{"type":"message_stop"}')
    # once it ended, streams are admitted again
    with client(gw).messages.stream(**BODY) as s:
        assert s.get_final_message().content


def test_client_disconnect_cancels_the_upstream_stream(fresh_sim, start_gateway):
    sim = fresh_sim
    sim.set_script([{"match": {"prompt_contains": "long"}, "words": 400, "chunk_delay": 0.02}])
    gw = start_gateway(config(sim))
    body = {**BODY, "max_tokens": 1000, "stream": True, "messages": [{"role": "user", "content": "a long one"}]}
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        with http.stream("POST", "/v1/messages", json=body) as response:
            for chunk in response.iter_bytes():
                if b"content_block_delta" in chunk:
                    break
            closed_at = time.monotonic()
        # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 2
    while not sim.disconnects and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.disconnects, "the simulator never saw the gateway close the upstream stream"
    assert sim.disconnects[0]["at"] - closed_at < 0.1
    stats = httpx.get(gw.url + "/stats").json()
    assert stats["cancelled_streams"] == 1 and stats["errors"].get("499") == 1


def test_openai_caller_gets_retries_too(fresh_sim, start_gateway):
    sim = fresh_sim
    sim.set_script([{"match": {"model": "gpt-4o"}, "times": 1, "status": 502}])
    gw = start_gateway(config(sim))
    completion = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content and calls(sim) == 2


def test_concurrent_requests_share_the_breaker_without_crashing(fresh_sim, start_gateway):
    sim = fresh_sim
    sim.set_script([{"match": {"model": "claude-haiku-5-5"}, "status": 500}])
    gw = start_gateway(config(sim, retry={"attempts": 1}, breaker={"failure_threshold": 3, "cooldown": 30},
                              fallbacks=["backup:claude-sonnet-5-5"]))
    statuses: list[int] = []

    def one() -> None:
        statuses.append(httpx.post(gw.url + "/v1/messages", json=BODY, timeout=10).status_code)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 20  # every one answered by the fallback
    for _ in range(3):  # the open breaker spares the upstream
        httpx.post(gw.url + "/v1/messages", json=BODY, timeout=10)
    assert [r["body"]["model"] for r in sim.requests].count("claude-haiku-5-5") <= 20


def test_first_byte_timeout_bounds_a_silent_upstream(fresh_sim, start_gateway):
    sim = fresh_sim
    sim.set_script([{"match": {"prompt_contains": "hello"}, "first_byte_delay": 2}])
    cfg = config(sim, retry={"attempts": 1})
    routes = [r.model_copy(update={"first_byte_timeout": 0.3}) for r in cfg.routes]
    gw = start_gateway(cfg.model_copy(update={"routes": routes}))
    for stream in (False, True):
        started = time.monotonic()
        with pytest.raises(anthropic.APIStatusError) as info:
            client(gw).messages.create(**BODY, stream=stream)
        assert info.value.status_code == 504 and time.monotonic() - started < 1.5


def test_reset_after_the_first_byte_ends_with_an_error_event(fresh_sim, start_gateway):
    sim = fresh_sim
    sim.set_script([{"match": {"prompt_contains": "hello"}, "reset": "after_first_event", "chunk_delay": 0.01}])
    gw = start_gateway(config(sim))
    response = httpx.post(gw.url + "/v1/messages", json={**BODY, "stream": True}, timeout=10)
    events = response.text.strip().split("\n\n")
    assert events[0].startswith("event: message_start")
    assert events[-1].startswith("event: error") and "api_error" in events[-1]
    assert calls(sim) == 1, "nothing is retried once bytes reached the client"


def test_sigterm_lets_in_flight_streams_finish_then_exits_0(sim, tmp_path):
    import signal

    from tests.conftest import launch_gateway_process

    sim.set_script([{"match": {"prompt_contains": "drain"}, "words": 60, "chunk_delay": 0.05}])
    process, url = launch_gateway_process(tmp_path, f'routes: [{{name: a, provider: anthropic, base_url: "{sim.url}"}}]')
    try:
        body = {**BODY, "max_tokens": 200, "stream": True, "messages": [{"role": "user", "content": "drain please"}]}
        with httpx.Client(base_url=url, timeout=20) as http, http.stream("POST", "/v1/messages", json=body) as response:
            chunks = response.iter_bytes()
            received = next(chunks)
            process.send_signal(signal.SIGTERM)
            received += b"".join(chunks)
        assert received.rstrip().endswith(b'{"type":"message_stop"}'), "the in-flight stream was finished"
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        sim.set_script([])


def test_oversized_headers_are_refused_in_the_callers_dialect(gateway):
    big = {"x-padding": "a" * 70_000}
    body = {**BODY}
    response = httpx.post(gateway.url + "/v1/messages", json=body, headers=big, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert "headers exceed" in response.json()["error"]["message"]
    response = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=big)
    assert response.status_code == 400 and "headers exceed" in response.json()["error"]["message"]
    assert httpx.post(gateway.url + "/v1/messages", json=body, timeout=10).status_code == 200


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_malformed_upstream_event_ends_the_stream_with_an_error(fresh_sim, start_gateway, dialect):
    sim = fresh_sim
    sim.set_script([{"match": {"prompt_contains": "hello"}, "malformed_after": 3}])
    gw = start_gateway(config(sim))
    if dialect == "anthropic":
        response = httpx.post(gw.url + "/v1/messages", json={**BODY, "stream": True}, timeout=10)
        events = response.text.strip().split("\n\n")
        assert events[0].startswith("event: message_start") and events[-1].startswith("event: error")
        assert "malformed" in events[-1]
    else:
        body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
        response = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
        assert '"error"' in response.text.strip().split("\n\n")[-1] and "malformed" in response.text
    assert "not json" not in response.text, "the garbage is not passed on"
    with pytest.raises(anthropic.APIStatusError, match="malformed"):
        list(client(gw).messages.create(**BODY, stream=True))
