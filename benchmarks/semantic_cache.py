"""The semantic cache on a trap set: hit rate on paraphrases, false hits on near-duplicates, cost per look-up.

Stores every prompt of ``benchmarks/data/semantic_cache_set.json`` in a
:class:`~cascadeflow.cache.semantic.SemanticIndex` (one bucket: same model, same
parameters), then looks up

- each paraphrase: a hit on its own prompt is right, a hit on another prompt is a false hit;
- each trap (a changed number, a negation, another entity, a swapped direction): any hit is
  a false hit — its answer differs from every stored one;

at several thresholds, with and without the guards (numbers and negations must match, no
words swapped across "to", "from", "than"…),
and prints one row per setting. Then the look-up's CPU time (embedding included) with
the set's prompts and with a bucket of 1,000 and 10,000 stored prompts.

    python benchmarks/semantic_cache.py        # needs the semantic extra: pip install -e '.[semantic]'
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from cascadeflow.cache.semantic import SemanticIndex, SemanticProbe, guard_of, load_wordllama

DATA = Path(__file__).resolve().parent / "data" / "semantic_cache_set.json"
THRESHOLDS = (0.80, 0.85, 0.90, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99)


def probe(text: str, threshold: float) -> SemanticProbe:
    return SemanticProbe("bench", text, threshold, guard_of(text))


def measure(embedder, items: list[dict], threshold: float, guarded: bool) -> dict:
    index = SemanticIndex(embedder, threshold=threshold, guards=guarded)
    for number, item in enumerate(items):
        index.add(probe(item["prompt"], threshold), str(number))
    right = wrong = traps_hit = 0
    for number, item in enumerate(items):
        for text in item["paraphrases"]:
            found = [key for key, _ in index.nearest(probe(text, threshold), limit=1)]
            right += found == [str(number)]
            wrong += bool(found) and found != [str(number)]
        traps_hit += sum(bool(index.nearest(probe(text, threshold), limit=1)) for text in item["traps"])
    paraphrases = sum(len(i["paraphrases"]) for i in items)
    traps = sum(len(i["traps"]) for i in items)
    return {"right": right, "paraphrases": paraphrases, "wrong": wrong, "traps_hit": traps_hit, "traps": traps}


def lookup_cost(embedder, items: list[dict], stored: int) -> tuple[float, float]:
    """Median and p95 CPU ms of one look-up (embed the prompt, compare with ``stored`` prompts)."""
    index = SemanticIndex(embedder, threshold=0.97, max_entries=stored + 1)
    prompts = [i["prompt"] for i in items]
    filler = [f"{prompts[n % len(prompts)]} (variant {n})" for n in range(stored)]
    vectors = embedder.embed(filler, norm=True)
    for n, vector in enumerate(vectors):
        p = probe(filler[n], 0.97)
        p.vector = vector
        index.add(p, f"f{n}")
    queries = [t for i in items for t in i["paraphrases"] + i["traps"]]
    for text in queries[:20]:
        index.nearest(probe(text, 0.97))
    timings = []
    for _ in range(3):
        for text in queries:
            start = time.thread_time_ns()
            index.nearest(probe(text, 0.97))
            timings.append((time.thread_time_ns() - start) / 1e6)
    timings.sort()
    return statistics.median(timings), timings[int(0.95 * (len(timings) - 1))]


def main() -> None:
    items = json.loads(DATA.read_text())["items"]
    start = time.perf_counter()
    embedder = load_wordllama()
    print(f"WordLlama l2_supercat 256-d, loaded from the wheel in {time.perf_counter() - start:.2f} s (no download)")
    print(f"{len(items)} stored prompts, {sum(len(i['paraphrases']) for i in items)} paraphrases, "
          f"{sum(len(i['traps']) for i in items)} traps\n")
    print(f"{'guards':<7} {'threshold':>9} {'paraphrase hits':>16} {'wrong hits':>10} {'trap hits':>10}")
    for guarded in (False, True):
        for threshold in THRESHOLDS:
            r = measure(embedder, items, threshold, guarded)
            rate = 100 * r["right"] / r["paraphrases"]
            print(f"{'on' if guarded else 'off':<7} {threshold:>9.2f} {r['right']:>4}/{r['paraphrases']} {rate:5.1f}% "
                  f"{r['wrong']:>10} {r['traps_hit']:>4}/{r['traps']}")
    print(f"\n{'stored prompts':>14} {'look-up ms p50':>15} {'p95':>7}")
    for stored in (len(items), 1000, 10000):
        p50, p95 = lookup_cost(embedder, items, stored)
        print(f"{stored:>14} {p50:>15.3f} {p95:>7.3f}")


if __name__ == "__main__":
    main()
