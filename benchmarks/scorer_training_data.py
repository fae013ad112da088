"""Does the learned scorer rank drafts better when trained on more than the file's own records? (issue 13)

The files without log-probabilities are small (46–1,019 records), and the learned scorer is a
logistic model over 28 text features fitted on them alone. The replay data also holds
``routerarena`` (809 records of claude-3-haiku drafts over multiple choice, math, code, short
answers and chat, graded against their source's answers), marked ``checker_training_only``: it
is there to train checks, never to evaluate them. This script asks whether adding it, or the
other files, to each file's training folds lifts the scorer's out-of-fold AUROC on that file:

- *own*: trained on the file's training folds only (what ``calibrate`` does);
- *+ routerarena*: those folds plus every routerarena record;
- *+ routerarena, same task types*: plus only the routerarena records of the file's task types;
- *+ all others*: plus routerarena and every other file without log-probabilities.

Each cell is the AUROC of out-of-fold scores (5 folds; each record scored by a model that never saw
it), the mean over ``--seeds`` fold seeds (default two). Labels are the records' own (draft score ≥ 0.5), not the gateway's:
the ranking of the scorer alone is what is asked.

    python benchmarks/scorer_training_data.py [--data DIR] [--seeds 2]

The replay data is read from ``--data``, else ``$CASCADEFLOW_REPLAY_DIR``, else ``../shared/data/replay``
beside the checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cascadeflow.evaluation import learned, metrics
from cascadeflow.evaluation.metrics import Outcome
from cascadeflow.sim.replay import load_records

REPLAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "replay"
WITHOUT_LOGPROBS = ("routerbench0shot_arc_challenge", "routerbench0shot_mbpp", "routerbench0shot_winogrande",
                    "routellm_gsm8k", "routellm_mtbench", "arenabench_v1", "mot_date")
EXTRA = "routerarena"
FOLDS = 5


def _clip(score: float) -> float:
    return max(0.0, min(1.0, score))


def load(folder: Path, name: str) -> tuple[list[dict], list[Outcome]]:
    records = load_records([folder / f"{name}.calib.jsonl"])
    outcomes = [Outcome(id=str(r["id"]), dataset=r["dataset"], confidence=1.0, accepted=False,
                        draft_score=_clip(r["draft"]["score"]), strong_score=_clip(r["strong"]["score"]),
                        draft_cost=0.0, strong_cost=0.0, task_type=r.get("task_type")) for r in records]
    return records, outcomes


def out_of_fold_auroc(outcomes: list[Outcome], extra: list[Outcome], features: dict, seeds: int) -> float:
    """Mean over ``seeds`` fold seeds of the AUROC of out-of-fold scores, each fold trained on the rest plus ``extra``."""
    found = [metrics.auroc(learned.out_of_fold_scores(outcomes, features, FOLDS, seed, extra)) for seed in range(seeds)]
    return sum(a if a is not None else 0.5 for a in found) / len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("CASCADEFLOW_REPLAY_DIR") or str(REPLAY))
    parser.add_argument("--seeds", type=int, default=2, help="fold seeds each cell is the mean over")
    args = parser.parse_args()
    folder = Path(args.data)
    names = (*WITHOUT_LOGPROBS, EXTRA)
    if not all((folder / f"{n}.calib.jsonl").is_file() for n in names):
        print(f"scorer_training_data: the replay files are not all in {folder}: pass --data DIR", file=sys.stderr)
        sys.exit(2)
    data = {n: load(folder, n) for n in names}
    features: dict = {}
    for records, _ in data.values():
        features.update(learned.record_features(records))
    extra = data[EXTRA][1]
    print("| data | records | own | + routerarena | + routerarena, same task types | + all others |")
    print("|---|---|---|---|---|---|")
    for name in WITHOUT_LOGPROBS:
        outcomes = data[name][1]
        kinds = {o.task_type for o in outcomes}
        same = [o for o in extra if o.task_type in kinds]
        others = [o for n in WITHOUT_LOGPROBS if n != name for o in data[n][1]]
        cells = [out_of_fold_auroc(outcomes, more, features, args.seeds) for more in ([], extra, same, extra + others)]
        print(f"| {name} | {len(outcomes)} | " + " | ".join(f"{c:.3f}" for c in cells[:2])
              + f" | {cells[2]:.3f} ({len(same)}) | {cells[3]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
