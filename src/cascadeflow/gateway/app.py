"""The gateway's ASGI application: a thin layer over the proxy library.

All state lives in one :class:`Gateway` object on ``app.state`` (no module globals),
so several apps can run in one process (as the tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..cache import ResponseCache
from ..cascade import CascadeEngine, RuleSet, ShadowRecorder
from ..cascade.beta_refusals import beta_refusals
from ..config import ProxyConfig, VirtualKey
from ..dialects.translate import load_tokenizer
from ..errors import ErrorKind
from ..pricing import ModelRegistry
from ..proxy import ProxyHandler, ProxyRouter, ProxyService
from ..sessions import session_store, thinking_origins
from ..store import Ledger, RequestRecord
from ..store.counters import MemoryCounters
from ..store.keys import KeyStore
from ..store.queries import shadow_quality
from ..store.redis_counters import RedisCounters
from ..store.sealing import Sealer
from ..telemetry import CostTracker
from .admin import create_key, list_keys, reseal_keys, revoke_key, show_key
from .admin_guard import admin_refusal
from .auth import Authenticator
from .dashboard import dashboard_routes
from .errors import caller_dialect, error_response, request_id_of
from .limits import LimitGate
from .metrics import metrics
from .models import ModelCatalog, get_model, list_models
from .observe import Observer
from .openapi import openapi_spec
from .pages import page_routes
from .proxying import chat_completions, count_tokens, embeddings, messages, responses
from .stored_responses import stored_response_routes
from .streaming import SHUTDOWN_MESSAGE
from .totals import RequestTotals
from .upstreams import ServiceUpstreams

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine

__all__ = ["Gateway", "create_app", "create_app_from_env"]

log = logging.getLogger("cascadeflow.gateway")
#: at shutdown, how long requests cancelled past the deadline may take to answer and record themselves (seconds)
_REQUESTS_GRACE = 5.0


class Gateway:
    """Everything one gateway app holds: config, registry, routing, cost tracking."""

    def __init__(self, config: ProxyConfig, registry: ModelRegistry | None = None, *,
                 tracer_provider: object = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.registry = registry or ModelRegistry()
        for name, entry in config.models.items():
            self.registry.register(name, **entry.model_dump())
        #: upstream calls, counted by the proxy as each is made (a request makes one or more: no request record has them)
        self.calls = CostTracker()
        #: ``/stats``' totals of the requests, counted from their records
        self.totals = RequestTotals()
        self.service = ProxyService(
            ProxyRouter(config.effective_routes(), self.registry),
            ProxyHandler(cost_tracker=self.calls, registry=self.registry),
        )
        self.rules = RuleSet(config.all_cascade_rules())
        self.virtual_models = {name: model.verifier_model for name, model in config.cascade_models.items()}
        self.cascade = CascadeEngine(ServiceUpstreams(self.service), self.rules.rules, self.totals, thinking_origins(config.redis_url),
                                     session_store(config.redis_url), clock=clock,
                                     refusals=beta_refusals(config.redis_url))
        self.models = ModelCatalog(self)
        #: streaming responses in progress (``server.max_concurrent_streams`` bounds it)
        self.active_streams = 0
        self.ledger = Ledger(config.database_url, retention_days=config.ledger_retention_days)
        self.cascade.shadow = ShadowRecorder(self.ledger.record, self.cascade.ask_judge)
        auth = config.auth
        config_keys = [*auth.keys, *(VirtualKey(key=k) for k in auth.api_keys)]
        self.keys = KeyStore(config_keys, refresh_seconds=auth.refresh_seconds, sealer=Sealer.from_config(auth))
        self.auth = Authenticator(auth, self.keys)
        lease, spent = config.limits.lease_seconds, self.ledger.spent_since
        counters = (RedisCounters(config.redis_url, lease_seconds=lease, spent_since=spent) if config.redis_url
                    else MemoryCounters(lease_seconds=lease, spent_since=spent))
        self.limits = LimitGate(config.limits, counters, self.registry, price=self.service.price)
        #: the response cache (None unless configured: then no request does any work for it)
        self.cache = None
        if config.cache is not None:
            semantic = None
            if any(rule.semantic_cache for rule in self.rules.rules):
                from ..cache.semantic import semantic_index  # numpy and the embedding model: only when asked for

                semantic = semantic_index(config.cache.semantic)
            self.cache = ResponseCache(config.cache, config.redis_url, semantic)
        self._tasks: set[asyncio.Task] = set()
        #: the API requests being answered (:meth:`aclose` lets those the server cancelled finish recording)
        self.requests: set[asyncio.Task] = set()
        self._id_prefix = f"req_{secrets.token_hex(6)}_"
        self._request_numbers = itertools.count(1)
        #: metrics, request log lines and trace spans (``tracer_provider``: an OpenTelemetry one to use)
        self.observer = Observer(self, tracer_provider)
        self.metrics = self.observer.metrics
        self.cascade.tracing = self.observer.tracing
        #: what consumes each request's record: the ledger, /stats' totals, then metrics, log line and span
        self._subscribers = (self.ledger.record, self.totals.observe, self.observer.finish)

    def new_request_id(self) -> str:
        """A unique id for a request that brought none: this process's random prefix and a counter (cheap)."""
        return f"{self._id_prefix}{next(self._request_numbers):x}"

    def finish(self, record: RequestRecord) -> None:
        """Every request ends here exactly once, in one record: the ledger row, ``/stats``' totals, the
        metrics, the log line and the trace span all derive from it (nothing else counts requests)."""
        for subscriber in self._subscribers:
            subscriber(record)

    def background(self, work: Coroutine) -> asyncio.Task:
        """Run ``work`` off the request path; :meth:`aclose` waits for it."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        await asyncio.to_thread(self._load_data)  # before the server accepts, and off the loop
        await self.ledger.start()
        assert self.ledger.engine is not None
        await self.keys.start(self.ledger.engine, watch=self.config.auth.mode in ("api_key", "hybrid"))
        _freeze_startup_objects()

    def _load_data(self) -> None:
        """Prices and the tokenizer: loaded on the first request that needed them, they stalled every request."""
        models = {model for route in self.service.router.routes for model in route.models or ()
                  if not any(c in model for c in "*?[")}
        for rule in self.rules.rules:
            models.update(stage.model for stage in rule.draft_stages())
            models.update(m for m in (rule.verifier_model, rule.request_model) if m and not any(c in m for c in "*?["))
        self.registry.warm(sorted(models))
        load_tokenizer()

    async def aclose(self) -> None:
        if self.requests:  # cancelled past server.shutdown_timeout: each ends its answer and writes its row
            await asyncio.wait(self.requests, timeout=_REQUESTS_GRACE)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.keys.aclose()
        await self.limits.counters.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        await self.cascade.threads.aclose()
        await self.cascade.book.aclose()
        await self.cascade.refusals.aclose()
        await self.cascade.shadow.aclose()  # pairs still being completed reach the ledger
        await self.ledger.aclose()  # every finished request is written before the process ends
        await self.service.aclose()
        await self.observer.aclose()


def _freeze_startup_objects() -> None:
    """Leave what start-up made (imports, config, price tables, tokenizer) out of every later collection.

    Those ~115,000 container objects live as long as the process, yet a full (generation-2) collection
    scanned them all: about 100 ms with the event loop stopped, every few hundred requests, stalling every
    request in flight; frozen, it takes a few ms (``benchmarks/gc_pauses.py``; docs/operations.md, "Start-up").
    Garbage is collected first, so none is frozen; objects frozen here are still freed when their last
    reference goes, only never scanned for cycles. Done once per process (a second gateway in it, or a
    process that froze its own start-up, leaves the frozen set as it is): the collector's own count is the
    state, nothing global.
    """
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()


async def health(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    breakers = gateway.service.handler.breakers()
    body = {
        "status": "degraded" if any(b["state"] == "open" for b in breakers.values()) else "healthy",
        "version": __version__,
        "routes": [
            {"name": r.name, "provider": r.provider, "base_url": r.base_url, "models": sorted(r.models or [])}
            for r in gateway.service.router.routes
        ],
        "breakers": breakers,
        "retries": gateway.service.handler.retries,
        "active_streams": gateway.active_streams,
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def stats(request: Request) -> Response:
    """This process's running totals (from the requests' records), plus the ledger's all-time totals (they
    survive restarts).

    Open while auth is off; with auth on, for the master key's holder.
    """
    if (refusal := admin_refusal(request, read_only=True)) is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    summary = gateway.totals.summary(gateway.calls)
    try:
        ledger = gateway.ledger
        summary["ledger"] = {
            **(await ledger.summary())["total"],
            "by_rule": (await ledger.summary(by="rule"))["by"],
            "by_model": (await ledger.summary(by="model"))["by"],
            "shadow": await shadow_quality(ledger.engine),  # type: ignore[arg-type]
        }
    except Exception as exc:  # a database outage must not take /stats down
        summary["ledger"] = {"error": f"ledger unavailable: {type(exc).__name__}"}
    return Response(orjson.dumps(summary), media_type="application/json")


async def openapi(request: Request) -> Response:
    return Response(orjson.dumps(openapi_spec()), media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    kind = ErrorKind.from_status(status)
    message = f"{request.method} {request.url.path} is not an endpoint of this gateway"
    if status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None  # 405 carries Allow
    return error_response(caller_dialect(request.url.path, request.headers), kind, message, headers, status=status,
                          request_id=request_id_of(request))


class GatewayApp(Starlette):
    """Starlette, with the proxy endpoints dispatched directly.

    Those endpoints render every error themselves, so they skip the middleware
    stack and the route table: less work on the path every request takes.
    """

    def __init__(self, *, fast_routes: Mapping[str, object], max_header_bytes: int, observer: Observer,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._fast_routes = fast_routes
        self._max_header_bytes = max_header_bytes
        self._observer = observer

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and sum(len(k) + len(v) for k, v in scope["headers"]) > self._max_header_bytes:
            dialect = caller_dialect(scope["path"], {k.decode("latin-1"): "" for k, _ in scope["headers"]})
            response = error_response(dialect, ErrorKind.INVALID_REQUEST,
                                      f"request headers exceed {self._max_header_bytes} bytes in all",
                                      request_id=self.state.gateway.new_request_id())
            await response(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            # a trailing slash is served, never redirected: a client would resend its POST (or drop it) elsewhere
            endpoint = self._fast_routes.get(path) or (self._fast_routes.get(path.rstrip("/")) if path.endswith("/") else None)
            if endpoint is not None:
                scope["app"] = self
                await self._observer.serve(endpoint, scope, receive, send)  # type: ignore[arg-type]
                return
        if scope["type"] == "http":
            await self._until_shutdown(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _until_shutdown(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        """The other endpoints, answered with a 503 in the caller's dialect when the server's shutdown deadline
        cancels one before its answer started (uvicorn would send a plain-text 500)."""
        started = False

        async def sending(message) -> None:  # type: ignore[no-untyped-def]
            nonlocal started
            started = True
            await send(message)

        try:
            await super().__call__(scope, receive, sending)
        except asyncio.CancelledError:
            if started:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            dialect = caller_dialect(scope["path"], {k.decode("latin-1"): "" for k, _ in scope["headers"]})
            response = error_response(dialect, ErrorKind.UNAVAILABLE, SHUTDOWN_MESSAGE,
                                      {"retry-after": "1", "connection": "close"},
                                      request_id=self.state.gateway.new_request_id())
            await response(scope, receive, send)


def create_app(config: ProxyConfig | None = None, *, registry: ModelRegistry | None = None,
               tracer_provider: object = None, clock: Callable[[], float] = time.time) -> Starlette:
    """Build the ASGI app for ``config`` (default: :meth:`ProxyConfig.load`).

    ``tracer_provider``: an OpenTelemetry ``TracerProvider`` for the request spans, instead of
    the one ``telemetry.otlp_endpoint`` sets up. ``clock``: the wall clock conversations' cache
    shadows age by (a benchmark shares a simulated one with the simulator).
    """
    gateway = Gateway(config or ProxyConfig.load(), registry, tracer_provider=tracer_provider, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    routes = [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        *stored_response_routes(),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/keys/reseal", reseal_keys, methods=["POST"]),
        Route("/admin/keys", create_key, methods=["POST"]),
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys/{key_id}", show_key, methods=["GET"]),
        Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
        *dashboard_routes(),
        *page_routes(),
    ]
    fast_routes = {r.path: r.endpoint for r in routes if r.methods and "POST" in r.methods and "{" not in r.path}
    app = GatewayApp(
        fast_routes=fast_routes, max_header_bytes=gateway.config.server.max_header_bytes, observer=gateway.observer, routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error}
    )
    app.router.redirect_slashes = False  # an unknown path is a 404 in the caller's dialect, never a 307
    app.state.gateway = gateway
    return app


def create_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (multi-worker): the config path comes from the environment."""
    return create_app(ProxyConfig.load(os.environ.get("CASCADEFLOW_CONFIG") or None))
