"""Fuzzing the gateway's endpoints with hypothesis: malformed input never yields a 5xx or a crash."""

from __future__ import annotations

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ENDPOINTS = ["/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
models = st.sampled_from(["claude-haiku-5-5", "gpt-4o-mini", "", "nowhere:x", "openai:", "cascade/none"]) | st.text(max_size=12)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "bogus"]), "content": json_values}),
    max_size=3,
) | json_values
bodies = st.fixed_dictionaries(
    {"model": models | json_values, "messages": messages},
    optional={"max_tokens": st.integers(-5, 10**6) | json_values, "stream": st.booleans() | json_values,
              "tools": json_values, "tool_choice": json_values, "stream_options": json_values, "system": json_values},
)


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


def assert_answered(response: httpx.Response, endpoint: str) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        if endpoint.startswith("/v1/messages"):
            assert body["type"] == "error" and isinstance(body["error"]["message"], str)
        else:
            assert isinstance(body["error"]["message"], str)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies)
def test_structured_garbage(http, endpoint, body):
    try:
        content = orjson.dumps(body)
    except TypeError:  # integers beyond 64 bits: send them as Python's json writes them
        import json

        content = json.dumps(body).encode()
    assert_answered(http.post(endpoint, content=content, headers={"content-type": "application/json"}), endpoint)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), content=st.binary(max_size=200))
def test_raw_bytes(http, endpoint, content):
    assert_answered(http.post(endpoint, content=content), endpoint)


def test_still_serving_after_the_fuzzing(http):
    response = http.post("/v1/messages", json={"model": "claude-haiku-5-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
