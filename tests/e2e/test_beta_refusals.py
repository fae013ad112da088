"""Betas the draft model lacks: learned from its upstream's 400, then not drafted again.

Anthropic's documentation lists no per-model ``anthropic-beta`` values for the current models,
so nothing is gated from a table: the simulator is set to refuse ``context-1m-2025-08-07`` on the
draft model (in the live API's words), and the gateway must learn it from the first refusal.
Requests go through the anthropic SDK over HTTP; the simulator counts what reaches it.
"""

from __future__ import annotations

import os
import time

import anthropic
import httpx
import pytest

from cascadeflow import ProxyConfig
from cascadeflow.sim import SimulatedProvider
from tests import needs
from tests.conftest import ledger_rows, sim_routes
from tests.e2e.test_claude_code import assert_tool_loop_done, claude, config_for, run_claude, write_loop
from tests.e2e.test_claude_code import models_called as cli_calls

__all__ = ["claude"]  # the CLI fixture, shared with test_claude_code

OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
ONE_M = "context-1m-2025-08-07"
#: what Claude Code sends, with the beta the draft model refuses
BETAS = f"claude-code-20250219,interleaved-thinking-2025-05-14,{ONE_M}"


@pytest.fixture(scope="module")
def picky():
    """A simulator whose Haiku refuses the 1M-context beta."""
    with SimulatedProvider(refused_betas={HAIKU: [ONE_M]}) as provider:
        yield provider


@pytest.fixture()
def gateway(picky, start_gateway, tmp_path):
    picky.set_script([])
    picky.clear()
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    rule = {"name": "opus", "request_model": OPUS, "draft_model": HAIKU, "quality_threshold": 0.0,
            "policies": {"cache_economics": False, "sticky_escalations": 0}}  # the gate is under test
    gw = start_gateway(ProxyConfig.from_dict({"routes": sim_routes(picky), "cascade_rules": [rule],
                                              "database_url": database}))
    return gw, database


def ask(gw, betas: str | None, *, stream: bool, prompt: str = "What is the capital of France?"):
    client = anthropic.Anthropic(base_url=gw.url, api_key="caller", max_retries=0)
    headers = {"anthropic-beta": betas} if betas else {}
    fields = {"model": OPUS, "max_tokens": 256, "messages": [{"role": "user", "content": prompt}],
              "extra_headers": headers}
    if stream:
        with client.messages.stream(**fields) as events:
            message = events.get_final_message()
            return message, events.response.headers
    raw = client.messages.with_raw_response.create(**fields)
    return raw.parse(), raw.headers


def models_called(sim) -> list[str]:
    return [r["body"]["model"] for r in sim.requests if r["path"] == "/v1/messages"]


def test_the_simulator_refuses_a_beta_as_the_api_does(picky):
    picky.clear()
    client = anthropic.Anthropic(base_url=picky.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=HAIKU, max_tokens=16, messages=[{"role": "user", "content": "hi"}],
                               extra_headers={"anthropic-beta": BETAS})
    error = refused.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == (
        f"Unexpected value(s) `{ONE_M}` for the `anthropic-beta` header. Please consult our documentation at "
        "docs.claude.com or try again without the header.")
    client.messages.create(model=OPUS, max_tokens=16, messages=[{"role": "user", "content": "hi"}],
                           extra_headers={"anthropic-beta": BETAS})  # the verifier has it
    client.messages.create(model=HAIKU, max_tokens=16, messages=[{"role": "user", "content": "hi"}],
                           extra_headers={"anthropic-beta": "claude-code-20250219"})  # and Haiku the others


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_refused_beta_escalates_once_then_is_not_drafted(gateway, picky, stream):
    gw, database = gateway
    message, headers = ask(gw, BETAS, stream=stream)
    assert headers["x-cascadeflow-decision"] == "escalated:draft_error"
    assert message.model == OPUS and message.content[0].text.startswith(f"[{OPUS}]"), "the client gets the verifier's answer"
    assert models_called(picky) == [HAIKU, OPUS], "one refused draft, not retried, then the verifier"

    picky.clear()
    message, headers = ask(gw, BETAS, stream=stream, prompt="And of Spain?")
    assert headers["x-cascadeflow-decision"] == "skipped:capability:beta"
    assert message.content[0].text.startswith(f"[{OPUS}]")
    assert models_called(picky) == [OPUS], "no draft is sent to be refused again"

    picky.clear()  # what Haiku has, it still drafts: the memory is per beta
    _, headers = ask(gw, "claude-code-20250219", stream=stream, prompt="And of Italy?")
    assert headers["x-cascadeflow-decision"] == "accepted"
    assert models_called(picky) == [HAIKU]

    stats = httpx.get(f"{gw.url}/stats").json()["cascade"]["opus"]
    assert stats["skipped_by_policy"] == {"capability:beta": 1}
    rows = ledger_rows(database, at_least=3)
    refused = rows[0]
    assert (refused["decision"], refused["draft_model"], refused["served_model"], refused["status"]) == (
        "escalated:draft_error", HAIKU, OPUS, 200)
    assert rows[1]["decision"] == "skipped:capability:beta" and rows[1]["draft_model"] is None


def test_an_error_that_names_no_beta_teaches_nothing(gateway, picky):
    """A draft refused for another reason (here a scripted 400) escalates, and the next request is drafted again."""
    gw, _ = gateway
    picky.set_script([{"match": {"model": HAIKU, "prompt_contains": "first"}, "status": 400,
                       "error_message": "messages: text content blocks must be non-empty"}])
    _, headers = ask(gw, BETAS.replace(f",{ONE_M}", ""), stream=False, prompt="first")
    assert headers["x-cascadeflow-decision"] == "escalated:draft_error"
    picky.clear()
    _, headers = ask(gw, BETAS.replace(f",{ONE_M}", ""), stream=False, prompt="second")
    assert headers["x-cascadeflow-decision"] == "accepted"
    assert models_called(picky) == [HAIKU]


def test_claude_code_completes_its_tool_loop_when_the_draft_refuses_its_beta(claude, picky, start_gateway, tmp_path):
    """The real CLI through a cascade whose draft model refuses ``claude-code-20250219`` (which Claude Code sends
    on every request): turn 1's draft is refused and escalated, turn 2 is not drafted, the loop completes."""
    target = tmp_path / "hello.txt"
    picky.clear()
    picky.set_script(write_loop(OPUS, target))
    picky.refused_betas = {SONNET: frozenset({"claude-code-20250219"})}
    try:
        rule = {"name": "opus", "request_model": OPUS, "draft_model": SONNET, "quality_threshold": 0.0,
                "policies": {"cache_economics": False, "sticky_escalations": 0}}
        gw = start_gateway(config_for(picky, cascade_rules=[rule]))
        assert_tool_loop_done(*run_claude(claude, gw.url, tmp_path, "Create hello.txt containing hi"), target)
    finally:
        picky.refused_betas = {HAIKU: frozenset({ONE_M})}
        picky.set_script([])
    assert [model for _, model in cli_calls(picky)] == [SONNET, OPUS, OPUS], "one refused draft, then the verifier"
    refused = next(r for r in picky.requests if r["body"]["model"] == SONNET)
    assert "claude-code-20250219" in refused["headers"]["anthropic-beta"], "the beta was sent, not stripped"
    stats = httpx.get(f"{gw.url}/stats").json()["cascade"]["opus"]
    assert stats["skipped_by_policy"] == {"capability:beta": 1}


REDIS = os.environ.get("CASCADEFLOW_TEST_REDIS", "redis://127.0.0.1:6379/7")


def cascade_config(picky, rule: dict, **extra) -> ProxyConfig:
    rule = {"name": "opus", "request_model": OPUS, "quality_threshold": 0.0,
            "policies": {"cache_economics": False, "sticky_escalations": 0}, **rule}
    return ProxyConfig.from_dict({"routes": sim_routes(picky), "cascade_rules": [rule], **extra})


@pytest.fixture()
def shared_redis():
    import redis

    client = redis.Redis.from_url(REDIS, socket_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(needs.redis(REDIS, "CASCADEFLOW_TEST_REDIS", exc))
    yield REDIS
    client.flushdb()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_refusal_one_gateway_learned_spares_the_others_the_refused_draft(picky, start_gateway, shared_redis, stream):
    """Two gateways share one Redis: the first pays for the refused draft, the second sends none."""
    picky.set_script([])
    picky.clear()
    first, second = (start_gateway(cascade_config(picky, {"draft_model": HAIKU}, redis_url=shared_redis))
                     for _ in range(2))
    _, headers = ask(second, "claude-code-20250219", stream=stream, prompt="Warm up")  # it has read Redis already
    assert headers["x-cascadeflow-decision"] == "accepted"
    picky.clear()
    _, headers = ask(first, BETAS, stream=stream)
    assert headers["x-cascadeflow-decision"] == "escalated:draft_error"
    assert models_called(picky) == [HAIKU, OPUS]

    picky.clear()
    time.sleep(2.1)  # the second gateway reads what others learned at most every 2 s
    message, headers = ask(second, BETAS, stream=stream, prompt="And of Spain?")
    assert headers["x-cascadeflow-decision"] == "skipped:capability:beta"
    assert message.content[0].text.startswith(f"[{OPUS}]")
    assert models_called(picky) == [OPUS], "the second gateway sends no draft to be refused"
    assert httpx.get(f"{second.url}/stats").json()["cascade"]["opus"]["skipped_by_policy"] == {"capability:beta": 1}


def test_with_redis_down_each_gateway_still_learns_for_itself(picky, start_gateway):
    picky.set_script([])
    picky.clear()
    gw = start_gateway(cascade_config(picky, {"draft_model": HAIKU}, redis_url="redis://127.0.0.1:1/0"))
    _, headers = ask(gw, BETAS, stream=False)
    assert headers["x-cascadeflow-decision"] == "escalated:draft_error"
    picky.clear()
    _, headers = ask(gw, BETAS, stream=True, prompt="And of Spain?")
    assert headers["x-cascadeflow-decision"] == "skipped:capability:beta"
    assert models_called(picky) == [OPUS]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_each_draft_stage_is_gated_on_its_own_refusals(picky, start_gateway, tmp_path, stream):
    """Stages Haiku then Sonnet; Haiku refuses the beta, Sonnet has it: Haiku is skipped, Sonnet still drafts."""
    picky.set_script([])
    picky.clear()
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = start_gateway(cascade_config(picky, {"stages": [{"model": HAIKU}, {"model": SONNET}]}, database_url=database))
    message, headers = ask(gw, BETAS, stream=stream)
    assert (headers["x-cascadeflow-decision"], headers["x-cascadeflow-draft-model"]) == ("accepted", SONNET)
    assert message.content[0].text.startswith(f"[{SONNET}]")
    assert models_called(picky) == [HAIKU, SONNET], "Haiku's draft refused, Sonnet's accepted"

    picky.clear()
    message, headers = ask(gw, BETAS, stream=stream, prompt="And of Spain?")
    assert (headers["x-cascadeflow-decision"], headers["x-cascadeflow-draft-model"]) == ("accepted", SONNET)
    assert models_called(picky) == [SONNET], "Haiku is not asked again; the next stage is"

    picky.clear()  # a beta neither draft model has: no stage is tried
    picky.refused_betas = {HAIKU: frozenset({ONE_M}), SONNET: frozenset({ONE_M})}
    try:
        _, headers = ask(gw, BETAS, stream=stream, prompt="And of Italy?")
        assert headers["x-cascadeflow-decision"] == "escalated:draft_error"
        assert models_called(picky) == [SONNET, OPUS]
        picky.clear()
        _, headers = ask(gw, BETAS, stream=stream, prompt="And of Greece?")
    finally:
        picky.refused_betas = {HAIKU: frozenset({ONE_M})}
    assert headers["x-cascadeflow-decision"] == "skipped:capability:beta"
    assert models_called(picky) == [OPUS]
    assert [row["decision"] for row in ledger_rows(database, at_least=4)] == [
        "accepted", "accepted", "escalated:draft_error", "skipped:capability:beta"]
    stats = httpx.get(f"{gw.url}/stats").json()["cascade"]["opus"]
    assert stats["drafts_tried"] == 4, "2 + 1 + 1 + 0: a skipped stage is no draft tried"
