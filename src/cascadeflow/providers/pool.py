"""One pooled keep-alive HTTP client per upstream route.

aiohttp is used for upstream calls because its client is several times cheaper per
request than the alternatives, which matters on a path every request takes. Sessions
are created lazily inside the running event loop and closed with the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from ..route_config import ProxyRoute

__all__ = ["UpstreamPool", "PoolWait"]


class PoolWait:
    """Per upstream call: whether it is waiting now for a pooled connection to come free.

    Set by aiohttp's connection-queue trace signals, so a timeout can tell a full pool (the
    gateway's own limit) from an upstream that is slow to connect.
    """

    __slots__ = ("queued",)

    def __init__(self) -> None:
        self.queued = False


async def _queued(session: object, context: object, params: object) -> None:
    wait = getattr(context, "trace_request_ctx", None)
    if isinstance(wait, PoolWait):
        wait.queued = True


async def _dequeued(session: object, context: object, params: object) -> None:
    wait = getattr(context, "trace_request_ctx", None)
    if isinstance(wait, PoolWait):
        wait.queued = False


def _queue_trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_queued_start.append(_queued)  # type: ignore[arg-type]
    trace.on_connection_queued_end.append(_dequeued)  # type: ignore[arg-type]
    trace.freeze()
    return trace


class UpstreamPool:
    """Maps a route name to its :class:`aiohttp.ClientSession` (at most ``max_connections`` connections)."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, route: ProxyRoute) -> aiohttp.ClientSession:
        session = self._sessions.get(route.name)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=route.max_connections,
                limit_per_host=route.max_connections,
                keepalive_timeout=30,
                enable_cleanup_closed=False,
                ttl_dns_cache=300,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                timeout=aiohttp.ClientTimeout(total=None),
                trace_configs=[_queue_trace()],
            )
            self._sessions[route.name] = session
        return session

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
