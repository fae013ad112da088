"""The gateway against the floor: a bare aiohttp + uvloop pass-through, on the same core, the same day.

The project's performance aim is stated as a share of that floor (docs/operations.md,
"Performance"): how many requests one core serves through the gateway, doing its real work
(parsing, auth, pricing, the ledger, metrics), against a proxy that only forwards bytes. This
script measures both in one run, so the ratio holds across machines and days where the
absolute figures do not.

    python benchmarks/floor.py [--requests 1500] [--concurrency 10] [--rounds 2] [--dialect anthropic [--model M]]
                               [--words N [--chunk-delay MS]] [--prompt-kb KB]

The simulated provider and this load generator run on one CPU; the gateway (one worker, its
default SQLite ledger) and the floor (``_floor_proxy.py``) are pinned to the other, loaded one at a
time, in alternating rounds. Per scenario (dialect, JSON or stream) the table gives each one's CPU
per request (every thread's, from ``/proc/<pid>/task/*/schedstat``; the median over the rounds) and
requests per second, then the gateway's CPU per request as a multiple of the floor's and its
*share*: the floor's CPU per request over the gateway's, i.e. the share of the floor's throughput
one core can serve through the gateway when the core is the bottleneck. Throughput itself is
printed but is not the share: with the provider and the load on one shared CPU, the floor's
throughput may be bounded by them rather than by its own core.

``--words N`` makes every answer N words long (the simulator's script): a stream then carries about
N/3 deltas, each of which the gateway reads (usage, the end of the stream, what it generated) and the
floor only relays. The simulator writes a stream's events at once, so a proxy reads most of a stream in
one chunk, as a busy one does; ``--chunk-delay MS`` spaces them (an upstream generating token by
token): each chunk then holds one event, and each costs the proxies their per-chunk work.

The scenarios name models with flat prices; ``--model`` names another (with ``--dialect``), such as one
whose price is tiered by the prompt's size (``claude-sonnet-4-5``, ``gpt-5.4``), which the gateway prices
in closed form (:mod:`cascadeflow.tiered_prices`; through genai-prices it cost ~250 µs a request).

The scenarios' prompts are a sentence; ``--prompt-kb KB`` makes each about KB kilobytes, as a long
session's requests are (Claude Code's pass 400 KB past 100k tokens): the gateway parses every body, the
floor only relays its bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from _common import free_port, gateway_env, wait_ready
from overhead import ANTHROPIC_BODY, OPENAI_BODY, RESPONSES_BODY, cpu_ns, pinned, run_load

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

HERE = Path(__file__).resolve().parent
#: (label, path, body template, headers)
SCENARIOS = [
    ("anthropic", "/v1/messages", ANTHROPIC_BODY, {"x-api-key": "x", "anthropic-version": "2023-06-01"}),
    ("openai", "/v1/chat/completions", OPENAI_BODY, {"authorization": "Bearer x"}),
    ("responses", "/v1/responses", RESPONSES_BODY % (b"gpt-5.4-mini", b"%s"), {"authorization": "Bearer x"}),
]


def config_text(gw_port: int, sim_url: str, folder: Path, log_level: str) -> str:
    return f"""
server: {{port: {gw_port}, log_level: {log_level}, log_format: json}}
database_url: "sqlite:///{folder}/ledger.db"
routes:
  - {{name: anthropic, provider: anthropic, base_url: "{sim_url}", api_key: bench}}
  - {{name: openai, provider: openai, base_url: "{sim_url}/v1", api_key: bench, openai_api: responses}}
  - {{name: chat, provider: openai, base_url: "{sim_url}/v1", api_key: bench, openai_api: chat}}
"""


def with_prompt(body: bytes, kb: int) -> bytes:
    """``body`` whose user message (or ``input``) is about ``kb`` KB of text, as a long session's request is."""
    words, size, n = [], 0, 0
    while size < kb * 1000:
        word = f"line {n}: value_{n * 7919 % 10007} = compute(item[{n % 97}])\n"
        words.append(word)
        size, n = size + len(word), n + 1
    parsed = orjson.loads(body)
    if "messages" in parsed:
        parsed["messages"][0]["content"] = "".join(words)
    else:
        parsed["input"] = "".join(words)
    return orjson.dumps(parsed)


async def measure(url: str, pid: int, body: bytes, headers: dict, n: int, concurrency: int,
                  stream: bool) -> tuple[float, float, int]:
    """(CPU µs per request of ``pid``, requests per second, errors) for ``n`` requests, and :func:`run_load`'s
    warm-up of its connections (counted in the CPU and in the requests)."""
    before = cpu_ns(pid)
    sample = await run_load(url, body, headers, n, concurrency, stream)
    cpu = (cpu_ns(pid) - before) / 1000 / max(1, len(sample.total) + sample.errors + min(concurrency * 2, 200))
    return cpu, len(sample.total) / sample.elapsed, sample.errors


async def main_async(args: argparse.Namespace) -> None:
    cpus = os.cpu_count() or 1
    proxy_cpu, other_cpu = (0, 1) if cpus >= 2 and not args.no_pin else (None, None)
    sim_port, gw_port, floor_port = free_port(), free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    folder = Path(tempfile.mkdtemp())
    config = folder / "floor.yaml"
    config.write_text(config_text(gw_port, sim_url, folder, args.log_level))
    exe = [sys.executable, "-m", "cascadeflow.cli"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    script = []
    if args.words:
        rule = {"match": {}, "words": args.words, "chunk_delay": args.chunk_delay / 1000}
        (folder / "script.json").write_text(json.dumps([rule]))
        script = ["--script", str(folder / "script.json")]
    sim = subprocess.Popen(pinned([*exe, "simulate", "--port", str(sim_port), *script], other_cpu), **quiet)
    gw = subprocess.Popen(pinned([*exe, "proxy", "start", "--config", str(config)], proxy_cpu),
                          env=gateway_env(folder), **quiet)
    floor = subprocess.Popen(pinned([sys.executable, str(HERE / "_floor_proxy.py"), sim_url, str(floor_port)],
                                    proxy_cpu), **quiet)
    if other_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {other_cpu})
    sides = {"floor": (f"http://127.0.0.1:{floor_port}", floor.pid), "gateway": (f"http://127.0.0.1:{gw_port}", gw.pid)}
    try:
        await wait_ready(sim_url + "/v1/models")
        await wait_ready(sides["gateway"][0] + "/health")
        await wait_ready(sides["floor"][0] + "/v1/models")
        words = f"prompts of {args.prompt_kb} KB, " if args.prompt_kb else ""
        words += f"answers of {args.words} words" if args.words else "short answers (6-15 words)"
        words += f", stream events {args.chunk_delay:g} ms apart" if args.words and args.chunk_delay else ""
        print(f"{args.requests} requests a measurement at concurrency {args.concurrency}, {words}, {args.rounds} "
              f"alternating rounds (median shown); CPU µs per request of the proxy's process; rps: requests per second")
        print("| scenario | floor CPU µs/req | gateway CPU µs/req | gateway / floor | share of the floor | floor rps "
              "| gateway rps | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for label, path, template, headers in SCENARIOS:
            if args.dialect and label != args.dialect:
                continue
            headers = {**headers, "content-type": "application/json"}
            for stream in (False, True):
                body = template % (b',"stream":true' if stream else b"")
                if args.model:  # the scenario's request, for another model (routed by the same path)
                    body = orjson.dumps({**orjson.loads(body), "model": args.model})
                if args.prompt_kb:
                    body = with_prompt(body, args.prompt_kb)
                figures: dict[str, list[tuple[float, float, int]]] = {"floor": [], "gateway": []}
                for round_ in range(args.rounds):
                    order = ("floor", "gateway") if round_ % 2 == 0 else ("gateway", "floor")
                    for side in order:
                        url, pid = sides[side]
                        figures[side].append(await measure(url + path, pid, body, headers, args.requests,
                                                           args.concurrency, stream))
                f_cpu, g_cpu = (statistics.median(c for c, _, _ in figures[s]) for s in ("floor", "gateway"))
                f_rps, g_rps = (statistics.median(r for _, r, _ in figures[s]) for s in ("floor", "gateway"))
                errors = sum(e for s in figures.values() for _, _, e in s)
                print(f"| {label} {'stream' if stream else 'json'} | {f_cpu:.0f} | {g_cpu:.0f} | {g_cpu / f_cpu:.2f}× "
                      f"| {f_cpu / g_cpu:.0%} | {f_rps:.0f} | {g_rps:.0f} | {errors} |", flush=True)
    finally:
        for process in (gw, floor, sim):
            process.terminate()
        for process in (gw, floor, sim):
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1500, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (floor then gateway, and back)")
    parser.add_argument("--dialect", choices=[label for label, *_ in SCENARIOS])
    parser.add_argument("--words", type=int, default=0, help="every answer this many words long (0: the simulator's "
                        "default, 6-15)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, metavar="MS",
                        help="with --words: the simulator waits this long between a stream's events")
    parser.add_argument("--model", help="with --dialect: the requests name this model (e.g. one whose price is "
                        "tiered, such as claude-sonnet-4-5 or gpt-5.4)")
    parser.add_argument("--prompt-kb", type=int, default=0, metavar="KB",
                        help="every request carries a prompt of about this many KB (a long session's request)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--log-level", choices=["warning", "info"], default="warning",
                        help="info: the gateway writes its JSON request line for every request (to /dev/null)")
    args = parser.parse_args()
    if args.model and not args.dialect:
        parser.error("--model needs --dialect (a model is served in its own dialect's scenarios)")
    if uvloop is not None:
        uvloop.install()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
