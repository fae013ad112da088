"""The cascade engine's port onto the gateway's ``ProxyService`` (:class:`cascadeflow.cascade.port.UpstreamPort`).

The engine asks for a model's target, a JSON call, a stream or a price; this adapter answers
with the service's router, handler and translations. A call with an alternative (a draft, a
check) goes to the handler on the route alone, translated with log-probabilities kept; the
verifier's call goes through the service, with the route's fallbacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..cascade.port import Opened, Sent, Target

if TYPE_CHECKING:
    from ..cascade.port import CallOptions
    from ..pricing import ModelRegistry
    from ..proxy import ProxyRequest, ProxyService, RouteMatch
    from ..usage import Usage

__all__ = ["ServiceUpstreams"]

#: targets kept at most (as the router's own cache: client-chosen model names are unbounded)
_CACHE_LIMIT = 4096


class ServiceUpstreams:
    """:class:`~cascadeflow.cascade.port.UpstreamPort` over a ``ProxyService`` (a target's ``ref`` is its RouteMatch)."""

    __slots__ = ("service", "_targets")

    def __init__(self, service: ProxyService) -> None:
        self.service = service
        #: (model, dialect) → target: a router's resolutions are fixed for its life (it caches them too)
        self._targets: dict[tuple[str, str], Target] = {}

    @property
    def registry(self) -> ModelRegistry:
        return self.service.router.registry

    def resolve(self, model: str, dialect: str) -> Target:
        key = (model, dialect)
        target = self._targets.get(key)
        if target is None:
            match = self.service.router.resolve(model, dialect)  # unroutable: ProxyRoutingError, not kept
            target = Target(match.model, match.route.name, match.route.provider, dialect,
                            self.service.translates(match, dialect), match)
            if len(self._targets) >= _CACHE_LIMIT:
                self._targets.clear()
            self._targets[key] = target
        return target

    async def send(self, target: Target, request: ProxyRequest, options: CallOptions) -> Sent:
        match: RouteMatch = target.ref  # type: ignore[assignment]
        if not options.has_alternative:
            return Sent(await self.service.send(match, request, target.dialect))
        translation = self.service.translation(match, target.dialect) if target.translated else None
        if translation is not None:
            request = translation.request(request, match.model, logprobs=options.logprobs)
        result = await self.service.handler.send(match.route, match.model, request, attempts=options.attempts,
                                                 has_alternative=True)
        if translation is None:
            return Sent(result)
        return Sent(translation.response(result), translation.logprobs)

    async def open_stream(self, target: Target, request: ProxyRequest, options: CallOptions) -> Opened:
        match: RouteMatch = target.ref  # type: ignore[assignment]
        if not options.has_alternative:
            return Opened(await self.service.open_stream(match, request, target.dialect))
        translation = self.service.translation(match, target.dialect) if target.translated else None
        if translation is not None:
            request = translation.request(request, match.model, logprobs=options.logprobs)
        stream = await self.service.handler.open_stream(match.route, match.model, request, attempts=options.attempts,
                                                        has_alternative=True)
        if translation is None:
            return Opened(stream)
        return Opened(translation.stream(stream, match.model), lambda: translation.logprobs)

    def price(self, target: Target, usage: Usage) -> float | None:
        match: RouteMatch = target.ref  # type: ignore[assignment]
        return self.service.handler.price(match.route, match.model, usage)

    def count_cut(self, target: Target, usage: Usage, cost: float | None) -> None:
        calls = self.service.handler.cost_tracker
        if calls is not None:
            calls.record_call(model=target.model, route=target.route, usage=usage, cost=cost, status=499)
