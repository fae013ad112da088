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

Only what the decision and the response's figures need runs before the answer goes out (the
state, the prompt's shape, the economics, the bridging breakpoint, the counterfactual's price).
With the in-memory store the record is deferred: :meth:`Turn.end` leaves it with the book, and the
gateway runs it once the answer is out (:meth:`SessionBook.settle`); the conversation's next request
runs it first if it is still waiting (:meth:`SessionBook.begin`), so every turn reads the state its
predecessors left, in order, exactly as if each had been recorded at once. A shared store (Redis) is
written before the answer goes out: the next turn may reach another process as soon as the client
has this answer, and must find the state there.

Figures built here are estimates (see :mod:`cascadeflow.sessions.cache`); the docs
(``docs/cascade.md``) say how good they are.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat

import orjson

from ..config import CascadeRule
from ..pricing import ModelRegistry
from ..proxy.translation import anthropic_prompt
from ..sessions.cache import CacheShadow, CacheSplit, PromptShape, SeenPrompt, conversation_items
from ..sessions.state import BASELINE, MemorySessions, Sessions, SessionState
from ..tiered_prices import TieredRates
from ..usage import Usage
from .bridge import add_bridge, find_bridge, with_bridge
from .economics import Prices, chain_savings, failure_chance, horizon

__all__ = ["SessionBook", "SessionSignal", "Turn"]

_DEFAULT_PER_CHAR = 0.27  # tokens per character of prompt JSON before the upstream has told us
_DEFAULT_OUTPUT = 400
#: each turn, the conversation's record of drafts and failures keeps this share: a drafted turn adds evidence
#: (a memory of ~20 turns); a turn not drafted adds none, so the record fades faster and drafting is tried again
#: once the failures that stopped it are a few turns old
_FADE, _FADE_UNTRIED = 0.95, 0.7
#: the previous request of this many conversations is kept (per process) so the next one hashes only what it adds;
#: at most this many characters of prompt in all (the parsed values are shared with those requests, not copied)
_SEEN_PROMPTS, _SEEN_CHARS = 256, 32 * 1024 * 1024
#: turns whose record waits for their answer to go out, at most this many (past it the oldest is recorded at once:
#: an answer whose hook never ran, such as one the client left before it was written, holds no memory for long)
_UNRECORDED = 128
#: a failure in a tool's output: a traceback, a non-zero exit code (as a shell or Claude Code prints it, as Codex
#: does — "Process exited with code 3" — or in the JSON metadata of Codex's older shell output), failing tests
_FAILED = re.compile(r"Traceback \(most recent call last\)|\b[Ee]xit code:? ?[1-9]\d*\b|\bexited with code [1-9]\d*\b"
                     r"|\bexit status [1-9]\d*\b|\"exit_code\": ?[1-9]\d*\b|\b[1-9]\d* failed\b|\bFAILED\b")
#: a text :data:`_FAILED` can match holds one of these (a substring test is far cheaper than the regex on a long result)
_FAILED_WORDS = ("Traceback", "xit code", "exited with code", "exit status", "exit_code", "failed", "FAILED")


def _failed(text: str) -> bool:
    return any(word in text for word in _FAILED_WORDS) and _FAILED.search(text) is not None


@dataclass(frozen=True, slots=True)
class SessionSignal:
    """What a request says about the conversation's last drafted and accepted turn: it went badly."""

    #: ``tool_error``, ``tool_loop`` or ``correction``
    kind: str
    #: the request id of that drafted turn (empty when it is not known)
    request_id: str


class SessionBook:
    """Opens a :class:`Turn` per request and saves conversations off the request path."""

    def __init__(self, sessions: Sessions, registry: ModelRegistry, clock: Callable[[], float] = time.time) -> None:
        self.sessions, self.registry, self.clock = sessions, registry, clock
        self._saving: set[asyncio.Task] = set()
        #: conversation → its state's write to a shared store, until it is done (:meth:`stored`)
        self._writing: dict[str, asyncio.Task] = {}
        #: per model, its rates: per tier (a tiered price) or flat (None: unpriced)
        self._rates: dict[str, TieredRates | tuple[float, float, float, float] | None] = {}
        #: (conversation, cache rules) → its previous request's prompt, for :meth:`shape` (an LRU, bounded in size)
        self._seen: OrderedDict[tuple[str, str], SeenPrompt] = OrderedDict()
        self._seen_chars = 0
        #: conversation → its last turn, ended but not yet recorded (:meth:`Turn.end`); oldest first
        self._unrecorded: OrderedDict[str, Turn] = OrderedDict()
        #: records wait for the answer to go out only where no other process reads the state (see the module doc)
        self.defers = isinstance(sessions, MemorySessions)

    def shape(self, key: str, body: dict, dialect: str, rules: str, raw: bytes | None = None) -> PromptShape:
        """``body``'s prompt shape, hashing only what it adds to the conversation's previous request
        (``raw``: the bytes ``body`` was parsed from, which tell that fastest; see :mod:`cascadeflow.sessions.layout`)."""
        slot = (key, rules)
        seen = self._seen.pop(slot, None)
        if seen is not None:
            self._seen_chars -= seen.chars
        shape, seen = PromptShape.grown(body, dialect, rules, seen, raw)
        self._seen[slot] = seen
        self._seen_chars += seen.chars
        while self._seen and (len(self._seen) > _SEEN_PROMPTS or self._seen_chars > _SEEN_CHARS):
            self._seen_chars -= self._seen.popitem(last=False)[1].chars
        return shape

    async def begin(self, rule: CascadeRule, body: dict, dialect: str, conversation: str | None,
                    requested: str, rules_for: Callable[[str], str], request_id: str = "",
                    raw: bytes | None = None) -> Turn | None:
        """The request's turn of its conversation (None without one). ``raw``: the bytes ``body`` was parsed
        from, when the caller has them (they tell what the request repeats of the previous one fastest)."""
        if conversation is None or conversation_items(body, dialect) is None:
            return None
        prompt, prompt_dialect = None, ""
        if dialect == "responses" and rules_for(requested) == "anthropic":
            # a Claude model reads the translated prompt (reasoning items dropped, the gateway's cache breakpoints):
            # its cache is priced on that, and the bytes no longer tell what it repeats (values are compared)
            translated = anthropic_prompt(body)
            if translated is None:
                return None
            prompt, prompt_dialect, raw = translated, "anthropic", None
        key = f"{conversation}|{_tools_digest(body)}"  # a sub-agent (its own tools) is its own conversation
        last = self._unrecorded.pop(key, None)
        if last is not None:  # the previous turn's record still waits: it runs first, and its state is the latest
            last.record()
            state = last.state
        else:
            state = await self.sessions.get(key)
        return Turn(self, key, state, body, dialect, requested, rules_for, self.clock(), request_id, raw, prompt,
                    prompt_dialect)

    def rates(self, model: str, prompt_tokens: int = 0) -> tuple[float, float, float, float] | None:
        """USD per token (input, output, cache write, cache read) for the decision's estimates.

        A tiered price gives the rates of the tier a prompt of ``prompt_tokens`` falls in (past a tier's
        start every token pays it: ``claude-haiku-5-5``'s rates are five times its base above 100k tokens,
        where Claude Code's sessions go); a price of another form is taken at its first tier, once per model.
        The reported cost and baseline are priced exactly either way.
        """
        if model in self._rates:
            found = self._rates[model]
        else:
            found = self._rates[model] = self._model_rates(model)
        if isinstance(found, TieredRates):
            return found.rates[bisect_left(found.starts, prompt_tokens)]
        return found

    def _model_rates(self, model: str) -> TieredRates | tuple[float, float, float, float] | None:
        info = self.registry.info(model)
        if info is not None and info.price is None and info.rates is not None:
            return info.rates
        cost = self.registry.cost
        plain, out, write, read = (cost(model, Usage(1_000, 0, 0, 0)), cost(model, Usage(0, 1_000, 0, 0)),
                                   cost(model, Usage(0, 0, 1_000, 0)), cost(model, Usage(0, 0, 0, 1_000)))
        if plain is None or out is None or write is None or read is None:
            return None
        return plain / 1_000, out / 1_000, write / 1_000, read / 1_000

    def defer(self, turn: Turn) -> None:
        """Keep ``turn``'s record until its answer is out (:meth:`settle`) or its conversation's next request."""
        waiting = self._unrecorded.pop(turn.key, None)
        if waiting is not None:  # two requests of one conversation at once: the earlier one's record first
            waiting.record()
        self._unrecorded[turn.key] = turn
        while len(self._unrecorded) > _UNRECORDED:  # answers never settled (a caller without the hook): bounded
            self._unrecorded.popitem(last=False)[1].record()

    def settle(self, turn: Turn) -> None:
        """Run ``turn``'s record if it still waits: the gateway calls it once the turn's answer is out."""
        if self._unrecorded.get(turn.key) is turn:
            del self._unrecorded[turn.key]
            turn.record()

    def save(self, key: str, state: SessionState) -> None:
        """Store the conversation's state: in place for the in-memory store (no task per request), else off the request path."""
        if isinstance(self.sessions, MemorySessions):
            self.sessions.keep(key, state)
            return
        task = asyncio.ensure_future(self.sessions.put(key, state))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)
        self._writing[key] = task

        def written(done: asyncio.Task) -> None:
            if self._writing.get(key) is done:
                del self._writing[key]

        task.add_done_callback(written)

    async def stored(self, turn: Turn | None) -> None:
        """Wait until ``turn``'s conversation state is in a shared store (Redis): the gateway calls it before the
        answer goes out, so the conversation's next request finds it whichever process it reaches. A no-op for the
        in-memory store (the record waits for the answer instead: :meth:`settle`)."""
        task = self._writing.get(turn.key) if turn is not None else None
        if task is not None:
            await asyncio.wait((task,))  # (never raises; a request cancelled meanwhile leaves the write to finish)

    def flush(self) -> None:
        """Run every record that still waits (at shutdown, or where the next step reads the stores directly)."""
        while self._unrecorded:
            self._unrecorded.popitem(last=False)[1].record()

    async def aclose(self) -> None:
        self.flush()
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)
        await self.sessions.aclose()


def _tools_digest(body: dict) -> str:
    tools = body.get("tools")
    if not isinstance(tools, list):  # none, or not a list (the upstream answers that request with its 400)
        tools = []
    try:  # the usual tools, each a dict with its name: the names are read without a Python loop
        names = list(map(dict.get, tools, repeat("name")))
    except TypeError:  # not a list of dicts
        names = [None]
    if not all(names):
        names = [t.get("name") or (t.get("function") or {}).get("name") for t in tools if isinstance(t, dict)]
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
    request_id: str = ""
    #: the bytes ``prompt`` was parsed from (None: not known)
    raw: bytes | None = None
    #: for a Responses thread to a Claude model, the prompt as the Anthropic upstream reads it (its translation),
    #: in ``prompt_dialect``; None: the prompt is ``body``
    prompt: dict | None = None
    prompt_dialect: str = ""
    #: model (and (cache rules,)) → the prompt's shape: one per cache rules, shared by the models that use them
    _shapes: dict = field(default_factory=dict)
    #: model → this request's shape as sent to it with a bridging breakpoint (see :mod:`.bridge`)
    _bridges: dict[str, PromptShape] | None = None
    _ends: dict[str, int | None] | None = None
    #: draft model → its split as :meth:`economics` priced it (its shadow unchanged until the record, which
    #: counts it as sent without walking the lookup again)
    _splits: dict[str, CacheSplit] | None = None
    #: the counterfactual's shape and tokens per character, for the record to count the baseline's prompt as sent
    _counted: tuple[PromptShape, float, CacheSplit | None] | None = None
    #: what :meth:`end` was told, for :meth:`record` (None: not ended)
    _ended: tuple[list[tuple[str, Usage]], bool, bool, Usage, list[str], str, list[tuple[str, bool]]] | None = None
    _recorded: bool = False

    def shape(self, model: str) -> PromptShape:
        """This request's prompt as ``model``'s provider caches it (its route is resolved once per request)."""
        shapes = self._shapes
        shape = shapes.get(model)
        if shape is not None:
            return shape
        rules = (self.rules_for(model),)  # a tuple: never a model's name
        shape = shapes.get(rules)
        if shape is None:
            shape = shapes[rules] = self.book.shape(self.key, self.prompt or self.body, self.prompt_dialect or self.dialect,
                                                    rules[0], self.raw)
        shapes[model] = shape
        return shape

    def bridge(self, model: str, body: dict) -> dict:
        """``body`` (the copy for ``model``'s upstream) with a bridging breakpoint where ``model``'s cache holds
        a live prefix the request's own breakpoints cannot reach (see :mod:`.bridge`); else ``body`` itself."""
        end = self.bridge_end(model)
        if end is None:
            return body
        found = add_bridge(body, self.prompt or self.body, self.shape(model), end)
        if found is None:
            return body
        if self._bridges is None:
            self._bridges = {}
        body, self._bridges[model] = found
        return body

    def reach(self, model: str) -> PromptShape:
        """This request's shape as ``model``'s upstream will read it: with the bridge :meth:`bridge` would add
        (placed at the prefix's last block; where it goes later, the same prefix is read and the same written)."""
        end, shape = self.bridge_end(model), self.shape(model)
        return shape if end is None else with_bridge(shape, end)

    def bridge_end(self, model: str) -> int | None:
        """:func:`.find_bridge` for ``model``, once per request (the shadow changes only when the turn ends)."""
        if (self.prompt_dialect or self.dialect) != "anthropic":
            return None
        if self._ends is None:
            self._ends = {}
        if model not in self._ends:
            self._ends[model] = find_bridge(self.shape(model), self.state.shadows.get(model), self.now)
        return self._ends[model]

    def sent_shape(self, model: str) -> PromptShape:
        """This request's shape as ``model``'s upstream received it (with its bridge, if it had one)."""
        return (self._bridges or {}).get(model) or self.shape(model)

    @property
    def per_char(self) -> float:
        return self.state.per_char or _DEFAULT_PER_CHAR

    # -- before drafting -------------------------------------------------------------------

    def signal(self) -> SessionSignal | None:
        """How the last drafted turn went, when this request says it went badly.

        ``tool_error``: the tool results answering its calls report a failure; ``tool_loop``: it
        repeated the previous turn's tool calls exactly; ``correction``: the user's next message
        corrects it. Each counts as a failure of that draft.
        """
        if not self.state.pending_model:
            return None
        pending, judged, model = set(self.state.pending_calls), self.state.pending_request, self.state.pending_model
        self.state.pending_model, self.state.pending_calls, self.state.pending_request = "", [], ""
        signal, items = None, conversation_items(self.body, self.dialect) or []
        if any(is_error or _failed(text) for text, is_error in _tool_results(items, pending)):
            signal = "tool_error"
        elif pending and _repeats_previous_calls(items, self.dialect == "responses"):
            signal = "tool_loop"
        elif _corrects(items):
            signal = "correction"
        if signal is None:
            return None
        self.state.failures += 1
        stage = self.state.stages.get(model)  # the failure is that stage's too (absent: a state an older gateway wrote)
        if stage is not None:
            stage[1] += 1
        return SessionSignal(signal, judged)

    def economics(self, stages: list[tuple[str, int, int]], verifier: str) -> list[tuple[bool, float, float] | None]:
        """Per draft stage (its model, and the rule's drafts and failures of it), in order: (draft or not, its
        saving over the stages after it, the chain's it heads over the verifier; USD over the conversation's
        horizon), priced backwards (:func:`.chain_savings`); None for a stage that cannot be priced."""
        record = self.state.stages
        priced: list[tuple[Prices, float] | None] = []
        for model, rule_drafts, rule_failures in stages:
            prices = self._prices(model, verifier)
            drafts, failures = record.get(model) or (0.0, 0.0)
            priced.append(None if prices is None else (prices, failure_chance(drafts, failures, rule_drafts,
                                                                              rule_failures)))
        return [None if found is None else (found[0] > 0, found[0], found[1])
                for found in chain_savings(priced, horizon(self.state.turns))]

    def _prices(self, draft: str, verifier: str) -> Prices | None:
        state = self.state
        per_char, previous = state.per_char or _DEFAULT_PER_CHAR, state.last_chars
        prompt = round(self.shape(draft).chars * per_char)  # a tiered price's tier is the whole prompt's
        rate_d, rate_v = self.book.rates(draft, prompt), self.book.rates(verifier, prompt)
        if rate_d is None or rate_v is None:
            return None
        out = round(state.output or _DEFAULT_OUTPUT)
        now = (state.shadows.get(draft) or CacheShadow()).split(self.reach(draft), draft, self.now, per_char)
        if self._splits is None:
            self._splits = {}
        self._splits[draft] = now  # what the draft reads and writes if sent now: its record reuses it
        plain, write, read = now.tokens(per_char)
        warm_plain, warm_write, warm_read = CacheShadow.warm_split(self.shape(draft), draft, per_char,
                                                                   previous).tokens(per_char)
        v_plain, v_write, v_read = CacheShadow.warm_split(self.shape(verifier), verifier, per_char,
                                                          previous).tokens(per_char)
        d_in, d_out, d_write, d_read = rate_d
        v_in, v_out, v_write_rate, v_read_rate = rate_v
        d_output = out * d_out
        return Prices(plain * d_in + d_output + write * d_write + read * d_read,
                      warm_plain * d_in + d_output + warm_write * d_write + warm_read * d_read,
                      v_plain * v_in + out * v_out + v_write * v_write_rate + v_read * v_read_rate,
                      v_write * v_write_rate)

    # -- after the answer ------------------------------------------------------------------

    def baseline(self, served: Usage, output_tokens: int, requested_cost: float | None = None) -> float | None:
        """The requested model's price for this request on the cache it would have had (see the module doc).

        ``requested_cost``: what the requested model really cost, when it served this turn. Where its cache
        was then what the counterfactual's would have been, that real cost is the baseline, not an estimate.
        """
        shape = self.shape(self.requested)
        ratio = self._ratio(served, shape)
        counterfactual = self.state.shadow(BASELINE)
        same_cache = requested_cost is not None and counterfactual.entries == (
            (self.state.shadows.get(self.requested) or CacheShadow()).entries)
        if same_cache:
            self._counted = (shape, ratio, None)  # the record counts it as sent (:meth:`record`), after the answer
            return requested_cost
        split = counterfactual.split(shape, self.requested, self.now, ratio)
        self._counted = (shape, ratio, split)
        plain, write, read = split.tokens(ratio)
        return self.book.registry.cost(self.requested, Usage(plain, output_tokens, write, read))

    def _ratio(self, served: Usage, shape: PromptShape) -> float:
        prompt = served.input_tokens + served.cache_write_tokens + served.cache_read_tokens
        return prompt / shape.chars if prompt > 0 and shape.chars else self.per_char

    def end(self, calls: list[tuple[str, Usage]], drafted: bool, accepted: bool, served: Usage,
            tool_ids: list[str], served_model: str = "", tried: list[tuple[str, bool]] | None = None) -> None:
        """The turn is over: its record (:meth:`record`) waits with the book until the answer is out (in-memory
        store; with a shared one it runs now). ``tried``: (model, failed) of each draft stage tried, in order (each
        stage's own record)."""
        self._ended = (calls, drafted, accepted, served, tool_ids, served_model, tried or [])
        if self.book.defers:
            self.book.defer(self)
        else:
            self.record()

    def record(self) -> None:
        """Record the turn: the counterfactual's cache, each called model's, the drafts' record, what the next
        turn should check; then store the state. Runs once, after :meth:`end` (see the module doc)."""
        ended, counted = self._ended, self._counted
        if ended is None or self._recorded:
            return
        self._recorded = True
        calls, drafted, accepted, served, tool_ids, served_model, tried = ended
        state = self.state
        if counted is not None:
            shape, ratio, split = counted
            if split is None:
                state.shadow(BASELINE).split(shape, self.requested, self.now, ratio, touch=True)
            else:  # the split the baseline was priced on, counted as sent
                state.shadow(BASELINE).sent(shape, split, self.requested, self.now, ratio)
        splits = self._splits or {}
        for model in dict.fromkeys(m for m, _ in calls):
            shape, priced = self.sent_shape(model), splits.get(model)
            if priced is None or (self._ends or {}).get(model) is not None and model not in (self._bridges or {}):
                # not priced, or priced with a bridge that was not sent (no block could carry it): walk the lookup
                state.shadow(model).split(shape, model, self.now, self.per_char, touch=True)
            else:  # the split the economics priced (see :meth:`reach`: the bridge sent reads the same prefix)
                state.shadow(model).sent(shape, priced, model, self.now, self.per_char)
        fade = _FADE if drafted else _FADE_UNTRIED
        state.drafts *= fade
        state.failures *= fade
        if drafted:
            state.drafts += 1
            state.failures += 0 if accepted else 1
        _record_stages(state.stages, tried)
        state.pending_model = (served_model or calls[-1][0]) if drafted and accepted else ""
        state.pending_calls = tool_ids[:64] if drafted and accepted else []
        state.pending_request = self.request_id if drafted and accepted else ""
        shape = self.shape(self.requested)
        state.learn(served.input_tokens + served.cache_write_tokens + served.cache_read_tokens,
                    shape.chars, served.output_tokens)
        state.last_at = self.now
        state.requested = self.requested
        state.turns += 1
        state.last_chars = shape.ends[shape.breakpoints[-1][0]] if shape.breakpoints else shape.chars
        self.book.save(self.key, state)


    def cancelled(self, calls: list[tuple[str, Usage]]) -> None:
        """Record a turn cancelled before its answer: the models called read the prompt (their caches are
        warm now); nothing is learned about drafting or the conversation's sizes (the turn will come again)."""
        if self._ended is not None:  # ended already: its record says more
            return
        state = self.state
        for model in dict.fromkeys(m for m, _ in calls):
            state.shadow(model).split(self.sent_shape(model), model, self.now, self.per_char, touch=True)
        state.last_at = self.now
        state.requested = self.requested
        self.book.save(self.key, state)


def _record_stages(record: dict[str, list[float]], tried: list[tuple[str, bool]]) -> None:
    """Each stage's fading record: a stage tried this turn adds a draft (and a failure if it failed); one not
    tried adds nothing and fades faster, as the conversation's record does (:data:`_FADE_UNTRIED`)."""
    failed = dict(tried)
    for model in dict.fromkeys([*record, *failed]):
        counts = record.setdefault(model, [0.0, 0.0])
        fade = _FADE if model in failed else _FADE_UNTRIED
        counts[0] *= fade
        counts[1] *= fade
        if model in failed:
            counts[0] += 1
            counts[1] += failed[model]
    while len(record) > 6:  # a bounded record (a rule names few stages; a changed config leaves old ones)
        record.pop(next((m for m in record if m not in failed), next(iter(record))))


_CORRECTION = re.compile(r"^\s*(no\b|nope\b|wrong\b|that'?s (not|wrong)|this is (not|wrong)|not what i|undo\b|revert\b|"
                         r"stop\b|try again\b|you (broke|didn'?t|did not|misunderstood))", re.IGNORECASE)


#: Responses items: a model's tool calls, and their outputs the client sends back
_CALLS, _OUTPUTS = ("function_call", "custom_tool_call"), ("function_call_output", "custom_tool_call_output")


def _calls_of(message: object) -> list[tuple[str, object]]:
    """(name, arguments) of an assistant message's tool calls, in either chat dialect (Anthropic's as parsed values)."""
    if not isinstance(message, dict) or message.get("role") != "assistant":
        return []
    calls: list[tuple[str, object]] = []
    content = message.get("content")
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "tool_use":
            calls.append((str(block.get("name")), block.get("input")))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            calls.append((str(function.get("name")), str(function.get("arguments"))))
    return calls


def _last_turns_calls(items: list, responses: bool) -> list[list[tuple[str, object]]]:
    """The tool calls of the conversation's last two model turns, newest first (fewer where it has fewer).

    A chat turn is an assistant message. A Responses turn's calls are a run of call items (its reasoning and
    message among them), ended by the outputs of the turn before or by a user message."""
    turns: list[list[tuple[str, object]]] = []
    if not responses:
        for message in reversed(items):  # from the end: the conversation's history is never walked
            if isinstance(message, dict) and message.get("role") == "assistant":
                turns.append(_calls_of(message))
                if len(turns) == 2:
                    break
        return turns
    run: list[tuple[str, object]] = []
    for item in reversed(items):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in _CALLS:
            run.append((str(item.get("name")), item.get("arguments") if kind == "function_call" else item.get("input")))
        elif kind in _OUTPUTS or item.get("role") == "user":
            if run:
                turns.append(run[::-1])
                run = []
            if item.get("role") == "user" or len(turns) == 2:
                break
    if run and len(turns) < 2:
        turns.append(run[::-1])
    return turns


def _canonical(calls: list[tuple[str, object]]) -> list[tuple[str, object]]:
    return [(name, orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS) if not isinstance(arguments, str) else arguments)
            for name, arguments in calls]


def _repeats_previous_calls(items: list, responses: bool = False) -> bool:
    """The last model turn calls exactly what the turn before it called (the same names, the same arguments as
    canonical JSON)."""
    turns = _last_turns_calls(items, responses)
    if len(turns) < 2:
        return False
    last, before = turns
    # parsed JSON holds no NaN, so calls whose canonical JSON is equal are equal values: unequal values settle it
    # without serialising (equal ones are told apart by their JSON: 1 and 1.0, true and 1 are other arguments)
    return bool(last) and last == before and _canonical(last) == _canonical(before)


def _corrects(items: list) -> bool:
    """The conversation ends in a user message (not tool results) that opens with a correction."""
    last = items[-1] if items else None
    if not isinstance(last, dict) or last.get("role") != "user":
        return False
    content = last.get("content")
    if isinstance(content, list):
        if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
            return False
        content = " ".join(str(b.get("text", "")) for b in content
                           if isinstance(b, dict) and b.get("type") in ("text", "input_text"))
    return isinstance(content, str) and bool(_CORRECTION.search(content[:200]))


def _tool_results(items: list, ids: set[str]) -> list[tuple[str, bool]]:
    """(text, is_error) of the tool results in the last user turn (or the outputs after the last Responses
    calls) that answer ``ids``."""
    out: list[tuple[str, bool]] = []
    for message in reversed(items):
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        kind = message.get("type")
        if kind in _OUTPUTS:  # OpenAI Responses
            if message.get("call_id") in ids:
                out.append((_text(message.get("output")), False))
            continue
        if kind in _CALLS and message.get("call_id") in ids:  # the drafted turn's own calls, among their outputs
            continue
        if role == "tool" and message.get("tool_call_id") in ids:  # OpenAI chat
            out.append((_text(content), False))
            continue
        if role == "user" and isinstance(content, list):  # Anthropic
            out.extend((_text(b.get("content")), bool(b.get("is_error"))) for b in content
                       if isinstance(b, dict) and b.get("type") == "tool_result" and b.get("tool_use_id") in ids)
        if role in ("user", "assistant") or kind in _CALLS:
            break
    return out


def _text(content: object) -> str:
    if isinstance(content, str):
        return content[:20_000]
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))[:20_000]
    return ""

