"""Bad input and upstream failures: each a clear error in the caller's dialect; the worker keeps serving."""

from __future__ import annotations

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import sim_config

ANTHROPIC_OK = {"model": "claude-haiku-5-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
OPENAI_OK = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def assert_anthropic_error(response: httpx.Response, status: int, error_type: str, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert fragment in body["error"]["message"]


def assert_openai_error(response: httpx.Response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert fragment in error["message"]


def still_serving(http: httpx.Client) -> None:
    assert http.post("/v1/messages", json=ANTHROPIC_OK).status_code == 200
    assert http.post("/v1/chat/completions", json=OPENAI_OK).status_code == 200


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"model": "claude-haiku-5-5", "messages": "\xff\xfe"}', "UTF-8"),
        (b'{"model": 42, "max_tokens": 5, "messages": []}', "model"),
        (b'{"model": "claude-haiku-5-5", "max_tokens": "five", "messages": []}', "max_tokens"),
        (b'{"model": "claude-haiku-5-5", "max_tokens": 5, "messages": "hi"}', "messages"),
        (b'{"model": "claude-haiku-5-5", "max_tokens": 5, "messages": [], "stream": "yes"}', "stream"),
        (b'{"model": "claude-haiku-5-5", "max_tokens": 5, "messages": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "depth"),
    ],
)
def test_bad_anthropic_input(http, sim, content, fragment):
    response = http.post("/v1/messages", content=content, headers={"content-type": "application/json"})
    assert_anthropic_error(response, 400, "invalid_request_error", fragment)
    assert sim.requests == [], "nothing invalid reaches the upstream"
    still_serving(http)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{oops", "not valid JSON"),
        (b'{"model": "gpt-4o", "messages": []}', "messages"),
        (b'{"model": ["gpt-4o"], "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream_options": 3}', "stream_options"),
    ],
)
def test_bad_openai_input(http, content, fragment):
    assert_openai_error(http.post("/v1/chat/completions", content=content), 400, fragment)
    still_serving(http)


def test_huge_body_is_413_in_both_dialects(sim, start_gateway):
    gw = start_gateway(sim_config(sim, server={"max_body_bytes": 4096}))
    big = {**ANTHROPIC_OK, "messages": [{"role": "user", "content": "x" * 10_000}]}
    with httpx.Client(base_url=gw.url) as http:
        assert_anthropic_error(http.post("/v1/messages", json=big), 413, "request_too_large", "limit")
        assert_openai_error(http.post("/v1/chat/completions", json={**OPENAI_OK, "messages": big["messages"]}), 413)

        def chunked():  # no content-length: the limit is enforced while reading
            for _ in range(10):
                yield b"x" * 1000

        response = http.post("/v1/messages", content=chunked())
        assert_anthropic_error(response, 413, "request_too_large")
        assert http.post("/v1/messages", json=ANTHROPIC_OK).status_code == 200
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).messages.create(**big)
    assert info.value.status_code == 413


def test_prefix_that_is_no_route_is_part_of_the_model_name(http, sim):
    response = http.post("/v1/chat/completions", json={**OPENAI_OK, "model": "nowhere:model-x"})
    assert response.status_code == 200
    assert sim.requests[-1]["body"]["model"] == "nowhere:model-x"


def test_routing_error_names_the_routes(sim, start_gateway):
    config = sim_config(sim)
    only = config.model_copy(update={"routes": [config.routes[0].model_copy(update={"models": frozenset({"claude-haiku-5-5"})})]})
    gw = start_gateway(only)
    client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(**{**ANTHROPIC_OK, "model": "some-unknown-model"})
    assert info.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0).chat.completions.create(**{**OPENAI_OK, "model": "mystery"})


def test_unknown_path_and_method_in_dialect(http):
    assert_openai_error(http.post("/v1/embeddingz", json={}), 404, "not an endpoint")
    response = http.get("/v1/messages", headers={"anthropic-version": "2023-06-01"})
    assert_anthropic_error(response, 405, "invalid_request_error", "not allowed")


# -- upstream errors are relayed -------------------------------------------------


def test_429_keeps_retry_after_for_both_sdks(gw, sim):
    sim.set_script([{"match": {"prompt_contains": "limit me"}, "status": 429, "retry_after": 7}])
    with pytest.raises(anthropic.RateLimitError) as info:
        anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).messages.create(
            **{**ANTHROPIC_OK, "messages": [{"role": "user", "content": "limit me"}]}
        )
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError) as oinfo:
        openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            **{**OPENAI_OK, "messages": [{"role": "user", "content": "limit me"}]}
        )
    assert oinfo.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("stream", [False, True])
def test_529_stays_529(gw, sim, stream):
    sim.set_script([{"match": {"prompt_contains": "busy"}, "status": 529}])
    client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(**{**ANTHROPIC_OK, "messages": [{"role": "user", "content": "busy"}]}, stream=stream)
    assert info.value.status_code == 529
    assert isinstance(info.value, (anthropic.InternalServerError, getattr(anthropic, "OverloadedError", anthropic.InternalServerError)))
    assert info.value.body["error"]["type"] == "overloaded_error"


def test_500_and_400_from_upstream_are_relayed(gw, sim):
    sim.set_script(
        [
            {"match": {"prompt_contains": "crash"}, "status": 500, "error_message": "upstream exploded"},
            {"match": {"prompt_contains": "refuse"}, "status": 400, "error_message": "bad thing in request"},
        ]
    )
    client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.InternalServerError, match="upstream exploded"):
        client.messages.create(**{**ANTHROPIC_OK, "messages": [{"role": "user", "content": "crash"}]})
    with pytest.raises(anthropic.BadRequestError, match="bad thing in request"):
        client.messages.create(**{**ANTHROPIC_OK, "messages": [{"role": "user", "content": "refuse"}]})
    oclient = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError, match="upstream exploded"):
        oclient.chat.completions.create(**{**OPENAI_OK, "messages": [{"role": "user", "content": "crash"}]})


def test_unreachable_upstream_is_502(start_gateway):
    from cascadeflow import ProxyConfig

    config = ProxyConfig.from_dict(
        {"routes": [{"name": "down", "provider": "anthropic", "base_url": "http://127.0.0.1:9"}, {"name": "odown", "provider": "openai", "base_url": "http://127.0.0.1:9/v1"}]}
    )
    gw = start_gateway(config)
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).messages.create(**ANTHROPIC_OK)
    assert info.value.status_code == 502 and info.value.body["error"]["type"] == "api_error"
    with pytest.raises(openai.APIStatusError) as oinfo:
        openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0).chat.completions.create(**OPENAI_OK)
    assert oinfo.value.status_code == 502


def test_reset_before_headers_is_502(gw, sim):
    sim.set_script([{"match": {"prompt_contains": "reset"}, "reset": "before_headers"}])
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).messages.create(
            **{**ANTHROPIC_OK, "messages": [{"role": "user", "content": "reset"}]}
        )
    assert info.value.status_code == 502


def test_slow_upstream_is_504(sim, start_gateway):
    config = sim_config(sim)
    slow = [r.model_copy(update={"timeout": 0.5}) for r in config.routes]
    gw = start_gateway(config.model_copy(update={"routes": slow}))
    sim.set_script([{"match": {"prompt_contains": "slow"}, "first_byte_delay": 3}])
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).messages.create(
            **{**ANTHROPIC_OK, "messages": [{"role": "user", "content": "slow"}]}
        )
    assert info.value.status_code == 504 and info.value.body["error"]["type"] == "timeout_error"
    with pytest.raises(openai.APIStatusError) as oinfo:
        openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            **{**OPENAI_OK, "messages": [{"role": "user", "content": "slow"}]}
        )
    assert oinfo.value.status_code == 504
    sim.set_script([])


# -- failures after a stream started end with an error event ---------------------


def test_stream_cut_mid_way_ends_with_error_event(gw, sim):
    sim.set_script([{"match": {"prompt_contains": "cut"}, "cut_after": 3}])
    client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    events = []
    with pytest.raises(anthropic.APIStatusError, match="before it finished"):
        for event in client.messages.create(**{**ANTHROPIC_OK, "messages": [{"role": "user", "content": "cut"}]}, stream=True):
            events.append(event.type)
    assert events[0] == "message_start" and "message_stop" not in events
    # the error event the gateway writes names the request, as its JSON errors do (x-request-id)
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        cut = http.post("/v1/messages", json={**ANTHROPIC_OK, "stream": True, "messages": [{"role": "user", "content": "cut"}]})
    error = orjson.loads(cut.text.strip().split("\n\n")[-1].split("data: ", 1)[1])
    assert error["type"] == "error" and error["request_id"] == cut.headers["x-request-id"]
    # …also when the stream is translated from an OpenAI-compatible upstream
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        cut = http.post("/v1/messages", json={**ANTHROPIC_OK, "model": "gpt-4o-mini", "stream": True,
                                              "messages": [{"role": "user", "content": "cut"}]})
    error = orjson.loads(cut.text.strip().split("\n\n")[-1].split("data: ", 1)[1])
    assert error["type"] == "error" and error["request_id"] == cut.headers["x-request-id"]
    oclient = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError, match="before it finished"):
        list(oclient.chat.completions.create(**{**OPENAI_OK, "messages": [{"role": "user", "content": "cut"}]}, stream=True))


def test_a_long_healthy_stream_outlives_the_request_timeout(sim, start_gateway):
    """`timeout` bounds non-streaming calls; a stream ends only when it falls silent."""
    config = sim_config(sim)
    routes = [r.model_copy(update={"timeout": 0.5, "stream_idle_timeout": 2}) for r in config.routes]
    gw = start_gateway(config.model_copy(update={"routes": routes}))
    sim.set_script([{"match": {"prompt_contains": "long"}, "words": 40, "chunk_delay": 0.1}])
    client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    with client.messages.stream(**{**ANTHROPIC_OK, "messages": [{"role": "user", "content": "long"}]}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and len(final.content[0].text.split()) == 40
    sim.set_script([])


def test_stream_stall_ends_with_timeout_event(sim, start_gateway):
    config = sim_config(sim)
    routes = [r.model_copy(update={"stream_idle_timeout": 0.5}) for r in config.routes]
    gw = start_gateway(config.model_copy(update={"routes": routes}))
    sim.set_script([{"match": {"prompt_contains": "stall"}, "stall_after": 2, "stall_seconds": 5}])
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        response = http.post("/v1/messages", json={**ANTHROPIC_OK, "stream": True, "messages": [{"role": "user", "content": "stall"}]})
    assert response.status_code == 200
    assert response.text.rstrip().endswith("}")
    last = response.text.strip().split("\n\n")[-1]
    assert last.startswith("event: error") and "timeout_error" in last and "silent" in last
    sim.set_script([])
