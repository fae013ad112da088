"""Where each message of a request lies in its bytes, to tell what a conversation's next request repeats.

A conversation's next request repeats the previous one almost whole: the tools, the system
prompt and the earlier messages. Telling which messages it repeats by comparing parsed values
walks two object graphs of the size of the prompt, one of them cold in memory (~120 µs at 200
blocks); comparing the request's bytes with the previous request's is one ``memcmp`` over
contiguous memory (~10 µs).

A :class:`Layout` holds a request's bytes and, for its ``messages`` array, the offset where it
starts, where each message ends and where the array closes. It exists only where the bytes are
checked to be exactly the compact JSON of the parsed messages (``orjson.dumps`` of each, in
order, comma-separated — what ``JSON.stringify`` writes, so Claude Code's and Codex's requests
qualify); any other body (pretty-printed, reordered keys, other number forms) has none, and the
caller compares parsed values instead.

Why the bytes prove equality of values: where the next request's bytes up to the end of message
``k - 1`` equal the previous request's (its head — everything before the array — included), the
parser read both identically up to there; where its other messages serialise to its remaining
array bytes, the array closes where the previous one did relative to the end, and everything
after the array equals the previous request's, its parse outside the array is the previous one's
too. So its tools, system prompt and first ``k`` messages are the previous request's, key order
included — whichever of several duplicate keys a parser keeps, since the bytes around are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

__all__ = ["Layout", "layout_of", "repeated"]

_KEY = b'"messages":['


@dataclass(frozen=True, slots=True)
class Layout:
    """A request's bytes and where its ``messages`` array's parts are in them."""

    raw: bytes
    #: offset of the first message (just after ``[``)
    start: int
    #: offset just after each message
    ends: tuple[int, ...]
    #: offset of the ``]`` that closes the array (what follows, to the end, is the tail)
    close: int

    def bound(self, k: int) -> int:
        """Offset just after message ``k - 1`` (``start`` for ``k == 0``): the bytes before it hold the head
        and messages ``0 .. k-1``."""
        return self.ends[k - 1] if k else self.start


def layout_of(raw: bytes, messages: list, key: bytes = _KEY) -> Layout | None:
    """``raw``'s layout, where ``messages`` (its parsed array) is written compactly at the first ``key``
    (``"messages":[``; a Responses request's ``"input":[``)."""
    found = raw.find(key)
    if found < 0:
        return None
    start = found + len(key)
    ends = _walk(raw, messages, 0, start)
    if ends is None:
        return None
    close = ends[-1] if ends else start
    return Layout(raw, start, tuple(ends), close) if raw[close : close + 1] == b"]" else None


def repeated(old: Layout, raw: bytes, messages: list) -> tuple[int, Layout] | None:
    """(how many leading messages ``raw`` repeats from ``old``'s request, ``raw``'s layout), where everything
    outside its messages (head and tail) is ``old``'s byte for byte; None otherwise (compare values then)."""
    previous, n = old.raw, len(old.ends)
    view = memoryview(previous)
    tail = len(previous) - old.close
    if len(raw) - tail < old.start or not raw.endswith(view[old.close :]):
        return None
    # the longest repeated run of messages: usually all but the last (its breakpoint moved), at most all
    kept = min(n, len(messages))
    guess = max(0, kept - 1)
    if raw.startswith(view[: old.bound(guess)]):
        while guess < kept and raw.startswith(view[old.bound(guess) : old.ends[guess]], old.bound(guess)):
            guess += 1
        kept = guess
    else:  # an edited history: the first changed message, by bisection (a prefix that differs stays different)
        if not raw.startswith(view[: old.start]):
            return None  # the head changed (another model, another field): start afresh
        low, high = 0, guess  # bound(low) repeats, bound(high) does not
        while high - low > 1:
            middle = (low + high) // 2
            if raw.startswith(view[: old.bound(middle)]):
                low = middle
            else:
                high = middle
        kept = low
    new = _walk(raw, messages, kept, old.bound(kept))
    if new is None:
        return None
    ends = old.ends[:kept] + tuple(new)
    close = ends[-1] if ends else old.start
    if close != len(raw) - tail:
        return None
    return kept, Layout(raw, old.start, ends, close)


def _walk(raw: bytes, messages: list, first: int, at: int) -> list[int] | None:
    """The offsets just after messages ``first ..`` when each is written compactly from ``at`` on (None if not)."""
    ends = []
    for j in range(first, len(messages)):
        if j:
            if raw[at : at + 1] != b",":
                return None
            at += 1
        try:
            data = orjson.dumps(messages[j])
        except TypeError:
            return None
        if not raw.startswith(data, at):
            return None
        at += len(data)
        ends.append(at)
    return ends
