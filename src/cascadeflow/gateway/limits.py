"""Admission: does a request fit its key's, user's, team's and the gateway's limits and budgets?

A request reserves its estimated tokens and cost at admission and settles with the
real figures when it ends (see :mod:`cascadeflow.store.counters`). The estimate is
deliberately high: input tokens from the body's size (3 bytes a token), output tokens
from ``max_tokens`` (else ``limits.default_output_tokens``), priced as the model the
request resolves to (``route:model`` as ``model``, at the route's own price when it has
one), plus the draft model's price for a cascade, since an escalation pays both.

A model with no known price cannot be counted against a budget: a request under one is refused
(403), unless ``limits.unpriced_model_price`` says what such a model costs; then it is reserved
and settled at that rate (the ledger still records its cost as unknown).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ErrorKind, RequestError
from ..store.counters import Lease, MemoryCounters, Refusal, Scope
from ..usage import Usage

if TYPE_CHECKING:
    from ..config import CascadeRule, Limits, LimitsConfig
    from ..pricing import ModelRegistry
    from ..store import LedgerEntry
    from ..store.counters import Counters
    from ..store.keys import KeyRecord
    from .auth import Identity

__all__ = ["LimitGate", "LimitRefusal", "Pricer", "UnpricedModel"]

#: USD for ``usage`` on ``model`` as the caller named it (``route:model`` included), in ``dialect``
Pricer = Callable[[str, "str | None", Usage], "float | None"]

log = logging.getLogger("cascadeflow.limits")

_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_NAMES = {
    "rpm": "requests per minute", "tpm": "tokens per minute", "max_concurrent": "concurrent requests",
    "daily_budget_usd": "daily budget", "monthly_budget_usd": "monthly budget",
}


class LimitRefusal(RequestError):
    """429 for a rate limit, 402 for a spent budget; ``retry_after`` says when it may pass."""

    def __init__(self, refusal: Refusal, cap: float) -> None:
        what = _NAMES[refusal.limit]
        if refusal.budget:
            message = (f"the {what} of ${cap:g} for {refusal.scope} is spent; "
                       f"it renews in {refusal.retry_after / 3600:.1f} h")
            kind = ErrorKind.BUDGET_EXCEEDED
        else:
            message = f"rate limit of {cap:g} {what} for {refusal.scope} reached; retry in {refusal.retry_after:.1f} s"
            kind = ErrorKind.RATE_LIMIT
        super().__init__(message, kind=kind)
        self.refusal = refusal
        self.retry_after = refusal.retry_after


class UnpricedModel(RequestError):
    """403: a budget applies and a model the request may reach has no price to count against it."""

    def __init__(self, model: str, scope: str) -> None:
        super().__init__(
            f"model {model!r} has no known price, and {scope} has a budget it could not be counted against; "
            "give the model a price (models: in the config, or the route's cost_per_1k_tokens) or set "
            "limits.unpriced_model_price", kind=ErrorKind.PERMISSION, final=True)


def _budgeted(scopes: tuple[Scope, ...]) -> Scope | None:
    return next((s for s in scopes if s.limits.daily_budget_usd is not None
                 or s.limits.monthly_budget_usd is not None), None)


def charged_models(model: str, rule: CascadeRule | None) -> tuple[str, ...]:
    """The models a request may pay for: the answering one, and a cascade's drafts."""
    if rule is None:
        return (model,)
    return (rule.verifier_model or model, *(stage.model for stage in rule.draft_stages()))


class LimitGate:
    """The limits that apply to each caller, and the counters they are kept in."""

    def __init__(self, config: LimitsConfig, counters: Counters | None, registry: ModelRegistry,
                 price: Pricer | None = None) -> None:
        self.config = config
        self.counters: Counters = counters or MemoryCounters(lease_seconds=config.lease_seconds)
        self.registry = registry
        #: prices a model as routed (the gateway's: route prefixes stripped, route prices applied)
        self.price: Pricer = price or (lambda model, dialect, usage: registry.cost(model, usage))
        self.store_errors = 0
        self._last_warning = 0.0
        self._scopes: dict[str | None, tuple[KeyRecord | None, tuple[Scope, ...]]] = {}

    def scopes(self, identity: Identity) -> tuple[Scope, ...]:
        """The scopes a caller counts against (cached per key record: a changed key is a new record)."""
        key = identity.key
        cached = self._scopes.get(key.key_id if key is not None else None)
        if cached is not None and cached[0] is key:
            return cached[1]
        scopes = self._scopes_of(identity)
        if len(self._scopes) > 100_000:  # keys come and go; never grow without bound
            self._scopes.clear()
        self._scopes[key.key_id if key is not None else None] = (key, scopes)
        return scopes

    def _scopes_of(self, identity: Identity) -> tuple[Scope, ...]:
        config = self.config
        found: list[Scope] = []
        if identity.key is not None:
            limits = identity.key.limits or config.per_key
            if not limits.is_empty():
                found.append(Scope(f"key:{identity.key.key_id}", limits))
        for prefix, value, table in (("user", identity.user_id, config.users), ("team", identity.team, config.teams)):
            limits_for: Limits | None = table.get(value) if value is not None else None
            if limits_for is not None and not limits_for.is_empty():
                found.append(Scope(f"{prefix}:{value}", limits_for))
        if not config.total.is_empty():
            found.append(Scope("total", config.total))
        return tuple(found)

    def estimate(self, body: dict, body_bytes: int, models: tuple[str, ...],
                 dialect: str | None = None) -> tuple[int, float, str | None]:
        """(tokens, USD, the first model with no known price) this request could use: an upper estimate,
        corrected when it settles.

        Each model is priced as it is routed, so ``route:model`` costs what ``model`` costs there; one
        with no price at ``limits.unpriced_model_price`` (else 0).
        """
        output = next((v for f in _OUTPUT_FIELDS if isinstance(v := body.get(f), int) and v > 0),
                      self.config.default_output_tokens)
        usage = Usage(input_tokens=body_bytes // 3, output_tokens=output)
        tokens = usage.input_tokens + output
        cost, unpriced = 0.0, None
        for m in models:
            price = self.price(m, dialect, usage)
            if price is None:
                unpriced = unpriced or m
                price = self._unpriced_cost(tokens) or 0.0
            cost += price
        return tokens, cost, unpriced

    def _unpriced_cost(self, tokens: int) -> float | None:
        rate = self.config.unpriced_model_price
        return None if rate is None else tokens * rate / 1000

    async def admit(self, identity: Identity, body: dict, body_bytes: int, model: str,
                    rule: CascadeRule | None, dialect: str | None = None) -> Lease | None:
        """A lease to settle when the request ends (None if no limit applies); raises :class:`LimitRefusal`,
        or :class:`UnpricedModel` for a model a budget cannot count."""
        scopes = self.scopes(identity)
        if not scopes:
            return None
        tokens, cost, unpriced = self.estimate(body, body_bytes, charged_models(model, rule), dialect)
        if unpriced is not None and self.config.unpriced_model_price is None:
            budgeted = _budgeted(scopes)
            if budgeted is not None:
                raise UnpricedModel(unpriced, budgeted.name)
        return await self._admit(scopes, tokens, cost)

    async def admit_call(self, identity: Identity) -> Lease | None:
        """Admission for a call that generates nothing (``count_tokens``): one request against ``rpm``
        and ``max_concurrent``, no tokens and no cost reserved. Give the lease back with :meth:`release`."""
        scopes = self.scopes(identity)
        return await self._admit(scopes, 0, 0.0) if scopes else None

    async def release(self, lease: Lease) -> None:
        """End a lease that used nothing."""
        if not lease.synced:
            return
        try:
            await self.counters.settle(lease, 0, 0.0)
        except Exception as exc:
            self._store_failed(exc)

    async def _admit(self, scopes: tuple[Scope, ...], tokens: int, cost: float) -> Lease | None:
        try:
            outcome = await self.counters.admit(scopes, tokens, cost)
        except Exception as exc:  # Redis is unreachable: the documented choice, never a crash
            self._store_failed(exc)
            if self.config.on_store_error == "closed":
                refusal = RequestError("the rate-limit store is unreachable; requests are refused until it is back",
                                       kind=ErrorKind.UNAVAILABLE)
                refusal.retry_after = 5.0  # type: ignore[attr-defined]
                raise refusal from None
            return Lease("", scopes, tokens, cost, ("", ""), synced=False)
        if isinstance(outcome, Refusal):
            scope = next(s for s in scopes if s.name == outcome.scope)
            raise LimitRefusal(outcome, getattr(scope.limits, outcome.limit))
        return outcome

    async def settle(self, lease: Lease, entry: LedgerEntry) -> None:
        """Replace the reservation with what the request really used."""
        if not lease.synced:
            return
        tokens = entry.input_tokens + entry.output_tokens + entry.cache_write_tokens + entry.cache_read_tokens
        cost = entry.cost
        if cost is None and tokens:  # an unpriced model answered (a fallback, say): never count it as free
            cost = self._unpriced_cost(tokens)
            if cost is None:
                cost = lease.cost  # what was reserved stays spent
        try:
            await self.counters.settle(lease, tokens, cost or 0.0)
        except Exception as exc:
            self._store_failed(exc)

    def _store_failed(self, exc: Exception) -> None:
        self.store_errors += 1
        now = time.monotonic()
        if now - self._last_warning > 10:  # one line per 10 s, however many requests fail
            self._last_warning = now
            log.warning("rate-limit store unreachable (%s); failing %s", type(exc).__name__, self.config.on_store_error)
