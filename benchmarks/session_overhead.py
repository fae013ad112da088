"""What a conversation's bookkeeping costs per cascaded request, in CPU time on the event loop.

For a Claude-Code-sized request (12 tools, 3 system blocks, a growing tool loop) it times,
per turn, everything the session adds to a cascaded request: reading the conversation's
state, the prompt's shape for each model, the cache economics, the counterfactual baseline
and recording the turn (memory store). Prints the median and p90 per conversation length.

    python benchmarks/session_overhead.py [--repeat 200]

The request's own JSON parse and the upstream calls are not included: they happen with or
without a conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from cascadeflow import ModelRegistry, Usage
from cascadeflow.cascade.session import SessionBook
from cascadeflow.config import CascadeRule
from cascadeflow.sessions import MemorySessions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agentic_session import OPUS, SYSTEM, text, tools  # noqa: E402

HAIKU = "claude-haiku-5-5"


def request(turns: int) -> dict:
    messages: list = [{"role": "user", "content": [{"type": "text", "text": "Begin. " + text(6000, 1)}]}]
    for n in range(turns):
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{n}", "name": "Tool1", "input": {"path": f"f{n}"}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": text(800, n)}]})
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return {"model": OPUS, "max_tokens": 4096, "system": SYSTEM, "tools": tools(), "messages": messages}


async def one_turn(book: SessionBook, rule: CascadeRule, body: dict) -> float:
    started = time.perf_counter()
    turn = await book.begin(rule, body, "anthropic", "s:bench", OPUS, lambda model: "anthropic")
    turn.signal()
    turn.economics(100, 5, HAIKU, OPUS)
    usage = Usage(40, 20, 1200, 20_000)
    turn.baseline(usage, usage.output_tokens)
    turn.end([(HAIKU, usage)], drafted=True, accepted=True, served=usage, tool_ids=["t1"])
    return (time.perf_counter() - started) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    registry = ModelRegistry()
    registry.info(OPUS), registry.info(HAIKU)  # prices loaded once, as at gateway start
    rule = CascadeRule(request_model=OPUS, draft_model=HAIKU)
    print("| turns so far | prompt KiB | median ms | p90 ms |\n|---|---|---|---|")
    for turns in (1, 10, 30, 60):
        body = request(turns)
        size = len(__import__("orjson").dumps(body)) / 1024
        book = SessionBook(MemorySessions(), registry)
        times = sorted([await one_turn(book, rule, body) for _ in range(args.repeat)])
        print(f"| {turns} | {size:.0f} | {statistics.median(times):.3f} | {times[int(0.9 * len(times))]:.3f} |")
        await book.aclose()


if __name__ == "__main__":
    asyncio.run(main())
