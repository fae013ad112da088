"""ProxyRouter: which route serves a model, and under what name upstream.

Order of resolution, first match wins:

1. A route whose allowlist names the model exactly (so ``openai/gpt-oss-20b`` can be
   listed on an OpenRouter-style route despite looking like a prefix).
2. ``route:model`` / ``route/model`` or ``provider:model`` / ``provider/model`` forces
   a route (the prefix is stripped). A prefix that names no route or provider is part
   of the model name (``llama3:8b``, ``meta-llama/Llama-3-8B``).
3. A route whose allowlist matches the model by glob.
4. The registry's provider for the model: a route named after that provider, else
   an open route (no allowlist) speaking its dialect.
5. The open route of the caller's dialect, if there is one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProxyRoutingError
from ..pricing import ModelRegistry
from ..route_config import ProxyRoute

__all__ = ["ProxyRouter", "RouteMatch"]

_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: ProxyRoute
    model: str  #: the model name sent upstream


class ProxyRouter:
    def __init__(self, routes: list[ProxyRoute], registry: ModelRegistry | None = None) -> None:
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique")
        self.routes = list(routes)
        self.registry = registry or ModelRegistry()
        self._by_name = {r.name: r for r in routes}
        self._cache: dict[tuple[str, str | None], RouteMatch] = {}

    def route(self, name: str) -> ProxyRoute | None:
        return self._by_name.get(name)

    def resolve(self, model: str, dialect: str | None = None) -> RouteMatch:
        """The route for ``model``; ``dialect`` (the caller's) breaks ties and is the last resort."""
        if dialect == "responses":  # served by OpenAI-compatible routes (forwarded or translated)
            dialect = "openai"
        key = (model, dialect)
        match = self._cache.get(key)
        if match is None:
            match = self._resolve(model, dialect)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = match
        return match

    def _resolve(self, model: str, dialect: str | None) -> RouteMatch:
        if not model:
            raise ProxyRoutingError("the request names no model")
        exact = [r for r in self.routes if r.models is not None and model in r.models]
        if exact:
            return RouteMatch(_prefer(exact, dialect), model)
        forced = self._forced(model, dialect)
        if forced is not None:
            return forced
        listed = [r for r in self.routes if r.lists(model)]
        if listed:
            return RouteMatch(_prefer(listed, dialect), model)
        provider = self.registry.provider_for(model)
        if provider is not None:
            named = self._by_name.get(provider)
            if named is not None and named.allows(model):
                return RouteMatch(named, model)
            dialect_routes = [r for r in self.routes if r.provider == provider and r.models is None]
            if dialect_routes:
                return RouteMatch(dialect_routes[0], model)
        if dialect is not None:
            open_routes = [r for r in self.routes if r.provider == dialect and r.models is None]
            if open_routes:
                return RouteMatch(open_routes[0], model)
        raise ProxyRoutingError(
            f"no route serves model {model!r}: add it to a route's `models`, "
            f"or prefix it with a route name ({', '.join(self._by_name) or 'none configured'})"
        )

    def _forced(self, model: str, dialect: str | None) -> RouteMatch | None:
        cut = min((i for i in (model.find(":"), model.find("/")) if i > 0), default=-1)
        if cut < 0:
            return None
        prefix, rest = model[:cut], model[cut + 1 :]
        route = self._by_name.get(prefix)
        if route is None:
            candidates = [r for r in self.routes if r.provider == prefix]
            if not candidates:
                return None
            route = next((r for r in candidates if r.allows(rest)), candidates[0])
        if not rest:
            raise ProxyRoutingError(f"model {model!r} names a route but no model")
        if not route.allows(rest):
            raise ProxyRoutingError(f"model {rest!r} is not in the allowlist of route {route.name!r}")
        return RouteMatch(route, rest)


def _prefer(routes: list[ProxyRoute], dialect: str | None) -> ProxyRoute:
    for route in routes:
        if route.provider == dialect:
            return route
    return routes[0]
