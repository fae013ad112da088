"""Codex-shaped conversations through the cascade over the Responses API: signals from the session, cache-aware
decisions and the true baseline, as for Claude Code (tests/e2e/test_sessions.py).

Driven with the official openai SDK's ``responses.create``, the conversation kept client-side as Codex keeps it
(``store: false``, the input items growing by the model's output and the tools' outputs, ``prompt_cache_key`` naming
the thread).
"""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from cascadeflow import ModelRegistry, ProxyConfig, Usage
from tests.conftest import NO_RETRY

GPT, MINI = "gpt-5.4", "gpt-5.4-mini"
EXEC = {"type": "function", "name": "exec_command", "description": "Run a shell command",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}
#: long enough that OpenAI caches the prefix (1,024 tokens and more)
INSTRUCTIONS = "You are Codex, a coding agent working in the user's repository. " * 120


@pytest.fixture(scope="module")
def responses_session_gw(sim, start_gateway):
    return start_gateway(ProxyConfig.from_dict({
        "routes": [{"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k",
                    "openai_api": "responses", **NO_RETRY}],
        "cascade_rules": [{"name": "gpt", "request_model": GPT, "draft_model": MINI, "quality_threshold": 0.7,
                           "policies": {"sticky_escalations": 0}}],
    }))


@pytest.fixture()
def gw(responses_session_gw, fresh_sim):
    return responses_session_gw


class Thread:
    """One Codex thread: its items, sent whole every turn."""

    def __init__(self, gw) -> None:
        self.client = openai.OpenAI(base_url=gw.url + "/v1", api_key="caller", max_retries=0)
        self.key = f"thread-{uuid.uuid4()}"
        self.items: list = [{"type": "message", "role": "user",
                             "content": [{"type": "input_text", "text": "Run the tests and fix what fails"}]}]

    def turn(self):
        raw = self.client.responses.with_raw_response.create(
            model=GPT, instructions=INSTRUCTIONS, input=self.items, tools=[EXEC], store=False,
            prompt_cache_key=self.key)
        response = raw.parse()
        self.items += [item.model_dump(exclude_none=True) for item in response.output]
        return response, dict(raw.headers)

    def output(self, response, text: str) -> None:
        call = next(item for item in response.output if item.type == "function_call")
        self.items.append({"type": "function_call_output", "call_id": call.call_id, "output": text})


def run(cmd: str) -> dict:
    return {"tool_calls": [{"name": "exec_command", "input": {"cmd": cmd}}]}


def models(sim) -> list[str]:
    return [r["body"]["model"] for r in sim.requests if r["method"] == "POST" and r["path"] == "/v1/responses"]


@pytest.mark.parametrize("failure", [
    # what the Codex CLI sends back (0.1xx): tests/e2e/test_codex.py runs the real one
    "Chunk ID: 70fdc3\nWall time: 0.0000 seconds\nProcess exited with code 3\nOriginal token count: 2\nOutput:\nboom\n",
    "Exit code: 1\nWall time: 0.4 seconds\nOutput:\nerror: could not compile `app`\n",
    json.dumps({"output": "E   assert 1 == 2\n", "metadata": {"exit_code": 1, "duration_seconds": 0.4}}),
], ids=["codex", "shell-text", "shell-json"])
def test_a_failing_command_after_a_drafted_turn_sends_the_next_turn_to_the_verifier(gw, sim, failure):
    sim.set_script([{"match": {"prompt_contains": "Run the tests"}, **run("pytest -q")}])
    thread = Thread(gw)
    first, headers = thread.turn()
    assert headers["x-cascadeflow-decision"] == "accepted" and headers["x-cascadeflow-served-model"] == MINI
    assert float(headers["x-cascadeflow-expected-saving-usd"]) > 0, "the cache economics priced the turn"
    thread.output(first, failure)
    _, headers = thread.turn()
    assert headers["x-cascadeflow-decision"] == "skipped:session_signal:tool_error"
    assert headers["x-cascadeflow-served-model"] == GPT
    assert models(sim) == [MINI, GPT], "no draft was paid for the second turn"


def test_a_passing_command_keeps_the_thread_drafted(gw, sim):
    sim.set_script([{"match": {"prompt_contains": "Run the tests"}, **run("pytest -q")}])
    thread = Thread(gw)
    first, _ = thread.turn()
    thread.output(first, "Exit code: 0\nWall time: 0.4 seconds\nOutput:\n4 passed\n")
    _, headers = thread.turn()
    assert headers["x-cascadeflow-decision"] == "accepted" and models(sim) == [MINI, MINI]


def test_a_repeated_call_or_a_correcting_user_sends_the_next_turn_to_the_verifier(gw, sim):
    # the draft calls exactly what it called the turn before: a loop
    sim.set_script([{"match": {"model": MINI}, **run("ls")}, {"match": {"model": GPT}, **run("cat a.py")}])
    thread = Thread(gw)
    decisions = []
    for n in range(3):
        response, headers = thread.turn()
        decisions.append(headers["x-cascadeflow-decision"])
        thread.output(response, f"a.py b.py ({n})")
    assert decisions == ["accepted", "accepted", "skipped:session_signal:tool_loop"]
    # a user who says the drafted answer was wrong
    sim.set_script([{"match": {"model": MINI}, "text": "Done: the tests pass now."},
                    {"match": {"model": GPT}, "text": "Let me look again."}])
    thread = Thread(gw)
    _, headers = thread.turn()
    assert headers["x-cascadeflow-decision"] == "accepted"
    thread.items.append({"type": "message", "role": "user",
                         "content": [{"type": "input_text", "text": "No, that's wrong: two tests still fail."}]})
    _, headers = thread.turn()
    assert headers["x-cascadeflow-decision"] == "skipped:session_signal:correction"
    thread.items.append({"role": "user", "content": "Thanks. Now add a docstring."})  # an easy input message
    _, headers = thread.turn()
    assert headers["x-cascadeflow-decision"] != "skipped:session_signal:correction"


def test_the_baseline_is_what_the_requested_model_would_have_paid_with_its_own_cache(gw, sim):
    """Turn 1 is drafted, so gpt-5.4's cache stays cold; turn 2's draft fails its checks and gpt-5.4 reads nothing
    from its cache. Always-gpt-5.4 would have read turn 1's prefix: the baseline says so (a loss, not a saving)."""
    sim.set_script([{"match": {"prompt_contains": "Run the tests"}, **run("pytest -q")},
                    {"match": {"model": MINI, "prompt_contains": "passed"}, "tool_calls": [{"name": "exec_command",
                                                                                         "input": {}}]},
                    {"match": {"model": GPT, "prompt_contains": "passed"}, "text": "All tests pass."}])
    thread = Thread(gw)
    first, headers = thread.turn()
    assert headers["x-cascadeflow-decision"] == "accepted"
    thread.output(first, "Exit code: 0\nOutput:\n4 passed\n")
    second, headers = thread.turn()
    usage = second.usage
    assert headers["x-cascadeflow-served-model"] == GPT and usage.input_tokens_details.cached_tokens == 0
    paid = ModelRegistry().cost(GPT, Usage(usage.input_tokens, usage.output_tokens, 0, 0))  # the verifier, cold
    cost, baseline = float(headers["x-cascadeflow-cost-usd"]), float(headers["x-cascadeflow-baseline-cost-usd"])
    assert cost > paid, "the request's cost counts the draft it paid for too"
    # always-gpt-5.4 would have read the prefix turn 1 cached (a tenth of the input price): well under the cold call
    assert baseline < 0.6 * paid, (baseline, paid)
