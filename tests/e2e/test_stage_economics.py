"""Cache economics of a multi-stage rule: each stage priced on its own failure record, the chain priced backwards.

A first stage that fails every turn must not look like one that never fails because a later stage rescues the
turn: over HTTP, with the simulator as the upstream, the conversation stops drafting on it after a few turns
and saves nearly what the rule with the rescuing stage alone saves.
"""

from __future__ import annotations

import httpx
import pytest

from cascadeflow import ProxyConfig
from tests.conftest import sim_routes
from tests.e2e.test_sessions import Conversation, bash, unmark

OPUS, HAIKU, CHEAP = "claude-opus-5-5", "claude-haiku-5-5", "cheap-coder"
#: a draft a fifth of Haiku's price: on the rule's prior it is worth trying first
MODELS = {CHEAP: {"provider": "openai", "input_per_mtok": 0.2, "output_per_mtok": 1.0, "cache_read_per_mtok": 0.02}}
TURNS = 10


def gateway(sim, start_gateway, stages: list[str]):
    rule = {"name": "opus", "request_model": OPUS, "stages": [{"model": m} for m in stages],
            "policies": {"sticky_escalations": 0}}
    return start_gateway(ProxyConfig.from_dict({"routes": sim_routes(sim), "cascade_rules": [rule], "models": MODELS}))


def run_session(sim, gw, turns: int = TURNS) -> tuple[list[list[str]], list[dict], float]:
    """One agent session; per turn the models called and the headers; the true saving (%)."""
    talk = Conversation(gw)
    called: list[list[str]] = []
    answers: list[dict] = []
    cost = baseline = 0.0
    for n in range(turns):
        # the cheap stage answers with a malformed tool call (the checks refuse it); Haiku and Opus answer well
        sim.set_script([{"match": {"model": CHEAP}, "tool_calls": [{"name": "Bash", "input": {"command": 7}}]},
                        {"match": {"model": HAIKU}, **bash(f"ls {n}")}, {"match": {"model": OPUS}, **bash(f"ls {n}")}])
        seen = len(sim.requests)
        message, headers = talk.turn()
        called.append([r["body"]["model"] for r in sim.requests[seen:]])
        answers.append(headers)
        cost += float(headers["x-cascadeflow-cost-usd"])
        baseline += float(headers["x-cascadeflow-baseline-cost-usd"])
        talk.answer(message, f"file{n}.py")
        unmark(talk.messages)
    return called, answers, 100 * (1 - cost / baseline)


@pytest.mark.timeout(120)
def test_a_first_stage_that_always_fails_stops_being_drafted_though_a_later_stage_rescues_it(sim, fresh_sim,
                                                                                              start_gateway):
    gw = gateway(sim, start_gateway, [CHEAP, HAIKU])
    called, answers, saving = run_session(sim, gw)
    assert called[0] == [CHEAP, HAIKU], "on the rule's prior the cheap stage is tried first, and Haiku rescues it"
    assert all(h["x-cascadeflow-decision"] == "accepted" for h in answers)
    tried = [n for n, models in enumerate(called) if CHEAP in models]
    assert tried and max(tried) <= 2, f"the cheap stage, failing every turn, is still drafted on turns {tried}"
    assert all(models == [HAIKU] for models in called[3:])
    assert answers[-1]["x-cascadeflow-skipped-stages"] == f"{CHEAP}=cache_economics"
    assert float(answers[-1]["x-cascadeflow-expected-saving-usd"]) > 0, "the chain from Haiku still pays"

    # the rule has learned the cheap stage's rate too: a new conversation does not try it at all
    assert run_session(sim, gw, turns=1)[0] == [[HAIKU]]
    # ...and /stats shows each stage's own record, the rate the economics priced it on
    stages = httpx.get(gw.url + "/stats").json()["cascade"]["opus"]["drafts_by_stage"]
    assert stages == {CHEAP: {"drafts": len(tried), "failed": len(tried)}, HAIKU: {"drafts": TURNS + 1, "failed": 0}}

    sim.clear()
    alone_called, _, alone = run_session(sim, gateway(sim, start_gateway, [HAIKU]))
    assert all(models == [HAIKU] for models in alone_called)
    # the true saving (cost and baseline as reported): the few turns spent learning cost at most a few points
    assert saving > alone - 3.0, f"{saving:.1f}% with the failing stage first vs {alone:.1f}% with Haiku alone"
