"""What a conversation's bookkeeping costs per cascaded request, in CPU time on the event loop.

Claude-Code-shaped conversations are built from a request the Claude Code CLI really sent
(``../shared/fixtures/claude-code/``: its 12 tools, 3 system blocks and first messages; a
synthetic prompt of the same shape when the recordings are absent), grown turn by turn as
Claude Code grows them: an assistant tool call, a tool result, the ``cache_control``
breakpoint moved to the newest block. Each turn is a fresh parse of the request's bytes (as
the gateway gets it; the parse is not timed), then everything the session adds to a
cascaded request is timed: reading the conversation's state, the prompt's shape per model,
the cache economics, the bridging breakpoint's check, the counterfactual baseline and recording the turn (memory store).

    python benchmarks/session_overhead.py [--conversations 5] [--sizes 10 50 200] [--bytecode] [--cold]
                                          [--interleave K]

Rows: per conversation size (message content blocks, prompt tokens at the conversation's
~0.27 tokens per character), CPU µs per request: ``next turn`` is the usual request (the
conversation seen before, one turn longer), ``first seen`` a conversation this process
has not seen (a restart, or another worker); the least, median and p90 over every timed turn.
Each is given twice: ``before the answer`` is what runs before the client can have its answer
(the state, the prompt's shape, the economics, the bridging breakpoint, the counterfactual's
price: the latency the bookkeeping adds), ``in all`` adds the turn's record, which the gateway
runs once the answer is out (in-memory store; see :mod:`cascadeflow.cascade.session`): the CPU it
costs. Code that records on the path (before the deferral) shows the same figure in both.
CPU time of this thread is measured, so other processes' load counts only through what it
does to caches and clocks; on a busy machine the least figure is the closest to an idle one.
The parse is not timed, nor the collection of its garbage (``gc.collect(0)`` after it: the
gateway pays it with or without a session); the turn gets the request's bytes, as the gateway
gives them, so what it repeats of the previous request is told from the bytes.

``--interleave K`` advances K conversations together, one turn of each in turn, each with its own copy of
its requests' bytes, as a gateway serving many conversations sees them: the bookkeeping's code stays in the
CPU's caches, a conversation's data (its state, the previous request's bytes and layout) has left them by
its next turn (K conversations' worth of it: about 2 / 6 / 15 MB at 10 / 50 / 200 blocks with K = 32; a
process keeps at most 256 previous requests and 32 MB of them, past which a turn is hashed whole).

``--cold`` copies 48 MB before each request's parse, so the turn finds what the conversation left (its
state, the previous request's bytes and layout) out of the CPU's caches, as it does in the gateway, where
the rest of the path runs between two turns of a conversation: the bookkeeping then costs about what it
costs inside the gateway (``overhead.py --sessions --attribute``; see docs/cascade.md).

Figures, measured on a shared 2-core machine that runs ``sum(range(1000))`` in 12.6–14.7 µs (an idle
current x86 core: about 10 µs), two alternating rounds against the tree before (``--conversations 4``),
median of a next turn before the answer at 10 / 50 / 200 blocks: warm 134–181 / 117–129 / 115–147 µs,
``--interleave 32`` 73–95 / 85–115 / 122–154 µs, ``--cold`` 386–417 / 355–371 / 312–443 µs; in all (the
record included) 169–217 / 155–170 / 158–193 µs warm. ``--bytecode``: 4,124 instructions before the answer,
5,334 / 5,424 / 5,424 in all (4,187 and 5,427 / 5,517 / 5,517 since: docs/cascade.md). Runs move by a third here; docs/cascade.md has the table, the tree before,
and what the figures say about the 0.1 ms budget (not met on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import os
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import orjson

from cascadeflow import ModelRegistry, Usage
from cascadeflow.cascade.session import _SEEN_PROMPTS, SessionBook
from cascadeflow.config import CascadeRule
from cascadeflow.sessions import MemorySessions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agentic_session import OPUS, SYSTEM, text, tools  # noqa: E402

HAIKU = "claude-haiku-5-5"
FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "claude-code" / "question_and_write.requests.jsonl"
PER_CHAR = 0.27
#: (message content blocks, prompt tokens) of the conversations measured
SIZES = {10: 20_000, 50: 60_000, 200: 150_000}


def base_request() -> tuple[dict, str]:
    """The first request of a Claude Code session (recorded when present), and where it came from."""
    if FIXTURE.exists():
        for line in FIXTURE.read_text().splitlines():
            body = orjson.loads(line)["body"]
            if isinstance(body, dict) and len(body.get("messages") or []) >= 2:
                body = copy.deepcopy(body)
                body["messages"] = body["messages"][:2]  # the first user turn and Claude Code's role-system entry
                return body, FIXTURE.name
    body = {"model": OPUS, "max_tokens": 32000, "system": SYSTEM, "tools": tools(), "stream": True,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Begin. " + text(6000, 1)}]}]}
    return body, "synthetic (no ../shared/fixtures/claude-code)"


def conversation(base: dict, blocks: int, tokens: int) -> list[bytes]:
    """The request bytes of each turn of a conversation that grows to ``blocks`` message blocks and ~``tokens``."""
    body = copy.deepcopy(base)
    body["model"] = OPUS
    start_chars = len(orjson.dumps(body))
    start_blocks = sum(len(m["content"]) if isinstance(m["content"], list) else 1 for m in body["messages"])
    turns = max(1, (blocks - start_blocks) // 2)
    per_result = max(200, int((tokens / PER_CHAR - start_chars) / turns) - 200)
    out = []
    for n in range(turns):
        for message in body["messages"]:  # Claude Code keeps one breakpoint on the newest block
            if isinstance(message["content"], list):
                for block in message["content"]:
                    block.pop("cache_control", None)
        body["messages"].append({"role": "assistant", "content": [
            {"type": "tool_use", "id": f"toolu_{n:04d}", "name": "Bash", "input": {"command": f"cat src/f{n}.py"}}]})
        body["messages"].append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{n:04d}", "content": text(per_result // 7, n),
             "cache_control": {"type": "ephemeral"}}]})
        out.append(orjson.dumps(body))
    return out


async def one_turn(book: SessionBook, rule: CascadeRule, body: dict, session: str,
                   raw: bytes | None = None) -> tuple[float, float]:
    """(µs before the answer goes out, µs in all): the path's part, then the record the gateway runs after it."""
    started = time.thread_time()  # CPU time of this thread: the figure other processes' load leaves alone
    turn = await book.begin(rule, body, "anthropic", session, OPUS, lambda model: "anthropic", raw=raw)
    assert turn is not None
    turn.signal()
    turn.economics([(HAIKU, 100, 5)], OPUS)
    turn.bridge(HAIKU, body)  # the engine's check before the draft's upstream call
    usage = Usage(40, 20, 1200, 20_000)
    turn.baseline(usage, usage.output_tokens)  # the response's baseline header
    turn.end([(HAIKU, usage)], drafted=True, accepted=True, served=usage, tool_ids=["t1"], tried=[(HAIKU, False)])
    path = time.thread_time()
    settle = getattr(book, "settle", None)  # (None: code that records the turn on the path, in ``end``)
    if settle is not None:
        settle(turn)  # the record, run by the gateway once the answer is out
    else:
        path = None
    if len(asyncio.all_tasks()) > 1:
        await asyncio.sleep(0)  # a store write the turn left to a task runs here, and is counted
    ended = time.thread_time()
    return ((path or ended) - started) * 1e6, (ended - started) * 1e6


async def counted_turn(book: SessionBook, rule: CascadeRule, body: dict, session: str,
                       raw: bytes | None = None) -> tuple[float, float]:
    """:func:`one_turn`'s bytecode instructions instead of its CPU time: a figure other processes' load does not move
    (the C code a turn calls, such as ``orjson`` and ``memcmp``, counts as the one instruction that calls it)."""
    count = [0]
    path = [0]

    def local(frame: FrameType, event: str, arg: object) -> object:
        if event == "opcode":
            count[0] += 1
        return local

    def settle(turn: object) -> None:  # the count so far is the path's
        path[0] = count[0]
        settling(turn)

    settling = getattr(book, "settle", None)
    if settling is not None:
        book.settle = settle  # type: ignore[method-assign]

    def hook(frame: FrameType, event: str, arg: object) -> object:
        frame.f_trace_opcodes = True
        return local

    sys.settrace(hook)
    try:
        await one_turn(book, rule, body, session, raw)
    finally:
        sys.settrace(None)
        if settling is not None:
            del book.settle
    return (path[0] if settling is not None else count[0]), count[0]


def _evictor() -> Callable[[], None]:
    """``--cold``: a copy of 48 MB, more than this machine's L2 and L3 caches hold (1 MB per core, 32 MB shared)."""
    source = bytearray(os.urandom(1 << 20)) * 48
    target = bytearray(len(source))

    def evict() -> None:
        target[:] = source

    return evict


def row(times: list[float]) -> str:
    times = sorted(times)
    return f"{times[0]:.0f} / {statistics.median(times):.0f} / {times[int(0.9 * (len(times) - 1))]:.0f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=5, help="conversations measured per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--last", type=int, default=20, help="turns timed at the end of each conversation")
    parser.add_argument("--bytecode", action="store_true", help="count bytecode instructions per turn instead of µs")
    parser.add_argument("--cold", action="store_true", help="the CPU's caches filled with other data before each turn")
    parser.add_argument("--interleave", type=int, default=0, metavar="K",
                        help="K conversations (at most 256) advanced together, one turn of each in turn: a busy gateway")
    args = parser.parse_args()
    if not 0 <= args.interleave <= _SEEN_PROMPTS:
        parser.error(f"--interleave: at most {_SEEN_PROMPTS} (the previous requests a process keeps)")
    measure, unit = (counted_turn, "bytecode instructions") if args.bytecode else (one_turn, "µs")
    registry = ModelRegistry()
    registry.info(OPUS), registry.info(HAIKU)  # prices loaded once, as at gateway start
    rule = CascadeRule(request_model=OPUS, draft_model=HAIKU)
    base, source = base_request()
    evict = _evictor() if args.cold else (lambda: None)
    reference = min(timeit.repeat("sum(range(1000))", number=200, repeat=5)) / 200 * 1e6
    print(f"requests grown from: {source}; load average {os.getloadavg()[0]:.1f}; this machine runs sum(range(1000)) in {reference:.1f} µs "
          "(about 10 µs on an idle core of a current x86 CPU: scale the figures below by that ratio)")
    print(f"| message blocks | prompt tokens | KiB | next turn {unit} before the answer (min / median / p90) "
          f"| next turn in all | first seen before the answer | first seen in all |")
    print("|---|---|---|---|---|---|---|")
    for blocks in args.sizes:
        turns = conversation(base, blocks, SIZES[blocks])
        size = len(turns[-1])
        timed = turns[-args.last:]
        warm, cold = [], []
        book = SessionBook(MemorySessions(), registry)
        together = args.interleave or 1  # conversations advanced together
        for group in range(0, args.interleave or args.conversations, together):
            for i, raw in enumerate(turns):
                for c in range(group, group + together):
                    if args.interleave:  # each conversation's own copy: what it keeps is not another's
                        raw = bytes(bytearray(turns[i]))
                    evict()
                    body = orjson.loads(raw)
                    gc.collect(0)  # the parse's garbage is the parse's: not counted against the bookkeeping
                    took = await measure(book, rule, body, f"bench-{blocks}-{c}", raw)
                    if i >= max(1, len(turns) - len(timed)):  # the conversation's first request is a "first seen" one
                        warm.append(took)
        for c in range(args.conversations):
            for raw in timed:  # the same turns, each in a conversation this process has not seen
                evict()
                body = orjson.loads(raw)
                gc.collect(0)
                cold.append(await measure(book, rule, body, f"cold-{blocks}-{c}-{len(cold)}", raw))
        await book.aclose()
        print(f"| {blocks} | {size * PER_CHAR / 1000:.0f}k | {size / 1024:.0f} | {row([p for p, _ in warm])} "
              f"| {row([a for _, a in warm])} | {row([p for p, _ in cold])} | {row([a for _, a in cold])} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
