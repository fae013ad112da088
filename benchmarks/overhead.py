"""Gateway overhead: latency added and throughput, against calling the upstream directly.

Starts the simulated provider and one gateway worker as separate processes (the
gateway pinned to one CPU, the simulator and this load generator to the other when
the machine has two), then for each scenario sends the same requests straight to
the simulator and through the gateway, in the same run, and prints a table.

    python benchmarks/overhead.py [--requests 2000] [--concurrency 1 10 100] [--limits none|memory|redis]
                                  [--cache off|memory|redis] [--cascade] [--sessions [--pairs 150] [--attribute]]

Added latency is the difference of the percentiles (gateway − direct); throughput is
completed requests per second through the gateway at that concurrency. The Responses
rows: ``responses`` forwarded to a route serving /v1/responses, ``resp→chat`` and
``resp→anth`` translated (measured against the chat / Messages call made upstream).

``--cascade`` measures the cascade instead: a request the Claude Code CLI sent (from
``../shared/fixtures/claude-code/``, a synthetic one of the same shape without them: ~50 KB,
12 tools, adaptive thinking) to ``claude-opus-5-5``, drafted on ``claude-haiku-5-5``, once
without a conversation id (``cascade``) and once with Claude Code's session header
(``cascade+session``, the same session every request): the difference of their CPU per
request is what the session bookkeeping costs on the whole path. Their "direct" figure is
one call to the simulator (the cascade makes two when a draft escalates).

``--sessions`` shows what the session bookkeeping adds to the gateway, as an A/B in one run:
Claude-Code-shaped conversations (grown turn by turn as ``session_overhead.py`` grows them, at
10 / 50 / 200 message blocks) sent one request at a time through the same cascade, each turn
twice — once with Claude Code's session header (bookkeeping on: the conversation's state, the
prompt's shape, the cache economics, the counterfactual baseline, the record) and once without
(no conversation: none of it runs) — in alternating order. With the header the thinking views are
also taken from the conversation's previous request (:class:`cascadeflow.cascade.thinking.ThinkingThreads`),
which saves what walking them costs without it (about 20 / 60 / 350 µs at 10 / 50 / 200 blocks,
``cascade_hotspots.py``): on − off is the bookkeeping's cost less that saving. Per request the gateway's CPU time
(every thread, from ``/proc/<pid>/task/*/schedstat``, in ns) is read before and 2 ms after the
answer (the conversation's record runs once the answer is out: it is counted), and the time
from sending the request to the answer's last byte is taken; the table gives each side's median
CPU, the median of the paired differences (on − off) of CPU (what the bookkeeping costs) and of
latency (what it adds to the wait: the record is not in it) with their p25–p75, and the
decisions each side took (the same path, or the difference is not the bookkeeping alone). The
first turn of each conversation (seen for the first time, hashed whole) is left out of the
medians. On a shared 2-core machine (load average 1.9–2.9; ``sum(range(1000))`` in 16–31 µs),
two alternating runs each against the code that recorded the turn before the answer: CPU on − off
a median of +469 / +519, +396 / +424, +536 / +582 µs at 10 / 50 / 200 blocks (before: +316 /
+367, +392 / +406, +516 / +344), p25–p75 spans of 300–1,000 µs; latency on − off medians from
−174 to +2,018 µs (either code) with p25–p75 spans of 4–10 ms. Neither resolves a 0.1 ms
difference here, nor tells the two codes apart: the latency the bookkeeping adds is shown by
``session_overhead.py``'s "before the answer" column, its ``--cold`` figure for a gateway's caches
(see docs/cascade.md).

``--sessions --attribute`` splits that difference: the gateway runs under ``_timed_gateway.py``, which
counts the CPU time spent in the bookkeeping's own methods (``SessionBook`` and ``Turn``) as the request
runs in the gateway; two more columns give its median per request with a session (p25–p75) and the paired
median of the rest (CPU on − off less the bookkeeping): what the session id costs the gateway outside the
bookkeeping. Its timers add a few µs to the side with a session. See docs/cascade.md for what it showed.

``--cache memory|redis`` turns the response cache on for every request and adds a ``+hit``
row under each: the same request answered from the cache (the warm-up stores it), beside
the pass-through row, whose requests say ``cache-control: no-store`` (the cache is not read
or written for them). Compare their CPU per request and ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from _common import free_port, gateway_env, percentile, wait_ready

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

ANTHROPIC_BODY = (
    b'{"model":"claude-sonnet-5-5","max_tokens":256,"messages":[{"role":"user","content":"Say something short."}]%s}'
)
OPENAI_BODY = b'{"model":"gpt-5.4-mini","messages":[{"role":"user","content":"Say something short."}]%s}'
RESPONSES_BODY = b'{"model":"%s","input":"Say something short.","store":false%s}'


@dataclass
class Sample:
    ttfb: list[float]
    total: list[float]
    elapsed: float
    errors: int
    #: the gateway process's CPU milliseconds per request (user + system), for runs through it
    cpu_ms: float = 0.0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")




def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    if cpu is not None and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd




async def run_load(url: str, body: bytes, headers: dict, total: int, concurrency: int, stream: bool) -> Sample:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    ttfb: list[float] = []
    durations: list[float] = []
    errors = 0
    remaining = total

    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        first = None
                        async for _ in response.content.iter_any():
                            if first is None:
                                first = time.perf_counter()
                        end = time.perf_counter()
                        if response.status != 200:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                ttfb.append(((first or end) - start) * 1000)
                durations.append((end - start) * 1000)

        # warm the pools
        remaining_before = remaining
        remaining = min(concurrency * 2, 200)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        ttfb.clear()
        durations.clear()
        errors = 0
        remaining = remaining_before
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Sample(ttfb, durations, elapsed, errors)



def _limits_config(limits: str) -> str:
    """``--limits``: a virtual key (the load's "x") with limits that never refuse, counted in memory or Redis."""
    if limits == "none":
        return ""
    text = """auth: {mode: api_key, keys: [{key: x, user_id: bench, limits: {rpm: 100000000, tpm: 1000000000000,
  max_concurrent: 100000, daily_budget_usd: 1000000000}}]}
"""
    return text + ("redis_url: redis://127.0.0.1:6379/9\n" if limits == "redis" else "")


def _cache_config(cache: str, limits: str) -> str:
    """``--cache``: every request may be cached, in memory or in Redis (database 9, as ``--limits redis``)."""
    if cache == "off":
        return ""
    text = f"cache: {{default: true, store: {cache}, ttl_seconds: 300}}\n"
    return text + ("redis_url: redis://127.0.0.1:6379/9\n" if cache == "redis" and limits != "redis" else "")


def _cascade_config(cascade: bool) -> str:
    """``--cascade``: Claude Code's default model drafted on the cheapest Claude."""
    if not cascade:
        return ""
    return "cascade_rules: [{name: opus, request_model: claude-opus-5-5, draft_model: claude-haiku-5-5}]\n"


def _cascade_scenarios(headers: dict) -> list:
    """A Claude-Code-shaped request to the cascade, without and with a conversation (see the module doc)."""
    import orjson
    from session_overhead import base_request

    body, _ = base_request()
    body = {k: v for k, v in body.items() if k not in ("stream", "metadata")}  # metadata.user_id names a session
    template = orjson.dumps(body)[:-1].replace(b"%", b"%%") + b"%s}"
    session = {**headers, "x-claude-code-session-id": "bench-session"}
    return [("cascade", "/v1/messages", template, headers, None, None),
            ("cascade+session", "/v1/messages", template, session, None, None)]


def cpu_ns(pid: int) -> int:
    """CPU nanoseconds of every thread of a process so far (Linux ``schedstat``; 0 elsewhere)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
    return total


def counter_reader(path: Path) -> Callable[[], int]:
    """The running total ``_timed_gateway.py`` keeps in ``path``'s first 8 bytes (its bookkeeping's CPU ns)."""
    import mmap
    import struct

    with path.open("r+b") as file:
        counter = mmap.mmap(file.fileno(), 8)
    return lambda: struct.unpack_from("<q", counter, 0)[0]


async def session_ab(gw_url: str, pid: int, headers: dict, pairs: int,
                     bookkeeping: Callable[[], int] | None = None) -> None:
    """``--sessions``: the gateway's CPU per request with and without the session bookkeeping (see the module doc);
    ``bookkeeping``: the gateway's bookkeeping CPU ns so far (``--attribute``)."""
    import uuid
    from collections import Counter

    from session_overhead import SIZES, base_request, conversation

    base, source = base_request()
    base = {k: v for k, v in base.items() if k not in ("stream", "metadata")}  # metadata.user_id names a session
    reference = min(timeit.repeat("sum(range(1000))", number=200, repeat=5)) / 200 * 1e6
    print(f"session bookkeeping A/B: requests grown from {source}; load average {os.getloadavg()[0]:.1f}; this machine "
          f"runs sum(range(1000)) in {reference:.1f} µs (about 10 µs on an idle core)")
    attributed = "| bookkeeping µs, on (p25 – p75) | rest, on − off (p25 – p75) " if bookkeeping else ""
    print("| message blocks | prompt tokens | requests per side | CPU µs/request, off | on | on − off (p25 – p75) "
          f"{attributed}| latency µs, on − off (p25 – p75) | decisions off | decisions on |")
    print("|---|---|---|---|---|---|" + ("---|---|" if bookkeeping else "") + "---|---|---|")
    booked = bookkeeping or (lambda: 0)
    headers = {**headers, "content-type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def one(body: bytes, sent: dict) -> tuple[float, float, str, float]:
            """(CPU µs, latency µs, decision, bookkeeping CPU µs) of one request."""
            before, booked_before = cpu_ns(pid), booked()
            started = time.perf_counter()
            async with session.post(gw_url + "/v1/messages", data=body, headers=sent) as response:
                await response.read()
                waited = time.perf_counter() - started
                decision = f"{response.status} {response.headers.get('x-cascadeflow-decision', '')}"
            await asyncio.sleep(0.002)  # what the gateway does after the answer is out (the record) counts as CPU
            return (cpu_ns(pid) - before) / 1000, waited * 1e6, decision, (booked() - booked_before) / 1000

        for blocks, tokens in SIZES.items():
            turns = conversation(base, blocks, tokens)
            if len(turns) < 2:  # no turn after the first: nothing to time
                continue
            off: list[float] = []
            on: list[float] = []
            diffs: list[float] = []
            waits: list[float] = []
            books: list[float] = []  # --attribute: the bookkeeping's CPU in the request with a session
            rests: list[float] = []  # and the rest of the difference
            decisions: dict[str, Counter] = {"off": Counter(), "on": Counter()}
            n = 0
            while len(diffs) < pairs:  # as many conversations as it takes: a short one has few turns
                n += 1
                with_id = {**headers, "x-claude-code-session-id": f"ab-{uuid.uuid4().hex}"}
                for i, body in enumerate(turns):
                    order = [("off", headers), ("on", with_id)]
                    if (i + n) % 2:
                        order.reverse()
                    took, wait, book = {}, {}, {}
                    for side, sent in order:
                        took[side], wait[side], decision, book[side] = await one(body, sent)
                        decisions[side][decision] += 1
                    if i > 0:  # the first turn: a conversation seen for the first time
                        off.append(took["off"])
                        on.append(took["on"])
                        diffs.append(took["on"] - took["off"])
                        waits.append(wait["on"] - wait["off"])
                        books.append(book["on"])
                        rests.append(diffs[-1] - book["on"] + book["off"])
            print(f"| {blocks} | {len(turns[-1]) * 0.27 / 1000:.0f}k | {len(on)} | {statistics.median(off):.0f} "
                  f"| {statistics.median(on):.0f} | {statistics.median(diffs):+.0f} ({percentile(diffs, 0.25):+.0f} – "
                  f"{percentile(diffs, 0.75):+.0f}) {_spread(books, rests) if bookkeeping else ''}"
                  f"| {statistics.median(waits):+.0f} ({percentile(waits, 0.25):+.0f} – "
                  f"{percentile(waits, 0.75):+.0f}) | {_counts(decisions['off'])} | {_counts(decisions['on'])} |", flush=True)


def _spread(books: list[float], rests: list[float]) -> str:
    """``--attribute``'s two cells: the bookkeeping's median (p25 – p75), the rest's paired median (p25 – p75)."""
    return (f"| {statistics.median(books):.0f} ({percentile(books, 0.25):.0f} – {percentile(books, 0.75):.0f}) "
            f"| {statistics.median(rests):+.0f} ({percentile(rests, 0.25):+.0f} – {percentile(rests, 0.75):+.0f}) ")


def _counts(decisions: object) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in decisions.most_common())  # type: ignore[attr-defined]


async def main_async(args: argparse.Namespace) -> None:
    cpus = os.cpu_count() or 1
    gateway_cpu, other_cpu = (0, 1) if cpus >= 2 and not args.no_pin else (None, None)
    sim_port, gw_port = free_port(), free_port()
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    config = Path(tempfile.mkdtemp()) / "bench.yaml"
    config.write_text(
        f"""
server: {{port: {gw_port}, log_level: {args.log_level}, log_format: json}}
database_url: "sqlite:///{config.parent}/ledger.db"
routes:
  - {{name: anthropic, provider: anthropic, base_url: "{sim_url}", api_key: bench}}
  - {{name: openai, provider: openai, base_url: "{sim_url}/v1", api_key: bench, openai_api: responses}}
  - {{name: chat, provider: openai, base_url: "{sim_url}/v1", api_key: bench, openai_api: chat}}
{_limits_config(args.limits)}{_cache_config(args.cache, args.limits)}{_cascade_config(args.cascade or args.sessions)}"""
    )
    exe = [sys.executable, "-m", "cascadeflow.cli"]
    counter = config.parent / "bookkeeping.ns"
    if args.sessions and args.attribute:  # the same gateway, its bookkeeping's CPU counted (see _timed_gateway.py)
        counter.write_bytes(bytes(8))
        gw_exe = [sys.executable, str(Path(__file__).resolve().parent / "_timed_gateway.py"), str(counter)]
    else:
        gw_exe = exe
    sim = subprocess.Popen(pinned([*exe, "simulate", "--port", str(sim_port)], other_cpu), stdout=subprocess.DEVNULL)
    gw = subprocess.Popen(
        pinned([*gw_exe, "proxy", "start", "--config", str(config)], gateway_cpu),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=gateway_env(config.parent),
    )
    if other_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {other_cpu})
    try:
        await wait_ready(sim_url + "/v1/models")
        await wait_ready(gw_url + "/health")
        anthropic_headers = {"x-api-key": "x", "anthropic-version": "2023-06-01"}
        bearer = {"authorization": "Bearer x"}
        # (label, gateway path, gateway body, headers, direct path, direct body): a translated scenario is
        # measured against the call the gateway makes upstream, so its row shows what translating adds
        scenarios = [
            ("anthropic", "/v1/messages", ANTHROPIC_BODY, anthropic_headers, None, None),
            ("openai", "/v1/chat/completions", OPENAI_BODY, bearer, None, None),
            ("responses", "/v1/responses", RESPONSES_BODY % (b"gpt-5.4-mini", b"%s"), bearer, None, None),
            ("resp→chat", "/v1/responses", RESPONSES_BODY % (b"chat:gpt-5.4-mini", b"%s"), bearer,
             "/v1/chat/completions", OPENAI_BODY),
            ("resp→anth", "/v1/responses", RESPONSES_BODY % (b"claude-sonnet-5-5", b"%s"), bearer,
             "/v1/messages", ANTHROPIC_BODY),
        ]
        if args.sessions:
            await session_ab(gw_url, gw.pid, anthropic_headers, args.pairs,
                             counter_reader(counter) if args.attribute else None)
            return
        if args.cascade:
            scenarios = _cascade_scenarios(anthropic_headers)
        rows = []
        for dialect, path, template, headers, direct_path, direct_template in scenarios:
            if args.dialect and dialect != args.dialect:
                continue
            headers = {**headers, "content-type": "application/json"}
            direct_headers = {**anthropic_headers, "content-type": "application/json"} if direct_path == "/v1/messages" else headers
            for stream in (False, True):
                flag = b',"stream":true' if stream else b""
                body = template % flag
                direct_body = (direct_template or template) % flag
                for concurrency in args.concurrency:
                    n = max(args.requests, concurrency * 5)
                    direct = await run_load(sim_url + (direct_path or path), direct_body, direct_headers, n, concurrency,
                                            stream)
                    cpu_before = process_cpu_seconds(gw.pid)
                    plain = {**headers, "cache-control": "no-store"} if args.cache != "off" else headers
                    through = await run_load(gw_url + path, body, plain, n, concurrency, stream)
                    through.cpu_ms = (process_cpu_seconds(gw.pid) - cpu_before) * 1000 / n  # warm-up included: an upper bound
                    rows.append((dialect, stream, concurrency, direct, through))
                    print_row(*rows[-1], flush=True)
                    if args.cache != "off":  # the same request from the cache (its warm-up stored the answer)
                        cpu_before = process_cpu_seconds(gw.pid)
                        hit = await run_load(gw_url + path, body, headers, n, concurrency, stream)
                        hit.cpu_ms = (process_cpu_seconds(gw.pid) - cpu_before) * 1000 / n
                        rows.append((dialect + "+hit", stream, concurrency, direct, hit))
                        print_row(*rows[-1], flush=True)
    finally:
        for process in (gw, sim):
            process.terminate()
        for process in (gw, sim):
            process.wait(10)


HEADER = (
    f"{'dialect':<13} {'mode':<6} {'conc':>4} | {'direct p50':>10} {'gw p50':>8} {'added p50':>9} {'added p99':>9}"
    f" | {'ttfb+ p50':>9} | {'direct rps':>10} {'gw rps':>8} {'ratio':>6} | {'cpu/req':>7} | {'errors':>6}"
)


def print_row(dialect: str, stream: bool, concurrency: int, direct: Sample, through: Sample, flush: bool = False) -> None:
    if print_row.first:  # type: ignore[attr-defined]
        print("latencies in ms; rps = completed requests per second; ratio = gateway rps / direct rps;"
              " cpu/req = gateway CPU ms per request")
        print(HEADER)
        print("-" * len(HEADER))
        print_row.first = False  # type: ignore[attr-defined]
    d50, g50 = statistics.median(direct.total), statistics.median(through.total)
    added99 = percentile(through.total, 0.99) - percentile(direct.total, 0.99)
    ttfb_added = statistics.median(through.ttfb) - statistics.median(direct.ttfb)
    d_rps = len(direct.total) / direct.elapsed
    g_rps = len(through.total) / through.elapsed
    print(
        f"{dialect:<13} {'stream' if stream else 'json':<6} {concurrency:>4} | {d50:>10.2f} {g50:>8.2f} {g50 - d50:>9.2f}"
        f" {added99:>9.2f} | {ttfb_added:>9.2f} | {d_rps:>10.0f} {g_rps:>8.0f} {g_rps / d_rps:>6.2f} |"
        f" {through.cpu_ms:>7.3f} | {direct.errors + through.errors:>6}",
        flush=flush,
    )


print_row.first = True  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--dialect", choices=["anthropic", "openai", "responses", "resp→chat", "resp→anth"])
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--log-level", choices=["warning", "info"], default="warning",
                        help="info: the gateway writes its JSON request line for every request (to /dev/null)")
    parser.add_argument("--limits", choices=["none", "memory", "redis"], default="none",
                        help="auth with a virtual key and limits on every request, counted in memory or in Redis")
    parser.add_argument("--cascade", action="store_true",
                        help="a Claude-Code-shaped request through a cascade rule, without and with a session")
    parser.add_argument("--sessions", action="store_true",
                        help="only the session bookkeeping's A/B: Claude Code conversations with and without a session")
    parser.add_argument("--pairs", type=int, default=150, help="--sessions: timed request pairs per size")
    parser.add_argument("--attribute", action="store_true",
                        help="--sessions: also the bookkeeping's own CPU in the gateway, and the rest of the difference")
    parser.add_argument("--cache", choices=["off", "memory", "redis"], default="off",
                        help="the response cache on for every request; adds a +hit row under each pass-through row")
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.install()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
