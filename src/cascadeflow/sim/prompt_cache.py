"""The simulator's prompt caches: Anthropic's breakpoints and OpenAI's automatic prefixes.

A gateway that switches models leaves caches cold; the only way a test can see what
that costs is an upstream that caches the way the real ones do. Token counts are the
simulator's estimate (``chars // 4`` of compact JSON, see :mod:`.engine`); everything
else follows the providers' documentation, and where it is silent the choice is
written here (marked *choice*).

Anthropic (``/v1/messages``)
    The prompt is a list of blocks in the order ``tools`` (one block per tool),
    ``system`` (each block; a string is one block), then each message's content
    blocks (a string is one block). A block's size is the compact JSON of the block
    without its ``cache_control``; a prefix's tokens are ``cumulative chars // 4``.
    *Choice*: a block's identity also includes its message's role, so the same text
    from another role is another prefix; nothing else (``tool_choice``, thinking
    settings) is part of the key.

    - Breakpoints are the blocks with ``cache_control`` (a mark inside a
      ``tool_result``'s content marks that ``tool_result``: the API caches whole
      top-level blocks, and counts every mark), plus the last block that can carry a mark
      (not thinking, not empty text) when the request has a top-level
      ``cache_control`` (automatic caching, as documented: it takes one
      of the 4 slots, is a no-op where the last block has a mark of the same ``ttl``,
      and another ``ttl`` there → 400). A mark is not prompt: a block's size and
      prefix leave out every ``cache_control``, its own and those in a
      ``tool_result``'s content. More than 4 → 400 ``A maximum of 4 blocks with
      cache_control may be provided. Found N.``; ``ttl`` other than ``5m`` / ``1h``
      → 400; a ``1h`` breakpoint after a ``5m`` one (tools, system, messages order)
      → 400 with the API's message.
    - Minimum cacheable length per model (Anthropic's "cache limitations"): 512 for
      the 5 and 5.5 models (Opus, Sonnet, Haiku 5.5; Opus, Fable, Mythos 5), 1,024 for
      Sonnet 5, Opus 4.8, Sonnet 4.x, Opus 4/4.1, 2,048 for Opus 4.7 and Haiku 3.x,
      4,096 for Opus 4.5/4.6 and Haiku 4.5; 1,024 for any other model. A breakpoint
      whose prefix is shorter caches nothing.
    - Lookup: from each breakpoint back over at most 20 positions, the breakpoint's
      own counted as the first ("The system checks at most 20 positions per breakpoint,
      counting the breakpoint itself as the first"), for the longest live entry of this
      model; the longest over all breakpoints is the hit ``A``. A hit sets the entry's
      expiry to now + its TTL. A position is a block, except that "a run of consecutive
      ``tool_use`` blocks counts as one position, and so does a run of consecutive
      ``tool_result`` blocks" (the Claude API's rule, platform.claude.com/docs/en/
      build-with-claude/prompt-caching); every block of a run is looked up (*choice*:
      consecutive in the prompt's block order).
    - Writes: every breakpoint whose prefix reaches the minimum gets an entry (new or
      refreshed) expiring after its TTL: 300 s, or 3,600 s for ``ttl: "1h"``. An
      entry is readable by the next request (*choice*: at once, not "after the first
      response begins").
    - Usage, the API's billing rule for mixed TTLs: with ``C`` the tokens up to the
      last breakpoint and ``B`` those up to the last ``1h`` breakpoint after ``A`` (or
      ``A``): ``cache_read = A``, ``ephemeral_1h = B - A``, ``ephemeral_5m = C - B``,
      ``cache_creation = C - A``, ``input_tokens`` = the rest. When the last
      breakpoint is under the minimum, nothing is read or written.

OpenAI (``/v1/chat/completions`` and ``/v1/responses``)
    Automatic, per model and per ``prompt_cache_key`` (no key is its own namespace).
    The prompt is the compact JSON of ``tools`` then ``messages`` (the Responses API's
    input read as a chat), cut into 128-token (512-char) chunks. A prompt of at least
    1,024 tokens stores every full chunk; ``cached_tokens`` is 128 × the number of
    leading chunks already stored and live — the longest previously seen prefix,
    rounded down to 128 — or 0 when that is under 1,024. *Choice*: an entry expires
    after 600 s without use (OpenAI says 5-10 minutes of inactivity), 24 h with
    ``prompt_cache_retention: "24h"``; every use refreshes it. OpenAI bills no write.
    (The GPT-5.6 family's rules — 30-minute entries, explicit breakpoints, a write
    premium — are not simulated; the simulator's GPT models are older.)

Time comes from a :class:`SimClock`, which tests advance instead of sleeping. Entries
are bounded (least recently used dropped first).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "ANTHROPIC_TTL_1H",
    "ANTHROPIC_TTL_5M",
    "LOOKBACK_BLOCKS",
    "MAX_BREAKPOINTS",
    "OPENAI_IDLE_TTL",
    "OPENAI_MIN_TOKENS",
    "OPENAI_STEP_TOKENS",
    "CacheSplit",
    "PromptCache",
    "SimClock",
    "check_breakpoints",
    "min_cacheable_tokens",
]

MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
ANTHROPIC_TTL_5M = 300.0
ANTHROPIC_TTL_1H = 3600.0
OPENAI_MIN_TOKENS = 1024
OPENAI_STEP_TOKENS = 128
OPENAI_IDLE_TTL = 600.0
OPENAI_EXTENDED_TTL = 86400.0
_CHARS_PER_TOKEN = 4
_CHUNK_CHARS = OPENAI_STEP_TOKENS * _CHARS_PER_TOKEN
_TTLS = {"5m": ANTHROPIC_TTL_5M, "1h": ANTHROPIC_TTL_1H}

# (model prefix, minimum tokens), most specific first.
_MINIMUMS: tuple[tuple[str, int], ...] = (
    ("claude-opus-5", 512), ("claude-sonnet-5-5", 512), ("claude-haiku-5", 512),
    ("claude-fable-5", 512), ("claude-mythos-5", 512),
    ("claude-sonnet-5", 1024), ("claude-opus-4-8", 1024),
    ("claude-opus-4-7", 2048), ("claude-mythos-preview", 2048),
    ("claude-opus-4-6", 4096), ("claude-opus-4-5", 4096), ("claude-haiku-4-5", 4096),
    ("claude-3-haiku", 2048), ("claude-3-5-haiku", 2048), ("claude-haiku-3", 2048),
)
_DEFAULT_MINIMUM = 1024

_dumps = orjson.dumps


def min_cacheable_tokens(model: str) -> int:
    """Anthropic's minimum cacheable prompt length for ``model`` (1,024 when unknown)."""
    for prefix, minimum in _MINIMUMS:
        if model.startswith(prefix):
            return minimum
    return _DEFAULT_MINIMUM


class SimClock:
    """Monotonic time plus an offset that only grows: :meth:`advance` passes a TTL at once."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward; returns the total offset."""
        if not 0 <= seconds < math.inf:
            raise ValueError("the clock only moves forward, by a finite number of seconds")
        self.offset += float(seconds)
        return self.offset


@dataclass(frozen=True, slots=True)
class CacheSplit:
    """Cached prompt tokens of one request: read, written (all TTLs) and written for 1 h."""

    read: int = 0
    write: int = 0
    write_1h: int = 0


_NO_CACHE = CacheSplit()


@dataclass(slots=True)
class _Block:
    chars: int
    key: bytes  # hash of the prefix ending with this block
    ttl: float | None  # a breakpoint's TTL, None when not a breakpoint
    position: int = 0  # its lookback position: a run of tool_use (or of tool_result) blocks shares one


#: block types whose consecutive runs count as one lookback position
_RUNS = ("tool_use", "tool_result")


def _mark_of(block: Any) -> Any:
    """The block's own ``cache_control``, else the first one inside a tool_result's content."""
    if not isinstance(block, dict):
        return None
    mark = block.get("cache_control")
    if mark:
        return mark
    if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
        for inner in block["content"]:
            if isinstance(inner, dict) and inner.get("cache_control"):
                return inner["cache_control"]
    return None


def _marks(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(path, cache_control) of every mark in processing order (tools, system, messages)."""
    found: list[tuple[str, Any]] = []
    for i, tool in enumerate(body.get("tools") or ()):
        if isinstance(tool, dict) and tool.get("cache_control"):
            found.append((f"tools.{i}", tool["cache_control"]))
    system = body.get("system")
    for i, block in enumerate(system if isinstance(system, list) else ()):
        if isinstance(block, dict) and block.get("cache_control"):
            found.append((f"system.{i}", block["cache_control"]))
    for m, msg in enumerate(body.get("messages") or ()):
        content = msg.get("content") if isinstance(msg, dict) else None
        for b, block in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(block, dict):
                continue
            if block.get("cache_control"):
                found.append((f"messages.{m}.content.{b}", block["cache_control"]))
            if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                for k, inner in enumerate(block["content"]):
                    if isinstance(inner, dict) and inner.get("cache_control"):
                        found.append((f"messages.{m}.content.{b}.content.{k}", inner["cache_control"]))
    return found


def _can_mark(block: Any) -> bool:
    """Whether automatic caching can put its breakpoint on ``block`` (it walks back over the rest)."""
    if not isinstance(block, dict):
        return block not in (None, "")
    kind = block.get("type")
    return kind not in ("thinking", "redacted_thinking") and (kind != "text" or bool(block.get("text")))


def _last_block(body: dict[str, Any]) -> Any:
    """Where automatic caching puts its breakpoint: the last block that can carry one, None when there is none."""
    for message in reversed(body.get("messages") or ()):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        for block in reversed(content if isinstance(content, list) else (content,)):
            if _can_mark(block):
                return block
    system = body.get("system")
    if system:
        return system[-1] if isinstance(system, list) else system
    tools = body.get("tools")
    return tools[-1] if isinstance(tools, list) and tools else None


def _ttl_name(mark: Any) -> str:
    ttl = mark.get("ttl", "5m") if isinstance(mark, dict) else "5m"
    return ttl if isinstance(ttl, str) else repr(ttl)


def check_breakpoints(body: dict[str, Any]) -> str | None:
    """What the Messages API refuses about ``cache_control`` (a 400 message), or None."""
    marks = _marks(body)
    top = body.get("cache_control")
    if top:
        last = _mark_of(_last_block(body))
        if last and _ttl_name(last) != _ttl_name(top):
            return (f"cache_control.ttl: the top-level cache_control (ttl='{_ttl_name(top)}') must have the same ttl "
                    f"as the cache_control of the last block (ttl='{_ttl_name(last)}')")
        marks.append(("cache_control", top))
    if len(marks) > MAX_BREAKPOINTS:
        return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(marks)}."
    seen_5m = False
    for path, mark in marks:
        ttl = _ttl_name(mark)
        if ttl not in _TTLS:
            return f"{path}.cache_control.ttl: Input should be '5m' or '1h'"
        if ttl == "1h" and seen_5m:
            return (f"{path}.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' "
                    "cache_control block. Note that blocks are processed in the following order: "
                    "`tools`, `system`, `messages`.")
        seen_5m = seen_5m or ttl == "5m"
    return None


def _unmarked(block: Any) -> Any:
    return {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block


def _strip(block: Any) -> bytes:
    """The block as the model reads it: no ``cache_control``, its own or inside a tool_result's content (a mark
    is not prompt, so moving one changes neither the block's size nor its prefix)."""
    if not isinstance(block, dict):
        return _dumps(block)
    content = block.get("content")
    if (block.get("type") == "tool_result" and isinstance(content, list)
            and any(isinstance(part, dict) and "cache_control" in part for part in content)):
        bare = _unmarked(block)
        bare["content"] = [_unmarked(part) for part in content]
        return _dumps(bare)
    return _dumps(_unmarked(block)) if "cache_control" in block else _dumps(block)


def _blocks(body: dict[str, Any], model: str) -> list[_Block]:
    h = hashlib.blake2b(b"anthropic\0" + model.encode(), digest_size=16)
    out: list[_Block] = []
    targets: list[int] = []  # the blocks automatic caching can mark
    run: list[object] = [None]  # the type of the run the last block belongs to (None: no run)

    def add(block: Any, role: bytes, framing: int = 1) -> None:
        """``framing``: the JSON around the block (a comma; a message's role and brackets on its first block),
        so that the blocks add up to the whole prompt, as the tokens before a breakpoint do."""
        data = _strip(block)
        h.update(role)
        h.update(data)
        h.update(b"\x1e")
        mark = _mark_of(block)
        kind = block.get("type") if isinstance(block, dict) else None
        kind = kind if kind in _RUNS else None
        position = (out[-1].position if out else -1) + (0 if kind is not None and kind == run[0] else 1)
        run[0] = kind
        out.append(_Block(len(data) + framing, h.copy().digest(),
                          _TTLS.get(_ttl_name(mark), ANTHROPIC_TTL_5M) if mark else None, position))
        if role in (b"T", b"S") or _can_mark(block):  # a tool or system block is always a target
            targets.append(len(out) - 1)

    for tool in body.get("tools") or ():
        add(tool, b"T")
    system = body.get("system")
    if isinstance(system, list):
        for block in system:
            add(block, b"S")
    elif system is not None:
        add(system, b"S")
    for msg in body.get("messages") or ():
        if not isinstance(msg, dict):
            continue
        role = str(msg.get("role")).encode() + b"\x1f"
        content = msg.get("content")
        frame = len(_dumps({k: v for k, v in msg.items() if k != "content"})) + len('"content":') + 1
        for i, block in enumerate(content if isinstance(content, list) else (content,)):
            add(block, role, frame + (2 if isinstance(content, list) else 0) if i == 0 else 1)
    top = body.get("cache_control")
    if top and targets and out[targets[-1]].ttl is None:
        out[targets[-1]].ttl = _TTLS.get(_ttl_name(top), ANTHROPIC_TTL_5M)
    return out


class PromptCache:
    """Live prefixes of every model, keyed by prefix hash; see the module docstring."""

    __slots__ = ("_clock", "_entries", "_max_entries")

    def __init__(self, clock: SimClock | None = None, max_entries: int = 200_000) -> None:
        self._clock = clock or SimClock()
        self._entries: dict[bytes, tuple[float, float]] = {}  # key -> (expires, ttl); oldest use first
        self._max_entries = max_entries

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # -------------------------------------------------------------- entries

    def _live(self, key: bytes, now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        if entry[0] <= now:
            del self._entries[key]
            return False
        return True

    def _put(self, key: bytes, ttl: float, now: float) -> None:
        self._entries.pop(key, None)  # re-inserted last: the dict's order is least recent use first
        self._entries[key] = (now + ttl, ttl)
        if len(self._entries) > self._max_entries:
            for stale in list(self._entries)[: len(self._entries) - self._max_entries]:
                del self._entries[stale]

    # -------------------------------------------------------------- Anthropic

    def anthropic(self, body: dict[str, Any]) -> CacheSplit:
        """Look up and write this Messages request's breakpoints; its cache usage."""
        model = given if isinstance(given := body.get("model"), str) else ""
        blocks = _blocks(body, model)
        marks = [i for i, b in enumerate(blocks) if b.ttl is not None]
        if not marks:
            return _NO_CACHE
        cum: list[int] = []
        chars = 0
        for block in blocks:
            chars += block.chars
            cum.append(chars // _CHARS_PER_TOKEN)
        minimum = min_cacheable_tokens(model)
        last = marks[-1]
        if cum[last] < minimum:
            return _NO_CACHE
        now = self._clock.now()
        hit = -1
        for bp in marks:
            reach = blocks[bp].position - LOOKBACK_BLOCKS  # positions at or below this are out of the window
            for i in range(bp, hit, -1):
                if blocks[i].position <= reach:
                    break
                if self._live(blocks[i].key, now):
                    hit = i
                    break
        read = cum[hit] if hit >= 0 else 0
        if hit >= 0:
            self._put(blocks[hit].key, self._entries[blocks[hit].key][1], now)
        upto_1h = read
        for bp in marks:
            block = blocks[bp]
            if cum[bp] >= minimum:
                self._put(block.key, block.ttl or ANTHROPIC_TTL_5M, now)
            if bp > hit and block.ttl == ANTHROPIC_TTL_1H:
                upto_1h = cum[bp]
        return CacheSplit(read, cum[last] - read, upto_1h - read)

    # -------------------------------------------------------------- OpenAI

    def openai(self, chat: dict[str, Any], request: dict[str, Any] | None = None) -> CacheSplit:
        """Automatic prefix caching for a chat-shaped prompt (``request`` carries the key and retention)."""
        request = chat if request is None else request
        tools = chat.get("tools")
        data = (_dumps(tools) if tools else b"") + _dumps(chat.get("messages") or [])
        chunks = len(data) // _CHUNK_CHARS
        if len(data) // _CHARS_PER_TOKEN < OPENAI_MIN_TOKENS:
            return _NO_CACHE
        model = given if isinstance(given := request.get("model"), str) else ""
        key = request.get("prompt_cache_key")
        ttl = OPENAI_EXTENDED_TTL if request.get("prompt_cache_retention") == "24h" else OPENAI_IDLE_TTL
        namespace = b"openai\0" + model.encode() + (b"\0" + str(key).encode() if key else b"")
        h = hashlib.blake2b(namespace, digest_size=16)
        now = self._clock.now()
        matched, keys = 0, []
        view = memoryview(data)
        for k in range(chunks):
            h.update(view[k * _CHUNK_CHARS:(k + 1) * _CHUNK_CHARS])
            digest = h.copy().digest()
            keys.append(digest)
            if matched == k and self._live(digest, now):
                matched += 1
        for digest in keys:
            self._put(digest, ttl, now)
        cached = matched * OPENAI_STEP_TOKENS
        return CacheSplit(cached if cached >= OPENAI_MIN_TOKENS else 0)
