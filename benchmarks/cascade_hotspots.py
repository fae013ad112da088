"""CPU per cascaded request of the steps the engine runs on every request, on Claude-Code-shaped bodies.

The conversations are ``session_overhead.py``'s (a request the Claude Code CLI sent, grown turn
by turn: an assistant tool call, a tool result, adaptive thinking on, no thinking blocks), at
10 / 50 / 200 message blocks, the last turn of each:

- ``capability_gap``: whether the draft can serve the request (images, documents, server tools,
  features), given the parsed body and the raw request bytes; ``media_in``: its walk for images and
  documents alone (what a draft that reads neither still pays);
- ``body_for``: the draft's and the verifier's view of the conversation (thinking blocks other
  models wrote; with thinking on, a tool-calling turn that does not start with thinking as text), built
  afresh; ``next turn``: the same views, and who wrote the blocks (:meth:`ThinkingThreads.view`), for a
  conversation whose previous request's views the gateway holds (what a session's next turn costs);
- ``draft_stages``: a rule's drafts in order (called twice per request);
- ``wide_integers``: the scan for integers beyond 64 bits that every re-serialised body gets
  (:func:`cascadeflow.gateway.bounds.check_wide_integers`), beside ``parse``, the body's parse
  (``orjson.loads``), for scale.

    python benchmarks/cascade_hotspots.py [--number 200]

Each figure is the least of seven ``timeit`` repeats, in µs per call, CPU time of this thread (other
processes' load counts only through caches and clocks).
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path

import orjson

from cascadeflow import ModelRegistry
from cascadeflow.cascade.capabilities import capability_gap, media_in
from cascadeflow.cascade.thinking import ThinkingThreads, ThreadView
from cascadeflow.config import CascadeRule
from cascadeflow.gateway.bounds import check_wide_integers
from cascadeflow.sessions import MemoryThinkingOrigins

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session_overhead import SIZES, base_request, conversation  # noqa: E402

OPUS, HAIKU = "claude-opus-5-5", "claude-haiku-5-5"


def best(stmt, number: int) -> float:
    return min(timeit.repeat(stmt, timer=time.thread_time, number=number, repeat=7)) / number * 1e6


def row(body: dict, raw: bytes, registry: ModelRegistry, rule: CascadeRule, number: int) -> tuple[float, ...]:
    """µs per call: capability_gap, media_in alone, a request's two views, draft_stages twice, the wide-integer
    scan, the parse."""
    #: what ThinkingThreads.view says of the conversation's thinking blocks (the code before: no such field)
    written = {"written_by": frozenset()} if "written_by" in ThreadView.__dataclass_fields__ else {}
    views: dict[str, str] = {}

    def both() -> None:  # a request's views: no thinking block in the conversation, adaptive thinking on
        view = ThreadView({}, OPUS, True, **written)
        view.body_for(body, HAIKU, views)
        view.body_for(body, OPUS, views)

    return (best(lambda: capability_gap(body, raw, "anthropic", HAIKU, "anthropic", "anthropic", registry), number),
            best(lambda: media_in(body["messages"]), number), best(both, number),
            best(lambda: (rule.draft_stages(), rule.draft_stages()), number),
            best(lambda: check_wide_integers(raw), number), best(lambda: orjson.loads(raw), number))


def _at_once(coroutine):
    """The value of a coroutine that never waits (the in-memory origins), without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine waited")


def next_turn(previous: bytes, raw: bytes, number: int) -> float:
    """µs per request for the views of ``raw``'s request where the gateway holds ``previous``'s (its turn before)."""
    threads = ThinkingThreads(MemoryThinkingOrigins())
    if not hasattr(threads, "_memos"):  # the code before: nothing kept between requests
        return float("nan")

    def request(body: dict, raw: bytes) -> None:
        talk = _at_once(threads.view(body, "anthropic", OPUS, "conversation", raw))
        views: dict[str, str] = {}
        talk.body_for({**body, "model": HAIKU}, HAIKU, views)
        talk.body_for(body, OPUS, views)

    request(orjson.loads(previous), previous)
    held, body = threads._memos["conversation"], orjson.loads(raw)

    def timed() -> None:
        threads._memos["conversation"] = held  # the previous turn's, as the conversation's next request finds it
        request(body, raw)

    return best(timed, number)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=200, help="calls per timed repeat")
    args = parser.parse_args()
    registry = ModelRegistry()
    rule = CascadeRule(request_model="claude-opus-*", draft_model=HAIKU)
    base, source = base_request()
    print(f"conversation: {source}")
    print(f"{'blocks':>6} {'KB':>5} {'capability_gap':>15} {'media_in':>9} {'body_for ×2':>12} {'next turn':>10} "
          f"{'draft_stages ×2':>16} {'wide_integers':>14} {'parse':>7}  (µs)")
    for blocks, tokens in SIZES.items():
        previous, raw = conversation(base, blocks, tokens)[-2:]
        gap, media, bodies, stages, wide, parse = row(orjson.loads(raw), raw, registry, rule, args.number)
        turn = next_turn(previous, raw, args.number)
        print(f"{blocks:>6} {len(raw) / 1000:>5.0f} {gap:>15.1f} {media:>9.1f} {bodies:>12.1f} {turn:>10.1f} "
              f"{stages:>16.2f} {wide:>14.1f} {parse:>7.1f}")


if __name__ == "__main__":
    main()
