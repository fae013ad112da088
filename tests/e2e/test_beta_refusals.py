"""Betas the draft model lacks: learned from its upstream's 400, then not drafted again.

Anthropic's documentation lists no per-model ``anthropic-beta`` values for the current models,
so nothing is gated from a table: the simulator is set to refuse ``context-1m-2025-08-07`` on the
draft model (in the live API's words), and the gateway must learn it from the first refusal.
Requests go through the anthropic SDK over HTTP; the simulator counts what reaches it.
"""

from __future__ import annotations

import anthropic
import httpx
import pytest

from cascadeflow import ProxyConfig
from cascadeflow.sim import SimulatedProvider
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
