"""CPU time per request (one core) of the learned scorer and of the pre-generation router.

The scorer: the features of prompt and draft plus the dot product. The router: the features of the prompt
alone, and, for a router trained with ``--router-embedding``, the WordLlama embedding of the prompt's last
3,000 characters (which the gateway computes in a worker thread, off the event loop). Scores every
calibration record's real prompt and draft (MMLU questions to MT-Bench essays), each timed alone in CPU
time of the thread (thread_time_ns: other processes on a shared machine do not count), after one warm-up
pass; prints the distribution. The weights do not change the cost, so a model trained on one file serves
for all.

    python benchmarks/scorer_latency.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from cascadeflow.cascade.router import EMBEDDING, ROUTER_FEATURES, Router
from cascadeflow.cascade.scorer import Scorer, prompt_text
from cascadeflow.evaluation.runner import load_eval_records

REPLAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "replay"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    records = load_eval_records(sorted(REPLAY.glob("*.calib.jsonl")))
    from cascadeflow.cascade.scorer import FEATURES

    scorer = Scorer(tuple(0.1 for _ in FEATURES), 0.0, tuple(0.0 for _ in FEATURES), tuple(1.0 for _ in FEATURES), {})
    cases = [({"messages": r["messages"]}, r["draft"]["text"] or "") for r in records]
    sizes = sorted(len(prompt_text(body)[0]) + len(text) for body, text in cases)
    print(f"{len(cases)} records x {args.repeat}: prompt+draft {sizes[len(sizes) // 2]} chars median, {sizes[-1]} max")
    report("learned scorer", [lambda b=body, t=text: scorer.score(b, t) for body, text in cases], args.repeat)
    width = len(ROUTER_FEATURES)
    router = Router(tuple(0.1 for _ in range(width)), 0.0, (0.0,) * width, (1.0,) * width, {})
    report("router (text features)", [lambda b=body: router.score(b) for body, _ in cases], args.repeat)
    try:
        from cascadeflow.cache.semantic import load_wordllama

        embedder = load_wordllama()
    except ImportError:
        print("router with embedding: not measured (the semantic extra is not installed)")
        return
    width += 256
    embedded = Router(tuple(0.1 for _ in range(width)), 0.0, (0.0,) * width, (1.0,) * width, {}, EMBEDDING, embedder)
    report("router (text features + WordLlama embedding, in a worker thread)",
           [lambda b=body: embedded.score(b) for body, _ in cases], args.repeat)


def report(name: str, calls: list, repeat: int) -> None:
    for call in calls:  # warm-up
        call()
    timings = []
    for _ in range(repeat):
        for call in calls:
            start = time.thread_time_ns()
            call()
            timings.append((time.thread_time_ns() - start) / 1000.0)
    timings.sort()
    print(f"{name}, per request (us): mean {statistics.fmean(timings):.1f}, p50 {timings[len(timings) // 2]:.1f}, "
          f"p99 {timings[int(len(timings) * 0.99)]:.1f}, max {timings[-1]:.1f}")


if __name__ == "__main__":
    main()
