"""The API endpoints that forward to upstreams: messages, count_tokens, chat completions,
responses, embeddings.

Each reads the body once (bounded by ``server.max_body_bytes``), parses it once,
checks only what routing needs, and hands it to the proxy library. Everything that
goes wrong becomes an error in the caller's dialect; nothing escapes to the server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..cache import CachedAnswer, StreamCollector, hit_stream
from ..cascade.policies import conversation_key
from ..dialects import anthropic as anthropic_wire
from ..dialects import openai as openai_wire
from ..dialects import responses as responses_wire
from ..errors import CascadeflowError, ErrorKind, RequestError
from ..proxy import ProxyRequest
from ..usage import Usage
from .bounds import check_wide_integers, model_name, read_json_body
from .errors import error_response, exception_response
from .logs import REQUEST_ID
from .reach import check_reach, reachable_models
from .records import RequestInfo, cache_hit_entry, cascade_entry, error_entry, pass_through_entry, shut_down
from .streaming import SHUTDOWN_MESSAGE, GatewayStream, StreamOutcome

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine

    from starlette.types import Receive, Scope, Send

    from ..config import CascadeRule
    from ..proxy import RouteMatch
    from ..store import LedgerEntry
    from .app import Gateway

__all__ = ["messages", "count_tokens", "chat_completions", "responses", "embeddings", "read_json_body"]

log = logging.getLogger("cascadeflow.gateway")
T = TypeVar("T")

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
#: the request check of each endpoint (the rest is the upstream's call)
_CHECKS = {"/v1/messages": anthropic_wire.check_request, "/v1/messages/count_tokens": anthropic_wire.check_request,
           "/v1/chat/completions": openai_wire.check_request, "/v1/responses": responses_wire.check_request,
           "/v1/embeddings": openai_wire.check_embeddings_request}
#: endpoints cascade rules apply to (embeddings pass through rules untouched)
_CASCADED = frozenset({"/v1/messages", "/v1/chat/completions", "/v1/responses"})
#: how long a stream's last byte waits for its lease to be given back (seconds)
_SETTLE_WAIT = 1.0


async def messages(request: Request) -> Response:
    return await _forward(request, "anthropic", "/v1/messages")


async def count_tokens(request: Request) -> Response:
    return await _forward(request, "anthropic", "/v1/messages/count_tokens", count=True)


async def chat_completions(request: Request) -> Response:
    return await _forward(request, "openai", "/v1/chat/completions")


async def responses(request: Request) -> Response:
    return await _forward(request, "responses", "/v1/responses")


async def embeddings(request: Request) -> Response:
    return await _forward(request, "openai", "/v1/embeddings")


async def _forward(request: Request, dialect: str, path: str, *, count: bool = False) -> Response:
    gateway: Gateway = request.app.state.gateway
    headers = _headers(request)
    request_id = headers.get("x-request-id")
    if not request_id:
        request_id = gateway.new_request_id()
        REQUEST_ID.set(request_id)  # the log lines of this request carry it (this task serves one request)
    info = RequestInfo(path, dialect, "", False, request_id[:64])
    plan = "pass_through"
    try:
        info.identity = identity = await gateway.auth.identify(headers)  # before the body is read: refuse cheaply
        received = await read_body(request, gateway.config.server.max_body_bytes,
                                   gateway.config.server.request_read_timeout)
        body = read_json_body(received)
        raw: bytes | None = received  # None once the body is changed: it is sent re-serialised
        info.model = model = model_name(body)
        _CHECKS[path](body, count_tokens=count)
        gateway.auth.check_model(identity, model)
        query = request.scope["query_string"].decode("latin-1")
        if count and model in gateway.virtual_models:  # count as the model that would answer
            body = {**body, "model": gateway.virtual_models[model]}
            raw = None
        proxy_request = ProxyRequest("POST", path, headers, body, raw, query, identity.upstream, info.request_id)
        info.stream = proxy_request.stream
        rule = gateway.rules.match(model) if gateway.rules and path in _CASCADED else None
        plan = "cascade" if rule is not None else plan
        if not count:
            if identity.key is not None and identity.key.models is not None:
                check_reach(identity, reachable_models(gateway.service.router, model, dialect, rule))
            if proxy_request.stream:  # refused for capacity before admission: such a refusal costs no rpm
                _admit_stream(gateway)
            info.lease = await gateway.limits.admit(identity, body, len(raw or b""), model, rule, dialect)
            cache = gateway.cache
            if cache is not None and path in _CASCADED:  # after admission: a hit counts toward rpm, costs nothing
                info.cache = ticket = cache.ticket(identity.key, rule, path, dialect, headers, body)
                if ticket is not None and ticket.read:
                    answer = await cache.lookup(ticket, dialect, proxy_request.stream)
                    hit = _cache_hit(gateway, info, rule, answer, body) if answer is not None else None
                    if hit is not None:
                        return _with_id(hit, request_id)
        else:  # a request against rpm and concurrency; it generates nothing, so no tokens or cost
            info.lease = await gateway.limits.admit_call(identity)
        service = gateway.service
        match = service.route(proxy_request) if rule is None else None
        if raw is not None and not count and (match is None or service.rewrites(match, proxy_request, dialect)):
            check_wide_integers(raw)  # re-serialised: an integer beyond 64 bits would change (rare; cheap scan)
        if proxy_request.stream and not count:
            _admit_stream(gateway)  # again: others may have opened streams while this one was admitted
            return _with_id(await _streaming(request, gateway, rule, match, proxy_request, dialect, headers, body,
                                             info), request_id)
        if rule is not None:
            return _with_id(await _cascade(request, gateway, rule, proxy_request, dialect, headers, body, info),
                            request_id)
        assert match is not None
        try:
            result = await _unless_client_leaves(request, service.send(match, proxy_request, dialect))
        except asyncio.CancelledError:
            if not count:
                _finish(gateway, info, shut_down(_cut_entry(gateway, info, match, raw)))
            raise
        except _ClientLeft:
            if count:
                _release(gateway, info)
            else:
                _finish(gateway, info, _cut_entry(gateway, info, match, raw))
            return Response(status_code=499)
        headers = {**result.headers, "x-cascadeflow-route": match.route.name, "x-request-id": request_id}
        if not count:
            entry = pass_through_entry(info, match, result)
            _finish(gateway, info, entry)
            if info.cache is not None:
                headers["x-cascadeflow-cache"] = info.cache.status
                await gateway.cache.remember(info.cache, dialect, result.raw, None, entry)  # type: ignore[union-attr]
        else:
            _release(gateway, info)
        if result.cost is not None and not count:
            headers["x-cascadeflow-cost-usd"] = f"{result.cost:.8f}"
        return Response(result.raw, result.status, headers=headers)
    except CascadeflowError as exc:
        if not count:
            _finish(gateway, info, error_entry(info, exc, plan))
        else:
            _release(gateway, info)
        response = exception_response(dialect, exc, request_id)
        if exc.decision is not None:  # a cascade that failed after its drafts says what it did, as a success would
            response.headers.update(exc.decision.headers(with_cost=True))
        if info.cache is not None:
            response.headers["x-cascadeflow-cache"] = info.cache.status
        return _with_id(response, request_id)
    except ClientDisconnect:
        if count:
            _release(gateway, info)
        elif info.lease is not None:
            _finish(gateway, info, error_entry(info, RequestError("the client left", kind=ErrorKind.INVALID_REQUEST), plan))
        return Response(status_code=499)
    except Exception:  # a bug must not take the worker down or leave the caller hanging
        log.exception("unexpected error while handling %s", path)
        if count:
            _release(gateway, info)
        elif info.lease is not None:
            _finish(gateway, info, error_entry(info, RequestError("internal gateway error", kind=ErrorKind.INTERNAL), plan))
        return error_response(dialect, ErrorKind.INTERNAL, "internal gateway error; see the gateway log",
                              request_id=request_id)
    except asyncio.CancelledError:  # the server's shutdown deadline passed before this answer started
        asyncio.current_task().uncancel()  # type: ignore[union-attr]  # handled: answered, and recorded
        if count:
            _release(gateway, info)
        elif not info.done:
            _finish(gateway, info, info.entry(plan=plan, status=503, error_type="unavailable", cancelled=True,
                                              detail="the gateway shut down before the answer started"))
        return error_response(dialect, ErrorKind.UNAVAILABLE, SHUTDOWN_MESSAGE,
                              {"retry-after": "1", "connection": "close"}, request_id=request_id)


def _finish(gateway: Gateway, info: RequestInfo, entry: LedgerEntry) -> asyncio.Task | None:
    """Record the request, and give back what it reserved of its limits (with its real usage) off the
    request path; the task that does it, when there is one."""
    info.done = True
    gateway.finish(entry)
    lease, info.lease = info.lease, None
    if lease is not None:
        return gateway.background(gateway.limits.settle(lease, entry))
    return None


def _release(gateway: Gateway, info: RequestInfo) -> None:
    """Give back a lease that used nothing (``count_tokens``): it is no request of the ledger."""
    lease, info.lease = info.lease, None
    if lease is not None:
        gateway.background(gateway.limits.release(lease))


def _with_id(response: Response, request_id: str) -> Response:
    response.headers["x-request-id"] = request_id
    return response


async def _streaming(request: Request, gateway: Gateway, rule: CascadeRule | None, match: RouteMatch | None,
                     proxy_request: ProxyRequest, dialect: str,
                     headers: dict, body: dict, info: RequestInfo) -> Response:
    """A streaming request (cascaded or passed through); counted as open until its :class:`GatewayStream` settles.

    A cascade reads its draft before the answer starts: a client that leaves meanwhile cancels it there."""
    gateway.active_streams += 1
    try:
        if rule is not None:
            decision = gateway.cascade.begin(rule, proxy_request)
            try:
                reply = await _unless_client_leaves(request, gateway.cascade.stream(
                    rule, proxy_request, dialect, conversation_key(headers, body), info.request_id, decision))
            except _ClientLeft:
                decision.reason = decision.reason or "cancelled"
                _finish(gateway, info, cascade_entry(info, decision, 499, cancelled=True))
                gateway.active_streams -= 1
                return Response(status_code=499)
            except asyncio.CancelledError:  # shutdown past its deadline: the drafts made are paid for
                decision.reason = decision.reason or "cancelled"
                _finish(gateway, info, shut_down(cascade_entry(info, decision, 503, cancelled=True)))
                raise
            assert reply.chunks is not None  # a streamed cascade's reply always has them
            status, reply_headers = reply.status, reply.response_headers()
            chunks: AsyncIterable[bytes] = reply.chunks
            after = reply.after

            def entry(finished: bool) -> LedgerEntry:
                return cascade_entry(info, reply.decision, status, cancelled=not finished)
        else:
            assert match is not None, "a request passed through has its route"
            try:
                stream = await gateway.service.open_stream(match, proxy_request, dialect)
            except asyncio.CancelledError:
                _finish(gateway, info, shut_down(_cut_entry(gateway, info, match, proxy_request.raw_body)))
                raise
            status, chunks, after = stream.status, stream, None
            reply_headers = {**stream.headers, "x-cascadeflow-route": match.route.name}

            def entry(finished: bool) -> LedgerEntry:
                return pass_through_entry(info, match, stream, cancelled=not finished)
    except BaseException:
        gateway.active_streams -= 1
        raise
    media_type = reply_headers.get("content-type", "text/event-stream")
    collector = None
    if info.cache is not None:
        reply_headers = {**reply_headers, "x-cascadeflow-cache": info.cache.status}
        if info.cache.write and status == 200:
            collector = StreamCollector(dialect)
            chunks = _collected(chunks, collector)

    async def settle(outcome: StreamOutcome) -> None:
        """The stream's end, once: the open count and the lease given back, the row written (and the answer
        cached) — before the last byte, so the client's next request finds its slot free."""
        gateway.active_streams -= 1
        finished = outcome is StreamOutcome.COMPLETE
        record = entry(finished)
        if outcome is StreamOutcome.SHUTDOWN:
            shut_down(record)
        elif outcome is StreamOutcome.FAILED:
            record.status, record.error_type, record.cancelled = 500, "internal", False
            record.detail = "internal gateway error while streaming the answer"
        settled = _finish(gateway, info, record)
        if finished and collector is not None and (answer := collector.answer()) is not None:
            await gateway.cache.remember(info.cache, collector.dialect, answer[0], answer[1], record)  # type: ignore[union-attr,arg-type]
        if settled is not None:  # bounded: a stalled limits store must not hold the answer's end
            await asyncio.wait((settled,), timeout=_SETTLE_WAIT)

    return GatewayStream(chunks, status, {**reply_headers, **_SSE_HEADERS}, dialect=dialect,
                         request_id=info.request_id, settle=settle, media_type=media_type, after=after)


async def _collected(chunks, collector: StreamCollector) -> AsyncIterator[bytes]:  # type: ignore[no-untyped-def]
    """The chunks, fed to the response cache's collector on the way."""
    try:
        async for chunk in chunks:
            collector.feed(chunk)
            yield chunk
    finally:
        await chunks.aclose()


def _admit_stream(gateway: Gateway) -> None:
    limit = gateway.config.server.max_concurrent_streams
    if limit is not None and gateway.active_streams >= limit:
        refusal = RequestError(f"{limit} streams are open already, the most this gateway allows; retry shortly",
                               kind=ErrorKind.RATE_LIMIT)
        refusal.retry_after = 1.0  # type: ignore[attr-defined]
        raise refusal


async def _cascade(request: Request, gateway: Gateway, rule: CascadeRule, proxy_request: ProxyRequest, dialect: str, headers: dict,
                   body: dict, info: RequestInfo) -> Response:
    conversation = conversation_key(headers, body)
    decision = gateway.cascade.begin(rule, proxy_request)
    try:
        reply = await _unless_client_leaves(request, gateway.cascade.complete(
            rule, proxy_request, dialect, conversation, info.request_id, decision))
    except asyncio.CancelledError:  # shutdown past its deadline: the calls made are paid for
        decision.reason = decision.reason or "cancelled"
        _finish(gateway, info, shut_down(cascade_entry(info, decision, 503, cancelled=True)))
        raise
    except _ClientLeft:  # no verifier is opened for a client that is gone; the calls made are paid for
        decision.reason = decision.reason or "cancelled"
        _finish(gateway, info, cascade_entry(info, decision, 499, cancelled=True))
        return Response(status_code=499)
    entry = cascade_entry(info, reply.decision, reply.status)
    _finish(gateway, info, entry)
    reply_headers = reply.response_headers()
    reply_headers.pop("content-length", None)
    if info.cache is not None:
        reply_headers["x-cascadeflow-cache"] = info.cache.status
        await gateway.cache.remember(info.cache, dialect, reply.body, None, entry)  # type: ignore[union-attr]
    if reply.after is not None:  # the conversation's record runs once the answer is written (off the request's path)
        return _ThenResponse(reply.after, reply.body, reply.status, headers=reply_headers, media_type="application/json")
    return Response(reply.body, reply.status, headers=reply_headers, media_type="application/json")


class _ThenResponse(Response):
    """An answer, then ``after()`` on the event loop once it is written (starlette's background task would run a
    plain function in a worker thread, and costs more to set up than the work it defers)."""

    def __init__(self, after: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._after()


def _cache_hit(gateway: Gateway, info: RequestInfo, rule, answer: CachedAnswer, body: dict) -> Response | None:  # type: ignore[no-untyped-def]
    """A stored answer, as JSON or as a stream of the caller's dialect, recorded at zero cost (None: the
    entry cannot make the stream asked for, and the request goes on as a miss)."""
    payload = hit_stream(info.dialect, answer, body) if info.stream else answer.body
    if payload is None:
        info.cache.status = "miss"  # type: ignore[union-attr]
        return None
    match = info.cache.match or "exact"  # type: ignore[union-attr]
    _finish(gateway, info, cache_hit_entry(info, rule.name if rule is not None else None, answer.served_model,
                                           answer.baseline_cost, match))
    headers = {"x-cascadeflow-cache": "hit", "x-cascadeflow-cache-match": match, "age": str(answer.age()),
               "x-cascadeflow-cost-usd": f"{0.0:.8f}"}
    if answer.served_model:
        headers["x-cascadeflow-served-model"] = answer.served_model
    if answer.baseline_cost is not None:
        headers["x-cascadeflow-baseline-cost-usd"] = f"{answer.baseline_cost:.8f}"
    if info.stream:
        return Response(payload, 200, headers={**headers, **_SSE_HEADERS}, media_type="text/event-stream")
    return Response(payload, 200, headers=headers, media_type="application/json")


def _headers(request: Request) -> dict[str, str]:
    """The request's headers as a dict, the first of a repeated name winning (as in starlette's ``Headers``), read
    off the raw list once: ``dict(request.headers)`` looks each name up again along the list (O(n²): ~32 µs for
    Claude Code's twenty headers here, against ~9)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(request.scope["headers"])}


class _ClientLeft(Exception):
    """The client disconnected before its answer started; the work for it was cancelled."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, or :class:`_ClientLeft` once it has been cancelled because the client disconnected.

    Until an answer starts nothing listens to the connection (a started stream has its own
    watcher): without this a JSON call, or a cascade still reading its draft, would run to its end
    for a client that is gone, and open the verifier too. Cancelling closes the upstream call.
    ``work`` runs in this request's own task (a task of its own and ``asyncio.wait`` cost ~15-25 µs
    a request); a watcher task cancels it when the client leaves, and the cancellation is told from
    any other (a shutdown's) by the task's cancel count.
    """
    task = asyncio.current_task()
    assert task is not None
    left = watching = False

    def client_left(watcher: asyncio.Future) -> None:
        nonlocal left
        if watcher.cancelled() or watcher.exception() is not None:  # stopped, or nothing to watch: just wait
            return
        if watching:  # (a callback scheduled as the work ended must not cancel what the request does next)
            left = True
            task.cancel()

    watcher = asyncio.ensure_future(_disconnected(request.receive))
    watcher.add_done_callback(client_left)
    watching = True
    try:
        result = await work
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:  # only the client's leaving cancelled it
            raise _ClientLeft from None
        raise
    except BaseException:
        if left:
            task.uncancel()
        raise
    finally:
        watching = False
        watcher.cancel()
    if left:  # the work ended on its own though the client had left: its result stands, as the cancel's moot
        task.uncancel()
    return result


def _cut_entry(gateway: Gateway, info: RequestInfo, match: RouteMatch, raw: bytes | None) -> LedgerEntry:
    """A passed-through JSON call cut off before its answer: the upstream read the prompt, so the
    request's size at 4 bytes a token is counted as input (as for a cut stream that reported none)."""
    usage = Usage(input_tokens=len(raw or b"") // 4)
    return info.entry(plan="pass_through", status=499, served_model=match.model, route=match.route.name,
                      input_tokens=usage.input_tokens, cost=gateway.registry.cost(match.model, usage), cancelled=True,
                      detail="the client left before the answer")


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds ``limit`` bytes, and with 408 (the
    connection then closed) when it has not all arrived within ``timeout`` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body is {declared} bytes; the limit is {limit}", kind=ErrorKind.REQUEST_TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(f"request body exceeds the limit of {limit} bytes",
                                       kind=ErrorKind.REQUEST_TOO_LARGE)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(f"the request body did not arrive within {timeout:g}s (server.request_read_timeout; "
                           f"{size} bytes came)", kind=ErrorKind.REQUEST_TIMEOUT) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

