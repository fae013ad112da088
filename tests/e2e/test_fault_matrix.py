"""The fault matrix (issue 15): every upstream fault, in every dialect, streaming or not, passed through or cascaded.

Each case scripts one fault into the simulated provider (a real HTTP server), sends one request over raw
HTTP (exact status, error body, stream events) and the same again with the official SDK (``max_retries=0``,
the error class), and checks the outcome ``FAULTS`` gives:

- ``Err(status, kind)``: an error answer before anything else, with the SDK's class for that status; ``kind`` is
  the error the gateway writes itself (``None``: the upstream's own error, relayed in the caller's dialect);
- ``Cut(kind)``: the stream had begun; it ends with the dialect's error event, never a silent cut;
- ``RECOVERED``: a whole answer from the verifier (a cascade whose draft fails escalates at once).

Modes: ``pass`` — a model no rule cascades, the fault on it; ``draft`` — a cascade whose draft meets the fault
(always recovered); ``verifier`` — a cascade whose draft is rejected (an empty answer) and whose verifier meets
the fault (the same outcome as ``pass``). The main routes retry once and open their breaker after two failed
requests (a failing case leaves it open), yet have no alternative: every error must be the upstream's, never a
503 it did not cause. The drafts have routes of their own whose breakers never open, so every draft case meets
its fault. Every request is bounded
by a client timeout: a hang fails the case. The table is in docs/operations.md ("What a caller gets").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from cascadeflow import ProxyConfig

SONNET, OPUS, HAIKU = "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5"
GPT5, GPT4O, MINI4O = "gpt-5.4", "gpt-4o", "gpt-4o-mini"
#: (path, model passed through, cascaded model, its draft) per caller dialect
DIALECTS = {
    "anthropic": ("/v1/messages", SONNET, OPUS, HAIKU),
    "openai": ("/v1/chat/completions", GPT5, GPT4O, MINI4O),
    "responses": ("/v1/responses", GPT5, GPT4O, MINI4O),
    # translated (pass-through only): an Anthropic caller on Chat Completions, OpenAI callers on Messages
    "anthropic>openai": ("/v1/messages", GPT5, GPT4O, MINI4O),
    "openai>anthropic": ("/v1/chat/completions", SONNET, OPUS, HAIKU),
    "responses>anthropic": ("/v1/responses", SONNET, OPUS, HAIKU),
}
DRAFT_KEY = "k-drafts"  # the drafts' routes' key: a draft case checks its draft went that way
SILENCE = 0.2  # the routes' first-byte, read and stream-idle timeouts
CLIENT_TIMEOUT = 8.0  # no case may take this long: the gateway must end every answer itself


@dataclass(frozen=True)
class Err:
    status: int
    kind: str | None = None  # the Anthropic error type the gateway writes; None: the upstream's own error


@dataclass(frozen=True)
class Cut:
    kind: str  # the Anthropic error type of the closing error event


RECOVERED = "recovered"
UPSTREAM_SAYS = "scripted upstream failure"  # the message of the simulator's error answers

#: fault name → (the simulator's fault keys, outcome without stream, outcome with stream); None: not a fault of that
#: kind of answer. The outcomes are for ``pass`` and ``verifier``; a ``draft`` always recovers.
FAULTS: dict[str, tuple[dict[str, Any], Any, Any]] = {
    "400": ({"status": 400}, Err(400), Err(400)),
    "401": ({"status": 401}, Err(401), Err(401)),
    "429": ({"status": 429, "retry_after": 30}, Err(429), Err(429)),
    "500": ({"status": 500}, Err(500), Err(500)),
    "503": ({"status": 503}, Err(503), Err(503)),
    "529": ({"status": 529}, Err(529), Err(529)),
    "reset": ({"reset": "before_headers"}, Err(502, "api_error"), Err(502, "api_error")),
    "reset-mid": ({"reset": "after_first_event"}, Err(502, "api_error"), Cut("api_error")),
    "cut-mid": ({"cut_after": 3}, Err(502, "api_error"), Cut("api_error")),
    "stall-head": ({"first_byte_delay": 3}, Err(504, "timeout_error"), Err(504, "timeout_error")),
    "stall-mid": ({"stall_after": 3, "stall_seconds": 3}, Err(504, "timeout_error"), Cut("timeout_error")),
    "error-event": ({"error_event_after": 3, "status": 529}, None, Cut("overloaded_error")),
    "bad-sse": ({"malformed_after": 3}, None, Cut("api_error")),
    "bad-json": ({"body": '{"id": "msg_1", "content": ['}, Err(502, "api_error"), Err(502, "api_error")),
    "empty-200": ({"body": ""}, Err(502, "api_error"), Err(502, "api_error")),
    "html": ({"body": "<html><body><h1>502 Bad Gateway</h1></body></html>", "content_type": "text/html"},
             Err(502, "api_error"), Err(502, "api_error")),
    "redirect": ({"redirect": "/v1/messages"}, Err(502, "api_error"), Err(502, "api_error")),
}

ANTHROPIC_CLASSES = {400: anthropic.BadRequestError, 401: anthropic.AuthenticationError, 429: anthropic.RateLimitError, 500: anthropic.InternalServerError,
                     502: anthropic.InternalServerError, 503: anthropic.ServiceUnavailableError,
                     504: anthropic.GatewayTimeoutError, 529: anthropic.OverloadedError}
OPENAI_CLASSES = {400: openai.BadRequestError, 401: openai.AuthenticationError, 429: openai.RateLimitError,
                  **dict.fromkeys((500, 502, 503, 504, 529), openai.InternalServerError)}
#: the OpenAI error code the gateway writes for each Anthropic error type
OPENAI_CODES = {"api_error": "bad_gateway", "timeout_error": "timeout"}


def _cases() -> list[Any]:
    cases = []
    for fault, (_, plain, streamed) in FAULTS.items():
        for stream, outcome in ((False, plain), (True, streamed)):
            if outcome is None:
                continue
            for dialect in DIALECTS:
                for mode in ("pass",) if ">" in dialect else ("pass", "draft", "verifier"):
                    expected = RECOVERED if mode == "draft" else outcome
                    cases.append(pytest.param(dialect, stream, mode, fault, expected,
                                              id=f"{dialect}-{'stream' if stream else 'json'}-{mode}-{fault}"))
    return cases


@pytest.fixture(scope="module")
def matrix_gw(sim, start_gateway):
    timeouts = {"first_byte_timeout": SILENCE, "read_timeout": SILENCE, "stream_idle_timeout": SILENCE}
    main = {"retry": {"attempts": 2, "backoff": 0.01, "max_backoff": 1}, "breaker": {"failure_threshold": 2},
            **timeouts}
    drafts = {"retry": {"attempts": 2, "backoff": 0.01}, "breaker": {"failure_threshold": 1_000_000}, **timeouts}
    never_sticky = {"policies": {"sticky_escalations": 0, "cache_economics": False}}
    return start_gateway(ProxyConfig.from_dict({
        "routes": [
            {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "k", **main},
            {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "k",
             "openai_api": "responses", **main},
            {"name": "drafts-anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": DRAFT_KEY,
             "models": [HAIKU], **drafts},
            {"name": "drafts-openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": DRAFT_KEY,
             "openai_api": "responses", "models": [MINI4O], **drafts},
        ],
        "cascade_rules": [
            {"name": "opus", "request_model": OPUS, "draft_model": HAIKU, **never_sticky},
            {"name": "gpt4o", "request_model": GPT4O, "draft_model": MINI4O, **never_sticky},
        ],
    }))


@dataclass(frozen=True)
class Clients:
    """Built once: making an httpx client or an SDK client costs ~0.2 s (its TLS context), far more than a case."""

    http: httpx.Client
    claude: anthropic.Anthropic
    gpt: openai.OpenAI


@pytest.fixture(scope="module")
def clients(matrix_gw):
    with httpx.Client(base_url=matrix_gw.url, timeout=CLIENT_TIMEOUT) as http:
        yield Clients(http, anthropic.Anthropic(base_url=matrix_gw.url, api_key="x", max_retries=0, timeout=CLIENT_TIMEOUT),
                      openai.OpenAI(base_url=matrix_gw.url + "/v1", api_key="x", max_retries=0, timeout=CLIENT_TIMEOUT))


# -- sending --------------------------------------------------------------------------------------------------


def _body(dialect: str, model: str, prompt: str, stream: bool) -> dict[str, Any]:
    if dialect == "anthropic":
        return {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    if dialect == "openai":
        return {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    return {"model": model, "input": prompt, "stream": stream}


def _events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per SSE event; ``[DONE]`` stays a string."""
    events = []
    for block in raw.replace(b"\r\n", b"\n").strip().split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data:
            joined = b"\n".join(data)
            events.append((name, joined.decode() if joined == b"[DONE]" else orjson.loads(joined)))
    return events


def _text(dialect: str, response: httpx.Response) -> str:
    """The answer's text, from a JSON body or a whole stream (which must have ended properly)."""
    if not response.headers["content-type"].startswith("text/event-stream"):
        body = response.json()
        if dialect == "anthropic":
            return body["content"][0]["text"]
        if dialect == "openai":
            return body["choices"][0]["message"]["content"]
        return "".join(part["text"] for item in body["output"] if item["type"] == "message" for part in item["content"])
    events = _events(response.content)
    if dialect == "anthropic":
        assert events[0][0] == "message_start" and events[-1][0] == "message_stop", events[-2:]
        return "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    if dialect == "openai":
        assert events[-1][1] == "[DONE]", events[-2:]
        return "".join(c["delta"].get("content") or "" for _, d in events[:-1] for c in d["choices"])
    assert events[-1][0] == "response.completed", events[-2:]
    return "".join(d["delta"] for n, d in events if n == "response.output_text.delta")


def _check_raw(dialect: str, response: httpx.Response, expected: Any, verifier: str) -> None:
    """The outcome on the wire: status, error body in the caller's dialect, or the events a stream ended with."""
    if expected == RECOVERED:
        assert response.status_code == 200, response.text
        assert _text(dialect, response).startswith(f"[{verifier}]")
        assert response.headers["x-cascadeflow-decision"].startswith("escalated"), response.headers
        return
    if isinstance(expected, Err):
        assert response.status_code == expected.status, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert error["message"]
        if dialect == "anthropic":
            assert response.json()["type"] == "error"
            assert expected.kind is None or error["type"] == expected.kind, error
        else:
            assert set(error) >= {"message", "type", "param", "code"}
            assert expected.kind is None or error["code"] == OPENAI_CODES[expected.kind], error
        if expected.status == 429:
            assert response.headers["retry-after"] == "30"
        return
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.content)
    names = [name for name, _ in events]
    last = events[-1][1]
    if dialect == "anthropic":
        # what the upstream sent before it broke may be lost with it (aiohttp raises a reset before handing
        # over the bytes it buffered), so the error can be the only event: the SDK raises it all the same
        assert names[-1] == "error" and names[0] in ("message_start", "error") and "message_stop" not in names, names
        assert last["error"]["type"] == expected.kind, last
    elif dialect == "openai":
        assert "[DONE]" not in [d for _, d in events] and "error" in last, events[-2:]
        assert last["error"]["message"]
        assert expected.kind != "timeout_error" or last["error"]["code"] == "timeout", last
    else:
        assert names[-1] in ("error", "response.failed") and "response.completed" not in names, names
        assert last.get("message") or last["response"]["error"]["message"]
        assert expected.kind != "timeout_error" or last["code"] == "timeout", last


def _sdk_call(dialect: str, clients: Clients, body: dict[str, Any]) -> str:
    """Send ``body`` with the official SDK; the answer's text (streams read to their end)."""
    if dialect == "anthropic":
        client = clients.claude
        if body["stream"]:
            with client.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as stream:
                return stream.get_final_message().content[0].text
        return client.messages.create(**body).content[0].text
    client = clients.gpt
    if dialect == "openai":
        if body["stream"]:
            return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**body)
                           if c.choices)
        return client.chat.completions.create(**body).choices[0].message.content
    if body["stream"]:
        text = ""
        stream = client.responses.create(**body)
        for event in stream:  # an error event is raised as a caller's loop does (the SDK yields it)
            if event.type == "response.output_text.delta":
                text += event.delta
            elif event.type == "error":
                raise openai.APIError(event.message, request=stream.response.request, body=event)
            elif event.type == "response.failed":
                raise openai.APIError(event.response.error.message, request=stream.response.request, body=event)
        return text
    return client.responses.create(**body).output_text


def _check_sdk(dialect: str, clients: Clients, body: dict[str, Any], expected: Any, verifier: str) -> None:
    """The outcome as the official SDK reports it: the text, or the error class for the status."""
    if expected == RECOVERED:
        assert _sdk_call(dialect, clients, body).startswith(f"[{verifier}]")
        return
    with pytest.raises(Exception) as raised:
        _sdk_call(dialect, clients, body)
    error = raised.value
    if isinstance(expected, Err):
        if dialect == "anthropic":
            wanted = ANTHROPIC_CLASSES[expected.status]
        else:
            wanted = OPENAI_CLASSES[expected.status]
        assert type(error) is wanted and error.status_code == expected.status, repr(error)
    elif dialect == "anthropic":  # an error event: the SDK raises it with the stream's status
        assert type(error) is anthropic.APIStatusError and error.body["error"]["type"] == expected.kind, repr(error)
    else:
        assert type(error) is openai.APIError and error.message, repr(error)


# -- the matrix -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dialect", "stream", "mode", "fault", "expected"), _cases())
def test_fault_matrix(clients, fresh_sim, dialect, stream, mode, fault, expected):
    path, plain, cascaded, draft = DIALECTS[dialect]
    caller = dialect.split(">")[0]
    keys = dict(FAULTS[fault][0])
    relayed = "status" in keys and "error_event_after" not in keys  # (OpenAI tells overload by the message alone)
    if relayed:
        keys["error_message"] = UPSTREAM_SAYS
    if "redirect" in keys:
        keys["redirect"] = fresh_sim.url + keys["redirect"]
    model = plain if mode == "pass" else cascaded
    faulted = {"pass": plain, "draft": draft, "verifier": cascaded}[mode]
    script = [{"match": {"model": faulted}, **keys}]
    if mode == "verifier":
        script.insert(0, {"match": {"model": draft}, "text": ""})  # an empty draft is always escalated
    fresh_sim.set_script(script)
    body = _body(caller, model, f"hello from case {dialect} {stream} {mode} {fault}", stream)
    response = clients.http.post(path, json=body, headers={"anthropic-version": "2023-06-01"} if caller == "anthropic"
                                 else {})
    _check_raw(caller, response, expected, cascaded)
    if relayed and expected != RECOVERED:
        assert UPSTREAM_SAYS in response.text, "the upstream's own error is relayed, not swallowed"
    met = [r for r in fresh_sim.requests if (r["body"] or {}).get("model") == faulted]
    assert met, f"the upstream never saw {faulted}: the outcome is not the fault's"
    key = met[0]["headers"].get("x-api-key") or met[0]["headers"]["authorization"].removeprefix("Bearer ")
    assert (key == DRAFT_KEY) == (mode == "draft"), key
    _check_sdk(caller, clients, body, expected, cascaded)
    if isinstance(expected, Err) and expected.status >= 500:  # two failed requests: the breaker is open now
        route = "anthropic" if faulted.startswith("claude") else "openai"
        breaker = clients.http.get("/health").json()["breakers"][route]["models"][faulted]
        assert breaker["state"] == "open", breaker
