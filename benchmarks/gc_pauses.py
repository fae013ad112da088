"""Garbage-collection pauses in the gateway process, and what they do to request latency.

Starts the simulated provider and one gateway worker as separate processes (as ``overhead.py`` does: the
gateway pinned to one CPU, the simulator and this load generator to the other), the gateway under
``_gc_gateway.py``, which records every collection it runs (generation, wall duration) through
``gc.callbacks`` and reports the tracked objects on request. Then it drives a mixed load in two equal
rounds: ``--users`` Claude-Code-shaped conversations at a time (grown turn by turn as
``session_overhead.py`` grows them, to 10 / 50 / 200 message blocks in turn, streamed, each with Claude
Code's session header, through a cascade of ``claude-opus-5-5`` drafted on ``claude-haiku-5-5``) beside
``--plain`` workers sending small pass-through requests (Messages and Chat Completions, alternately).

    python benchmarks/gc_pauses.py [--requests 1500] [--users 6] [--plain 2] [--trace]
                                   [--freeze-after-start] [--threshold 700 10 10]
    python benchmarks/gc_pauses.py --kept 10000

Tables: the collections per generation (per 1,000 requests, and their wall duration: median, p90, max),
the requests' latency (p50, p99, max; conversation turns and plain requests apart) and the share of
requests in flight during a full (generation-2) collection, which stalls every one of them; then the
tracked objects after start-up, after the first round and after the second (per generation, frozen, and
the commonest types: all tracked ones and the long-lived ones), so a population that grows round after
round shows itself. ``--trace`` runs the gateway under ``tracemalloc`` and lists the source lines that
allocated the long-lived objects (slower: its latencies are not the gateway's).

``--freeze-after-start`` and ``--threshold`` try a setting on the gateway from outside, without changing
its code: the first sends the gateway ``SIGUSR2`` once it answers (``gc.collect()`` then ``gc.freeze()``),
the second sets ``gc.set_threshold`` before the gateway is imported. Run against another tree with
``PYTHONPATH=that/src``.

``--kept N`` measures, in this process and without a gateway, what the conversations a gateway remembers
add to a full collection: N conversations (``session_overhead.py``'s, 10 message blocks) recorded by a
``SessionBook`` over the in-memory store after everything before them is frozen, then the objects a full
collection scans and its CPU time (three times). Figures: docs/operations.md ("Start-up").
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from _common import free_port, gateway_env, percentile, wait_ready
from overhead import ANTHROPIC_BODY, OPENAI_BODY, pinned
from session_overhead import SIZES, base_request, conversation

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

HERE = Path(__file__).resolve().parent


@dataclass
class Done:
    """One request: its kind, when it was sent and when its answer's last byte came (monotonic ns)."""

    kind: str
    started: int
    ended: int
    status: int


class Load:
    """The two kinds of traffic, sent until a round's count of requests is reached."""

    def __init__(self, url: str, users: int, plain: int) -> None:
        self.url = url
        self.users = users
        self.plain = plain
        self.done: list[Done] = []
        base, self.source = base_request()
        base = {k: v for k, v in base.items() if k != "metadata"}  # metadata.user_id names a session
        base["stream"] = True  # Claude Code streams
        #: each size's turns (bytes), built once: conversations of one size differ by their session id
        self.conversations = [conversation(base, blocks, tokens) for blocks, tokens in SIZES.items()]
        self._ids = itertools.count()
        self._headers = {"x-api-key": "x", "anthropic-version": "2023-06-01", "content-type": "application/json"}
        self._bearer = {"authorization": "Bearer x", "content-type": "application/json"}

    async def round(self, requests: int) -> None:
        left = [requests]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await asyncio.gather(*(self._user(session, left, n) for n in range(self.users)),
                                 *(self._plain(session, left, n) for n in range(self.plain)))

    async def _send(self, session: aiohttp.ClientSession, kind: str, path: str, body: bytes, headers: dict) -> None:
        started = time.monotonic_ns()
        async with session.post(self.url + path, data=body, headers=headers) as response:
            async for _ in response.content.iter_any():
                pass
            self.done.append(Done(kind, started, time.monotonic_ns(), response.status))

    async def _user(self, session: aiohttp.ClientSession, left: list[int], n: int) -> None:
        """Conversations one after another, each of the sizes in turn (users start at different sizes)."""
        for size in itertools.cycle(range(n, n + len(self.conversations))):
            turns = self.conversations[size % len(self.conversations)]
            headers = {**self._headers, "x-claude-code-session-id": f"gc-{next(self._ids)}-{os.getpid()}"}
            for body in turns:
                if left[0] <= 0:
                    return
                left[0] -= 1
                await self._send(session, "turn", "/v1/messages", body, headers)

    async def _plain(self, session: aiohttp.ClientSession, left: list[int], n: int) -> None:
        for i in itertools.count(n):
            if left[0] <= 0:
                return
            left[0] -= 1
            if i % 2:
                await self._send(session, "plain", "/v1/chat/completions", OPENAI_BODY % b"", self._bearer)
            else:
                await self._send(session, "plain", "/v1/messages", ANTHROPIC_BODY % b"", self._headers)


async def report(pid: int, prefix: Path, n: int, wait: float = 120) -> dict:
    """Ask the gateway for its n-th report (``SIGUSR1``) and read it."""
    os.kill(pid, signal.SIGUSR1)
    path = Path(f"{prefix}.{n}.json")
    deadline = time.monotonic() + wait
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway wrote no GC report")
        await asyncio.sleep(0.05)
    return orjson.loads(path.read_bytes())


def ms(ns: float) -> float:
    return ns / 1e6


def print_collections(final: dict, since: int, until: int, requests: int) -> None:
    c = final["collections"]
    print(f"\ncollections during the load ({requests} requests; threshold {tuple(final['threshold'])}):")
    print("| generation | collections | per 1,000 requests | wall ms: median | p90 | max | total "
          "| CPU ms: median | max | total |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for g in range(3):
        runs = [(ms(e - s), ms(cpu)) for gen, s, e, cpu in zip(c["generation"], c["started"], c["ended"], c["cpu"],
                                                               strict=True) if gen == g and since <= s <= until]
        if not runs:
            print(f"| {g} | 0 | 0 | – | – | – | 0 | – | – | 0 |")
            continue
        spans, cpus = [w for w, _ in runs], [t for _, t in runs]
        print(f"| {g} | {len(spans)} | {len(spans) * 1000 / requests:.1f} | {statistics.median(spans):.2f} "
              f"| {percentile(spans, 0.9):.2f} | {max(spans):.2f} | {sum(spans):.0f} | {statistics.median(cpus):.2f} "
              f"| {max(cpus):.2f} | {sum(cpus):.0f} |")


def print_latency(done: list[Done], final: dict) -> None:
    c = final["collections"]
    full = sorted((s, e) for g, s, e in zip(c["generation"], c["started"], c["ended"], strict=True) if g == 2)
    starts = [s for s, _ in full]

    def stalled(d: Done) -> bool:
        """Whether a full collection ran while the request was in flight."""
        i = bisect.bisect_right(starts, d.ended)  # the pauses that began before the request ended
        return any(e >= d.started for _, e in full[max(0, i - 3):i])

    print("\nrequest latency (ms) and full (generation-2) collections while in flight:")
    print("| requests | count | errors | p50 | p99 | max | in flight during a gen-2 pause | their p50 | the others' p50 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("turn", "plain", "all"):
        rows = [d for d in done if kind in ("all", d.kind)]
        if not rows:
            continue
        took = [ms(d.ended - d.started) for d in rows]
        hit = [ms(d.ended - d.started) for d in rows if stalled(d)]
        miss = [ms(d.ended - d.started) for d in rows if not stalled(d)]
        errors = sum(d.status != 200 for d in rows)
        print(f"| {kind} | {len(rows)} | {errors} | {statistics.median(took):.1f} | {percentile(took, 0.99):.1f} "
              f"| {max(took):.1f} | {len(hit) / len(rows):.1%} | {statistics.median(hit) if hit else float('nan'):.1f} "
              f"| {statistics.median(miss) if miss else float('nan'):.1f} |")


def print_population(reports: list[tuple[str, dict]], trace: bool) -> None:
    print("\ntracked objects (generation 0 / 1 / 2; frozen: gc.freeze()'s permanent generation):")
    print("| when | gen 0 | gen 1 | gen 2 (long-lived) | frozen |")
    print("|---|---|---|---|---|")
    for when, r in reports:
        g0, g1, g2 = r["tracked"]
        print(f"| {when} | {g0:,} | {g1:,} | {g2:,} | {r['frozen']:,} |")
    for key, title in (("types", "all tracked"), ("old_types", "long-lived (generation 2)")):
        print(f"\ncommonest types, {title}:")
        print("| type | " + " | ".join(when for when, _ in reports) + " |")
        print("|---|" + "---|" * len(reports))
        names = [name for name, _ in reports[-1][1][key][:10]]
        for name in names:
            cells = [str(dict(r[key]).get(name, "<")) for _, r in reports]
            print(f"| {name} | " + " | ".join(cells) + " |")
    if trace:
        for when, r in reports:
            print(f"\nwhere the long-lived objects were allocated ({when}; tracemalloc, first frame in cascadeflow "
                  "or a package):")
            for where, count in r["old_origins"][:20]:
                print(f"  {count:>8,}  {where}")


async def main_async(args: argparse.Namespace) -> None:
    cpus = os.cpu_count() or 1
    gateway_cpu, other_cpu = (0, 1) if cpus >= 2 else (None, None)
    sim_port, gw_port = free_port(), free_port()
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    folder = Path(tempfile.mkdtemp())
    config = folder / "bench.yaml"
    config.write_text(
        f"""
server: {{port: {gw_port}, log_level: warning, log_format: json}}
database_url: "sqlite:///{folder}/ledger.db"
routes:
  - {{name: anthropic, provider: anthropic, base_url: "{sim_url}", api_key: bench}}
  - {{name: chat, provider: openai, base_url: "{sim_url}/v1", api_key: bench, openai_api: chat}}
cascade_rules: [{{name: opus, request_model: claude-opus-5-5, draft_model: claude-haiku-5-5}}]
"""
    )
    prefix = folder / "gc"
    harness = [sys.executable, str(HERE / "_gc_gateway.py"), str(prefix)]
    if args.trace:
        harness.append("--trace")
    if args.freeze_after_start:
        harness.append("--freeze-on-usr2")
    if args.threshold:
        harness += ["--threshold", ",".join(map(str, args.threshold))]
    exe = [sys.executable, "-m", "cascadeflow.cli"]
    sim = subprocess.Popen(pinned([*exe, "simulate", "--port", str(sim_port)], other_cpu), stdout=subprocess.DEVNULL)
    gw = subprocess.Popen(pinned([*harness, "proxy", "start", "--config", str(config)], gateway_cpu),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=gateway_env(folder))
    if other_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {other_cpu})
    try:
        await wait_ready(sim_url + "/v1/models")
        await wait_ready(gw_url + "/health", timeout=300 if args.trace else 20)
        if args.freeze_after_start:
            os.kill(gw.pid, signal.SIGUSR2)
            await asyncio.sleep(1)
        load = Load(gw_url, args.users, args.plain)
        wait = 900 if args.trace else 120  # a report under tracemalloc takes minutes
        print(f"GC pauses: {args.requests} requests in two rounds, {args.users} conversations at a time "
              f"({', '.join(str(b) for b in SIZES)} blocks, from {load.source}) and {args.plain} plain workers; "
              f"load average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}")
        reports = [("after start-up", await report(gw.pid, prefix, 0, wait))]
        since = time.monotonic_ns()
        for n in (1, 2):
            await load.round(args.requests // 2)
            reports.append((f"after round {n}", await report(gw.pid, prefix, n, wait)))
        until = time.monotonic_ns()
        final = reports[-1][1]
        print_collections(final, since, until, len(load.done))
        print_latency(load.done, final)
        print_population(reports, args.trace)
    finally:
        for process in (gw, sim):
            process.terminate()
        for process in (gw, sim):
            process.wait(30)


async def kept(conversations: int) -> None:
    """``--kept``: the tracked objects ``conversations`` remembered conversations add, and a full collection's time."""
    import gc

    from session_overhead import one_turn

    from cascadeflow import ModelRegistry
    from cascadeflow.cascade.session import SessionBook
    from cascadeflow.config import CascadeRule
    from cascadeflow.sessions import MemorySessions

    rule = CascadeRule(name="opus", request_model="claude-opus-5-5", draft_model="claude-haiku-5-5")
    book = SessionBook(MemorySessions(), ModelRegistry())
    base, _ = base_request()
    turns = conversation(base, 10, SIZES[10])

    async def record(first: int, count: int) -> None:
        for n in range(first, first + count):
            for raw in turns:
                await one_turn(book, rule, orjson.loads(raw), f"kept-{n}", raw)

    def full() -> str:
        started = time.thread_time()
        gc.collect()
        return f"{(time.thread_time() - started) * 1000:.1f}"

    await record(0, 300)  # the book's caches of previous prompts full: what follows is the conversations' own
    gc.collect()
    gc.freeze()
    print("| conversations recorded after the freeze | of them kept | tracked objects scanned | per kept conversation "
          "| full collection, CPU ms (3 runs) |")
    print("|---|---|---|---|---|")
    before = len(gc.get_objects())
    print(f"| 0 | 0 | {before:,} | – | {', '.join(full() for _ in range(3))} |")
    await record(300, conversations)
    gc.collect()
    scanned = len(gc.get_objects())
    held = min(conversations, len(book.sessions))  # the store's bound may have dropped some (first the oldest)
    print(f"| {conversations:,} | {held:,} | {scanned:,} | {(scanned - before) / held:.1f} "
          f"| {', '.join(full() for _ in range(3))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1500, help="requests in all (two equal rounds)")
    parser.add_argument("--users", type=int, default=6, help="conversations in flight at a time")
    parser.add_argument("--plain", type=int, default=2, help="workers sending small pass-through requests")
    parser.add_argument("--trace", action="store_true", help="where the long-lived objects were allocated (slow)")
    parser.add_argument("--freeze-after-start", action="store_true",
                        help="gc.collect() and gc.freeze() in the gateway once it answers (from outside)")
    parser.add_argument("--threshold", type=int, nargs=3, metavar=("G0", "G1", "G2"),
                        help="gc.set_threshold in the gateway before it is imported")
    parser.add_argument("--kept", type=int, metavar="N",
                        help="only the full collection's cost of N remembered conversations, in this process")
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.install()
    asyncio.run(kept(args.kept) if args.kept else main_async(args))


if __name__ == "__main__":
    main()
