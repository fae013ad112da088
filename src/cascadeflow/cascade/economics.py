"""Whether drafting this turn pays, priced with each model's cache as it is for this conversation.

For agent sessions almost every input token is a cache read, and each model caches
separately: a draft that fails sends the turn to a verifier whose cache the drafts have
let go cold, and the rewrite can cost more than many accepted drafts saved. So before
drafting, three prices for this request (:class:`Prices`):

- ``draft``: the draft model on its own cache;
- ``verifier``: the verifier on its cache as it is now (cold if drafts served the last turns);
- ``baseline``: the verifier on the cache it would have had, had it served every turn.

With ``p`` the chance this conversation's draft fails (its own drafts, shrunk towards
the rule's record), drafting costs ``draft + p·verifier`` now, and leaves the verifier's
cache one turn staler: if that would put its cache out of reach next turn (past the
TTL or the lookback), a future escalation pays ``rewrite − verifier`` more, with
chance ``p`` (nothing more when the cache is cold already). The turn is drafted only when that expectation is below ``verifier``.
After an escalation the verifier's cache is warm and ``p`` has risen, so a
conversation stays on the verifier exactly as long as that is cheaper — stickiness
by the numbers, not by a count.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Prices", "failure_chance", "expected_saving"]

#: weight of the rule's record against the conversation's own drafts (in drafts)
_PRIOR_WEIGHT = 4.0


@dataclass(frozen=True, slots=True)
class Prices:
    draft: float
    verifier: float
    baseline: float
    #: what the verifier would pay with nothing cached (the rewrite after its cache is lost)
    rewrite: float
    #: whether drafting this turn puts the verifier's cache out of reach for the next turn
    verifier_goes_cold: bool


def failure_chance(drafts: int, failures: int, rule_drafts: int, rule_failures: int) -> float:
    """The chance this conversation's next draft fails: its own rate, shrunk towards the rule's.

    The rule's rate starts from one failure in four (a prior worth one draft) so that a new
    gateway neither trusts nor distrusts drafts blindly.
    """
    rule_rate = (rule_failures + 0.25) / (rule_drafts + 1.0)
    return (failures + _PRIOR_WEIGHT * rule_rate) / (drafts + _PRIOR_WEIGHT)


def expected_saving(prices: Prices, p_fail: float) -> float:
    """Verifier-now minus the expected cost of drafting (positive: drafting pays)."""
    staler = max(0.0, prices.rewrite - prices.verifier) if prices.verifier_goes_cold else 0.0
    drafting = prices.draft + p_fail * prices.verifier + p_fail * staler
    return prices.verifier - drafting
