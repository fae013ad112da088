"""Codex-shaped threads through the cascade, against the same threads sent straight to the requested model.

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

With ``--requested claude-opus-5-5`` the threads ask for a Claude model on an Anthropic route (drafted on
Sonnet and Haiku): the gateway translates each request to the Messages API with the cache breakpoints it
adds, Anthropic's cache rules apply (5-minute TTL; the pause is 400 s), and "straight to the requested
model" is the same thread through a gateway with no cascade rule (the translation a Codex user needs).

With ``--api chat`` each thread is the same tool loop as a Chat Completions agent sends it (LangChain's,
the AI SDK's): the instructions as the system message, an assistant message with its ``tool_calls`` and
the tool's message per turn, ``prompt_cache_key`` naming the thread, not streamed.

    python benchmarks/codex_session.py [--turns 30] [--quick] [--requested claude-opus-5-5] [--api chat]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import openai
from agentic_session import (
    HAIKU,
    OPUS,
    SONNET,
    Outcome,
    Pattern,
    patterns,
    print_table,
    text,
    with_openai_pause,
)
from agentic_session import gateway_for as agentic_gateway
from agentic_session import measure as agentic_measure

from cascadeflow import ModelRegistry
from cascadeflow.sim import SimulatedProvider
from cascadeflow.sim.server import ServerThread

GPT, MINI, NANO = "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano"
INSTRUCTIONS = "You are Codex, a coding agent. " + text(1500, 3)


def tools() -> list[dict]:
    return [{"type": "function", "name": f"tool{i}", "description": text(400, i), "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}} for i in range(12)]


def run_thread(url: str, turns: int, pattern: Pattern, sim: SimulatedProvider, thread: str, model: str = GPT,
               ) -> list[dict]:
    """Send one thread; returns each turn's response headers."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    items: list = [{"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "Begin the task. " + text(6000, 1)}]}]
    pauses, seen = dict(pattern.pauses), []
    for n in range(turns):
        if n in pauses:
            sim.advance_clock(pauses[n])
        with client.responses.with_streaming_response.create(
                model=model, instructions=INSTRUCTIONS, input=items, tools=tools(), store=False, stream=True,
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


def run_chat_thread(url: str, turns: int, pattern: Pattern, sim: SimulatedProvider, thread: str,
                    model: str = GPT) -> list[dict]:
    """The same thread as a Chat Completions agent loop (LangChain's, the AI SDK's): the instructions as the
    system message, each turn an assistant message with its tool call and the tool's message; ``prompt_cache_key``
    names the thread. Returns each turn's response headers."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    functions = [{"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}} for tool in tools()]
    messages: list = [{"role": "system", "content": INSTRUCTIONS},
                      {"role": "user", "content": "Begin the task. " + text(6000, 1)}]
    pauses, seen = dict(pattern.pauses), []
    for n in range(turns):
        if n in pauses:
            sim.advance_clock(pauses[n])
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=functions,
                                                               prompt_cache_key=thread)
        seen.append(dict(raw.headers))
        message = raw.parse().choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            break
        messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id,
                         "content": f"step {n} done\n" + text(800, n)})
    return seen


def _events(raw) -> list[dict]:
    import json
    return [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: ")]


def measure(gateway_url: str, sim: SimulatedProvider, registry: ModelRegistry, turns: int, pattern: Pattern,
            draft: str, requested: str = GPT, run: Callable[..., list[dict]] = run_thread) -> Outcome:
    """One thread through the gateway, then the same thread straight to the requested model (for a Claude model,
    through a gateway with no cascade rule, which translates it); what each really cost."""
    return agentic_measure(gateway_url, sim, registry, turns, pattern, draft, "codex", requested, run, "tool1",
                           native=requested == GPT)


def gateway_for(sim: SimulatedProvider, draft: str, sticky: int, economics: bool, requested: str = GPT) -> ServerThread:
    return agentic_gateway(sim, draft, sticky, economics, requested, name="codex")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="one draft, fewer patterns (a smoke run)")
    parser.add_argument("--requested", choices=(GPT, OPUS), default=GPT)
    parser.add_argument("--api", choices=("responses", "chat"), default="responses",
                        help="the threads as Codex sends them, or as a Chat Completions agent loop")
    args = parser.parse_args()
    registry, requested = ModelRegistry(), args.requested
    drafts = (MINI, NANO) if requested == GPT else (SONNET, HAIKU)
    settings = [(d, sticky, economics) for d in drafts[:1 if args.quick else 2]
                for sticky, economics in ((2, False), (0, False), (0, True))]
    chosen = patterns(args.turns)[:3] if args.quick else patterns(args.turns)
    if requested == GPT:
        chosen = [with_openai_pause(p) for p in chosen]
    run = run_thread if args.api == "responses" else run_chat_thread
    print(f"{args.turns}-turn threads ({args.api} API), {requested} requested; costs in USD\n")
    print_table(requested, settings, chosen, args.turns, registry, partial(gateway_for, requested=requested),
                partial(measure, requested=requested, run=run))


if __name__ == "__main__":
    main()
