"""Codex-shaped threads through the cascade, against the same threads sent straight to gpt-5.4.

The Responses API counterpart of ``agentic_session.py``: each thread is a tool loop shaped like
Codex's (12 function tools, long ``instructions``, ``store: false``, the items kept client-side and
sent whole every turn, ``prompt_cache_key`` naming the thread, streaming), a long first message,
then per turn the model's function call and its output of about 1,000 tokens. The simulator
caches per model as OpenAI does (prefixes from 1,024 tokens in 128-token steps, read at a tenth of
the input price) on a simulated clock the gateway shares.

Every model answers each turn with the same call, except on the thread's failing turns, where the
draft calls the tool without its required argument — the tool check escalates it. The same failure
patterns, rule settings and columns as ``agentic_session.py``; a pause lasts 900 s, past the 10 minutes
an idle prefix stays in OpenAI's cache (the simulator's).

    python benchmarks/codex_session.py [--turns 30] [--quick]
"""

from __future__ import annotations

import argparse
import time
import uuid

import openai
from agentic_session import Outcome, Pattern, billed, patterns, print_table, rule_totals, script, text

from cascadeflow import ModelRegistry, ProxyConfig, create_app
from cascadeflow.sim import SimulatedProvider
from cascadeflow.sim.server import ServerThread

GPT, MINI, NANO = "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano"
INSTRUCTIONS = "You are Codex, a coding agent. " + text(1500, 3)


def tools() -> list[dict]:
    return [{"type": "function", "name": f"tool{i}", "description": text(400, i), "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}} for i in range(12)]


def run_thread(url: str, turns: int, pattern: Pattern, sim: SimulatedProvider, thread: str) -> list[dict]:
    """Send one thread; returns each turn's response headers."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    items: list = [{"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "Begin the task. " + text(6000, 1)}]}]
    pauses, seen = dict(pattern.pauses), []
    for n in range(turns):
        if n in pauses:
            sim.advance_clock(pauses[n])
        with client.responses.with_streaming_response.create(
                model=GPT, instructions=INSTRUCTIONS, input=items, tools=tools(), store=False, stream=True,
                prompt_cache_key=thread, extra_headers={"session-id": thread}) as raw:
            final = next(event["response"] for event in _events(raw) if event["type"] == "response.completed")
            seen.append(dict(raw.headers))
        items += final["output"]
        call = next((item for item in final["output"] if item["type"] == "function_call"), None)
        if call is None:
            break
        items.append({"type": "function_call_output", "call_id": call["call_id"],
                      "output": f"step {n} done\n" + text(800, n)})
    return seen


def _events(raw) -> list[dict]:
    import json
    return [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: ")]


def measure(gateway_url: str, sim: SimulatedProvider, registry: ModelRegistry, turns: int, pattern: Pattern,
            draft: str) -> Outcome:
    """One thread through the gateway, then the same thread straight to gpt-5.4; what each really cost."""
    sim.set_script(script(turns, pattern.failing, draft, tool="tool1"))
    sim.clear()
    before = rule_totals(gateway_url, "gpt")
    seen = run_thread(gateway_url, turns, pattern, sim, str(uuid.uuid4()))
    true_cost = billed(sim, registry)
    after = rule_totals(gateway_url, "gpt")
    sim.clear()
    run_thread(sim.url, turns, pattern, sim, str(uuid.uuid4()))
    return Outcome(true_cost, billed(sim, registry), after["cost"] - before.get("cost", 0.0),
                   after["baseline_cost"] - before.get("baseline_cost", 0.0),
                   [h["x-cascadeflow-decision"] for h in seen])


def with_openai_pause(pattern: Pattern) -> Pattern:
    """``pattern`` with its pauses past OpenAI's cache retention (the simulator's: 10 minutes idle) instead of
    Anthropic's 5-minute TTL."""
    return Pattern(pattern.name, pattern.failing, tuple((turn, 900.0) for turn, _ in pattern.pauses))


def gateway_for(sim: SimulatedProvider, draft: str, sticky: int, economics: bool) -> ServerThread:
    rule = {"name": "gpt", "request_model": GPT, "draft_model": draft, "quality_threshold": 0.7,
            "policies": {"sticky_escalations": sticky, "cache_economics": economics}}
    config = ProxyConfig.from_dict({
        "routes": [{"name": "sim", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k",
                    "openai_api": "responses"}],
        "cascade_rules": [rule], "database_url": "sqlite:///:memory:"})
    return ServerThread(create_app(config, clock=lambda: time.time() + sim.advance_clock(0))).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="one draft, fewer patterns (a smoke run)")
    args = parser.parse_args()
    registry = ModelRegistry()
    settings = [(d, sticky, economics) for d in ((MINI,) if args.quick else (MINI, NANO))
                for sticky, economics in ((2, False), (0, False), (0, True))]
    chosen = [with_openai_pause(p) for p in (patterns(args.turns)[:3] if args.quick else patterns(args.turns))]
    print(f"{args.turns}-turn threads, {GPT} requested; costs in USD\n")
    print_table(GPT, settings, chosen, args.turns, registry, gateway_for, measure)


if __name__ == "__main__":
    main()
