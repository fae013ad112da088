"""The response cache through the gateway, driven by the official SDKs against the simulator.

The simulator records every request it gets, so "answered from the cache" is checked as
"the upstream never saw the second request", not only by the response header.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import anthropic
import httpx
import openai
import pytest
import yaml

from cascadeflow import ProxyConfig
from cascadeflow.store import Ledger
from tests import needs
from tests.conftest import launch_gateway_processes, sim_routes

SONNET, OPUS, HAIKU, MINI = "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5", "gpt-5.4-mini"
REDIS = os.environ.get("CASCADEFLOW_TEST_REDIS", "redis://127.0.0.1:6379/7")
KEY_A, KEY_B, KEY_OFF, KEY_A2 = "team-a-key", "team-b-key", "no-cache-key", "team-a-second-key"
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def _routes(sim) -> list[dict]:
    routes = sim_routes(sim)
    routes[1]["openai_api"] = "responses"  # the simulator serves /v1/responses itself
    return routes


@pytest.fixture(scope="module")
def cache_setup(sim, start_gateway, tmp_path_factory):
    ledger = f"sqlite:///{tmp_path_factory.mktemp('cache') / 'ledger.db'}"
    config = ProxyConfig.from_dict({
        "routes": _routes(sim), "database_url": ledger,
        "cache": {"default": True},
        "cascade_rules": [{"request_model": OPUS, "draft_model": HAIKU, "policies": {"cache_economics": False}}],
    })
    return start_gateway(config), ledger


@pytest.fixture()
def gw(cache_setup, fresh_sim):
    return cache_setup[0]


def upstream(sim) -> list[dict]:
    return [r for r in sim.requests if r["method"] == "POST"]


def ledger_rows(url: str, expected: int) -> list[dict]:
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


# -- exact hits, JSON and stream, in each dialect ----------------------------------------------------------


def test_messages_hit_as_json_and_as_stream(gw, sim):
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Name a colour."}]}
    first = client.messages.with_raw_response.create(**ask)
    second = client.messages.with_raw_response.create(**ask)
    assert first.headers["x-cascadeflow-cache"] == "miss" and second.headers["x-cascadeflow-cache"] == "hit"
    assert second.headers["x-cascadeflow-cost-usd"] == "0.00000000"
    assert second.parse().model_dump() == first.parse().model_dump()
    with client.messages.stream(**ask) as stream:
        streamed = stream.get_final_message()
        assert stream.response.headers["x-cascadeflow-cache"] == "hit"
    assert streamed.content[0].text == first.parse().content[0].text
    assert streamed.usage.output_tokens == first.parse().usage.output_tokens
    assert len(upstream(sim)) == 1


def test_a_streamed_answer_is_cached_and_served_as_json(gw, sim):
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Name a fruit."}]}
    with client.messages.stream(**ask) as stream:
        streamed = stream.get_final_message()
        assert stream.response.headers["x-cascadeflow-cache"] == "miss"
    again = client.messages.with_raw_response.create(**ask)
    assert again.headers["x-cascadeflow-cache"] == "hit"
    assert again.parse().content[0].text == streamed.content[0].text and again.parse().id == streamed.id
    assert len(upstream(sim)) == 1


def test_chat_completions_hit_as_json_and_as_stream(gw, sim):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="caller", max_retries=0)
    ask = {"model": MINI, "max_completion_tokens": 100, "messages": [{"role": "user", "content": "Name a city."}]}
    first = client.chat.completions.with_raw_response.create(**ask)
    second = client.chat.completions.with_raw_response.create(**ask)
    assert (first.headers["x-cascadeflow-cache"], second.headers["x-cascadeflow-cache"]) == ("miss", "hit")
    text = first.parse().choices[0].message.content
    assert second.parse().choices[0].message.content == text
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == first.parse().usage.completion_tokens
    assert len(upstream(sim)) == 1


def test_responses_hit_as_json_and_as_stream(gw, sim):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="caller", max_retries=0)
    ask = {"model": MINI, "input": "Name a river.", "max_output_tokens": 100}
    first = client.responses.with_raw_response.create(**ask)
    second = client.responses.with_raw_response.create(**ask)
    assert (first.headers["x-cascadeflow-cache"], second.headers["x-cascadeflow-cache"]) == ("miss", "hit")
    assert second.parse().output_text == first.parse().output_text
    # a Responses stream replays the upstream's own events: the first streamed request fetches (and stores) them
    with client.responses.stream(**ask) as stream:
        streamed = stream.get_final_response()
    with client.responses.stream(**ask) as stream:
        replayed = stream.get_final_response()
        assert stream._response.headers["x-cascadeflow-cache"] == "hit"  # noqa: SLF001 - the SDK keeps it there
    assert replayed.output_text == streamed.output_text == first.parse().output_text
    assert len(upstream(sim)) == 2


def test_a_cascaded_answer_is_cached(gw, sim):
    sim.set_script([{"match": {"model": HAIKU}, "text": "Paris is the capital of France."}])
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    ask = {"model": OPUS, "max_tokens": 200, "messages": [{"role": "user", "content": "Capital of France?"}]}
    first = client.messages.with_raw_response.create(**ask)
    calls = len(upstream(sim))
    second = client.messages.with_raw_response.create(**ask)
    assert first.headers["x-cascadeflow-cache"] == "miss" and second.headers["x-cascadeflow-cache"] == "hit"
    assert second.parse().content[0].text == first.parse().content[0].text and second.parse().model == OPUS
    assert len(upstream(sim)) == calls >= 1


# -- what misses or is bypassed -------------------------------------------------------------------------------


def test_a_changed_parameter_misses(gw, sim):
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Name a tree."}]}
    client.messages.create(**ask)
    for changed in ({"stop_sequences": ["zz"]}, {"max_tokens": 201}, {"system": "Be brief."}, {"model": HAIKU},
                    {"messages": [{"role": "user", "content": "Name a tree!"}]}):
        response = client.messages.with_raw_response.create(**{**ask, **changed})
        assert response.headers["x-cascadeflow-cache"] == "miss", changed
    assert len(upstream(sim)) == 6
    # labels that do not change the answer do not split the entry
    same = client.messages.with_raw_response.create(**ask, metadata={"user_id": "someone"})
    assert same.headers["x-cascadeflow-cache"] == "hit"


def test_no_cache_reads_nothing_but_stores_and_no_store_does_neither(gw, sim):
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Name a bird."}]}
    kept = client.messages.with_raw_response.create(**ask, extra_headers={"cache-control": "no-store"})
    assert kept.headers["x-cascadeflow-cache"] == "bypass"
    assert client.messages.with_raw_response.create(**ask).headers["x-cascadeflow-cache"] == "miss"  # nothing stored
    fresh = client.messages.with_raw_response.create(**ask, extra_headers={"cache-control": "no-cache"})
    assert fresh.headers["x-cascadeflow-cache"] == "bypass"
    assert client.messages.with_raw_response.create(**ask).headers["x-cascadeflow-cache"] == "hit"
    assert len(upstream(sim)) == 3


def test_requests_with_tools_and_unfinished_answers_are_not_cached(gw, sim):
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    tools = {"model": SONNET, "max_tokens": 200, "tools": [WEATHER],
             "messages": [{"role": "user", "content": "Weather in Lima?"}]}
    for _ in range(2):
        assert client.messages.with_raw_response.create(**tools).headers["x-cascadeflow-cache"] == "bypass"
    sim.set_script([{"match": {"prompt_contains": "refuse"}, "text": "", "stop_reason": "refusal"},
                    {"match": {"prompt_contains": "fail"}, "status": 529}])
    for prompt in ("please refuse", "please refuse", "fail", "fail"):
        with pytest.raises(anthropic.APIStatusError) if prompt == "fail" else _nothing():
            client.messages.create(model=SONNET, max_tokens=50, messages=[{"role": "user", "content": prompt}])
    assert len(upstream(sim)) == 6


def test_a_stream_cut_short_or_failing_midway_is_not_cached(gw, sim):
    # cut after message_delta (stop_reason and all) but before message_stop: still not a complete answer
    sim.set_script([{"match": {"prompt_contains": "cut"}, "text": "Short.", "cut_after": 6},
                    {"match": {"prompt_contains": "broken"}, "error_event_after": 3}])
    client = httpx.Client(base_url=gw.url, timeout=10)
    for prompt in ("cut", "cut", "broken", "broken"):
        body = {"model": SONNET, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": prompt}]}
        response = client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
        assert response.headers["x-cascadeflow-cache"] == "miss", prompt
    assert len(upstream(sim)) == 4


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- tenants, the ledger, /stats and /metrics ------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(sim, start_gateway, tmp_path_factory):
    ledger = f"sqlite:///{tmp_path_factory.mktemp('cache-keys') / 'ledger.db'}"
    config = ProxyConfig.from_dict({
        "routes": _routes(sim), "database_url": ledger, "cache": {},
        "auth": {"mode": "api_key", "master_key": "master", "keys": [
            {"key": KEY_A, "cache": True}, {"key": KEY_B, "cache": True}, {"key": KEY_OFF}]},
    })
    return start_gateway(config), ledger


def test_each_key_has_its_own_entries_and_only_keys_that_opt_in_are_cached(keyed, fresh_sim):
    gw, _ = keyed
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Our secret plan?"}]}

    def send(key: str):
        return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0).messages.with_raw_response.create(**ask)

    assert send(KEY_A).headers["x-cascadeflow-cache"] == "miss"
    assert send(KEY_B).headers["x-cascadeflow-cache"] == "miss"  # never team A's answer
    assert send(KEY_A).headers["x-cascadeflow-cache"] == "hit"
    off = send(KEY_OFF)
    assert "x-cascadeflow-cache" not in off.headers  # this key did not opt in: the cache does not apply
    assert len(upstream(fresh_sim)) == 3


def test_a_key_made_with_the_keys_command_opts_in(keyed, fresh_sim):
    gw, _ = keyed

    def keys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cascadeflow.cli", "keys", *args, "--url", gw.url],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "CASCADEFLOW_MASTER_KEY": "master"})

    made = keys("create", "--name", "cached", "--cache")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    shown = keys("show", secret.split("_")[1]).stdout
    assert "cache            on" in shown
    listed = httpx.get(gw.url + "/admin/keys", headers={"authorization": "Bearer master"}).json()["keys"]
    assert [k["cache"] for k in listed if k["name"] == "cached"] == [True]
    client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Name a lake."}]}
    headers = [client.messages.with_raw_response.create(**ask).headers["x-cascadeflow-cache"] for _ in range(2)]
    assert headers == ["miss", "hit"] and len(upstream(fresh_sim)) == 1


def test_hits_are_priced_zero_in_the_ledger_stats_and_metrics(gw, sim, cache_setup):
    _, ledger = cache_setup
    before = len(ledger_rows(ledger, 0))
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Name a stone."}]}
    client.messages.create(**ask)
    client.messages.create(**ask)
    rows = ledger_rows(ledger, before + 2)[before:]
    miss, hit = sorted(rows, key=lambda r: r["ts"])
    assert miss["cache"] == "miss" and miss["cost"] > 0 and miss["output_tokens"] > 0
    assert hit["cache"] == "hit" and hit["cost"] == 0 and hit["input_tokens"] == hit["output_tokens"] == 0
    assert hit["baseline_cost"] == pytest.approx(miss["baseline_cost"]) and hit["route"] is None
    stats = httpx.get(gw.url + "/stats").json()
    assert stats["cache"]["hit"] >= 1 and stats["ledger"]["cache_hits"] >= 1
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'cascadeflow_cache_lookups_total{result="hit"}' in metrics


# -- time to live, and Redis shared by two processes -------------------------------------------------------------


def test_an_entry_expires_after_its_ttl(sim, fresh_sim, start_gateway):
    gw = start_gateway(ProxyConfig.from_dict({"routes": _routes(sim), "cache": {"default": True, "ttl_seconds": 0.5}}))
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Name a month."}]}
    assert client.messages.with_raw_response.create(**ask).headers["x-cascadeflow-cache"] == "miss"
    assert client.messages.with_raw_response.create(**ask).headers["x-cascadeflow-cache"] == "hit"
    time.sleep(0.7)
    assert client.messages.with_raw_response.create(**ask).headers["x-cascadeflow-cache"] == "miss"
    assert len(upstream(sim)) == 2


@pytest.fixture()
def redis_pair(sim, fresh_sim, tmp_path):
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_timeout=2).flushdb()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(needs.redis(REDIS, "CASCADEFLOW_TEST_REDIS", exc))
    text = yaml.safe_dump({"routes": _routes(sim), "redis_url": REDIS, "cache": {"default": True, "ttl_seconds": 2}})
    processes = launch_gateway_processes(tmp_path, text, [None, None])
    yield [url for _, url in processes]
    for process, _ in processes:
        process.terminate()
        process.wait(timeout=10)
    redis.Redis.from_url(REDIS).flushdb()


def test_two_gateway_processes_share_one_cache_through_redis(redis_pair, sim):
    a, b = (anthropic.Anthropic(base_url=url, api_key="caller", max_retries=0) for url in redis_pair)
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Name a planet."}]}
    first = a.messages.with_raw_response.create(**ask)
    assert first.headers["x-cascadeflow-cache"] == "miss"
    with b.messages.stream(**ask) as stream:
        streamed = stream.get_final_message()
        assert stream.response.headers["x-cascadeflow-cache"] == "hit"
    assert streamed.content[0].text == first.parse().content[0].text
    assert len(upstream(sim)) == 1
    time.sleep(2.2)  # Redis expires the entry itself
    assert b.messages.with_raw_response.create(**ask).headers["x-cascadeflow-cache"] == "miss"
    assert len(upstream(sim)) == 2


# -- the semantic layer ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def semantic_gw(sim, start_gateway):
    pytest.importorskip("wordllama", reason="the semantic cache needs its extra: pip install -e '.[semantic]'")
    return start_gateway(ProxyConfig.from_dict({
        "routes": _routes(sim),
        "cascade_rules": [{"request_model": OPUS, "draft_model": HAIKU, "semantic_cache": True,
                           "policies": {"cache_economics": False}}],
    }))


def test_a_paraphrase_is_answered_but_a_near_duplicate_is_not(semantic_gw, fresh_sim):
    fresh_sim.set_script([{"match": {"prompt_contains": "404"}, "text": "Not Found: the server has no such resource."},
                          {"match": {"prompt_contains": "403"}, "text": "Forbidden: you may not see it."}])
    client = anthropic.Anthropic(base_url=semantic_gw.url, api_key="caller", max_retries=0)

    def ask(prompt: str, **extra):
        return client.messages.with_raw_response.create(
            model=OPUS, max_tokens=200, messages=[{"role": "user", "content": prompt}], **extra)

    first = ask("What does HTTP status code 404 mean?")
    calls = len(upstream(fresh_sim))
    paraphrase = ask("What does the HTTP status code 404 mean?")
    assert paraphrase.headers["x-cascadeflow-cache"] == "hit"
    assert paraphrase.headers["x-cascadeflow-cache-match"].startswith("semantic:")
    assert paraphrase.parse().content[0].text == first.parse().content[0].text
    assert len(upstream(fresh_sim)) == calls
    trap = ask("What does HTTP status code 403 mean?")  # one digit apart: another answer
    assert trap.headers["x-cascadeflow-cache"] == "miss" and trap.parse().content[0].text.startswith("Forbidden")
    agent = ask("What does the HTTP status code 404 mean?", extra_headers={"x-claude-code-session-id": "s-1"})
    assert agent.headers["x-cascadeflow-cache"] == "miss"  # an agent client: exact matches only


def test_with_team_scope_the_keys_of_one_team_share_entries(sim, fresh_sim, start_gateway):
    gw = start_gateway(ProxyConfig.from_dict({
        "routes": _routes(sim), "cache": {"default": True, "scope": "team"},
        "auth": {"mode": "api_key", "keys": [{"key": KEY_A, "team": "a"}, {"key": KEY_A2, "team": "a"},
                                            {"key": KEY_B, "team": "b"}]},
    }))
    ask = {"model": SONNET, "max_tokens": 200, "messages": [{"role": "user", "content": "Team plan?"}]}

    def send(key: str) -> str:
        client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
        return client.messages.with_raw_response.create(**ask).headers["x-cascadeflow-cache"]

    assert [send(KEY_A), send(KEY_A2), send(KEY_B)] == ["miss", "hit", "miss"]
    assert len(upstream(fresh_sim)) == 2
