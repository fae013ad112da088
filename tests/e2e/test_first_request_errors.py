"""With no network or no valid provider key, the first request (and every later one) names the real cause.

The embedded default config (official routes, the default cascade rules) with its base URLs
pointed at a closed port, at a host that does not resolve, or at an upstream that answers 401.
A cascaded model's request fails on the draft and again on the verifier, which used to open the
breaker inside one request and answer ``503 upstream … keeps failing``; the answer must be the
upstream's own failure, in the caller's dialect, streaming or not, with the official SDKs.
"""

from __future__ import annotations

import socket

import anthropic
import openai
import pytest

from cascadeflow import ProxyConfig

ASK = [{"role": "user", "content": "hello there"}]
REQUESTS = 4  # streaming and not, twice each (the default routes retry with backoff: about 0.8 s a request)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_gateway(start_gateway, tmp_path, base: str):
    config = ProxyConfig.from_env({"CASCADEFLOW_ANTHROPIC_BASE_URL": base, "CASCADEFLOW_OPENAI_BASE_URL": base + "/v1",
                                   "CASCADEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"})
    assert config.all_cascade_rules(), "the default rules cascade Opus and gpt-5.4"
    return start_gateway(config)


def ask_both(url: str, stream: bool) -> list[Exception]:
    """One cascaded request per dialect; the errors the SDKs raised."""
    errors: list[Exception] = []
    try:
        answer = anthropic.Anthropic(base_url=url, api_key="sk-ant-x", max_retries=0).messages.create(
            model="claude-opus-5-5", max_tokens=16, messages=ASK, stream=stream)
        list(answer) if stream else None
    except anthropic.APIStatusError as exc:
        errors.append(exc)
    try:
        answer = openai.OpenAI(base_url=url + "/v1", api_key="sk-x", max_retries=0).chat.completions.create(
            model="gpt-5.4", messages=ASK, stream=stream)
        list(answer) if stream else None
    except openai.APIStatusError as exc:
        errors.append(exc)
    return errors


@pytest.mark.parametrize("where", ["closed-port", "unresolvable-host"])
def test_no_network_names_the_connection_failure_from_the_first_request(start_gateway, tmp_path, where):
    port = closed_port()
    base, cause = {"closed-port": (f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"),
                   "unresolvable-host": ("http://cascadeflow-test.invalid", "cascadeflow-test.invalid")}[where]
    gw = default_gateway(start_gateway, tmp_path, base)
    for i in range(REQUESTS):
        errors = ask_both(gw.url, stream=bool(i % 2))
        assert len(errors) == 2
        for exc in errors:
            assert exc.status_code == 502, (i, exc)
            assert "unreachable" in str(exc) and cause in str(exc), (i, str(exc))
            assert "keeps failing" not in str(exc)
        assert errors[0].body["error"]["type"] == "api_error"  # the Anthropic shape


def test_an_upstream_401_is_relayed_from_the_first_request(sim, fresh_sim, start_gateway, tmp_path):
    fresh_sim.set_script([{"match": {"prompt_contains": "hello there"}, "status": 401}])
    gw = default_gateway(start_gateway, tmp_path, sim.url)
    for i in range(REQUESTS):
        errors = ask_both(gw.url, stream=bool(i % 2))
        assert [type(e) for e in errors] == [anthropic.AuthenticationError, openai.AuthenticationError], (i, errors)
        assert "invalid x-api-key" in str(errors[0]) and "Incorrect API key" in str(errors[1])
