"""CPU per call of ``CascadeEngine._open_stages``: a request its rule skips for its kind, and one it drafts.

The bodies are ``session_overhead.py``'s Claude-Code-shaped conversations at 10 / 50 / 200 message blocks (the
last turn of each), sent as an SDK would (no session id: kind ``other``). The rule drafts on two stages (a
text-only OpenAI-compatible model, then Claude Haiku) or on Haiku alone, without cache economics (no
conversation); ``skipped`` runs it with ``draft_kinds: [main]``, ``drafted`` without. No upstream is called
(a port that only resolves routes).

    python benchmarks/open_stages.py [--number 200]

Each figure is the least of seven ``timeit`` repeats, in µs per call, CPU time of this thread. Measured on the
shared 2-core test machine: before the stage-independent reasons (kind, session signal, router) were decided
first, a kind-skipped request paid for every stage's gates — 56 / 73 / 253 µs with two stages, 12 µs with one —
and now pays 2 µs at every size; a drafted request's figures are the same before and after (29–35 / 73–84 /
260–311 µs with two stages, 11–16 µs with one, within the machine's noise).
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path
from types import SimpleNamespace

import orjson

from cascadeflow import ModelRegistry
from cascadeflow.cascade.decision import Decision
from cascadeflow.cascade.engine import CascadeEngine
from cascadeflow.config import CascadeRule
from cascadeflow.proxy import ProxyRequest
from cascadeflow.telemetry import CostTracker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session_overhead import SIZES, base_request, conversation  # noqa: E402

OPUS, HAIKU = "claude-opus-5-5", "claude-haiku-5-5"
STAGES = {"2 stages": [{"model": "local-coder"}, {"model": HAIKU}], "1 stage": [{"model": HAIKU}]}


class RoutesOnly:
    """The engine's port, as far as ``_open_stages`` uses it: the registry and each model's provider."""

    def __init__(self) -> None:
        self.registry = ModelRegistry()

    def resolve(self, model: str, dialect: str) -> SimpleNamespace:
        return SimpleNamespace(provider="anthropic" if model.startswith("claude") else "openai", translated=False)


def per_call(stages: list[dict], kinds: list[str] | None, raw: bytes, number: int) -> float:
    policies: dict = {"cache_economics": False, "draft_kinds": kinds}
    rule = CascadeRule(name="opus", request_model=OPUS, stages=stages, policies=policies)  # type: ignore[arg-type]
    engine = CascadeEngine(RoutesOnly(), [rule], CostTracker())  # type: ignore[arg-type]
    request = ProxyRequest("POST", "/v1/messages", {}, orjson.loads(raw), raw)

    def once() -> Decision:
        decision = Decision(rule="opus", requested_model=OPUS)
        engine._open_stages(rule, request, "anthropic", None, decision, None)
        return decision

    assert once().reason == ("skipped:kind:other" if kinds else ""), once().reason
    return min(timeit.repeat(once, timer=time.thread_time, number=number, repeat=7)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=200, help="calls per timed repeat")
    args = parser.parse_args()
    base, source = base_request()
    print(f"conversation: {source}")
    print(f"{'rule':>8} {'blocks':>6} {'KB':>5} {'skipped':>9} {'drafted':>9}  (µs)")
    for label, stages in STAGES.items():
        for blocks, tokens in SIZES.items():
            raw = conversation(base, blocks, tokens)[-1]
            skipped, drafted = (per_call(stages, kinds, raw, args.number) for kinds in (["main"], None))
            print(f"{label:>8} {blocks:>6} {len(raw) / 1000:>5.0f} {skipped:>9.1f} {drafted:>9.1f}")


if __name__ == "__main__":
    main()
