"""ProxyService: a router and a handler together — route a request, then send it."""

from __future__ import annotations

from ..errors import RequestError
from .handler import ProxyHandler
from .router import ProxyRouter, RouteMatch
from .types import ProxyRequest, ProxyResult, ProxyStream

__all__ = ["ProxyService", "dialect_of_path"]


def dialect_of_path(path: str) -> str | None:
    """The dialect an API path belongs to (``/v1/messages`` → anthropic)."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith(("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")):
        return "openai"
    return None


class ProxyService:
    """End-to-end convenience: ``await service.handle(request)``."""

    def __init__(self, router: ProxyRouter, handler: ProxyHandler) -> None:
        self.router = router
        self.handler = handler

    def route(self, request: ProxyRequest) -> RouteMatch:
        """Pick the route; refuse a route whose dialect differs from the request's path."""
        dialect = dialect_of_path(request.path)
        match = self.router.resolve(request.model, dialect)
        if dialect is not None and match.route.provider != dialect:
            raise RequestError(
                f"model {request.model!r} is served by route {match.route.name!r}, which speaks the "
                f"{match.route.provider} API; send it to that API's endpoint "
                f"({'/v1/messages' if match.route.provider == 'anthropic' else '/v1/chat/completions'})"
            )
        return match

    async def handle(self, request: ProxyRequest) -> ProxyResult:
        """Send the request and return the whole answer (a stream is read to its end)."""
        match = self.route(request)
        self._count(request)
        if not request.stream:
            return await self.handler.send(match.route, match.model, request)
        stream = await self.handler.open_stream(match.route, match.model, request)
        raw = await stream.read_all()
        return ProxyResult(
            raw, stream.status, stream.headers, stream.usage, stream.cost, stream.route, stream.model,
            stream.latency_ms, raw,
        )

    async def stream(self, request: ProxyRequest) -> ProxyStream:
        """Open a streaming request; iterate the result for the bytes."""
        match = self.route(request)
        self._count(request)
        return await self.handler.open_stream(match.route, match.model, request)

    def _count(self, request: ProxyRequest) -> None:
        if self.handler.cost_tracker is not None and not request.path.endswith("/count_tokens"):
            self.handler.cost_tracker.record_request(stream=request.stream)

    async def aclose(self) -> None:
        await self.handler.aclose()
