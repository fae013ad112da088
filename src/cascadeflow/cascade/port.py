"""The cascade's one way upstream: :class:`UpstreamPort`, a narrow port the engine calls.

The engine needs few facts about routing and only two kinds of call: resolve a model to a
:class:`Target` (its upstream name, route, provider, whether requests to it are translated),
send a JSON request to it, open a stream to it, price usage on it, and read the model
registry. It never sees a router, a handler or a route's config: the gateway hands it an
adapter over its ``ProxyService`` (:class:`cascadeflow.gateway.upstreams.ServiceUpstreams`),
and a unit test hands it a fake that answers from a script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..pricing import ModelRegistry
    from ..proxy import ProxyRequest, ProxyResult, ProxyStream
    from ..usage import Usage

__all__ = ["UpstreamPort", "Target", "CallOptions", "Sent", "Opened", "OPTIONAL_CALL", "ANSWER_CALL"]


@dataclass(frozen=True, slots=True)
class Target:
    """A model as routed for a caller's dialect: what the engine needs to know of its route."""

    #: the name sent upstream (a route prefix stripped)
    model: str
    #: the route's name (spans, the call's record)
    route: str
    #: the dialect the route's upstream speaks (``anthropic``, ``openai``)
    provider: str
    #: the caller's dialect this target was resolved for; calls to it take and give that dialect
    dialect: str
    #: requests cross dialects on the way (the port translates them both ways)
    translated: bool
    #: the port's own handle on the route (opaque to the engine)
    ref: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CallOptions:
    """How one call is made: as the answer to the client, or as an optional call with an alternative.

    ``has_alternative``: the caller has somewhere better to go (the verifier), so an open breaker
    may refuse the call and the route's fallback models are not tried. ``attempts`` caps the
    route's tries and ``logprobs`` asks a translated OpenAI upstream for token log-probabilities
    (kept on the reply, never sent to the client); both only with an alternative, where the
    call is the cascade's own (a draft, a check).
    """

    has_alternative: bool = False
    attempts: int | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if not self.has_alternative and (self.attempts is not None or self.logprobs):
            raise ValueError("attempts and logprobs apply only to a call with an alternative")


#: drafts, self-verification, samples, shadow and judge calls: one try, an open breaker may refuse, no fallbacks
OPTIONAL_CALL = CallOptions(has_alternative=True, attempts=1, logprobs=True)
#: the verifier's answer to the client: the route's retries, then its fallback models
ANSWER_CALL = CallOptions()


def _no_logprobs() -> list[float] | None:
    return None


@dataclass(frozen=True, slots=True)
class Sent:
    """A JSON call's answer, in the target's dialect, with the log-probabilities a translation kept."""

    result: ProxyResult
    logprobs: list[float] | None = None


@dataclass(frozen=True, slots=True)
class Opened:
    """An open stream, in the target's dialect; ``logprobs()`` reads what a translation kept once it is read."""

    stream: ProxyStream
    logprobs: Callable[[], list[float] | None] = _no_logprobs


class UpstreamPort(Protocol):
    """What the cascade engine may ask of the upstreams (the production adapter wraps ``ProxyService``)."""

    @property
    def registry(self) -> ModelRegistry:
        """Model facts and list prices (reasoning, output caps, provider, cost): no call upstream."""
        ...

    def resolve(self, model: str, dialect: str) -> Target:
        """The target serving ``model`` for a caller speaking ``dialect``; ProxyRoutingError when none does."""
        ...

    async def send(self, target: Target, request: ProxyRequest, options: CallOptions) -> Sent:
        """One non-streaming call; ProxyError when it fails."""
        ...

    async def open_stream(self, target: Target, request: ProxyRequest, options: CallOptions) -> Opened:
        """One streaming call, open once the upstream's headers arrive; ProxyError when it fails before."""
        ...

    def price(self, target: Target, usage: Usage) -> float | None:
        """USD for ``usage`` on ``target`` (the route's own price if it has one); None when unpriced."""
        ...

    def count_cut(self, target: Target, usage: Usage, cost: float | None) -> None:
        """Count a call to ``target`` that the client's leaving cut off before any answer (``usage``: its estimate)
        with the upstream calls (``/stats``' per-model and per-route figures count calls, not requests)."""
        ...
