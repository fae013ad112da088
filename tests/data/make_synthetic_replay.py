"""Write ``synthetic_replay.jsonl``: replay records made by the project, free to redistribute.

The evaluation path (``cascadeflow eval`` / ``calibrate``, the replay upstream) needs
recorded draft and strong answers; the real ones (``../shared/data/replay``) are
third-party outputs that stay outside the repository. These records have the same
schema: arithmetic multiple-choice questions, a draft (gpt-4o-mini) right about three
times in four whose answer log-probability is higher when it is right (with overlap,
as in real data), and a strong model (gpt-4o) that is almost always right. Costs come
from the project's own price registry. Run ``python tests/data/make_synthetic_replay.py``
to regenerate; the output is deterministic.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from cascadeflow import ModelRegistry, Usage

SYSTEM = 'Answer with the letter of the right choice ("A", "B", "C" or "D") and nothing else.'
NOTE = "Synthetic, made by the cascadeflow project (tests/data/make_synthetic_replay.py); MIT licensed."


def answer(registry: ModelRegistry, model: str, letter: str, right: str, logprob: float, tokens: int) -> dict:
    return {"model": model, "text": letter, "score": float(letter == right), "correct": letter == right,
            "input_tokens": tokens, "output_tokens": 1, "cost_usd": registry.cost(model, Usage(tokens, 1)),
            "answer_logprob": round(logprob, 6), "self_verify_logprob": round(logprob / 2, 6)}


def records(count: int = 48, seed: int = 16) -> list[dict]:
    rng = random.Random(seed)
    registry = ModelRegistry()
    out = []
    for i in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        choices = [a + b, a + b + rng.choice((-10, -1, 1, 10)), a + b + rng.randint(2, 9), abs(a - b)]
        rng.shuffle(choices)
        letters = "ABCD"
        right = letters[choices.index(a + b)]
        wrong = [x for x in letters if x != right]
        question = f"What is {a} + {b}?\n\n" + "\n".join(f"{x}: {c}" for x, c in zip(letters, choices, strict=True))
        tokens = 40 + len(question) // 4
        draft_right = rng.random() < 0.75
        draft = answer(registry, "gpt-4o-mini", right if draft_right else rng.choice(wrong), right,
                       rng.uniform(-0.35, -0.01) if draft_right else rng.uniform(-2.5, -0.15), tokens)
        strong_right = rng.random() < 0.96
        strong = answer(registry, "gpt-4o", right if strong_right else rng.choice(wrong), right,
                        rng.uniform(-0.1, -0.001), tokens)
        out.append({"id": f"synthetic-{i:04d}", "dataset": "synthetic/arithmetic", "task_type": "mcq",
                    "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                    "reference": right, "draft": draft, "strong": strong, "license_note": NOTE})
    return out


if __name__ == "__main__":
    target = Path(__file__).with_name("synthetic_replay.jsonl")
    target.write_text("".join(json.dumps(r) + "\n" for r in records()))
    print(f"wrote {target}")
