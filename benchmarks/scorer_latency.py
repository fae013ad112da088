"""CPU time of the learned scorer per request (one core): the features of prompt and draft plus the dot product.

Scores every calibration record's real prompt and draft (MMLU questions to MT-Bench essays), each timed
alone in CPU time of the thread (thread_time_ns: other processes on a shared machine do not count), after
one warm-up pass; prints the distribution. The weights do not change
the cost, so a model trained on one file serves for all.

    python benchmarks/scorer_latency.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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
    for body, text in cases:  # warm-up: regex compilation, caches
        scorer.score(body, text)
    timings = []
    for _ in range(args.repeat):
        for body, text in cases:
            start = time.thread_time_ns()
            scorer.score(body, text)
            timings.append((time.thread_time_ns() - start) / 1000.0)
    timings.sort()
    sizes = sorted(len(prompt_text(body)[0]) + len(text) for body, text in cases)
    print(f"learned scorer, {len(cases)} records x {args.repeat}: prompt+draft {sizes[len(sizes) // 2]} chars median, "
          f"{sizes[-1]} max")
    print(f"  per request (us): mean {statistics.fmean(timings):.1f}, p50 {timings[len(timings) // 2]:.1f}, "
          f"p99 {timings[int(len(timings) * 0.99)]:.1f}, max {timings[-1]:.1f}")


if __name__ == "__main__":
    main()
