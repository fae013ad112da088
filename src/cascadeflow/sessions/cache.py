"""A shadow of a model's prompt cache for one conversation, under the provider's rules.

The gateway never sees a provider's cache; it sees each request it sends. From those
it keeps, per conversation and model, the prefixes the provider would hold, so it can
price a request before sending it (what would this model read, what would it write?)
and price the counterfactual (what would the requested model have paid, had it served
every turn?).

Anthropic (``cache_control``): the prompt is a list of blocks — tools, system blocks,
then every message's content blocks (a string is one block). A block with
``cache_control`` is a breakpoint (so is a ``tool_result`` with one inside its content: the API
caches whole top-level blocks), and a top-level ``cache_control`` (automatic caching) adds one
at the last block that can carry one (not thinking, not empty text), alongside the block
marks, unless that block already has one.
A request writes an entry at each breakpoint whose prefix reaches the model's minimum
cacheable length, live for its TTL (5 minutes, or 1 hour with ``ttl: "1h"``) and
refreshed by every hit. A lookup starts at each breakpoint and walks back over at most
:data:`LOOKBACK` positions, the breakpoint's own counted as the first; the longest live
entry found is read, everything after it up to the last breakpoint is written, the rest
is plain input. A position is a block, except that a run of consecutive ``tool_use``
blocks counts as one, and so does a run of consecutive ``tool_result`` blocks (the Claude
API's rule, platform.claude.com/docs/en/build-with-claude/prompt-caching: a turn of many
parallel tool calls does not push the previous entry out of reach).

OpenAI (automatic): prefixes of 1,024 tokens or more are cached as they are seen; a
later request reads the longest live prefix, in steps of 128 tokens; nothing is paid
for writing.

Sizes are kept in characters of compact JSON and turned into tokens with the
conversation's own tokens-per-character ratio (from the upstream's usage), so a figure
built on a shadow is an estimate: exact where the tokenizer is uniform over the
prompt, off by the variation of that ratio between blocks otherwise.
"""

from __future__ import annotations

import struct
import zlib
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import NamedTuple

import orjson

from .layout import Layout, layout_of, repeated

__all__ = ["LOOKBACK", "CacheShadow", "CacheSplit", "PromptShape", "SeenPrompt", "conversation_items",
           "min_cacheable_tokens"]

_PREFIX_KEY = struct.Struct("<IQ")
#: how many positions a lookup checks from a breakpoint, its own included (Anthropic: "at most 20 positions")
LOOKBACK = 20
#: the block types whose consecutive runs count as one lookback position have run codes 1 and 2 (0: any other)
_TOOL_USE, _TOOL_RESULT = 1, 2
_TTL_5M, _TTL_1H = 300.0, 3600.0
_OPENAI_TTL, _OPENAI_MIN, _OPENAI_STEP = 600.0, 1024, 128
_EXPIRY, _CHARS, _ITEM = itemgetter(1), itemgetter(0), itemgetter(3)
#: where a request's conversation starts in its bytes: a chat's messages, a Responses request's input items
_MESSAGES_KEY, _INPUT_KEY = b'"messages":[', b'"input":['
#: entries kept per model and conversation (the longest prefixes win; older ones are never looked up again)
MAX_ENTRIES = 12

#: minimum cacheable prompt, by model-name prefix (longest wins); Anthropic's documented floors
_MIN_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-", 1024),
    ("claude-haiku-3", 2048),
    ("claude-opus-4-5", 4096),
    ("claude-opus-4-6", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-sonnet-4-6", 2048),
    ("claude-opus-5", 512),
    ("claude-opus-5-5", 512),
    ("claude-sonnet-5-5", 512),
    ("claude-haiku-5-5", 512),
)


@lru_cache(maxsize=128)  # a pure function called several times per turn: once per model name
def min_cacheable_tokens(model: str) -> int:
    longest, tokens = 0, 1024
    for prefix, floor in _MIN_TOKENS:
        if len(prefix) > longest and model.startswith(prefix):
            longest, tokens = len(prefix), floor
    return tokens


@dataclass(frozen=True, slots=True)
class PromptShape:
    """One request's prompt as a cache sees it: per block, the running hash and size; the breakpoints."""

    hashes: tuple[bytes, ...]
    #: characters up to and including each block
    ends: tuple[int, ...]
    #: (block index, ttl seconds) of each breakpoint, in order
    breakpoints: tuple[tuple[int, float], ...]
    #: "anthropic" (explicit breakpoints) or "openai" (automatic)
    rules: str
    #: each block's lookback position (non-decreasing: a run of tool_use, or of tool_result, blocks shares one)
    positions: tuple[int, ...]

    @property
    def chars(self) -> int:
        return self.ends[-1] if self.ends else 0

    @property
    def blocks(self) -> int:
        return len(self.ends)

    @classmethod
    def of(cls, body: dict, dialect: str, rules: str | None = None) -> PromptShape:
        """The shape of a request ``body`` of ``dialect``, cached by ``rules`` (default: the dialect's own)."""
        return cls.grown(body, dialect, rules, None)[0]

    @classmethod
    def grown(cls, body: dict, dialect: str, rules: str | None, seen: SeenPrompt | None,
              raw: bytes | None = None) -> tuple[PromptShape, SeenPrompt]:
        """:meth:`of`, reusing what ``seen`` (the conversation's previous request) already hashed.

        A conversation only grows: its next request repeats the tools, the system prompt and
        the earlier messages, so only the messages that differ from the previous request (the
        new ones, and the one whose breakpoint moved) are serialised and hashed. The result is
        the same as :meth:`of`'s. What is reused is decided by the bytes where ``raw`` (the bytes
        ``body`` was parsed from) is compact JSON (see :mod:`.layout`), else by equality of the
        parsed values. ``seen`` is used up: the returned one is made from its parts.
        """
        tools = body.get("tools")
        system = body.get("system") if dialect == "anthropic" else body.get("instructions") if dialect == "responses" \
            else None
        messages = conversation_items(body, dialect) or []
        layout = kept = None
        if raw is not None:
            found = (repeated(seen.layout, raw, messages) if seen is not None and seen.layout is not None
                     and seen.dialect == dialect else None)
            if found is not None:
                kept, layout = found
            else:
                layout = layout_of(raw, messages, _INPUT_KEY if dialect == "responses" else _MESSAGES_KEY)
        if kept is None and seen is not None and seen.layout is None and seen.dialect == dialect \
                and seen.tools == tools and seen.system == system:
            kept = _common_messages(seen.messages, messages)
        if kept is not None and seen is not None:  # ``seen``'s lists are cut back and grown in place (no copies)
            cut = seen.starts[kept]
            hashes, ends, marks, starts = seen.hashes, seen.ends, seen.marks, seen.starts
            positions, runs = seen.positions, seen.runs
            del hashes[cut:], ends[cut:], positions[cut:], starts[kept + 1:], runs[kept + 1:]
            while marks and marks[-1][0] >= cut:
                marks.pop()
        else:
            kept, hashes, ends, marks, starts, positions = 0, [], [], [], [], []
            last = _add(list(tools) if tools else [], None, hashes, ends, marks, positions, 0)
            if system is not None:
                last = _add(system, None, hashes, ends, marks, positions, last)
            runs = [last]
            starts.append(len(hashes))
        last = runs[-1]
        for message in messages[kept:]:
            if isinstance(message, dict):
                content = message.get("content")
                if content is None and "role" not in message:  # a Responses item other than a message (a tool
                    content = message  # call, its output, reasoning): one block, as it is written
                last = _add(content, message.get("role"), hashes, ends, marks, positions, last)
                calls = message.get("tool_calls")
                if calls and isinstance(calls, list):  # an OpenAI chat assistant's calls: a block each, after its text
                    last = _add(calls, None if content is not None else message.get("role"), hashes, ends, marks,
                                positions, last)
            starts.append(len(hashes))
            runs.append(last)
        # with a layout the bytes tell what the next request repeats: the parsed values are not kept
        seen = (SeenPrompt(dialect, None, None, [], starts, hashes, ends, marks, positions, runs, layout)
                if layout is not None
                else SeenPrompt(dialect, tools, system, list(messages), starts, hashes, ends, marks, positions, runs))
        points = list(marks)
        top = body.get("cache_control")
        if top and isinstance(top, dict) and hashes:
            # automatic caching: one more breakpoint (one of the 4) at the last block that can carry one,
            # a no-op where that block has one
            index = _automatic(messages, starts)
            if index >= 0 and all(i != index for i, _ in points):
                points = sorted((*points, (index, _ttl(top))))
        rules = rules or ("anthropic" if dialect == "anthropic" else "openai")
        if rules == "openai":
            points = []
        return cls(tuple(hashes), tuple(ends), tuple(points), rules, tuple(positions)), seen


@dataclass(slots=True)
class SeenPrompt:
    """A conversation's previous request as :meth:`PromptShape.grown` hashed it: its parts, and per block
    the running hash, the size so far and the breakpoints (before the top-level ``cache_control``)."""

    dialect: str
    tools: object
    system: object
    messages: list
    #: index of each message's first block (one more entry: where the next message would start)
    starts: list[int]
    hashes: list[bytes]
    ends: list[int]
    marks: list[tuple[int, float]]
    #: per block, its lookback position; per entry of ``starts``, the run code of the block before it
    positions: list[int]
    runs: list[int]
    #: the request's bytes and where its messages are in them, where they are compact JSON (else None:
    #: ``tools``, ``system`` and ``messages`` are compared as values)
    layout: Layout | None = None

    @property
    def chars(self) -> int:
        return self.ends[-1] if self.ends else 0


def conversation_items(body: dict, dialect: str) -> list | None:
    """The conversation's turns: a chat's ``messages``; a Responses request's ``input`` items (a string is one user
    message); None where the body holds none."""
    if dialect == "responses":
        items = body.get("input")
        if isinstance(items, str):
            return [{"role": "user", "content": items}]
        return items if isinstance(items, list) else None
    messages = body.get("messages")
    return messages if isinstance(messages, list) else None


def _common_messages(old: list, new: list) -> int:
    """How many leading messages ``new`` shares with ``old``: the newest few may differ (a breakpoint
    moved off them); anything earlier that differs (an edited history) starts the messages afresh."""
    kept = min(len(old), len(new))
    for _ in range(4):
        if kept == 0 or new[kept - 1] == old[kept - 1]:
            break
        kept -= 1
    else:
        return 0
    return kept if kept == 0 or new[:kept - 1] == old[:kept - 1] else 0


def _automatic(messages: list, starts: list[int]) -> int:
    """The block a top-level ``cache_control`` marks: the last that can carry a mark (the API walks back over
    thinking and empty text blocks), in the messages, else the last tool or system block (-1: none)."""
    for m in range(len(messages) - 1, -1, -1):
        message = messages[m]
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for b in range(len(content) - 1, -1, -1):
                if _can_mark(content[b]):
                    return starts[m] + b
        elif content is not None and _can_mark(content):
            return starts[m]
    return starts[0] - 1


def _can_mark(block: object) -> bool:
    if not isinstance(block, dict):
        return block not in (None, "")
    kind = block.get("type")
    return kind not in ("thinking", "redacted_thinking") and (kind != "text" or bool(block.get("text")))


def _add(content: object, role: object, hashes: list[bytes], ends: list[int], marks: list[tuple[int, float]],
         positions: list[int], last: int) -> int:
    """Append the blocks of a message's ``content`` (or of the tools or the system prompt: ``role`` None) to the
    running hashes: a CRC-32 and the length so far name each prefix (fast, and stable across processes); and to
    the lookback positions (a block that goes on with a run of tool_use, or of tool_result, blocks shares its
    position). Each block counts with a comma after it, except that a message's first block counts with the
    message's role and brackets before it instead, so the blocks add up to the whole prompt, as the tokens
    before a breakpoint do. ``last``: the run code of the block before; returns the last block's."""
    if isinstance(content, list):
        parts: Iterable[tuple[bytes, float | None, int]] = map(_block, content)
        frame = None if role is None else b'{"role":' + orjson.dumps(role) + b',"content":[]}'
    elif content is not None:
        parts = ((orjson.dumps(content), None, 0),)
        frame = None if role is None else b'{"role":' + orjson.dumps(role) + b',"content":}'
    else:
        return last
    crc, total = _PREFIX_KEY.unpack(hashes[-1]) if hashes else (0, 0)
    position = positions[-1] if positions else -1
    for data, ttl, run in parts:
        if frame is None:
            crc = zlib.crc32(b",", zlib.crc32(data, crc))
            total += len(data) + 1
        else:
            crc = zlib.crc32(data, zlib.crc32(frame, crc))
            total += len(frame) + len(data)
            frame = None
        if ttl is not None:
            marks.append((len(hashes), ttl))
        hashes.append(_PREFIX_KEY.pack(crc, total))
        ends.append(total)
        if not run or run != last:
            position += 1
        last = run
        positions.append(position)
    return last


def _ttl(control: object) -> float:
    return _TTL_1H if isinstance(control, dict) and control.get("ttl") == "1h" else _TTL_5M


def _block(block: object) -> tuple[bytes, float | None, int]:
    """A block's JSON without its marks, its breakpoint's TTL (None: not a breakpoint) and its run code."""
    if not isinstance(block, dict):
        return orjson.dumps(block), None, 0
    kind = block.get("type")
    run = _TOOL_RESULT if kind == "tool_result" else _TOOL_USE if kind == "tool_use" else 0
    if run == _TOOL_RESULT:
        content = block.get("content")
        if isinstance(content, list) and any(isinstance(part, dict) and "cache_control" in part for part in content):
            return (*_tool_result(block, content), run)
    if "cache_control" in block:
        bare = dict(block)  # the block without its mark, its keys in their order
        control = bare.pop("cache_control")
        return orjson.dumps(bare), (_ttl(control) if control else None), run
    return orjson.dumps(block), None, run


def _tool_result(block: dict, content: list) -> tuple[bytes, float | None]:
    """A tool_result with marks in its content: the API caches whole top-level blocks, so a mark inside makes
    the tool_result the breakpoint (its own mark's TTL first, else the first inner one's); no mark is prompt."""
    control = block.get("cache_control") or next(
        (part["cache_control"] for part in content if isinstance(part, dict) and part.get("cache_control")), None)
    bare = {k: v for k, v in block.items() if k != "cache_control"}
    bare["content"] = [{k: v for k, v in part.items() if k != "cache_control"} if isinstance(part, dict) else part
                       for part in content]
    return orjson.dumps(bare), (_ttl(control) if control else None)


class CacheSplit(NamedTuple):
    """How a request's prompt divides, in characters: read from cache, written to it, plain input (a tuple:
    built several times per request, it costs no Python ``__init__``)."""

    read: int
    write: int
    total: int

    @property
    def plain(self) -> int:
        return max(0, self.total - self.read - self.write)

    def tokens(self, per_char: float) -> tuple[int, int, int]:
        """(plain input, cache write, cache read) tokens at ``per_char`` tokens per character."""
        read, write = round(self.read * per_char), round(self.write * per_char)
        return max(0, round(self.total * per_char) - read - write), write, read


class CacheShadow:
    """The entries one model's cache would hold for one conversation: prefix hash → (chars, expiry)."""

    __slots__ = ("entries",)

    def __init__(self, entries: dict[bytes, tuple[int, float]] | None = None) -> None:
        self.entries: dict[bytes, tuple[int, float]] = entries if entries is not None else {}

    def split(self, shape: PromptShape, model: str, now: float, per_char: float, *, touch: bool = False) -> CacheSplit:
        """What ``shape`` would read and write against this cache now (``touch``: count it as sent)."""
        if shape.rules == "openai":
            return self._split_openai(shape, now, per_char, touch)
        points, ends = shape.breakpoints, shape.ends
        total = ends[-1] if ends else 0
        if not points:
            return CacheSplit(0, 0, total)
        best, entries, hashes, positions = -1, self.entries, shape.hashes, shape.positions
        if entries:  # the newest breakpoint first; below the best entry found so far nothing can beat it
            for index, _ in reversed(points):
                if index <= best:  # the breakpoints are in order: the rest lie at or below the best entry too
                    break
                reach = positions[index] - LOOKBACK  # a position at or below this is out of the window
                for i in range(index, best, -1):
                    if positions[i] <= reach:
                        break
                    entry = entries.get(hashes[i])
                    if entry is not None and entry[1] > now:
                        best = i
                        break
        read = ends[best] if best >= 0 else 0
        floor = min_cacheable_tokens(model) / per_char if per_char > 0 else 0
        write = 0
        for i, _ in reversed(points):  # the last breakpoint long enough to be cached
            if ends[i] >= floor:
                write = max(0, ends[i] - read) if i > best else 0
                break
        if touch:
            self._touch(shape, best, floor, now)
        return CacheSplit(read, write, total)

    def sent(self, shape: PromptShape, split: CacheSplit, model: str, now: float, per_char: float) -> None:
        """Count ``shape`` as sent: what ``split(..., touch=True)`` does, given the ``split`` that :meth:`split`
        gave for it (this shadow unchanged since), without walking the lookup again."""
        if shape.rules == "openai" or not shape.breakpoints:
            self.split(shape, model, now, per_char, touch=True)
            return
        # the entry read ends where the read part does (each block adds characters: the ends are all different)
        best = bisect_left(shape.ends, split.read) if split.read else -1
        self._touch(shape, best, min_cacheable_tokens(model) / per_char if per_char > 0 else 0, now)

    def _touch(self, shape: PromptShape, best: int, floor: float, now: float) -> None:
        """The entry read (``best``; -1: none) refreshed, one written at each breakpoint long enough."""
        entries, hashes, ends, points = self.entries, shape.hashes, shape.ends, shape.breakpoints
        entry = entries.get(hashes[best]) if best >= 0 else None  # (gone only where another turn trimmed it since)
        if entry is not None:
            chars, expiry = entry
            ttl = _TTL_5M
            for i, t in points:  # the first breakpoint at or after it
                if i >= best:
                    ttl = t
                    break
            entries[hashes[best]] = (chars, max(expiry, now + ttl))
        for i, ttl in points:
            if ends[i] >= floor:
                entries[hashes[i]] = (ends[i], now + ttl)
        self._trim()

    @staticmethod
    def warm_split(shape: PromptShape, model: str, per_char: float, previous_chars: int) -> CacheSplit:
        """The split a cache kept warm turn after turn would give: the previous turn's prompt read, the rest written.

        On a conversation's first turn (``previous_chars`` 0) the growth of one turn is taken as the
        last block's size, so a "warm" turn is what the next turns will cost, not this one.
        """
        if shape.rules == "openai":
            floor = _OPENAI_MIN / per_char if per_char > 0 else 0
            seen = previous_chars or (shape.ends[-2] if shape.blocks > 1 else 0)
            step = _OPENAI_STEP / per_char if per_char > 0 else 1
            read = int(min(seen, shape.chars) // step * step) if seen >= floor else 0
            return CacheSplit(read, 0, shape.chars)
        if not shape.breakpoints:
            return CacheSplit(0, 0, shape.chars)
        last = shape.ends[shape.breakpoints[-1][0]]
        if last * per_char < min_cacheable_tokens(model):
            return CacheSplit(0, 0, shape.chars)
        seen = previous_chars or (shape.ends[-2] if shape.blocks > 1 else 0)
        read = min(seen, last)
        return CacheSplit(read, last - read, shape.chars)

    def _split_openai(self, shape: PromptShape, now: float, per_char: float, touch: bool) -> CacheSplit:
        floor = _OPENAI_MIN / per_char if per_char > 0 else 0
        best = -1
        for i in range(shape.blocks - 1, -1, -1):
            entry = self.entries.get(shape.hashes[i])
            if entry is not None and entry[1] > now:
                best = i
                break
        read = 0
        if best >= 0 and shape.ends[best] >= floor:
            step = _OPENAI_STEP / per_char if per_char > 0 else 1
            read = int(shape.ends[best] // step * step)
        if touch and shape.blocks and shape.chars >= floor:
            # automatic: every block boundary is a prefix the provider may match; the longest are kept
            for i in range(max(0, shape.blocks - MAX_ENTRIES), shape.blocks):
                if shape.ends[i] >= floor:
                    self.entries[shape.hashes[i]] = (shape.ends[i], now + _OPENAI_TTL)
            self._trim()
        return CacheSplit(read, 0, shape.chars)

    def _trim(self) -> None:
        """Keep the entries used last (the system prompt's, refreshed every turn, stay with the newest), of those
        written together the longest prefixes (an OpenAI request writes one at every block boundary: its next
        request reads the longest)."""
        entries = self.entries
        if len(entries) > MAX_ENTRIES:
            # the latest expiries first, then the longest, then the later written, without a Python call per
            # entry: sorted by (expiry, characters, the entry's place), the places all different
            values = entries.values()
            ranked = sorted(zip(map(_EXPIRY, values), map(_CHARS, values), range(len(entries)), entries.items()),
                            reverse=True)
            self.entries = dict(map(_ITEM, ranked[:MAX_ENTRIES]))

    def live_until(self, now: float) -> float:
        """When the last live entry expires (``now`` if none is live)."""
        return max((expiry for _, expiry in self.entries.values() if expiry > now), default=now)
