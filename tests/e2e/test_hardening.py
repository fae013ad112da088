"""Hardening (issue 15): a breaker that never fails harder than the upstream, drafts that escalate at once,
retry-after honoured or relayed, upstream answers that are not the API, budgets and allowlists on the models a
request really reaches, bounded input, and cancelled streams priced for what they generated.

Every test drives the gateway over HTTP with the official SDKs (or raw HTTP where the SDK would refuse to send
the input) against the simulated provider's scripted faults.
"""

from __future__ import annotations

import asyncio
import threading
import time

import anthropic
import httpx
import openai
import pytest

from cascadeflow import ProxyConfig
from cascadeflow.errors import ProxyTransportError, ProxyUpstreamError
from cascadeflow.proxy import ProxyHandler, ProxyRequest, ProxyRoute

HAIKU, SONNET, OPUS = "claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5"
ASK = {"max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}
FAST_RETRY = {"attempts": 3, "backoff": 0.05, "max_backoff": 2, "max_total": 5}


def _route(sim, name: str = "primary", **extra) -> dict:
    return {"name": name, "provider": "anthropic", "base_url": sim.url, "api_key": "k", "retry": FAST_RETRY, **extra}


def _config(sim, *routes: dict, **extra) -> ProxyConfig:
    openai_route = {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k",
                    "retry": {"attempts": 1}}
    return ProxyConfig.from_dict({"routes": [*routes, openai_route], **extra})


def _claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)


def _gpt(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)


def _calls(sim, model: str | None = None) -> int:
    return sum(1 for r in sim.requests if r["path"] in ("/v1/messages", "/v1/chat/completions")
               and (model is None or (r["body"] or {}).get("model") == model))


def _breakers(gw) -> dict:
    return httpx.get(gw.url + "/health").json()["breakers"]


# -- 1. the circuit breaker ----------------------------------------------------------------------


def test_without_an_alternative_the_breaker_relays_the_upstreams_own_error(fresh_sim, start_gateway):
    """No fallback, no other deployment: every request goes upstream and gets its real error, never 503."""
    fresh_sim.set_script([{"match": {"model": HAIKU}, "status": 500, "error_message": "upstream exploded"}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 1},
                                                 breaker={"failure_threshold": 2, "cooldown": 30})))
    for _ in range(4):
        with pytest.raises(anthropic.InternalServerError, match="upstream exploded") as info:
            _claude(gw).messages.create(model=HAIKU, **ASK)
        assert info.value.status_code == 500
    with pytest.raises(openai.InternalServerError, match="upstream exploded"):  # the OpenAI caller's dialect too
        _gpt(gw).chat.completions.create(model=HAIKU, messages=[{"role": "user", "content": "hello"}])
    assert _calls(fresh_sim) == 5


def test_failures_are_counted_per_request_not_per_attempt(fresh_sim, start_gateway):
    fresh_sim.set_script([{"match": {"model": HAIKU}, "times": 3, "status": 529}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, models=[HAIKU], fallbacks=[f"backup:{SONNET}"],
                                                 breaker={"failure_threshold": 2}),
                               _route(fresh_sim, "backup")))
    message = _claude(gw).messages.create(model=HAIKU, **ASK)  # 3 attempts fail, the fallback answers
    assert message.content[0].text.startswith(f"[{SONNET}]")
    assert _calls(fresh_sim, HAIKU) == 3
    breaker = _breakers(gw)["primary"]
    assert breaker["state"] == "closed" and breaker["consecutive_failures"] == 1
    assert _claude(gw).messages.create(model=HAIKU, **ASK).content[0].text.startswith(f"[{HAIKU}]")
    assert _breakers(gw)["primary"]["consecutive_failures"] == 0


@pytest.mark.parametrize("status", [400, 404, 413, 429])
def test_client_errors_and_rate_limits_never_open_the_breaker(fresh_sim, start_gateway, status):
    fresh_sim.set_script([{"match": {"model": HAIKU}, "status": status, "error_message": "upstream says no"}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, models=[HAIKU], fallbacks=[f"backup:{SONNET}"],
                                                 retry={"attempts": 1}, breaker={"failure_threshold": 1}),
                               _route(fresh_sim, "backup")))
    for _ in range(3):
        if status == 429:  # a rate limit is a reason to fall back, not to open the breaker
            assert _claude(gw).messages.create(model=HAIKU, **ASK).content[0].text.startswith(f"[{SONNET}]")
            continue
        with pytest.raises(anthropic.APIStatusError, match="upstream says no") as info:
            _claude(gw).messages.create(model=HAIKU, **ASK)
        assert info.value.status_code == status
    assert _calls(fresh_sim, HAIKU) == 3 and _calls(fresh_sim, SONNET) == (3 if status == 429 else 0)
    assert _breakers(gw).get("primary", {"state": "closed"})["state"] == "closed"


def test_the_breaker_is_per_model_and_refuses_only_with_a_fallback(fresh_sim, start_gateway):
    fresh_sim.set_script([{"match": {"model": HAIKU}, "status": 500}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, fallbacks=[f"backup:{SONNET}"], retry={"attempts": 1},
                                                 breaker={"failure_threshold": 2, "cooldown": 30}),
                               _route(fresh_sim, "backup")))
    for _ in range(4):  # haiku fails twice, then its breaker sends requests straight to the fallback
        raw = _claude(gw).messages.with_raw_response.create(model=HAIKU, **ASK)
        assert raw.headers["x-cascadeflow-fallback-model"] == f"backup:{SONNET}"
    assert _calls(fresh_sim, HAIKU) == 2
    health = _breakers(gw)["primary"]
    assert health["state"] == "open" and health["models"][HAIKU]["state"] == "open"
    assert "500" in health["models"][HAIKU]["last_failure"]
    # another model on the same route is not touched by haiku's breaker
    assert _claude(gw).messages.create(model=OPUS, **ASK).content[0].text.startswith(f"[{OPUS}]")


def test_a_fallback_without_a_route_is_no_alternative(fresh_sim, start_gateway):
    fresh_sim.set_script([{"match": {"model": HAIKU}, "status": 500, "error_message": "upstream exploded"}])
    routes = [_route(fresh_sim, models=[HAIKU], fallbacks=["ghost-model"], retry={"attempts": 1},
                     breaker={"failure_threshold": 1, "cooldown": 30}),
              {"name": "openai", "provider": "openai", "base_url": fresh_sim.url + "/v1", "models": ["gpt-4o"]}]
    gw = start_gateway(ProxyConfig.from_dict({"routes": routes}))
    for _ in range(3):
        with pytest.raises(anthropic.InternalServerError, match="upstream exploded"):
            _claude(gw).messages.create(model=HAIKU, **ASK)
    assert _calls(fresh_sim, HAIKU) == 3


def test_a_draft_that_keeps_failing_does_not_shut_the_verifier_out(fresh_sim, start_gateway):
    """10 cascades whose draft answers 529: all are answered by the verifier on the same route."""
    fresh_sim.set_script([{"match": {"model": HAIKU}, "status": 529}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, breaker={"failure_threshold": 2, "cooldown": 30}),
                               cascade_rules=[{"name": "sonnet", "request_model": SONNET, "draft_model": HAIKU}]))
    statuses: list[int] = []

    def one() -> None:
        response = httpx.post(gw.url + "/v1/messages", json={"model": SONNET, **ASK}, timeout=10)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 10
    for _ in range(3):  # once the draft's breaker is open the draft is skipped at once
        raw = _claude(gw).messages.with_raw_response.create(model=SONNET, **ASK)
        assert raw.headers["x-cascadeflow-decision"] == "escalated:draft_error"
    assert _breakers(gw)["primary"]["models"][HAIKU]["state"] == "open"
    assert SONNET not in _breakers(gw)["primary"]["models"] or \
        _breakers(gw)["primary"]["models"][SONNET]["state"] == "closed"


def _request(model: str, **extra) -> ProxyRequest:
    return ProxyRequest("POST", "/v1/messages", {}, {"model": model, **ASK, **extra})


def test_a_refusal_says_why_and_what_failed_last(fresh_sim):
    fresh_sim.set_script([{"match": {"model": HAIKU}, "status": 529, "error_message": "overloaded now"}])
    route = ProxyRoute(name="primary", provider="anthropic", base_url=fresh_sim.url, api_key="k",
                       retry={"attempts": 1}, breaker={"failure_threshold": 2, "cooldown": 30})

    async def scenario() -> ProxyTransportError:
        handler = ProxyHandler()
        try:
            for _ in range(2):
                with pytest.raises(ProxyUpstreamError):
                    await handler.send(route, HAIKU, _request(HAIKU), has_alternative=True)
            with pytest.raises(ProxyTransportError) as refused:
                await handler.send(route, HAIKU, _request(HAIKU), has_alternative=True)
            # without an alternative the call is still sent, and the upstream's own answer comes back
            with pytest.raises(ProxyUpstreamError) as relayed:
                await handler.send(route, HAIKU, _request(HAIKU))
            assert relayed.value.upstream_status == 529
            return refused.value
        finally:
            await handler.aclose()

    refusal = asyncio.run(scenario())
    assert refusal.status == 503 and refusal.retry_after and refusal.retry_after > 1
    assert "claude-haiku-5-5" in refusal.message and "primary" in refusal.message
    assert "2 requests in a row" in refusal.message and "529" in refusal.message
    assert _calls(fresh_sim, HAIKU) == 3


def test_a_cancelled_half_open_probe_does_not_leave_the_breaker_open(fresh_sim):
    fresh_sim.set_script([
        {"match": {"model": HAIKU}, "times": 1, "status": 500},
        {"match": {"model": HAIKU}, "times": 1, "first_byte_delay": 5},
    ])
    route = ProxyRoute(name="primary", provider="anthropic", base_url=fresh_sim.url, api_key="k",
                       retry={"attempts": 1}, breaker={"failure_threshold": 1, "cooldown": 0.2})

    async def scenario() -> str:
        handler = ProxyHandler()
        try:
            with pytest.raises(ProxyUpstreamError):
                await handler.send(route, HAIKU, _request(HAIKU), has_alternative=True)
            await asyncio.sleep(0.3)  # half-open: the next call is the probe
            probe = asyncio.create_task(handler.send(route, HAIKU, _request(HAIKU), has_alternative=True))
            await asyncio.sleep(0.2)
            probe.cancel()  # the caller left while the probe was waiting for the upstream
            with pytest.raises(asyncio.CancelledError):
                await probe
            result = await handler.send(route, HAIKU, _request(HAIKU), has_alternative=True)
            return result.data["content"][0]["text"]
        finally:
            await handler.aclose()

    assert asyncio.run(scenario()).startswith(f"[{HAIKU}]")


# -- 2. a failing draft escalates at once -----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", [{"status": 429, "retry_after": 5}, {"status": 529}, {"status": 500}])
def test_a_failing_draft_is_not_retried(fresh_sim, start_gateway, stream, fault):
    fresh_sim.set_script([{"match": {"model": HAIKU}, **fault}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 3, "backoff": 0.5, "max_backoff": 8}),
                               cascade_rules=[{"name": "sonnet", "request_model": SONNET, "draft_model": HAIKU}]))
    started = time.monotonic()
    if stream:
        with _claude(gw).messages.stream(model=SONNET, **ASK) as s:
            message, headers = s.get_final_message(), s.response.headers
    else:
        raw = _claude(gw).messages.with_raw_response.create(model=SONNET, **ASK)
        message, headers = raw.parse(), raw.headers
    elapsed = time.monotonic() - started
    assert message.content[0].text.startswith(f"[{SONNET}]")
    assert headers["x-cascadeflow-decision"] == "escalated:draft_error"
    assert _calls(fresh_sim, HAIKU) == 1 and elapsed < 1.0


# -- 3. retry-after beyond the retry budget -------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_retry_after_beyond_the_cap_is_relayed_at_once(fresh_sim, start_gateway, stream):
    fresh_sim.set_script([{"match": {"model": HAIKU}, "status": 429, "retry_after": 20}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 3, "backoff": 0.05, "max_backoff": 2})))
    started = time.monotonic()
    with pytest.raises(anthropic.RateLimitError) as info:
        _claude(gw).messages.create(model=HAIKU, **ASK, stream=stream)
    assert time.monotonic() - started < 1.0
    assert info.value.response.headers["retry-after"] == "20"
    assert _calls(fresh_sim, HAIKU) == 1


def test_a_retry_after_within_the_cap_is_waited_in_full(fresh_sim, start_gateway):
    fresh_sim.set_script([{"match": {"model": HAIKU}, "times": 1, "status": 429, "retry_after": 0.6}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 3, "backoff": 0.05, "max_backoff": 2})))
    started = time.monotonic()
    assert _claude(gw).messages.create(model=HAIKU, **ASK).content
    assert time.monotonic() - started >= 0.6 and _calls(fresh_sim, HAIKU) == 2


# -- 4. answers that are not the API -----------------------------------------------------------------

_NOT_JSON = [
    {"body": '{"id": "msg_1", "content": [', "content_type": "application/json"},
    {"body": "<html><body><h1>502 Bad Gateway</h1></body></html>", "content_type": "text/html"},
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", _NOT_JSON, ids=["malformed", "html"])
def test_a_200_that_is_not_json_is_a_502_in_the_callers_dialect(fresh_sim, start_gateway, stream, fault):
    fresh_sim.set_script([{"match": {"prompt_contains": "hello"}, **fault}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 1})))
    with pytest.raises(anthropic.APIStatusError) as info:
        _claude(gw).messages.create(model=HAIKU, **ASK, stream=stream)
    assert info.value.status_code == 502 and info.value.body["error"]["type"] == "api_error"
    assert "not JSON" in info.value.message
    with pytest.raises(openai.APIStatusError) as oinfo:
        _gpt(gw).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}],
                                         stream=stream)
    assert oinfo.value.status_code == 502 and "not JSON" in oinfo.value.message


def test_an_upstream_redirect_is_not_followed(fresh_sim, start_gateway):
    fresh_sim.set_script([{"match": {"prompt_contains": "hello"}, "times": 1, "redirect": fresh_sim.url + "/v1/messages"}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 1})))
    with pytest.raises(anthropic.APIStatusError) as info:
        _claude(gw).messages.create(model=HAIKU, **ASK)
    assert info.value.status_code == 502 and "redirect" in info.value.message
    assert _calls(fresh_sim) == 1, "the credentials were not sent again to the redirect's target"


# -- 5. budgets and allowlists on the models a request really reaches -----------------------------


async def _ledger_rows(url: str, expected: int) -> list[dict]:
    from cascadeflow.store import Ledger

    deadline = time.monotonic() + 5
    while True:
        ledger = await Ledger(url).start()
        try:
            found = await ledger.rows()
        finally:
            await ledger.aclose()
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def _keyed(sim, tmp_path, keys: list[dict], routes: list[dict], **extra) -> ProxyConfig:
    return ProxyConfig.from_dict({"routes": routes, "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
                                  "auth": {"mode": "api_key", "keys": keys}, **extra})


def _in_flight_then(gw, sim, first: dict, second: dict, api_key: str, path: str = "/v1/messages") -> int:
    """Send ``first`` (slow), wait until the upstream has it, then ``second``; the second's status."""
    headers = {"x-api-key": api_key, "authorization": f"Bearer {api_key}"}
    slow = threading.Thread(target=lambda: httpx.post(gw.url + path, json=first, headers=headers, timeout=10))
    slow.start()
    deadline = time.monotonic() + 5
    while not sim.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        return httpx.post(gw.url + path, json=second, headers=headers, timeout=10).status_code
    finally:
        slow.join()


@pytest.mark.parametrize("model", [f"anthropic:{SONNET}", f"anthropic/{SONNET}"])
def test_a_route_prefix_does_not_make_a_request_free_for_admission(fresh_sim, start_gateway, tmp_path, model):
    fresh_sim.set_script([{"match": {"prompt_contains": "slow"}, "latency": 1.0}])
    routes = [_route(fresh_sim, "anthropic", retry={"attempts": 1})]
    gw = start_gateway(_keyed(fresh_sim, tmp_path, [{"key": "k-budget", "limits": {"daily_budget_usd": 0.001}}], routes))
    body = {"model": model, "max_tokens": 1000, "messages": [{"role": "user", "content": "slow"}]}
    # the first reserves 1000 output tokens of sonnet ($0.015): the budget is taken while it runs
    assert _in_flight_then(gw, fresh_sim, body, {**body, "messages": [{"role": "user", "content": "x"}]},
                           "k-budget") == 402


def test_a_route_price_counts_for_admission(fresh_sim, start_gateway, tmp_path):
    fresh_sim.set_script([{"match": {"prompt_contains": "slow"}, "latency": 1.0}])
    routes = [{"name": "local", "provider": "openai", "base_url": fresh_sim.url + "/v1", "api_key": "k",
               "retry": {"attempts": 1}, "cost_per_1k_tokens": 0.01}]
    gw = start_gateway(_keyed(fresh_sim, tmp_path, [{"key": "k-local", "limits": {"daily_budget_usd": 0.001}}], routes))
    body = {"model": "my-local-model", "max_tokens": 1000, "messages": [{"role": "user", "content": "slow"}]}
    assert _in_flight_then(gw, fresh_sim, body, {**body, "messages": [{"role": "user", "content": "x"}]},
                           "k-local", "/v1/chat/completions") == 402


def test_a_key_allowlist_covers_route_fallbacks_and_a_rules_verifier(fresh_sim, start_gateway, tmp_path):
    fresh_sim.set_script([{"match": {"model": HAIKU}, "status": 529}])
    routes = [_route(fresh_sim, "primary", models=[HAIKU, "claude-haiku-4-5"], retry={"attempts": 1},
                     fallbacks=[f"backup:{OPUS}"]),
              _route(fresh_sim, "backup", retry={"attempts": 1})]
    rules = [{"name": "cheap", "request_model": "claude-haiku-4-5", "draft_model": HAIKU, "verifier_model": OPUS}]
    gw = start_gateway(_keyed(fresh_sim, tmp_path, [{"key": "k-haiku", "models": ["claude-haiku-*"]}], routes,
                              cascade_rules=rules))
    client = anthropic.Anthropic(base_url=gw.url, api_key="k-haiku", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError, match=OPUS) as info:
        client.messages.create(model=HAIKU, **ASK)
    assert "fallback" in info.value.message
    with pytest.raises(anthropic.PermissionDeniedError, match=OPUS) as info:
        client.messages.create(model="claude-haiku-4-5", **ASK)
    assert "verifier" in info.value.message
    assert _calls(fresh_sim, OPUS) == 0


# -- 6. input edges ----------------------------------------------------------------------------------


def _post(gw, path: str, raw: bytes) -> httpx.Response:
    return httpx.post(gw.url + path, content=raw, headers={"content-type": "application/json"}, timeout=10)


def _assert_400(response: httpx.Response, path: str, fragment: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    error = response.json()["error"]
    if path == "/v1/messages":
        assert response.json()["type"] == "error" and error["type"] == "invalid_request_error"
    else:
        assert error["type"] == "invalid_request_error"
    assert fragment in error["message"], error["message"]


_PATHS = {"/v1/messages": HAIKU, "/v1/chat/completions": "gpt-4o"}


@pytest.mark.parametrize("path", list(_PATHS))
@pytest.mark.parametrize("served", ["same", "translated"])
def test_integers_beyond_64_bits_are_a_400(fresh_sim, start_gateway, path, served):
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 1})))
    model = _PATHS[path] if served == "same" else _PATHS["/v1/chat/completions" if path == "/v1/messages" else "/v1/messages"]
    raw = (b'{"model": "%s", "max_tokens": 20, "metadata": {"user_id": "u"}, "temperature": 1, '
           b'"messages": [{"role": "user", "content": "hi"}], "top_k": 123456789012345678901234567890}' % model.encode())
    _assert_400(_post(gw, path, raw), path, "64 bits")
    assert _calls(fresh_sim) == 0


@pytest.mark.parametrize("path", list(_PATHS))
@pytest.mark.parametrize("served", ["same", "translated"])
def test_a_nested_integer_beyond_64_bits_is_never_a_500(fresh_sim, start_gateway, path, served):
    """Nested ones are forwarded as sent, or a 400 naming the field where a translation re-serialises the body
    (tests/e2e/test_hardening_edges.py covers them in detail)."""
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 1})))
    model = _PATHS[path] if served == "same" else _PATHS["/v1/chat/completions" if path == "/v1/messages" else "/v1/messages"]
    raw = (b'{"model": "%s", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], '
           b'"metadata": {"user_id": "u", "n": 123456789012345678901234567890}}' % model.encode())
    assert _post(gw, path, raw).status_code in (200, 400)


@pytest.mark.parametrize("path", list(_PATHS))
@pytest.mark.parametrize("served", ["same", "translated"])
def test_a_lone_surrogate_is_a_400(fresh_sim, start_gateway, path, served):
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 1})))
    model = _PATHS[path] if served == "same" else _PATHS["/v1/chat/completions" if path == "/v1/messages" else "/v1/messages"]
    raw = b'{"model": "%s", "max_tokens": 20, "messages": [{"role": "user", "content": "a \\ud83d b"}]}' % model.encode()
    _assert_400(_post(gw, path, raw), path, "surrogate")
    assert _calls(fresh_sim) == 0


@pytest.mark.parametrize("path", list(_PATHS))
def test_an_overlong_model_name_is_a_400_and_the_ledger_keeps_writing(fresh_sim, start_gateway, tmp_path, path):
    config = _config(fresh_sim, _route(fresh_sim, retry={"attempts": 1}))
    config = config.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'gw.db'}"})
    gw = start_gateway(config)
    response = httpx.post(gw.url + path, json={"model": "m" * 300, "max_tokens": 5, "messages": []}, timeout=10)
    _assert_400(response, path, "256 characters")
    assert httpx.post(gw.url + path, json={"model": _PATHS[path], "max_tokens": 5,
                                           "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    rows = asyncio.run(_ledger_rows(config.database_url, 2))
    assert [r["status"] for r in rows] == [400, 200]
    assert len(rows[0]["requested_model"]) <= 256


@pytest.mark.parametrize("stream", [False, True])
def test_a_control_character_in_an_escalating_cascades_model_is_a_400(fresh_sim, start_gateway, stream):
    fresh_sim.set_script([{"match": {"model": HAIKU}, "status": 529}])
    gw = start_gateway(_config(fresh_sim, _route(fresh_sim, retry={"attempts": 1}),
                               cascade_rules=[{"name": "sonnet", "request_model": "claude-sonnet-*",
                                               "draft_model": HAIKU}]))
    for model in (SONNET + "\u0001", SONNET + "\n", SONNET + "\u007f"):
        response = httpx.post(gw.url + "/v1/messages", json={"model": model, **ASK, "stream": stream}, timeout=10)
        _assert_400(response, "/v1/messages", "control character")
    assert _calls(fresh_sim) == 0


def test_405_answers_carry_allow(gateway):
    response = httpx.get(gateway.url + "/v1/messages", headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    response = httpx.delete(gateway.url + "/v1/chat/completions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = httpx.post(gateway.url + "/health")
    assert response.status_code == 405 and "GET" in response.headers["allow"]


# -- 7. cancelled streams are priced for what they generated ------------------------------------------


def _cancel_after(gw, path: str, body: dict, deltas: int) -> None:
    marker = b"content_block_delta" if path == "/v1/messages" else b'"delta":{"content"'
    seen = 0
    with httpx.Client(base_url=gw.url, timeout=10) as http, http.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            seen += chunk.count(marker)
            if seen >= deltas:
                break  # leaving the block closes the connection mid-stream


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_a_cancelled_stream_is_priced_for_what_it_generated(fresh_sim, start_gateway, tmp_path, path):
    fresh_sim.set_script([{"match": {"prompt_contains": "long"}, "words": 400, "chunk_delay": 0.005}])
    config = _config(fresh_sim, _route(fresh_sim, retry={"attempts": 1}))
    config = config.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'gw.db'}"})
    gw = start_gateway(config)
    model = HAIKU if path == "/v1/messages" else "gpt-4o"
    prompt = "a long answer please " + "with some context " * 50
    body = {"model": model, "max_tokens": 2000, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    _cancel_after(gw, path, body, 60)
    rows = asyncio.run(_ledger_rows(config.database_url, 1))
    assert len(rows) == 1 and rows[0]["cancelled"] is True
    row = rows[0]
    # at least the 60 deltas read (a word or more each), at most the whole answer (~400 words)
    assert 60 <= row["output_tokens"] <= 1200, row
    assert row["input_tokens"] >= 150, row  # the prompt is ~250 tokens; reported, or estimated when it is not
    assert row["cost"] and row["cost"] > 0
