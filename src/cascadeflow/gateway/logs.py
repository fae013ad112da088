"""Logs: one line per request (logger ``cascadeflow.requests``), JSON or readable text.

``server.log_format`` picks the format: ``json`` (one object per line, for collectors),
``text`` (for people), or ``auto``: text when stderr is a terminal, JSON otherwise.
:func:`logging_config` is handed to uvicorn, which applies it in every worker process;
uvicorn's own access log is off, since the request line says more.

Nothing secret is logged: the request line is built from the ledger entry (ids, models,
figures; never a key, a header or prompt text), and error details are scrubbed of anything
shaped like a credential.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..store import LedgerEntry

__all__ = ["REQUEST_LOGGER", "REQUEST_ID", "RequestLog", "JsonFormatter", "TextFormatter", "logging_config",
           "request_fields"]

REQUEST_LOGGER = "cascadeflow.requests"
#: LogRecord attribute carrying a request line's fields
FIELDS = "cascadeflow_fields"
#: the request id (the caller's ``x-request-id``) of the request being handled, for every log line it causes
REQUEST_ID: ContextVar[str | None] = ContextVar("cascadeflow_request_id", default=None)
_SECRET = re.compile(r"(?i)(bearer\s+|\bsk-|key[=:]\s*)[\w.\-]{4,}")
#: entry attributes copied as they are when set
_OPTIONAL = ("key_id", "user_id", "team", "route", "rule", "draft_model", "decision", "accepted", "served_model",
             "fallback_model", "error_type")


def _scrub(text: str) -> str:
    return _SECRET.sub(lambda m: m.group(1) + "[redacted]", text)


def request_fields(entry: LedgerEntry) -> dict:
    """What a request line says, from its ledger entry; fields that do not apply are left out."""
    latency = entry.latency_ms
    fields = {
        "request_id": entry.request_id,
        "endpoint": entry.endpoint,
        "dialect": entry.dialect,
        "model": entry.requested_model,
        "stream": entry.stream,
        "status": entry.status,
        "plan": entry.plan,
        "latency_ms": None if latency is None else round(latency, 2),
    }
    for name in _OPTIONAL:
        value = getattr(entry, name)
        if value is not None:
            fields[name] = value
    if entry.confidence is not None:
        fields["confidence"] = round(entry.confidence, 4)
    if entry.ttfb_ms is not None:
        fields["ttfb_ms"] = round(entry.ttfb_ms, 2)
    upstream = entry.upstream_ms
    if upstream is not None:
        fields["upstream_ms"] = round(upstream, 2)
        if latency is not None:
            fields["overhead_ms"] = round(max(latency - upstream, 0.0), 3)
    if entry.input_tokens or entry.output_tokens or entry.cache_write_tokens or entry.cache_read_tokens:
        fields["input_tokens"], fields["output_tokens"] = entry.input_tokens, entry.output_tokens
        fields["cache_write_tokens"], fields["cache_read_tokens"] = entry.cache_write_tokens, entry.cache_read_tokens
    cost, baseline = entry.cost, entry.baseline_cost
    if cost is not None:
        fields["cost_usd"] = round(cost, 8)
    if baseline is not None:
        fields["baseline_cost_usd"] = round(baseline, 8)
        if cost is not None:
            fields["saving_usd"] = round(baseline - cost, 8)
    if entry.cancelled:
        fields["cancelled"] = True
    if entry.detail:  # the checks' scores, or what went wrong (messages the gateway wrote, scrubbed anyway)
        fields["checks" if entry.error_type is None and entry.status < 400 else "error"] = _scrub(entry.detail[:300])
    return fields


class RequestLog:
    """Writes the request line: nothing is built when the level is off, and the line is written
    just after the answer goes out (the event loop's next turn), not before it."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(REQUEST_LOGGER)

    def write(self, entry: LedgerEntry) -> None:
        level = logging.WARNING if entry.status >= 500 else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        try:
            asyncio.get_running_loop().call_soon(self._emit, entry, level)
        except RuntimeError:  # no event loop (called from plain code)
            self._emit(entry, level)

    def _emit(self, entry: LedgerEntry, level: int) -> None:
        logger = self.logger  # the record is made by hand: the caller's frame (findCaller) says nothing here
        record = logger.makeRecord(logger.name, level, __file__, 0, "%s %s", (entry.endpoint, entry.status), None,
                                   extra={FIELDS: request_fields(entry)})
        logger.handle(record)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", …fields}`` on one line."""

    def __init__(self) -> None:
        super().__init__()
        self._second, self._prefix = -1, ""  # the timestamp's seconds, formatted once a second

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        second = int(created)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line = {
            "ts": f"{self._prefix}.{int(created % 1 * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if fields:
            line.update(fields)  # request_fields() uses none of the four names above
        else:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO  /v1/messages 200 claude-opus-4-5 → claude-haiku-4-5 accepted (0.91) 412 ms $0.0012 saved $0.0049``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        fields = getattr(record, FIELDS, None)
        if fields:
            record.message = _readable(fields)
        return super().formatMessage(record)


def _readable(f: dict) -> str:
    parts = [f["endpoint"], str(f["status"]), f["model"] or "-"]
    if f.get("served_model") and f["served_model"] != f["model"]:
        parts.append("→ " + f["served_model"])
    if f.get("decision"):
        confidence = f.get("confidence")
        parts.append(f["decision"] + ("" if confidence is None else f" ({confidence:.2f})"))
    if f.get("stream"):
        parts.append("stream")
    if f.get("latency_ms") is not None:
        parts.append(f"{f['latency_ms']:.0f} ms")
    if "cost_usd" in f:
        parts.append(f"${f['cost_usd']:.6f}")
    if f.get("saving_usd"):
        parts.append(f"saved ${f['saving_usd']:.6f}")
    if f.get("error"):
        parts.append(f"[{f.get('error_type') or 'error'}: {f['error']}]")
    parts.append(f"id={f.get('request_id') or '-'}")
    if f.get("key_id"):
        parts.append(f"key={f['key_id']}")
    return " ".join(parts)


def logging_config(server: ServerConfig) -> dict:
    """A ``logging.config.dictConfig`` document for the gateway and uvicorn (uvicorn applies it in each worker)."""
    fmt = server.log_format
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    formatter = "cascadeflow.gateway.logs.JsonFormatter" if fmt == "json" else "cascadeflow.gateway.logs.TextFormatter"
    level = server.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"cascadeflow": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "cascadeflow", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.access": {"handlers": [], "propagate": False},  # the request line replaces it
        },
    }
