"""Which ``anthropic-beta`` values each draft model refused, learned from the upstream's own 400s.

Anthropic's documentation lists no per-model betas for the current models (the 1M context
window is native on every 5.x model, so ``context-1m-2025-08-07`` asks nothing of them; see
:mod:`cascadeflow.model_features`), so no table is guessed. Instead, when a draft call is
refused with a 400 whose message names a beta the draft carried, the pair (draft model, beta)
is remembered and later requests carrying that beta are not drafted on that model
(``skipped:capability:beta``): the refused request itself escalates at once (a draft error),
the next ones cost no draft call. A beta is never stripped from a draft: it can change what
the model does.

The two shapes of the refusal that are known (the parser reads both):

- ``Unsupported beta header: <name>`` — the error Anthropic's Beta headers page documents for
  "an invalid or unavailable beta header" (platform.claude.com/docs/en/api/beta-headers);
- ``Unexpected value(s) `<a>`, `<b>` for the `anthropic-beta` header. Please consult our
  documentation at docs.claude.com or try again without the header.`` — what the live API and
  gateways in front of it answer (anthropics/claude-code#46105, QuantumNous/new-api#2975).

The memory is per process, bounded (least recently refused pairs go first) and forgets a pair
after ``ttl`` seconds, so a beta the model gains later is found again at the cost of one
refused draft per pair, process and ``ttl``. It is not shared through Redis: a process learns
on its first refused draft, and one refused call per process is what sharing would save.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import orjson

from ..errors import ProxyError, ProxyUpstreamError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["BETA_HEADER", "BetaRefusals", "refused_betas", "requested_betas"]

BETA_HEADER = "anthropic-beta"
_UNEXPECTED = re.compile(r"Unexpected values?(?:\(s\))? (.+?) for the `?anthropic-beta`? header", re.IGNORECASE)
_UNSUPPORTED = re.compile(r"Unsupported beta header: *([^\s\"']+(?: *, *[^\s\"']+)*)", re.IGNORECASE)
_QUOTED = re.compile(r"`([^`]+)`")
#: an error message longer than this is not read (a refusal is one sentence)
_MAX_MESSAGE = 4096


def requested_betas(headers: Mapping[str, str]) -> list[str]:
    """The beta names a request's (lower-cased) headers ask for, in order."""
    value = headers.get(BETA_HEADER)
    if not value:
        return []
    return [name for name in (part.strip() for part in value.split(",")) if name]


def _message(exc: ProxyUpstreamError) -> str:
    try:
        body = orjson.loads(exc.payload) if exc.payload else None
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else exc.payload.decode("utf-8", "replace")


def refused_betas(exc: ProxyError, sent: list[str]) -> list[str]:
    """The betas among ``sent`` that an upstream's 400 ``exc`` says it refuses (empty when it says none)."""
    if not sent or not isinstance(exc, ProxyUpstreamError) or exc.upstream_status != 400:
        return []
    message = _message(exc)[:_MAX_MESSAGE]
    named: set[str] = set()
    if (found := _UNEXPECTED.search(message)) is not None:
        named.update(_QUOTED.findall(found.group(1)) or [found.group(1).strip()])
    if (found := _UNSUPPORTED.search(message)) is not None:
        named.update(part.strip().strip("`.") for part in found.group(1).split(","))
    return [beta for beta in sent if beta in named]  # only what the draft carried: the message is the upstream's


class BetaRefusals:
    """(model, beta) pairs a model refused, bounded and forgotten after ``ttl`` seconds."""

    def __init__(self, max_entries: int = 1024, ttl: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._clock = clock
        self._until: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def learn(self, model: str, headers: Mapping[str, str], exc: ProxyError) -> list[str]:
        """Remember the betas ``model`` refused with ``exc`` (a draft sent with ``headers``); returns them."""
        betas = refused_betas(exc, requested_betas(headers))
        until = self._clock() + self._ttl
        for beta in betas:
            self._until[(model, beta)] = until
            self._until.move_to_end((model, beta))
        while len(self._until) > self._max:
            self._until.popitem(last=False)
        return betas

    def refused(self, model: str, headers: Mapping[str, str]) -> str | None:
        """The first beta of a request (its ``headers``) that ``model`` is known to refuse, else None."""
        if not self._until or BETA_HEADER not in headers:
            return None
        now = None
        for beta in requested_betas(headers):
            until = self._until.get((model, beta))
            if until is None:
                continue
            now = self._clock() if now is None else now
            if until > now:
                return beta
            del self._until[(model, beta)]  # forgotten: the next draft finds out again
        return None
