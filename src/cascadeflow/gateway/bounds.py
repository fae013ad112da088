"""Bounded input: what a request body and its model name may hold before anything acts on them.

Parsed once with orjson, which refuses what no upstream accepts either (a lone UTF-16
surrogate, NaN, invalid UTF-8). orjson reads an integer beyond 64 bits as a float, which
would change its meaning when re-serialised: a top-level field holding such a number is
refused (an integral float beyond 64 bits makes the body be parsed again, exactly, to tell
``1e23`` from an integer). Nested ones matter only where the gateway re-serialises the
body (a translation, a cascade, a renamed model, a fallback): a pass-through forwards the
bytes as sent. :func:`check_wide_integers` looks for them only then — a scan of every tenth
byte, about a third of a parse's time — and refuses the request, naming the field, rather
than send a float.
A model name ends up in headers, logs and the ledger: at most 256 printable characters.
"""

from __future__ import annotations

import json

import orjson

from ..errors import RequestError

__all__ = ["read_json_body", "model_name", "check_wide_integers", "MAX_MODEL_CHARS"]

MAX_MODEL_CHARS = 256

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # int64 and uint64 both round-trip
#: every digit becomes "0", every other byte " ": a run of 20 digits is then one ``find``
_DIGITS_ONLY = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_WIDE_RUN = b"0" * 20  # 2**64 has 20 digits: an integer with fewer is never beyond 64 bits
#: a run of 20 digits holds two consecutive bytes of every tenth; places where two such samples are digits
#: are checked one by one, up to this many, then the rest is scanned whole (digit-dense bodies: base64 media)
_STRIDE, _SAMPLED_RUN, _CANDIDATES = 10, b"00", 32


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


def check_wide_integers(raw: bytes) -> None:
    """Refuse (400, naming the field) a body that holds an integer beyond 64 bits anywhere.

    For a body the gateway re-serialises: its parse holds such an integer as a float, which
    would reach the upstream changed. A run of 20 digits (in a string too) is looked for
    first; only then is the body parsed again, exactly, to find the field.
    """
    if not _has_wide_run(raw):
        return
    try:
        exact = json.loads(raw)
    except (ValueError, RecursionError):
        return
    found = _wide_integer(exact)
    if found is not None:
        where, value = found
        raise RequestError(
            f"{where}: an integer of {len(str(abs(value)))} digits is beyond 64 bits; this request is translated, "
            "cascaded or has its model renamed, and the gateway cannot re-serialise such an integer exactly "
            "(send it as a string, or to a route of the same API under its own model name)")


def _has_wide_run(raw: bytes) -> bool:
    """Whether ``raw`` holds 20 digits in a row, from a sample of every tenth byte (a third of the time of a full scan).

    A run starting at byte ``p`` covers the samples ``j`` and ``j + 1`` for the ``j`` with ``10j - 9 <= p <= 10j``:
    each such pair of digit samples is checked where the run would lie; past :data:`_CANDIDATES` of them the
    rest of the body (from where the next run could start) is scanned whole.
    """
    samples = raw[::_STRIDE].translate(_DIGITS_ONLY)
    at = samples.find(_SAMPLED_RUN)
    for _ in range(_CANDIDATES):
        if at < 0:
            return False
        start = max(0, at * _STRIDE - _STRIDE + 1)
        if raw[start:at * _STRIDE + 2 * _STRIDE].translate(_DIGITS_ONLY).find(_WIDE_RUN) >= 0:
            return True
        at = samples.find(_SAMPLED_RUN, at + 1)
    return at >= 0 and raw[max(0, at * _STRIDE - _STRIDE + 1):].translate(_DIGITS_ONLY).find(_WIDE_RUN) >= 0


def _wide_integer(value: object) -> tuple[str, int] | None:
    """The path and value of the first integer beyond 64 bits in a parsed body (depth first)."""
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if type(item) is int and not _INT_MIN <= item <= _INT_MAX:
            return path, item
        if isinstance(item, dict):
            stack.extend((f"{path}.{key}" if path else str(key), child) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in reversed(list(enumerate(item))))
    return None


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
