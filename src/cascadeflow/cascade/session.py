"""The cascade's memory of a conversation: cache-aware prices, the true baseline, and signals.

One :class:`Turn` per cascaded request that belongs to a conversation (a Claude Code
session id, ``metadata.user_id``, OpenAI's ``user`` / ``prompt_cache_key``). It reads the
conversation's state (:mod:`cascadeflow.sessions`), and

- says whether the last drafted turn went badly (:meth:`Turn.signal`): the tool results
  that answer a drafted turn's tool calls report an error, a non-zero exit code, a
  traceback or failing tests — then this turn goes straight to the verifier, and the
  failure counts against the conversation's drafts;
- says whether drafting pays (:meth:`Turn.economics`, see :mod:`.economics`);
- prices the counterfactual (:meth:`Turn.baseline`): the requested model's price for
  this request on the cache it would have had, had it served every turn — cache read
  = the live part of that shadow, cache write = the rest up to the last breakpoint,
  input = the remainder, output = the answer's;
- records what happened (:meth:`Turn.end`): every model's shadow, the counterfactual,
  the drafts' record, the conversation's tokens per character and output length.

Figures built here are estimates (see :mod:`cascadeflow.sessions.cache`); the docs
(``docs/cascade.md``) say how good they are.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from ..config import CascadeRule
from ..pricing import ModelRegistry
from ..sessions.cache import LOOKBACK, CacheShadow, PromptShape
from ..sessions.state import BASELINE, Sessions, SessionState
from ..usage import Usage
from .economics import Prices, expected_saving, failure_chance

__all__ = ["SessionBook", "Turn"]

_DEFAULT_PER_CHAR = 0.27  # tokens per character of prompt JSON before the upstream has told us
_DEFAULT_OUTPUT = 400
_FAILED = re.compile(r"Traceback \(most recent call last\)|\b[Ee]xit code:? ?[1-9]\d*\b|\b[1-9]\d* failed\b|\bFAILED\b")


class SessionBook:
    """Opens a :class:`Turn` per request and saves conversations off the request path."""

    def __init__(self, sessions: Sessions, registry: ModelRegistry, clock: Callable[[], float] = time.time) -> None:
        self.sessions, self.registry, self.clock = sessions, registry, clock
        self._saving: set[asyncio.Task] = set()

    async def begin(self, rule: CascadeRule, body: dict, dialect: str, conversation: str | None,
                    requested: str, rules_for: Callable[[str], str]) -> Turn | None:
        if conversation is None or not isinstance(body.get("messages"), list):
            return None
        key = f"{conversation}|{_tools_digest(body)}"  # a sub-agent (its own tools) is its own conversation
        state = await self.sessions.get(key)
        return Turn(self, key, state, body, dialect, requested, rules_for, self.clock())

    def save(self, work: Coroutine) -> None:
        task = asyncio.ensure_future(work)
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def aclose(self) -> None:
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)
        await self.sessions.aclose()


def _tools_digest(body: dict) -> str:
    names = [t.get("name") or (t.get("function") or {}).get("name") for t in body.get("tools") or () if isinstance(t, dict)]
    return hashlib.blake2b(repr(names).encode(), digest_size=6).hexdigest()


@dataclass(slots=True)
class Turn:
    book: SessionBook
    key: str
    state: SessionState
    body: dict
    dialect: str
    #: the model this conversation is priced against (the rule's verifier for a virtual model)
    requested: str
    rules_for: Callable[[str], str]
    now: float
    _shapes: dict | None = None

    def shape(self, model: str) -> PromptShape:
        """This request's prompt as ``model``'s provider caches it."""
        rules = self.rules_for(model)
        if self._shapes is None:
            self._shapes = {}
        shape = self._shapes.get(rules)
        if shape is None:
            shape = self._shapes[rules] = PromptShape.of(self.body, self.dialect, rules)
        return shape

    @property
    def per_char(self) -> float:
        return self.state.per_char or _DEFAULT_PER_CHAR

    # -- before drafting -------------------------------------------------------------------

    def signal(self) -> str | None:
        """``tool_error`` when the tool results answering the last drafted turn report a failure."""
        pending = set(self.state.pending_calls)
        if not pending:
            return None
        self.state.pending_calls = []
        for text, is_error in _tool_results(self.body, pending):
            if is_error or _FAILED.search(text):
                self.state.failures += 1
                return "tool_error"
        return None

    def economics(self, rule_drafts: int, rule_failures: int, draft: str, verifier: str) -> tuple[bool, float | None]:
        """(draft or not, the expected saving of drafting in USD) for this turn."""
        prices = self._prices(draft, verifier)
        if prices is None:
            return True, None
        p_fail = failure_chance(self.state.drafts, self.state.failures, rule_drafts, rule_failures)
        saving = expected_saving(prices, p_fail)
        return saving > 0, saving

    def _prices(self, draft: str, verifier: str) -> Prices | None:
        out = round(self.state.output or _DEFAULT_OUTPUT)
        shadow_v = self.state.shadows.get(verifier) or CacheShadow()
        shape_v = self.shape(verifier)
        costs = [
            self._price(draft, self.shape(draft), self.state.shadows.get(draft) or CacheShadow(), out),
            self._price(verifier, shape_v, shadow_v, out),
            self._price(verifier, shape_v, self.state.shadows.get(BASELINE) or CacheShadow(), out),
            self._price(verifier, shape_v, _first_breakpoint_only(shadow_v, shape_v), out),
        ]
        if any(c is None for c in costs):
            return None
        return Prices(*costs, verifier_goes_cold=self._goes_cold(shape_v, shadow_v))  # type: ignore[arg-type]

    def _price(self, model: str, shape: PromptShape, shadow: CacheShadow, output: int) -> float | None:
        plain, write, read = shadow.split(shape, model, self.now, self.per_char).tokens(self.per_char)
        return self.book.registry.cost(model, Usage(plain, output, write, read))

    def _goes_cold(self, shape: PromptShape, shadow: CacheShadow) -> bool:
        """Whether skipping the verifier this turn leaves its cache out of reach next turn."""
        if not shape.breakpoints or shape.rules != "anthropic":
            return False
        last = shape.breakpoints[-1][0]
        hit, expiry = -1, 0.0
        for i in range(last, max(-1, last - LOOKBACK), -1):
            entry = shadow.entries.get(shape.hashes[i])
            if entry is not None and entry[1] > self.now:
                hit, expiry = i, entry[1]
                break
        if hit < 0:
            return False  # cold already: drafting changes nothing
        interval = self.now - self.state.last_at if self.state.last_at else 60.0
        growth = max(2, last - hit)
        return last + growth - hit >= LOOKBACK or expiry <= self.now + interval

    # -- after the answer ------------------------------------------------------------------

    def baseline(self, served: Usage, output_tokens: int) -> float | None:
        """The requested model's price for this request on the cache it would have had (see the module doc)."""
        shape = self.shape(self.requested)
        ratio = self._ratio(served, shape)
        split = self.state.shadow(BASELINE).split(shape, self.requested, self.now, ratio, touch=True)
        plain, write, read = split.tokens(ratio)
        return self.book.registry.cost(self.requested, Usage(plain, output_tokens, write, read))

    def _ratio(self, served: Usage, shape: PromptShape) -> float:
        prompt = served.input_tokens + served.cache_write_tokens + served.cache_read_tokens
        return prompt / shape.chars if prompt > 0 and shape.chars else self.per_char

    def end(self, calls: list[tuple[str, Usage]], drafted: bool, accepted: bool, served: Usage,
            tool_ids: list[str]) -> None:
        """Record the turn: each called model's cache, the drafts' record, what the next turn should check."""
        state = self.state
        for model in dict.fromkeys(m for m, _ in calls):
            shape = self.shape(model)
            state.shadow(model).split(shape, model, self.now, self.per_char, touch=True)
        if drafted:
            state.drafts += 1
            state.failures += 0 if accepted else 1
        state.pending_calls = tool_ids[:64] if accepted else []
        state.learn(served.input_tokens + served.cache_write_tokens + served.cache_read_tokens,
                    self.shape(self.requested).chars, served.output_tokens)
        state.last_at = self.now
        state.requested = self.requested
        self.book.save(self.book.sessions.put(self.key, state))


def _first_breakpoint_only(shadow: CacheShadow, shape: PromptShape) -> CacheShadow:
    """The verifier's cache once the conversation's entries are out of reach: only the first breakpoint's prefix."""
    if not shape.breakpoints:
        return CacheShadow()
    first = shape.hashes[shape.breakpoints[0][0]]
    return CacheShadow({first: shadow.entries[first]} if first in shadow.entries else {})


def _tool_results(body: dict, ids: set[str]) -> list[tuple[str, bool]]:
    """(text, is_error) of the tool results in the last user turn that answer ``ids``."""
    out: list[tuple[str, bool]] = []
    for message in reversed(body.get("messages") or []):
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role == "tool" and message.get("tool_call_id") in ids:  # OpenAI
            out.append((_text(content), False))
            continue
        if role == "user" and isinstance(content, list):  # Anthropic
            out.extend((_text(b.get("content")), bool(b.get("is_error"))) for b in content
                       if isinstance(b, dict) and b.get("type") == "tool_result" and b.get("tool_use_id") in ids)
        if role in ("user", "assistant"):
            break
    return out


def _text(content: object) -> str:
    if isinstance(content, str):
        return content[:20_000]
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))[:20_000]
    return ""

