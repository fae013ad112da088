"""Claude-Code-shaped sessions through the cascade, against the same sessions sent straight to Opus (or another
requested model).

Each session is a tool loop shaped like Claude Code's: 12 tools, 3 system blocks (the last two
with ``cache_control``), a long first message, then per turn an assistant tool call and a tool
result of about 1,000 tokens, the breakpoint moving to the newest block, streaming. The
simulator caches per model as Anthropic does (breakpoints, 20-block lookback, 5-minute TTL) on
a simulated clock the gateway shares, so pauses cost no waiting.

Every model answers each turn with the same tool call (so the conversation is the same whoever
served it), except on the session's failing turns, where the draft calls the tool without its
required argument — the tool check escalates it.

For each rule setting and failure pattern it prints:

- true cost: what the simulator billed for everything the cascade sent (drafts included),
  priced per model; checked against the sum of the gateway's own ``x-cascadeflow-cost-usd``;
- always-Opus: what the simulator billed for the same session sent straight to Opus;
- true saving: 1 − true cost / always-Opus;
- reported saving: 1 − Σ cost / Σ baseline, as the gateway's headers (and ledger) report it.

With ``--requested gpt-5.4`` the sessions ask for an OpenAI model on an OpenAI route (Claude Code pointed at
it: each request translated to Chat Completions, drafted on gpt-5.4-mini and nano), and "straight to the
requested model" is the same session through a gateway with no cascade rule; pauses last 900 s, past the
10 minutes an idle prefix stays in the simulator's OpenAI cache.

    python benchmarks/agentic_session.py [--turns 30] [--quick] [--requested gpt-5.4]

Prices are genai-prices' (Claude Haiku 5.5: $0.10 / $0.50 per million below 100k tokens).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import anthropic
import httpx

from cascadeflow import ModelRegistry, ProxyConfig, Usage, create_app
from cascadeflow.sim import SimulatedProvider
from cascadeflow.sim.server import ServerThread

OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
GPT, GPT_MINI, GPT_NANO = "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano"
WORDS = "the module reads its configuration parses the request and returns a typed value to the caller".split()


@dataclass(frozen=True)
class Pattern:
    name: str
    failing: frozenset[int]
    #: turn → seconds of pause before it
    pauses: tuple[tuple[int, float], ...] = ()


def patterns(turns: int) -> list[Pattern]:
    spread = frozenset(range(turns // 10, turns, turns // 5 or 1))
    return [
        Pattern("none", frozenset()),
        Pattern("one", frozenset({turns // 2})),
        Pattern("early", frozenset(range(1, 6))),
        Pattern("late", frozenset(range(turns - 6, turns - 1))),
        #: two failures 15 turns apart: the first escalation's prefix is out of the second's lookback
        Pattern("far", frozenset({turns // 6, turns * 2 // 3})),
        Pattern("clustered", frozenset(range(turns // 2 - 2, turns // 2 + 3))),
        Pattern("spread", spread),
        Pattern("spread+pause", spread, ((turns // 2, 400.0),)),
    ]


def text(n: int, seed: int) -> str:
    return " ".join(WORDS[(seed + i * 7) % len(WORDS)] for i in range(n))


def tools() -> list[dict]:
    return [{"name": f"Tool{i}", "description": text(400, i), "input_schema": {
        "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}} for i in range(12)]


SYSTEM = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cc_entrypoint=sdk-cli;"},
          {"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}},
          {"type": "text", "text": text(1500, 3), "cache_control": {"type": "ephemeral"}}]


def script(turns: int, failing: frozenset[int], draft: str, tool: str = "Tool1") -> list[dict]:
    """Turn n answers "step n-1" with a call for file n; on failing turns the draft omits the path."""
    rules: list[dict] = []
    for n in range(turns):
        match = f"step {n - 1} done" if n else "Begin the task"
        if n in failing:
            rules.append({"match": {"model": draft, "prompt_contains": match},
                          "tool_calls": [{"name": tool, "input": {}}]})
        if n == turns - 1:
            rules.append({"match": {"prompt_contains": match}, "text": "The task is complete."})
        else:
            rules.append({"match": {"prompt_contains": match}, "tool_calls": [{"name": tool, "input": {"path": f"src/f{n}.py"}}]})
    return rules


def run_session(url: str, turns: int, pattern: Pattern, sim: SimulatedProvider, session: str, model: str = OPUS,
                ) -> list[dict]:
    """Send one session; returns each turn's response headers."""
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    messages: list = [{"role": "user", "content": [{"type": "text", "text": "Begin the task. " + text(6000, 1)}]}]
    pauses, seen = dict(pattern.pauses), []
    for n in range(turns):
        if n in pauses:
            sim.advance_clock(pauses[n])
        for message in messages:  # the breakpoint moves to the newest block, as Claude Code moves it
            for block in message["content"]:
                block.pop("cache_control", None)
        messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
        with client.messages.stream(model=model, max_tokens=4096, system=SYSTEM, tools=tools(), messages=messages,
                                    extra_headers={"X-Claude-Code-Session-Id": session}) as stream:
            final = stream.get_final_message()
            seen.append(dict(stream.response.headers))
        content = [b.model_dump(exclude_none=True) for b in final.content]
        messages.append({"role": "assistant", "content": content})
        call = next((b for b in final.content if b.type == "tool_use"), None)
        if call is None:
            break
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": f"step {n} done\n" + text(800, n)}]})
    return seen


def with_openai_pause(pattern: Pattern) -> Pattern:
    """``pattern`` with its pauses past OpenAI's cache retention (the simulator's: 10 minutes idle) instead of
    Anthropic's 5-minute TTL."""
    return Pattern(pattern.name, pattern.failing, tuple((turn, 900.0) for turn, _ in pattern.pauses))


def rule_totals(url: str, rule: str = "opus") -> dict:
    return httpx.get(f"{url}/stats").json()["cascade"].get(rule, {})


def billed(sim: SimulatedProvider, registry: ModelRegistry) -> float:
    total = 0.0
    for record in sim.requests:
        usage = record.get("usage")
        if usage:
            total += registry.cost(record["body"]["model"], Usage(
                usage["input_tokens"], usage["output_tokens"], usage["cache_creation_input_tokens"],
                usage["cache_read_input_tokens"])) or 0.0
    return total


@dataclass(frozen=True)
class Outcome:
    true_cost: float
    always: float
    reported_cost: float
    baseline: float
    decisions: list[str]

    @property
    def true_saving(self) -> float:
        return 1 - self.true_cost / self.always

    @property
    def reported_saving(self) -> float:
        return 1 - self.reported_cost / self.baseline


def measure(gateway_url: str, sim: SimulatedProvider, registry: ModelRegistry, turns: int, pattern: Pattern,
            draft: str, rule: str = "opus", requested: str = OPUS, run: Callable[..., list[dict]] | None = None,
            tool: str = "Tool1", native: bool | None = None) -> Outcome:
    """One session through the gateway, then the same session straight to the requested model; what each really
    cost. ``run`` sends a session (default :func:`run_session`); ``native``: the client speaks the requested
    model's API (default: it is a Claude model), else the direct run goes through a gateway with no cascade
    rule, which translates it."""
    run = run or run_session
    sim.set_script(script(turns, pattern.failing, draft, tool))
    sim.clear()
    before = rule_totals(gateway_url, rule)
    seen = run(gateway_url, turns, pattern, sim, str(uuid.uuid4()), requested)
    true_cost = billed(sim, registry)
    after = rule_totals(gateway_url, rule)  # a streamed escalation's cost is known at its last byte
    sim.clear()
    if requested.startswith("claude-") if native is None else native:
        run(sim.url, turns, pattern, sim, str(uuid.uuid4()), requested)
    else:
        direct = start_gateway(sim, [])
        try:
            run(direct.url, turns, pattern, sim, str(uuid.uuid4()), requested)
        finally:
            direct.stop()
    return Outcome(true_cost, billed(sim, registry), after["cost"] - before.get("cost", 0.0),
                   after["baseline_cost"] - before.get("baseline_cost", 0.0),
                   [h["x-cascadeflow-decision"] for h in seen])


def gateway_for(sim: SimulatedProvider, draft: str, sticky: int, economics: bool, requested: str = OPUS,
                name: str = "opus") -> ServerThread:
    rule = {"name": name, "request_model": requested, "draft_model": draft, "quality_threshold": 0.7,
            "policies": {"sticky_escalations": sticky, "cache_economics": economics}}
    return start_gateway(sim, [rule])


def start_gateway(sim: SimulatedProvider, rules: list[dict]) -> ServerThread:
    """A gateway on the simulator's clock with ``rules``: Claude models on an Anthropic route, the others on an
    OpenAI one (Chat Completions and the Responses API)."""
    config = ProxyConfig.from_dict({
        "routes": [{"name": "claude", "provider": "anthropic", "base_url": sim.url, "api_key": "k",
                    "models": ["claude-*"]},
                   {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k",
                    "openai_api": "responses"}],
        "cascade_rules": rules, "database_url": "sqlite:///:memory:"})
    return ServerThread(create_app(config, clock=lambda: time.time() + sim.advance_clock(0))).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="one draft, fewer patterns (a smoke run)")
    parser.add_argument("--requested", choices=(OPUS, GPT), default=OPUS)
    args = parser.parse_args()
    registry, requested = ModelRegistry(), args.requested
    drafts = (SONNET, HAIKU) if requested == OPUS else (GPT_MINI, GPT_NANO)
    settings = [(d, sticky, economics) for d in drafts[:1 if args.quick else 2]
                for sticky, economics in ((2, False), (0, False), (0, True))]
    chosen = patterns(args.turns)[:3] if args.quick else patterns(args.turns)
    if requested != OPUS:
        chosen = [with_openai_pause(p) for p in chosen]
    print(f"{args.turns}-turn sessions, {requested} requested; costs in USD\n")
    print_table("Opus" if requested == OPUS else requested, settings, chosen, args.turns, registry,
                partial(gateway_for, requested=requested), partial(measure, requested=requested))


def print_table(always: str, settings: list[tuple[str, int, bool]], chosen: list[Pattern], turns: int,
                registry: ModelRegistry, start: Callable[..., ServerThread], run: Callable[..., Outcome]) -> None:
    """One row per rule setting and pattern: a gateway ``start``-ed per setting, each pattern ``run`` through it."""
    print(f"| draft | sticky | economics | pattern | true cost | always-{always} | true saving | reported saving "
          f"| diff (pts) | drafted | accepted |\n|{'---|' * 11}")
    with SimulatedProvider(record=True) as sim:
        for draft, sticky, economics in settings:
            server = start(sim, draft, sticky, economics)
            try:
                for pattern in chosen:
                    out = run(server.url, sim, registry, turns, pattern, draft)
                    assert abs(out.reported_cost - out.true_cost) <= 1e-6 + 1e-6 * out.true_cost, out
                    drafted = sum(1 for d in out.decisions if not d.startswith("skipped:"))
                    print(f"| {draft} | {sticky} | {'on' if economics else 'off'} | {pattern.name} | "
                          f"{out.true_cost:.4f} | {out.always:.4f} | {out.true_saving:.1%} | {out.reported_saving:.1%} | "
                          f"{100 * (out.reported_saving - out.true_saving):+.1f} | {drafted} | "
                          f"{out.decisions.count('accepted')} |", flush=True)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
