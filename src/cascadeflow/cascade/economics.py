"""Whether drafting pays in this conversation, priced with each model's cache as it is.

For agent sessions almost every input token is a cache read, and each model caches
separately, so a turn's price depends on what the conversation did before — and what
this turn does changes the next turns' prices. The choice is between two regimes for
the rest of the conversation (``H`` turns, estimated as as many as it has had, at least
:data:`MIN_HORIZON`):

- **verifier**: every turn at the verifier's warm price ``V_w``: its cache reads, the
  turn's growth written, its output;
- **draft**: every turn the draft at its warm price ``D_w``, and with chance ``p`` (the
  conversation's failure rate, shrunk towards the rule's) the verifier's reads and
  output too; entering costs the draft's cold cache now (``D_now − D_w``).

The verifier's cache writes are counted as paid in both: drafting only puts them off,
and one escalation at any later turn writes everything added since the verifier last
served — and no more: however long the drafted run, the escalation reads what the
verifier had cached, through a bridging breakpoint (:mod:`.bridge`), unless it expired.
So the saving a decision counts is a lower bound — what each drafted turn saves
even if the conversation escalates later. A draft much cheaper than the verifier (Haiku
for Opus) pays; one half its price (Sonnet for Opus) on a cached conversation does not,
since its own turn costs more than the verifier's reads and output, and the writes it
would save are saved only if no turn ever escalates — a bet a late failure loses.

**A chain of stages** (``[mid-coder, haiku]`` drafting for Opus) is priced backwards, each
stage with its own ``p`` (its own drafts and failures, in the conversation and in the rule:
a first stage that always fails is not hidden by a later stage that rescues the turn).
``rest`` starts as the verifier's per-turn reads and output; for each open stage from the
last to the first, the stage's chain over the horizon is ``H × (D_w + p × rest) + enter``;
the stage drafts if that beats what follows it alone (the verifier's ``H × rest``, or the
chain of the later stages), and then ``rest`` becomes the stage's per-turn price when it is
reached only after an earlier stage failed: ``D_now + p × rest`` — on its cache as it is
now, since a stage tried only on others' failures does not keep its cache warm. For one
stage this is the formula above, exactly (:func:`chain_savings`).

After an escalation ``p`` has risen, so a conversation stays on the verifier as long as
that is cheaper — stickiness by the numbers, not a count — and returns to drafting as its
record of failures fades (:func:`failure_chance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["MIN_HORIZON", "Prices", "chain_savings", "expected_saving", "failure_chance"]

#: weight of the rule's record against the conversation's own drafts (in drafts)
_PRIOR_WEIGHT = 4.0
MIN_HORIZON, _MAX_HORIZON = 5, 50


class Prices(NamedTuple):
    """One turn's prices (USD): the draft on its cache as it is now, and each model as it would be if warm (a
    tuple: built per draft stage on every cascaded request of a conversation, it costs no Python ``__init__``)."""

    draft: float
    draft_warm: float
    verifier_warm: float
    #: the cache-write part of ``verifier_warm``: the turn's growth, which an escalation writes later anyway
    verifier_growth: float


def failure_chance(drafts: float, failures: float, rule_drafts: int, rule_failures: int) -> float:
    """The chance this conversation's next draft fails: its own (fading) record, shrunk towards the rule's.

    The rule's rate starts from one failure in ten (a prior worth one draft), so that a new
    gateway tries drafting where a draft is much cheaper, and learns.
    """
    rule_rate = (rule_failures + 0.1) / (rule_drafts + 1.0)
    return (failures + _PRIOR_WEIGHT * rule_rate) / (drafts + _PRIOR_WEIGHT)


def horizon(turns_so_far: int) -> int:
    return max(MIN_HORIZON, min(_MAX_HORIZON, turns_so_far))


def expected_saving(prices: Prices, p_fail: float, turns: int) -> float:
    """What drafting saves over ``turns`` turns even if a later turn escalates (positive: draft), USD.

    A lower bound on the expected saving: the verifier's cache writes that drafting puts off
    are counted as paid, because one escalation at any later turn writes them all at once,
    and the cache the verifier is missing now is paid at that escalation too. What remains is
    what each drafted turn saves for good — the verifier's reads and output, with chance
    ``1 − p`` — against the draft's whole turn, and the draft's cold cache to enter.
    """
    reads = prices.verifier_warm - prices.verifier_growth
    per_turn = turns * (prices.draft_warm - (1.0 - p_fail) * reads)
    enter = max(0.0, prices.draft - prices.draft_warm)
    return -(per_turn + enter)


def chain_savings(stages: Sequence[tuple[Prices, float] | None], turns: int) -> list[tuple[float, float] | None]:
    """Each stage's (saving over what follows it, saving of the chain it heads over the verifier alone), USD.

    ``stages``: per draft stage in order, its prices and failure chance (None: not priced — it adds nothing to
    the chain and gets None). A stage drafts when its first figure is positive; the chain is priced backwards
    (see the module doc), so a stage's figures count the later stages that draft. For the last priced stage
    both are :func:`expected_saving`.
    """
    out: list[tuple[float, float] | None] = [None] * len(stages)
    rest_turn = rest_total = None  # the chain behind: per turn when reached after a failure; over the horizon
    verifier_total = 0.0
    for index in range(len(stages) - 1, -1, -1):
        stage = stages[index]
        if stage is None:
            continue
        prices, p_fail = stage
        reads = prices.verifier_warm - prices.verifier_growth
        if rest_turn is None or rest_total is None:  # only the verifier behind this stage
            saving = expected_saving(prices, p_fail, turns)
            verifier_total, total = turns * reads, turns * reads - saving
            chain = saving
        else:
            enter = max(0.0, prices.draft - prices.draft_warm)
            total = turns * (prices.draft_warm + p_fail * rest_turn) + enter
            saving, chain = rest_total - total, verifier_total - total
        out[index] = (saving, chain)
        if saving > 0:
            rest_turn = prices.draft + p_fail * (reads if rest_turn is None else rest_turn)
            rest_total = total
    return out
