"""OpenAI Chat Completions wire format for the simulator (JSON bodies and SSE chunks)."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from ..dialects.mapping import ANTHROPIC_TO_OPENAI_STOP
from ..dialects.sse import encode_event
from .engine import WORDS, Answer, split_tokens

__all__ = [
    "DONE",
    "completion_body",
    "error_body",
    "error_event",
    "model_object",
    "models_list",
    "stream_events",
    "usage_dict",
]

_dumps = orjson.dumps

DONE = b"data: [DONE]\n\n"
FINGERPRINT = "fp_sim"

# status -> (type, code, default message)
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    529: ("server_error", None, "The server is overloaded, please try again later."),
}


def error_object(status: int, message: str | None = None, error_type: str | None = None, *,
                 param: str | None = None, code: str | None = None) -> dict[str, Any]:
    default = _ERRORS.get(status) or (
        ("server_error", None, f"Error {status}") if status >= 500 else ("invalid_request_error", None, f"Error {status}")
    )
    return {
        "error": {
            "message": message or default[2],
            "type": error_type or default[0],
            "param": param,
            "code": code or default[1],
        }
    }


def error_body(status: int, message: str | None = None, error_type: str | None = None, *,
               param: str | None = None, code: str | None = None) -> bytes:
    """``{"error":{"message","type","param","code"}}``."""
    return _dumps(error_object(status, message, error_type, param=param, code=code))


def error_event(status: int, message: str | None = None, error_type: str | None = None) -> bytes:
    """An in-stream error: ``data: {"error": {...}}``."""
    return encode_event(error_body(status, message, error_type))


def finish_reason(answer: Answer) -> str:
    return ANTHROPIC_TO_OPENAI_STOP.get(answer.stop_reason, answer.stop_reason)


def usage_dict(answer: Answer) -> dict[str, Any]:
    u = answer.usage
    prompt = u.prompt_total
    return {
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
    }


def _top(body: dict[str, Any]) -> int:
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) and top > 0 else 0


def completion_body(answer: Answer, body: dict[str, Any], cid: str, created: int) -> bytes:
    """The non-streaming ``chat.completion`` JSON."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text if (answer.text or not answer.tool_calls) else None,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    logprobs = None
    if body.get("logprobs") is True and answer.logprobs != []:  # [] = this answer has none (replay)
        logprobs = {"content": logprob_entries(split_tokens(answer.text), 0, answer, _top(body)), "refusal": None}
    return _dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": answer.model,
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason(answer)}],
            "usage": usage_dict(answer),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )


def stream_events(answer: Answer, body: dict[str, Any], cid: str, created: int) -> list[bytes]:
    """The chunk sequence of a streamed completion, ending with ``data: [DONE]``."""
    opts = body.get("stream_options")
    include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    want_lp = body.get("logprobs") is True and answer.logprobs != []
    top = _top(body)
    head = b'{"id":' + _dumps(cid) + b',"object":"chat.completion.chunk","created":' + str(created).encode()
    head += b',"model":' + _dumps(answer.model) + b',"service_tier":"default","system_fingerprint":"' + FINGERPRINT.encode() + b'"'
    tail = b',"usage":null}' if include_usage else b"}"

    def chunk(delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return encode_event(head + b',"choices":[' + _dumps(choice) + b"]" + tail)

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    tokens = split_tokens(answer.text)
    for i in range(0, len(tokens), 3):
        group = tokens[i : i + 3]
        lp = {"content": logprob_entries(group, i, answer, top), "refusal": None} if want_lp else None
        events.append(chunk({"content": "".join(group)}, lp))
    for k, call in enumerate(answer.tool_calls):
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {"index": k, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
                    ]
                }
            )
        )
        args = call.arguments
        for j in range(0, len(args), 12):
            events.append(chunk({"tool_calls": [{"index": k, "function": {"arguments": args[j : j + 12]}}]}))
    events.append(chunk({}, None, finish_reason(answer)))
    if include_usage:
        events.append(encode_event(head + b',"choices":[],"usage":' + _dumps(usage_dict(answer)) + b"}"))
    events.append(DONE)
    return events


def token_logprob(token: str, index: int, answer: Answer) -> float:
    """Logprob for one output token: rule value, or a deterministic ~-0.1."""
    if answer.logprobs:
        return float(answer.logprobs[index] if index < len(answer.logprobs) else answer.logprobs[-1])
    if answer.logprob is not None:
        return float(answer.logprob)
    return -round(0.05 + (zlib.crc32(token.encode()) % 101) / 1000, 4)


def logprob_entries(tokens: list[str], start: int, answer: Answer, top: int) -> list[dict[str, Any]]:
    """OpenAI ``logprobs.content`` entries for ``tokens`` (starting at index ``start``)."""
    out = []
    for i, tok in enumerate(tokens, start):
        lp = token_logprob(tok, i, answer)
        entry: dict[str, Any] = {"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": []}
        if top > 0:
            lead = tok[: len(tok) - len(tok.lstrip())]
            alts = [{"token": tok, "logprob": lp, "bytes": list(tok.encode())}]
            for j in range(1, top):
                alt = lead + WORDS[(zlib.crc32(tok.encode()) + j) % 64]
                alts.append({"token": alt, "logprob": round(lp - 2.0 * j, 4), "bytes": list(alt.encode())})
            entry["top_logprobs"] = alts
        out.append(entry)
    return out


def model_object(model: dict[str, Any]) -> dict[str, Any]:
    return {"id": model["id"], "object": "model", "created": model["created"], "owned_by": model["owned_by"]}


def models_list(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m) for m in models]}
