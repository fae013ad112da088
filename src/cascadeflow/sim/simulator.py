"""A simulated LLM provider: a real aiohttp server speaking the Anthropic Messages
API and the OpenAI Chat Completions and Responses APIs.

Endpoints (any auth header is accepted; every ``/v1`` request is recorded):

- ``POST /v1/messages`` (also ``?beta=true``), JSON or ``"stream": true`` SSE
- ``POST /v1/messages/count_tokens`` → ``{"input_tokens": N}``
- ``POST /v1/chat/completions``, JSON or SSE (``stream_options.include_usage``)
- ``POST /v1/responses``, JSON or SSE (see :mod:`cascadeflow.sim.responses_sim`)
- ``POST /v1/embeddings`` (deterministic vectors, usage priced like a prompt)
- ``GET /v1/models`` and ``GET /v1/models/{id}``: Anthropic shape when the
  request has an ``anthropic-version`` header, OpenAI shape otherwise
- control: ``GET /_sim/requests``, ``POST /_sim/script``, ``POST /_sim/reset``,
  ``POST /_sim/clock`` (``{"advance": seconds}``), ``GET /_sim/health``

Prompt caching works as Anthropic's and OpenAI's do (breakpoints, lookback, minimum
lengths, TTLs, 128-token steps; see :mod:`cascadeflow.sim.prompt_cache`), on a
clock that tests move forward with :meth:`SimulatedProvider.advance_clock` or
``POST /_sim/clock`` instead of sleeping.

Answers are deterministic (see :mod:`cascadeflow.sim.engine` for the default
answer text, the token-estimate formula and the prompt-cache simulation) and can
be overridden per request, or faults injected, with a
:class:`~cascadeflow.sim.script.Script`. Script rules apply to the two
generation endpoints; a rule reaches ``count_tokens`` / ``models`` only when its
``match.path`` names that path exactly.

Usage::

    with SimulatedProvider(script=[{"match": {"model": "claude-*"}, "text": "Hi."}]) as sim:
        client = anthropic.Anthropic(base_url=sim.url, api_key="x")
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from . import anthropic_sim as an
from . import openai_sim as oa
from . import responses_sim as rs
from .catalog import DEFAULT_MODELS, normalize_model
from .engine import Usage, estimate_input_tokens, last_user_text, new_id, plan_answer
from .model_limits import beta_problem, feature_problem, output_limit_problem, reasoning_problem
from .prompt_cache import CacheSplit, PromptCache, SimClock, check_breakpoints
from .replay import ReplayTable
from .request_shape import shape_problem
from .script import Script, load_script
from .server_tools import check_server_tools
from .thinking_rules import check_request as check_thinking
from .thinking_rules import sign as sign_thinking
from .wire import JSON as _JSON
from .wire import abort, breaks_body, error_response, fmt_seconds, send_broken_json, send_events

__all__ = ["DEFAULT_MODELS", "SimulatedProvider", "run_simulator"]

_INVALID = object()
_RECORD = web.RequestKey("sim_record", dict)  # the record of this request, to attach its usage


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.new_event_loop()


class SimulatedProvider:
    """The simulated provider server; see the module docstring.

    ``SimulatedProvider(host, port=0, script=None, *, models=None, record=True,
    max_records=100_000, max_body_bytes=32 MiB, shutdown_timeout=0.25)``.
    ``port=0`` picks a free port. ``models`` lists model ids (or dicts with
    ``id`` and optional ``display_name``, ``created_at``, ``created``,
    ``owned_by``). ``record=False`` skips recording (for benchmarks).
    ``refused_betas={"claude-haiku-5-5": ["context-1m-2025-08-07"]}`` makes a
    Messages request to a model (by name prefix) carrying one of those
    ``anthropic-beta`` values a 400 in the live API's words (the attribute of
    the same name can be changed while it runs).

    Deterministic answers (details in :mod:`cascadeflow.sim.engine`):
    the default text is ``f"[{model}] "`` plus 6-15 words picked by a hash of
    (model, last user text). Usage: ``input_tokens = max(1, chars // 4)`` with
    ``chars`` = compact-JSON length of messages (+ system) (+ tools) — the
    ``count_tokens`` answer; ``output_tokens = words(text) + words(thinking) +
    sum(len(tool input JSON) // 4)``. Prompt caching follows each provider's
    rules (:mod:`cascadeflow.sim.prompt_cache`), per model; cached tokens are
    subtracted from ``input_tokens``, and OpenAI reports them as ``cached_tokens``
    inside ``prompt_tokens``. :meth:`clear` forgets the caches; time passes on a
    simulated clock (:meth:`advance_clock`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        script: Script | dict[str, Any] | list[Any] | str | Path | None = None,
        *,
        models: list[str | dict[str, Any]] | None = None,
        record: bool = True,
        max_records: int | None = 100_000,
        max_body_bytes: int = 32 * 1024 * 1024,
        shutdown_timeout: float = 0.25,
        replay: ReplayTable | None = None,
        refused_betas: dict[str, list[str] | set[str] | frozenset[str]] | None = None,
    ) -> None:
        self.host = host
        #: ``anthropic-beta`` values refused (400) per model-name prefix, as an API that lacks them would
        self.refused_betas = {prefix: frozenset(betas) for prefix, betas in (refused_betas or {}).items()}
        self._replay = replay
        self.port = port
        self._requested_port = port
        self._script = Script.coerce(script)
        self._models = [normalize_model(m) for m in (models if models is not None else DEFAULT_MODELS)]
        self._record_enabled = record
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_records)
        self._disconnects: list[dict[str, Any]] = []
        self._replay_misses: list[str] = []
        self._lock = threading.Lock()
        self._clock = SimClock()
        self._cache = PromptCache(self._clock)
        self._stored = rs.StoredResponses()
        self._max_body = max_body_bytes
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def script(self) -> Script:
        return self._script

    def set_script(self, script: Script | dict[str, Any] | list[Any] | str | Path | None) -> None:
        """Replace the script (a Script, ``{"rules": [...]}``, a rule list, a file path, or None)."""
        self._script = Script.coerce(script)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Recorded requests: ``{"method","path","query","headers","body","raw","usage"}`` dicts.

        ``usage`` is what the answer billed, dialect-neutral (``input_tokens`` without
        cached tokens, ``output_tokens``, ``cache_creation_input_tokens``,
        ``cache_read_input_tokens``), or None when the request got no answer (an error,
        a fault, an endpoint that bills nothing)."""
        with self._lock:
            return list(self._records)

    @property
    def disconnects(self) -> list[dict[str, Any]]:
        """Answers whose client left before the end (streams, and JSON answers held by ``latency``):
        ``{"model", "at"}`` (``time.monotonic()``)."""
        with self._lock:
            return list(self._disconnects)

    def advance_clock(self, seconds: float) -> float:
        """Let ``seconds`` pass for the prompt caches (TTLs) at once; returns the total advance."""
        return self._clock.advance(seconds)

    def clear(self) -> None:
        """Forget recorded requests, reset the script's ``times`` counters and the prompt caches
        (the clock keeps its advance: time never runs backwards)."""
        with self._lock:
            self._records.clear()
            self._disconnects.clear()
        self._script.reset()
        self._cache.clear()
        self._stored.clear()

    def start(self) -> SimulatedProvider:
        """Start in a background thread with its own loop; returns once listening."""
        if self._thread is not None or self._runner is not None:
            raise RuntimeError("simulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = _new_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # noqa: BLE001 - re-raised in start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"sim-provider-{id(self):x}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the background server started with :meth:`start`."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            fut = asyncio.run_coroutine_threadsafe(self.stop_async(), loop)
            fut.result(timeout=self._shutdown_timeout + 10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._thread = None
            self._loop = None

    async def start_async(self) -> SimulatedProvider:
        """Start listening on the current event loop."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(
            self._make_app(),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=self._shutdown_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, backlog=2048)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop_async(self) -> None:
        """Stop a server started with :meth:`start_async` (or from its loop)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def __enter__(self) -> SimulatedProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatedProvider:
        return await self.start_async()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    # ------------------------------------------------------------------ app

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body + 1024)
        r = app.router
        r.add_post("/v1/messages", self._messages)
        r.add_post("/v1/messages/count_tokens", self._count_tokens)
        r.add_post("/v1/chat/completions", self._chat_completions)
        r.add_post("/v1/responses", self._responses)
        r.add_route("GET", "/v1/responses/{id}", self._stored_response)
        r.add_route("DELETE", "/v1/responses/{id}", self._stored_response)
        r.add_post("/v1/responses/{id}/cancel", self._stored_response)
        r.add_post("/v1/embeddings", self._embeddings)
        r.add_get("/v1/models", self._models_list)
        r.add_get("/v1/models/{model_id:.+}", self._model_get)
        r.add_get("/_sim/requests", self._ctl_requests)
        r.add_post("/_sim/script", self._ctl_script)
        r.add_post("/_sim/reset", self._ctl_reset)
        r.add_post("/_sim/clock", self._ctl_clock)
        r.add_get("/_sim/health", self._ctl_health)
        r.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _read(self, request: web.Request) -> tuple[bytes, Any]:
        """Read and record the body; returns (raw, parsed JSON | None | _INVALID)."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._record(request, b"", None)
            raise
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = _INVALID
        else:
            body = None
        self._record(request, raw, None if body is _INVALID else body)
        return raw, body

    def _record(self, request: web.Request, raw: bytes, body: Any) -> None:
        if not self._record_enabled:
            return
        entry = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body,
            "raw": raw,
            "usage": None,
        }
        request[_RECORD] = entry
        with self._lock:
            self._records.append(entry)

    @staticmethod
    def _bill(request: web.Request, usage: Usage) -> None:
        entry = request.get(_RECORD)
        if entry is not None:
            entry["usage"] = {"input_tokens": usage.input, "output_tokens": usage.output,
                              "cache_creation_input_tokens": usage.cache_creation,
                              "cache_read_input_tokens": usage.cache_read}

    @staticmethod
    def _dialect_of(request: web.Request) -> str:
        if "anthropic-version" in request.headers or request.path.startswith("/v1/messages"):
            return "anthropic"
        return "openai"

    # ------------------------------------------------------------------ generation

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "anthropic")

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "openai")

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "responses")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            _, body = await self._read(request)
        except web.HTTPRequestEntityTooLarge:
            return error_response("openai", 413)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return error_response("openai", 400, "you must provide a model parameter")
        faulted = await self._route_fault(request, "openai")
        if faulted is not None:
            return faulted
        data = rs.embeddings_body(body)
        if data is None:
            return error_response("openai", 400, "'input' is a required property")
        self._bill(request, Usage(orjson.loads(data)["usage"]["prompt_tokens"], 0))
        return web.Response(body=data, content_type=_JSON, headers={"x-request-id": new_id("req_")})

    def _validate(self, dialect: str, body: Any) -> str | None:
        if body is _INVALID or not isinstance(body, dict):
            return "The request body is not valid JSON." if body is _INVALID else "The request body must be a JSON object."
        if not isinstance(body.get("model"), str):
            return "model: Field required" if dialect == "anthropic" else "you must provide a model parameter"
        if dialect == "responses":
            return rs.check(body)
        if not isinstance(body.get("messages"), list):
            return "messages: Field required" if dialect == "anthropic" else "Missing required parameter: 'messages'."
        if dialect == "anthropic" and not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        shape = shape_problem(dialect, body)
        if shape is not None:
            return shape
        problem = output_limit_problem(dialect, body) or feature_problem(dialect, body)
        if dialect != "anthropic":
            return problem
        return problem or check_server_tools(body) or check_breakpoints(body)

    def _replay_miss(self, dialect: str, body: dict, record_id: str | None) -> web.Response:
        """No recorded answer: an error, never a made-up one; misses of answers are listed (a missing
        self-verification verdict is not: the record simply has none, and the check does not apply)."""
        verifying = ReplayTable.is_verification(body)
        message = f"no recorded {'verdict' if verifying else 'answer'} of {body.get('model')!r} for record {record_id or '(matched by messages)'}"
        if not verifying:
            with self._lock:
                self._replay_misses.append(message)
        return error_response(dialect, 404, message, "not_found_error")

    @property
    def replay_misses(self) -> list[str]:
        """Requests the replay data held no answer for (each was refused with a 404)."""
        with self._lock:
            return list(self._replay_misses)

    async def _generate(self, request: web.Request, dialect: str) -> web.StreamResponse:
        try:
            raw, body = await self._read(request)
        except web.HTTPRequestEntityTooLarge:
            return error_response(dialect, 413)
        problem = self._validate(dialect, body)
        if problem is None and dialect == "anthropic":
            problem = beta_problem(self.refused_betas, body["model"], request.headers.get("anthropic-beta"))
        if problem is not None:
            return error_response(dialect, 400, problem)
        refused = reasoning_problem(dialect, body)
        if refused is not None:
            return error_response(dialect, 400, refused[0], param=refused[1], code=refused[2])
        thinking = check_thinking(body) if dialect == "anthropic" else None
        if thinking is not None and thinking.error is not None:
            return error_response(dialect, 400, thinking.error)
        stream = body.get("stream") is True
        script = self._script
        prompt: str | None = None
        rule = None
        neutral = rs.neutral_body(body) if dialect == "responses" else body
        match_dialect = "openai" if dialect == "responses" else dialect
        if self._replay is not None:
            asked = request.headers
            rule = self._replay.lookup(body["model"], neutral, asked.get("x-replay-record"), asked.get("x-sample-index"))
            if rule is None:
                return self._replay_miss(dialect, neutral, asked.get("x-replay-record"))
        if rule is None and script.rules:
            if script.needs_prompt:
                prompt = last_user_text(neutral)
            rule = script.pick(match_dialect, request.path, body["model"], stream, prompt)
        fault = rule.fault if rule is not None else None
        if fault is not None and fault.active:
            if fault.reset == "before_headers":
                return await abort(request)
            if fault.first_byte_delay > 0:
                await asyncio.sleep(fault.first_byte_delay)
            if fault.redirect is not None:
                return web.Response(status=307, headers={"location": fault.redirect})
            if fault.body is not None:
                return web.Response(status=fault.status or 200, body=fault.body.encode(), content_type=fault.content_type)
            if fault.status is not None and not (stream and fault.error_event_after is not None):
                headers = {"retry-after": fmt_seconds(fault.retry_after)} if fault.retry_after is not None else None
                return error_response(dialect, fault.status, fault.error_message, fault.error_type, headers)
        else:
            fault = None
        if dialect == "responses":  # its own renderer: the chat-shaped plan, answered as a Response
            return await self._respond(request, body, neutral, rule, prompt, fault, stream)
        split: CacheSplit | None = None
        if dialect == "openai":
            split = self._cache.openai(body)
        elif b"cache_control" in raw:
            split = self._cache.anthropic(body)
        answer = plan_answer(body, dialect, rule, prompt, split)
        self._bill(request, answer.usage)
        if thinking is not None and answer.thinking is not None:  # bound to this model and this conversation
            answer.signature = sign_thinking(answer.thinking, answer.model, thinking.prefix)
        data, headers = self._render(dialect, answer, body, stream)
        if stream:
            try:
                return await send_events(request, data, fault, dialect, headers)
            except (ConnectionError, asyncio.CancelledError):
                self._disconnected(body)
                raise
        return await self._send_json(request, body, data, headers, fault)

    async def _send_json(self, request: web.Request, body: dict[str, Any], data: bytes, headers: dict[str, str],
                         fault: Any) -> web.StreamResponse:
        """A JSON answer, held by ``latency`` or broken half-way by a reset, cut or stall (see wire.py)."""
        try:
            if fault is not None and fault.latency > 0:
                await asyncio.sleep(fault.latency)
            if breaks_body(fault):
                return await send_broken_json(request, data, headers, fault)
        except (ConnectionError, asyncio.CancelledError):  # the handler is cancelled when its client leaves
            self._disconnected(body)
            raise
        return web.Response(body=data, content_type=_JSON, headers=headers)

    def _disconnected(self, body: dict[str, Any]) -> None:
        """The client went away before the answer's end: when, for cancellation tests."""
        with self._lock:
            self._disconnects.append({"model": body.get("model"), "at": time.monotonic()})

    async def _respond(self, request: web.Request, body: dict[str, Any], neutral: dict[str, Any], rule: Any,
                       prompt: str | None, fault: Any, stream: bool) -> web.StreamResponse:
        answer, summary = rs.plan(body, neutral, rule, prompt, self._cache.openai(neutral, body))
        self._bill(request, answer.usage)
        rid, created = new_id("resp_"), int(time.time())
        headers = {"x-request-id": new_id("req_")}
        self._stored.keep(body, rid, rs.response_body(answer, body, summary, rid, created))
        if stream:
            events = rs.stream_events(answer, body, summary, rid, created)
            return await send_events(request, events, fault, "responses", headers)
        return await self._send_json(request, body, rs.response_body(answer, body, summary, rid, created), headers,
                                     fault)

    @staticmethod
    def _render(dialect: str, answer: Any, body: dict[str, Any], stream: bool) -> tuple[Any, dict[str, str]]:
        """(SSE events or JSON bytes, response headers) for ``answer``."""
        if dialect == "anthropic":
            msg_id = new_id("msg_")
            headers = {"request-id": new_id("req_")}
            if stream:
                return an.stream_events(answer, msg_id), headers
            return an.message_body(answer, msg_id), headers
        cid, created = new_id("chatcmpl-"), int(time.time())
        headers = {"x-request-id": new_id("req_")}
        if stream:
            return oa.stream_events(answer, body, cid, created), headers
        return oa.completion_body(answer, body, cid, created), headers

    # ------------------------------------------------------------------ other endpoints

    async def _route_fault(self, request: web.Request, dialect: str) -> web.StreamResponse | None:
        """Faults of rules whose ``match.path`` names this non-generation path."""
        script = self._script
        if not script.rules:
            return None
        rule = script.pick(dialect, request.path, "", False, None, generation=False)
        if rule is None or not rule.fault.active:
            return None
        fault = rule.fault
        if fault.reset is not None:
            return await abort(request)
        delay = fault.first_byte_delay + fault.latency
        if delay > 0:
            await asyncio.sleep(delay)
        if fault.status is not None:
            headers = {"retry-after": fmt_seconds(fault.retry_after)} if fault.retry_after is not None else None
            return error_response(dialect, fault.status, fault.error_message, fault.error_type, headers)
        return None

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        try:
            _, body = await self._read(request)
        except web.HTTPRequestEntityTooLarge:
            return error_response("anthropic", 413)
        if body is _INVALID or not isinstance(body, dict):
            return error_response("anthropic", 400, "The request body is not valid JSON.")
        if not isinstance(body.get("messages"), list):
            return error_response("anthropic", 400, "messages: Field required")
        faulted = await self._route_fault(request, "anthropic")
        if faulted is not None:
            return faulted
        return web.Response(body=orjson.dumps({"input_tokens": estimate_input_tokens(body)}), content_type=_JSON)

    async def _models_list(self, request: web.Request) -> web.StreamResponse:
        self._record(request, b"", None)
        dialect = "anthropic" if "anthropic-version" in request.headers else "openai"
        faulted = await self._route_fault(request, dialect)
        if faulted is not None:
            return faulted
        if dialect == "anthropic":
            payload = an.models_page(self._models, request.query)
        else:
            payload = oa.models_list(self._models)
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def _model_get(self, request: web.Request) -> web.StreamResponse:
        self._record(request, b"", None)
        dialect = "anthropic" if "anthropic-version" in request.headers else "openai"
        faulted = await self._route_fault(request, dialect)
        if faulted is not None:
            return faulted
        model_id = request.match_info["model_id"]
        model = next((m for m in self._models if m["id"] == model_id), None)
        if model is None:
            return error_response(dialect, 404, f"model: {model_id}" if dialect == "anthropic"
                               else f"The model '{model_id}' does not exist")
        payload = an.model_object(model) if dialect == "anthropic" else oa.model_object(model)
        return web.Response(body=orjson.dumps(payload), content_type=_JSON)

    async def _stored_response(self, request: web.Request) -> web.StreamResponse:
        await self._read(request)
        action = "cancel" if request.path.endswith("/cancel") else ""
        status, data = self._stored.call(request.method, request.match_info["id"], action)
        return web.Response(status=status, body=data, content_type=_JSON, headers={"x-request-id": new_id("req_")})

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            try:
                await self._read(request)
            except web.HTTPRequestEntityTooLarge:
                pass
        dialect = self._dialect_of(request)
        return error_response(dialect, 404, f"Not found: {request.method} {request.path}" if dialect == "anthropic"
                           else f"Invalid URL ({request.method} {request.path})")

    # ------------------------------------------------------------------ control endpoints

    async def _ctl_requests(self, request: web.Request) -> web.StreamResponse:
        items = [{k: v for k, v in entry.items() if k != "raw"} for entry in self.requests]
        return web.Response(body=orjson.dumps(items), content_type=_JSON)

    async def _ctl_script(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            script = Script.coerce(orjson.loads(raw) if raw.strip() else None)
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            return web.Response(status=400, body=orjson.dumps({"ok": False, "error": str(exc)}), content_type=_JSON)
        self._script = script
        return web.Response(body=orjson.dumps({"ok": True, "rules": len(script)}), content_type=_JSON)

    async def _ctl_reset(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.clear()
        return web.Response(body=b'{"ok":true}', content_type=_JSON)

    async def _ctl_clock(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = orjson.loads(await request.read() or b"{}")
            offset = self._clock.advance(payload.get("advance", 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return web.Response(status=400, body=b'{"ok":false,"error":"expected {\"advance\": seconds >= 0}"}',
                                content_type=_JSON)
        return web.Response(body=orjson.dumps({"ok": True, "advanced": offset}), content_type=_JSON)

    async def _ctl_health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"ok":true}', content_type=_JSON)


async def run_simulator(host: str = "127.0.0.1", port: int = 0, script_path: str | Path | None = None,
                        **kwargs: Any) -> None:
    """Run a simulator on the current loop until cancelled (the CLI's ``simulate``)."""
    sim = SimulatedProvider(host, port, load_script(script_path) if script_path else None, **kwargs)
    await sim.start_async()
    print(f"simulator listening on http://{host}:{sim.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop_async()

