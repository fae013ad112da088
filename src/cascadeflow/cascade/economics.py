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

After an escalation ``p`` has risen, so a conversation stays on the verifier as long as
that is cheaper — stickiness by the numbers, not a count — and returns to drafting as its
record of failures fades (:func:`failure_chance`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIN_HORIZON", "Prices", "expected_saving", "failure_chance"]

#: weight of the rule's record against the conversation's own drafts (in drafts)
_PRIOR_WEIGHT = 4.0
MIN_HORIZON, _MAX_HORIZON = 5, 50


@dataclass(frozen=True, slots=True)
class Prices:
    """One turn's prices (USD): the draft on its cache as it is now, and each model as it would be if warm."""

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
