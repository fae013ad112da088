"""Cascade savings and the latency a cascade adds, against calling the verifier directly.

Starts the simulated provider (scripted: the draft answers a share of the prompts
well and fumbles the rest in the ways real drafts do — empty, refusal, truncated,
invalid tool input, low log-probabilities) with per-model latencies, and one gateway
process with two rules (claude-opus-5-5 ← claude-haiku-5-5, gpt-5.4 ← gpt-5.4-mini).
For each rule and mode it sends the same workload straight to the verifier at the
simulator and through the gateway, and prints acceptance, cost against always using
the verifier, and time to first byte / total time at the median and p90.

    python benchmarks/cascade.py [--requests 60] [--good 0.7] [--concurrency 4]

Latencies are the simulator's (set below), so the added-latency figures show the
cascade's mechanics — a draft read before answering — not any provider's speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import free_port, gateway_env, percentile, wait_ready

RULES = {
    "claude": {"dialect": "anthropic", "requested": "claude-opus-5-5", "draft": "claude-haiku-5-5"},
    "gpt": {"dialect": "openai", "requested": "gpt-5.4", "draft": "gpt-5.4-mini"},
}
#: simulated speed per model: seconds to first byte, seconds between stream events
SPEED = {
    "claude-opus-5-5": (0.060, 0.004),
    "claude-haiku-5-5": (0.025, 0.0015),
    "gpt-5.4": (0.050, 0.003),
    "gpt-5.4-mini": (0.020, 0.001),
}
#: a 60-word answer streams as about this many events; a non-streaming answer takes as long to generate
GENERATION_EVENTS = 26
FAULTS = ["empty", "refusal", "truncated", "tool", "unsure"]
TOOL = {"name": "lookup", "description": "Look a term up", "input_schema": {"type": "object", "properties": {"term": {"type": "string"}}, "required": ["term"]}}




def build_workload(n: int, good: float, seed: int = 7) -> list[tuple[str, str]]:
    """(prompt, kind): kind is 'good' or one of FAULTS."""
    rng = random.Random(seed)
    return [(f"task-{i} please", "good" if rng.random() < good else rng.choice(FAULTS)) for i in range(n)]


def build_script(workload: list[tuple[str, str]]) -> list[dict]:
    rules = []
    for rule in RULES.values():
        draft = rule["draft"]
        first, gap = SPEED[draft]
        timing = {"first_byte_delay": first, "chunk_delay": gap, "latency": GENERATION_EVENTS * gap}
        for prompt, kind in workload:
            match = {"model": draft, "prompt_contains": prompt}
            answer: dict = {"words": 60, "logprob": -0.05}
            if kind == "empty":
                answer = {"text": ""}
            elif kind == "refusal":
                answer = {"text": "I can't help with that. " + "Filler words to read. " * 10}
            elif kind == "truncated":
                answer = {"words": 60, "stop_reason": "max_tokens"}
            elif kind == "tool":
                answer = {"tool_calls": [{"name": "lookup", "input": {"word": "x"}}]}
            elif kind == "unsure":
                answer = {"words": 60, "logprob": -2.5} if rule["dialect"] == "openai" else {"text": "I'm not sure about this one."}
            rules.append({"match": match, **answer, **timing})
        verifier = rule["requested"]
        first, gap = SPEED[verifier]
        rules.append({"match": {"model": verifier}, "words": 60, "first_byte_delay": first, "chunk_delay": gap, "latency": GENERATION_EVENTS * gap})
    return rules




def request_for(rule: dict, prompt: str, kind: str, stream: bool) -> tuple[str, dict]:
    if rule["dialect"] == "anthropic":
        body = {"model": rule["requested"], "max_tokens": 400, "stream": stream, "messages": [{"role": "user", "content": prompt}]}
        if kind == "tool":
            body["tools"] = [TOOL]
        return "/v1/messages", body
    body = {"model": rule["requested"], "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    if kind == "tool":
        body["tools"] = [{"type": "function", "function": {"name": TOOL["name"], "parameters": TOOL["input_schema"]}}]
    return "/v1/chat/completions", body


async def timed(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[float, float, dict]:
    started = time.perf_counter()
    async with session.post(url, json=body, headers={"x-api-key": "bench", "authorization": "Bearer bench"}) as response:
        first = None
        async for _ in response.content.iter_any():
            first = first or time.perf_counter()
        end = time.perf_counter()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status}")
        return ((first or end) - started) * 1000, (end - started) * 1000, dict(response.headers)


async def measure(base: str, rule: dict, workload, stream: bool, concurrency: int):
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(prompt: str, kind: str):
            path, body = request_for(rule, prompt, kind, stream)
            async with semaphore:
                return await timed(session, base + path, body)

        return await asyncio.gather(*(one(p, k) for p, k in workload))



async def main_async(args: argparse.Namespace) -> None:
    workload = build_workload(args.requests, args.good)
    folder = Path(tempfile.mkdtemp())
    script = folder / "script.json"
    script.write_text(json.dumps(build_script(workload)))
    sim_port, gw_port = free_port(), free_port()
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    config = folder / "cascade.yaml"
    rules_yaml = "\n".join(
        f"  - {{name: {name}, request_model: {r['requested']}, draft_model: {r['draft']}, quality_threshold: 0.7}}"
        for name, r in RULES.items()
    )
    config.write_text(
        f"""server: {{port: {gw_port}, log_level: warning}}
database_url: "sqlite:///{folder}/ledger.db"
routes:
  - {{name: anthropic, provider: anthropic, base_url: "{sim_url}", api_key: bench}}
  - {{name: openai, provider: openai, base_url: "{sim_url}/v1", api_key: bench}}
cascade_rules:
{rules_yaml}
"""
    )
    exe = [sys.executable, "-m", "cascadeflow.cli"]
    sim = subprocess.Popen([*exe, "simulate", "--port", str(sim_port), "--script", str(script)], stdout=subprocess.DEVNULL)
    gw = subprocess.Popen([*exe, "proxy", "start", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=gateway_env(config.parent))
    try:
        await wait_ready(sim_url + "/_sim/health")
        await wait_ready(gw_url + "/health")
        kinds = {k: sum(1 for _, kind in workload if kind == k) for k in ["good", *FAULTS]}
        print(f"workload: {len(workload)} requests per row; draft answers well: {kinds['good']}; "
              f"fumbles: {', '.join(f'{k} {v}' for k, v in kinds.items() if k != 'good')}")
        print("simulated speed (first byte s, between events s):", ", ".join(f"{m} {a}/{b}" for m, (a, b) in SPEED.items()))
        header = (
            f"{'rule':<7} {'mode':<6} | {'accepted':>8} | {'cost $':>9} {'verifier $':>10} {'saving':>7} | "
            f"{'ttfb p50 direct':>15} {'cascade':>8} | {'total p50 direct':>16} {'cascade':>8} | {'total p90 direct':>16} {'cascade':>8}"
        )
        print(header)
        print("-" * len(header))
        for name, rule in RULES.items():
            for stream in (False, True):
                direct = await measure(sim_url, rule, workload, stream, args.concurrency)
                before = await stats(gw_url, name)
                through = await measure(gw_url, rule, workload, stream, args.concurrency)
                after = await stats(gw_url, name)
                accepted = after["accepted"] - before.get("accepted", 0)
                cost = after["cost"] - before.get("cost", 0.0)
                baseline = after["baseline_cost"] - before.get("baseline_cost", 0.0)
                d_ttfb, c_ttfb = [d[0] for d in direct], [t[0] for t in through]
                d_total, c_total = [d[1] for d in direct], [t[1] for t in through]
                print(
                    f"{name:<7} {'stream' if stream else 'json':<6} | {accepted / len(workload):>8.0%} | "
                    f"{cost:>9.5f} {baseline:>10.5f} {1 - cost / baseline:>7.1%} | "
                    f"{statistics.median(d_ttfb):>15.1f} {statistics.median(c_ttfb):>8.1f} | "
                    f"{statistics.median(d_total):>16.1f} {statistics.median(c_total):>8.1f} | "
                    f"{percentile(d_total, 0.9):>16.1f} {percentile(c_total, 0.9):>8.1f}",
                    flush=True,
                )
        print("times in ms; 'verifier $' is the same requests priced on the requested model (the baseline).")
    finally:
        for process in (gw, sim):
            process.terminate()
        for process in (gw, sim):
            process.wait(10)


async def stats(gw_url: str, rule: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(gw_url + "/stats") as response:
        return (await response.json())["cascade"].get(rule, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--good", type=float, default=0.7, help="share of prompts the draft answers well")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
