"""ProxyHandler: send one request to one route, read its usage, price it.

The body goes upstream as received unless the adapter must change it (the model
name, or asking an OpenAI stream for its usage chunk). Stream bytes are yielded as
they arrive while a tap reads usage on the side; a stream that breaks after it
began ends with the dialect's error event rather than a silent cut.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson

from ..errors import ErrorKind, ProxyPoolFullError, ProxyProtocolError, ProxyTransportError, ProxyUpstreamError
from ..pricing import ModelPrice, ModelRegistry
from ..providers import PoolWait, UpstreamPool, adapter_for, forwardable_request_headers, forwardable_response_headers
from ..route_config import ProxyRoute, RoutePrice
from ..telemetry import CostTracker
from ..usage import Usage
from .resilience import RETRYABLE_STATUSES, CircuitBreaker, retry_delay
from .types import SAMPLE_INDEX_HEADER, ProxyRequest, ProxyResult, ProxyStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from ..providers.base import ProviderAdapter, StreamTap

__all__ = ["ProxyHandler"]

T = TypeVar("T")

#: breakers kept at most (only failing (route, model) pairs are kept; client-chosen names are unbounded)
_MAX_BREAKERS = 10_000
_STATE_RANK = {"closed": 0, "half_open": 1, "open": 2}

log = logging.getLogger("cascadeflow.proxy")


class ProxyHandler:
    """Sends requests upstream over pooled connections and tracks their cost."""

    def __init__(
        self,
        cost_tracker: CostTracker | None = None,
        registry: ModelRegistry | None = None,
        pool: UpstreamPool | None = None,
    ) -> None:
        self.cost_tracker = cost_tracker
        self.registry = registry or ModelRegistry()
        self.pool = pool or UpstreamPool()
        self._timeouts: dict[tuple[str, bool], aiohttp.ClientTimeout] = {}
        self._route_prices: dict[str, ModelPrice] = {}
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._breaker_routes: set[str] = set()
        self._rng = random.Random()
        #: retries made so far (all routes), and per route
        self.retries = 0
        self.retried: collections.Counter[str] = collections.Counter()
        #: failed attempts per (route, what failed): an HTTP status, ``timeout``, ``unreachable``,
        #: ``bad_response``, ``breaker_open``, ``stream_error`` or ``stream_timeout`` (read by the gateway's metrics)
        self.failures: collections.Counter[tuple[str, str]] = collections.Counter()

    # -- pricing ---------------------------------------------------------------

    def price(self, route: ProxyRoute, model: str, usage: Usage) -> float | None:
        """USD for ``usage``: the route's override if it has one, else the registry's price."""
        override = route.cost_per_1k_tokens
        if override is None:
            return self.registry.cost(model, usage)
        price = self._route_prices.get(route.name)
        if price is None:
            if isinstance(override, RoutePrice):
                per_m = [None if p is None else p * 1000 for p in (override.cache_read, override.cache_write)]
                price = ModelPrice(override.input * 1000, override.output * 1000, *per_m)
            else:
                price = ModelPrice.per_1k(override)
            self._route_prices[route.name] = price
        return price.cost(usage)

    # -- sending ---------------------------------------------------------------

    async def send(
        self, route: ProxyRoute, model: str, request: ProxyRequest, *, attempts: int | None = None,
        has_alternative: bool = False,
    ) -> ProxyResult:
        """Forward a non-streaming request, retrying per the route; ProxyUpstreamError on an error status.

        ``attempts`` caps the route's tries (1 for a cascade's draft: failing fast beats retrying);
        ``has_alternative``: the caller has somewhere better to go, so an open breaker may refuse.
        """
        return await self._retrying(route, model, lambda: self._send_once(route, model, request), attempts,
                                    has_alternative)

    async def open_stream(
        self, route: ProxyRoute, model: str, request: ProxyRequest, *, attempts: int | None = None,
        has_alternative: bool = False,
    ) -> ProxyStream:
        """Open a streaming request (retried until the upstream's headers arrive); options as :meth:`send`."""
        return await self._retrying(route, model, lambda: self._open_once(route, model, request), attempts,
                                    has_alternative)

    def breakers(self) -> dict[str, dict]:
        """Breaker states for /health: per route, the worst of its models', and each failing model's."""
        per_route: dict[str, dict[str, dict]] = {name: {} for name in self._breaker_routes}
        for (route, model), breaker in self._breakers.items():
            per_route[route][model] = breaker.snapshot()
        return {name: {"state": max((s["state"] for s in models.values()), key=_STATE_RANK.__getitem__,
                                    default="closed"),
                       "consecutive_failures": max((s["consecutive_failures"] for s in models.values()), default=0),
                       "retry_in_seconds": max((s["retry_in_seconds"] for s in models.values()), default=0.0),
                       "models": models}
                for name, models in per_route.items()}

    async def _retrying(
        self, route: ProxyRoute, model: str, call: Callable[[], Awaitable[T]], attempts: int | None,
        has_alternative: bool,
    ) -> T:
        """Run ``call`` with the route's retries; the (route, model) breaker judges the request as a whole."""
        key = (route.name, model)
        breaker = self._breakers.get(key)
        if has_alternative and breaker is not None and not breaker.allow():
            self.failures[(route.name, "breaker_open")] += 1
            raise ProxyTransportError(
                f"upstream {route.name!r} model {model!r} {breaker.refusal()}",
                route=route.name, retry_after=max(breaker.retry_in(), 1.0),
            )
        try:
            result = await self._attempts(route, call, min(attempts or route.retry.attempts, route.retry.attempts))
        except ProxyPoolFullError:  # the gateway's own limit: no verdict on the upstream
            self._settled(key, success=False)
            raise
        except (ProxyUpstreamError, ProxyTransportError) as exc:
            failed = _breaker_failure(exc)
            if failed is not None:
                self._failed(key, route, failed)
            else:  # a 4xx or 429: the upstream is up and answering
                self._settled(key, success=True)
            raise
        except BaseException:  # cancelled by the caller, or a bug: no verdict on the upstream
            self._settled(key, success=False)
            raise
        self._settled(key, success=True)
        return result

    def _failed(self, key: tuple[str, str], route: ProxyRoute, what: str) -> None:
        breaker = self._breakers.get(key)
        if breaker is None:
            if len(self._breakers) >= _MAX_BREAKERS:  # forget closed ones first, then the oldest
                closed = [k for k, b in self._breakers.items() if b.opened_at is None] or list(self._breakers)
                for old in closed[: len(closed) // 2 + 1]:
                    del self._breakers[old]
            breaker = self._breakers[key] = CircuitBreaker(route.breaker)
            self._breaker_routes.add(route.name)
        breaker.failure(what)

    def _settled(self, key: tuple[str, str], *, success: bool) -> None:
        breaker = self._breakers.get(key)
        if breaker is None:
            return
        if success:
            breaker.success()
        else:
            breaker.release()
        if breaker.idle:
            del self._breakers[key]

    async def _attempts(self, route: ProxyRoute, call: Callable[[], Awaitable[T]], attempts: int) -> T:
        """Up to ``attempts`` tries of ``call`` (nothing has reached the client yet)."""
        settings = route.retry
        waited, attempt = 0.0, 0
        while True:
            attempt += 1
            delay: float | None
            try:
                return await call()
            except ProxyProtocolError:
                self.failures[(route.name, "bad_response")] += 1
                self._failed_call()
                raise  # the same request would get the same non-answer
            except ProxyPoolFullError:
                self.failures[(route.name, "pool_full")] += 1
                raise  # it waited pool_timeout already; the caller (or a fallback) decides
            except ProxyUpstreamError as exc:
                self.failures[(route.name, str(exc.upstream_status))] += 1
                self._failed_call()
                retryable = exc.upstream_status in RETRYABLE_STATUSES
                delay = retry_delay(attempt, settings, exc.headers, self._rng) if retryable else None
                last: Exception = exc
            except ProxyTransportError as exc:
                self.failures[(route.name, "timeout" if exc.kind is ErrorKind.TIMEOUT else "unreachable")] += 1
                self._failed_call()
                delay, last = retry_delay(attempt, settings, {}, self._rng), exc
            if delay is None or attempt >= attempts or waited + delay > settings.max_total:
                raise last
            log.info("upstream %s: %s; retry %d in %.2fs", route.name, last, attempt, delay)
            self.retries += 1
            self.retried[route.name] += 1
            await asyncio.sleep(delay)
            waited += delay

    def _failed_call(self) -> None:
        if self.cost_tracker is not None:
            self.cost_tracker.record_failed_call()

    async def _send_once(self, route: ProxyRoute, model: str, request: ProxyRequest) -> ProxyResult:
        adapter = adapter_for(route.provider, request.path)
        url, headers, payload = self._build(route, model, request, adapter)
        started = time.perf_counter()
        wait = PoolWait()
        with _transport_errors(route, wait):
            async with _first_byte(route):
                response = await self.pool.session(route).request(
                    request.method, url, data=payload, headers=headers, timeout=self._timeout(route, False),
                    allow_redirects=False, trace_request_ctx=wait,
                )
            async with response:
                raw = await response.read()
                status = response.status
                response_headers = forwardable_response_headers(response.headers)
                content_type = response.content_type
        latency_ms = (time.perf_counter() - started) * 1000
        if 300 <= status < 400:
            raise _redirected(route, status, response_headers)
        if status >= 400:
            raise ProxyUpstreamError(
                f"upstream {route.name!r} answered {status}",
                status=status,
                payload=raw,
                headers=response_headers,
                route=route.name,
            )
        try:
            data = orjson.loads(raw) if raw or status == 204 else _not_json
        except orjson.JSONDecodeError:
            data = _not_json
        if data is _not_json:
            raise _not_json_error(route, status, content_type, raw)
        usage = adapter.response_usage(data)
        billable = request.method == "POST" and not request.path.endswith("/count_tokens")
        cost = self.price(route, model, usage) if billable else 0.0
        if self.cost_tracker is not None and billable:
            self.cost_tracker.record_call(model=model, route=route.name, usage=usage, cost=cost, status=status)
        return ProxyResult(data, status, response_headers, usage, cost, route.name, model, latency_ms, raw)

    async def _open_once(self, route: ProxyRoute, model: str, request: ProxyRequest) -> ProxyStream:
        """Open a streaming request; returns once the upstream's headers arrived."""
        adapter = adapter_for(route.provider, request.path)
        url, headers, payload = self._build(route, model, request, adapter)
        started = time.perf_counter()
        wait = PoolWait()
        with _transport_errors(route, wait):
            async with _first_byte(route):
                response = await self.pool.session(route).request(
                    request.method, url, data=payload, headers=headers, timeout=self._timeout(route, True),
                    allow_redirects=False, trace_request_ctx=wait,
                )
        first_byte_ms = (time.perf_counter() - started) * 1000
        response_headers = forwardable_response_headers(response.headers)
        if 300 <= response.status < 400:
            response.release()
            raise _redirected(route, response.status, response_headers)
        if response.status >= 400:
            try:
                raw = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                response.release()
            raise ProxyUpstreamError(
                f"upstream {route.name!r} answered {response.status}",
                status=response.status,
                payload=raw,
                headers=response_headers,
                route=route.name,
            )
        whole: bytes | None = None
        if response.content_type != "text/event-stream":  # a stream request answered with plain JSON, or not
            try:
                with _transport_errors(route):
                    whole = await response.read()
            finally:
                response.release()
            if _loads(whole) is None:
                raise _not_json_error(route, response.status, response.content_type, whole)
        tap = adapter.stream_tap(request.body or {})
        stream = ProxyStream(
            status=response.status, headers=response_headers, route=route.name, model=model,
            first_byte_ms=first_byte_ms,
        )
        relay = self._relay(route, model, adapter, response, tap, stream, started, whole, len(payload or b""),
                            request.request_id or None)
        stream.attach(relay, response.close)
        return stream

    async def _relay(
        self,
        route: ProxyRoute,
        model: str,
        adapter: ProviderAdapter,
        response: aiohttp.ClientResponse,
        tap: StreamTap,
        stream: ProxyStream,
        started: float,
        whole: bytes | None,
        sent_bytes: int,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        finished = False
        failure = 502
        try:
            if whole is not None:  # an upstream may answer a stream request with plain JSON
                tap.usage = adapter.response_usage(_loads(whole))
                tap.complete = True
                finished = True
                yield whole
                return
            async for chunk in response.content.iter_any():
                out = tap.feed(chunk)
                if out:
                    yield out
                if tap.malformed is not None:  # garbage from upstream: end properly instead of passing it on
                    stream.error = "upstream sent a malformed stream event"
                    yield tap.malformed + adapter.stream_error(ErrorKind.BAD_GATEWAY, stream.error, request_id)
                    return
            tail = tap.flush()
            if tail:
                yield tail
            finished = True
            if not tap.complete:
                stream.error = "upstream closed the stream before it finished"
                yield adapter.stream_error(ErrorKind.BAD_GATEWAY, stream.error, request_id)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            failure = 504
            stream.error = f"upstream stream was silent for more than {route.stream_idle_timeout:g}s"
            yield adapter.stream_error(ErrorKind.TIMEOUT, stream.error, request_id)
        except aiohttp.ClientError as exc:
            stream.error = f"upstream stream broke: {_describe(exc)}"
            yield adapter.stream_error(ErrorKind.BAD_GATEWAY, stream.error, request_id)
        except Exception:  # a bug here must still end the caller's stream properly
            log.exception("unexpected error while relaying a stream from %s", route.name)
            stream.error = "internal gateway error while relaying the stream"
            yield adapter.stream_error(ErrorKind.INTERNAL, stream.error, request_id)
        finally:
            if finished and tap.complete:
                response.release()
            else:  # cut, failed or abandoned by the caller: stop the upstream generating
                response.close()
            stream.complete = tap.complete and stream.error is None
            if stream.error is None and tap.error is not None:
                stream.error = "upstream sent an error event"
            abandoned = not finished and stream.error is None  # closed by our side before its end
            if abandoned:
                failure, stream.error = 499, "closed before the end (client gone, or a draft stopped early)"
            elif stream.error is not None:
                self.failures[(route.name, "stream_timeout" if failure == 504 else "stream_error")] += 1
            stream.usage = tap.usage if tap.complete else _generated_usage(tap, sent_bytes)
            stream.cost = self.price(route, model, stream.usage)
            stream.latency_ms = (time.perf_counter() - started) * 1000
            if self.cost_tracker is not None:
                self.cost_tracker.record_call(
                    model=model, route=route.name, usage=stream.usage, cost=stream.cost,
                    status=200 if stream.error is None else failure, stream=True,
                )

    # -- helpers ---------------------------------------------------------------

    def _build(
        self, route: ProxyRoute, model: str, request: ProxyRequest, adapter: ProviderAdapter
    ) -> tuple[str, dict[str, str], bytes | None]:
        url = route.url(request.path)
        if request.query:
            url = f"{url}?{request.query}"
        headers = adapter.default_headers()
        headers.update(forwardable_request_headers(request.headers))
        headers.update(route.headers)
        if route.replay and request.sample_index is not None:
            headers[SAMPLE_INDEX_HEADER] = str(request.sample_index)
        headers.update(self._credentials(route, request, adapter))
        payload: bytes | None = None
        if request.body is not None:
            body, changed = adapter.prepare(request.path, request.body, model)
            if changed or request.raw_body is None:
                payload = orjson.dumps(body)
            else:
                payload = request.raw_body
            headers["content-type"] = "application/json"
        return url, headers, payload

    @staticmethod
    def _credentials(route: ProxyRoute, request: ProxyRequest, adapter: ProviderAdapter) -> dict[str, str]:
        """The credential headers for this call, as ``request.auth`` decided: the caller's own key when it
        is to be forwarded, else the virtual key's own key for this route, else the route's rule (its
        ``api_key``; the caller's on a keyless or ``pass_through_auth`` route)."""
        auth = request.auth
        if auth.forward_caller:
            return adapter.caller_auth(request.headers)
        own = auth.key_for(route)
        if own is not None:
            return adapter.auth_headers(own.get_secret_value())
        caller = adapter.caller_auth(request.headers) if route.pass_through_auth or route.api_key is None else None
        if caller:
            return caller
        return adapter.auth_headers(route.api_key.get_secret_value()) if route.api_key is not None else {}

    def _timeout(self, route: ProxyRoute, stream: bool) -> aiohttp.ClientTimeout:
        key = (route.name, stream)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # connect: getting a connection — waiting for one of max_connections to come free, then opening it
            # when none is open (sock_connect bounds the opening alone)
            connect = route.pool_timeout
            if stream:  # a healthy stream may run long; silence is what ends it
                timeout = aiohttp.ClientTimeout(
                    total=None, connect=connect, sock_connect=route.connect_timeout, sock_read=route.stream_idle_timeout
                )
            else:
                read = route.read_timeout or route.timeout
                timeout = aiohttp.ClientTimeout(total=route.timeout, connect=connect, sock_connect=route.connect_timeout,
                                                sock_read=read)
            self._timeouts[key] = timeout
        return timeout

    async def aclose(self) -> None:
        await self.pool.aclose()


@contextlib.contextmanager
def _transport_errors(route: ProxyRoute, wait: PoolWait | None = None) -> Iterator[None]:
    """aiohttp's connection failures and timeouts as ProxyTransportError (502 / 504); a timeout while
    waiting for a pooled connection as ProxyPoolFullError (503)."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        if wait is not None and wait.queued:
            raise ProxyPoolFullError(
                f"route {route.name!r}: all {route.max_connections} of its connections (max_connections) stayed "
                f"busy for {route.pool_timeout:g}s (pool_timeout); this gateway's own limit, not the upstream's "
                "— retry shortly, or raise max_connections", route=route.name,
            ) from exc
        raise ProxyTransportError(
            f"upstream {route.name!r} did not answer within its timeout", timeout=True, route=route.name
        ) from exc
    except aiohttp.ClientError as exc:
        raise ProxyTransportError(f"upstream {route.name!r} unreachable: {_describe(exc)}", route=route.name) from exc


def _first_byte(route: ProxyRoute) -> contextlib.AbstractAsyncContextManager:
    """Bound the wait for the response's headers by ``first_byte_timeout``, when set."""
    return asyncio.timeout(route.first_byte_timeout) if route.first_byte_timeout else contextlib.nullcontext()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "…"


_not_json = object()  # marks a body that did not parse


def _generated_usage(tap: StreamTap, sent_bytes: int) -> Usage:
    """The usage of a stream that ended before the upstream reported its final figures (cut or cancelled).

    Output: what the upstream reported so far, or the streamed deltas' characters at 4 a token
    (the project's estimate when no tokenizer applies), whichever is more. Input: as reported, or
    when nothing was (OpenAI reports usage only at the end) the request's size at 4 bytes a token.
    """
    usage = tap.usage
    output = max(usage.output_tokens, -(-tap.generated_chars // 4))
    reported_input = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    input_tokens = usage.input_tokens if reported_input else -(-sent_bytes // 4)
    if output == usage.output_tokens and input_tokens == usage.input_tokens:
        return usage
    return Usage(input_tokens, output, usage.cache_write_tokens, usage.cache_read_tokens)


def _breaker_failure(exc: ProxyUpstreamError | ProxyTransportError) -> str | None:
    """What a failed request tells the breaker: a failure's description, or None (4xx, 429: the upstream is up)."""
    if isinstance(exc, ProxyUpstreamError):
        if exc.upstream_status < 500:
            return None
        return f"{exc.upstream_status} from the upstream"
    return exc.message.split(": ", 1)[-1] if isinstance(exc, ProxyProtocolError) else (
        "timeout" if exc.kind is ErrorKind.TIMEOUT else "unreachable")


def _redirected(route: ProxyRoute, status: int, headers: dict[str, str]) -> ProxyProtocolError:
    """A redirect is never followed: the route's credentials must not go to another host."""
    target = urlsplit(headers.get("location", "")).netloc or "elsewhere"
    return ProxyProtocolError(
        f"upstream {route.name!r} answered {status}: a redirect to {target}; redirects are not followed "
        "(check the route's base_url)", route=route.name,
    )


def _not_json_error(route: ProxyRoute, status: int, content_type: str, raw: bytes) -> ProxyProtocolError:
    return ProxyProtocolError(
        f"upstream {route.name!r} answered {status}: a body that is not JSON ({content_type or 'no content type'}, "
        f"{len(raw)} bytes)", route=route.name,
    )


def _loads(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
