"""Bounded input: what a request body and its model name may hold before anything acts on them.

Parsed once with orjson, which refuses what no upstream accepts either (a lone UTF-16
surrogate, NaN, invalid UTF-8). orjson reads an integer beyond 64 bits as a float, which
would change its meaning when re-serialised: a top-level field holding such a number is
refused (an integral float beyond 64 bits makes the body be parsed again, exactly, to tell
``1e23`` from an integer). Nested ones are not looked for — scanning every body costs
several times its parse — and are never a crash: a pass-through forwards the bytes as
sent, a translation sends the float. A model name ends up in headers, logs and the
ledger: at most 256 printable characters.
"""

from __future__ import annotations

import json

import orjson

from ..errors import RequestError

__all__ = ["read_json_body", "model_name", "MAX_MODEL_CHARS"]

MAX_MODEL_CHARS = 256

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # int64 and uint64 both round-trip


def read_json_body(raw: bytes) -> dict:
    """The body as a JSON object; a :class:`RequestError` (400) that says what is wrong otherwise."""
    if not raw.strip():
        raise RequestError("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(_not_json(raw, exc)) from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, not {type(body).__name__}")
    for value in body.values():
        if type(value) is float and not _INT_MIN <= value <= _INT_MAX and value.is_integer():
            _check_integers(raw)  # rare: only then parse again, exactly
            break
    return body


def model_name(body: dict) -> str:
    """The request's ``model``: a non-empty string of at most 256 printable characters."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model: Field required and must be a non-empty string")
    if len(model) > MAX_MODEL_CHARS:
        raise RequestError(f"model: a name of {len(model)} characters; at most {MAX_MODEL_CHARS} characters are allowed")
    if not model.isprintable():
        raise RequestError("model: a control character (or another unprintable one) is not allowed in a model name")
    return model


def _not_json(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"request body is not valid UTF-8 (byte {bad.start})"
    message = str(exc)
    if "surrogate" in message:
        return f"request body is not valid JSON: a lone UTF-16 surrogate escape ({message})"
    return f"request body is not valid JSON: {message}"


def _check_integers(raw: bytes) -> None:
    def checked(text: str) -> int:
        value = int(text)
        if not _INT_MIN <= value <= _INT_MAX:
            raise RequestError(f"request body holds an integer of {len(text.lstrip('-'))} digits; "
                               "integers beyond 64 bits are not accepted")
        return value

    try:
        json.loads(raw, parse_int=checked)
    except (ValueError, RecursionError):  # orjson accepted it: nothing else to report
        return
