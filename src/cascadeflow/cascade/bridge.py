"""The bridging breakpoint: a model reads the prefix its cache still holds after a run it did not serve.

Anthropic looks a cache entry up from each ``cache_control`` breakpoint back over at
most :data:`~cascadeflow.sessions.cache.LOOKBACK` positions (a block, or a run of
consecutive ``tool_use`` or ``tool_result`` blocks), and takes at most 4 breakpoints. Claude Code marks two system blocks and the newest block; each drafted turn
adds about two blocks, so after ten drafted turns the requested model's last cached
prefix lies beyond the newest breakpoint's reach although it is still live, and the
next escalation would write it all again at 1.25× input. The same holds for a draft
model coming back after the verifier served a run.

So before an Anthropic upstream call of a conversation, where the target model's cache
shadow holds a live prefix longer than anything the request's own breakpoints reach,
and the request has fewer than 4 breakpoints, the copy sent upstream gets one more
``cache_control: {"type": "ephemeral"}`` at the block that ends that prefix (or, where
that block cannot carry one — a string content, a thinking block, an empty text — at
the nearest later block that can and still reaches it). The upstream then reads the
prefix instead of writing it. What the client sent, and what it gets back, are
untouched. A bridge never costs more than no bridge: Anthropic bills writes from the
longest read prefix to the last breakpoint, and the bridge is never the last.

The mark is ``1h`` where a ``1h`` breakpoint follows it (a ``1h`` breakpoint must not
come after a ``5m`` one; a request that already breaks that rule is left alone).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import replace
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING

from ..sessions.cache import LOOKBACK, CacheShadow, PromptShape

if TYPE_CHECKING:
    from ..proxy import ProxyRequest
    from .session import Turn

__all__ = ["MAX_BREAKPOINTS", "add_bridge", "bridged", "find_bridge", "with_bridge"]

#: the Messages API refuses more ``cache_control`` blocks than this
MAX_BREAKPOINTS = 4
_TTL_5M, _TTL_1H = 300.0, 3600.0
_CANNOT_MARK = ("thinking", "redacted_thinking")


def bridged(turn: Turn | None, model: str, request: ProxyRequest) -> ProxyRequest:
    """``request`` for ``model`` with a bridging breakpoint where one pays (the same request otherwise); on a
    translated prompt, the translation adds it (:attr:`~cascadeflow.proxy.ProxyRequest.cache_bridge`)."""
    if turn is None or request.body is None:
        return request
    if turn.prompt is not None:
        if turn.bridge_end(model) is None:
            return request
        return replace(request, cache_bridge=partial(turn.bridge, model))
    body = turn.bridge(model, request.body)
    return request if body is request.body else request.derive(body)


def find_bridge(shape: PromptShape, shadow: CacheShadow | None, now: float) -> int | None:
    """The block that ends the longest live prefix of ``shadow`` the breakpoints of ``shape`` cannot reach.

    None where there is none, the request has no free breakpoint, or the prefix ends at or after
    the request's last breakpoint. Looks at the shadow's entries only (at most 12), never walks the prompt.
    """
    points = shape.breakpoints
    if shape.rules != "anthropic" or not points or len(points) >= MAX_BREAKPOINTS or shadow is None:
        return None
    longest = _longest(shape, shadow, now)
    if longest < 0 or longest >= points[-1][0]:
        return None
    # a breakpoint within LOOKBACK positions after it finds it: no live entry lies between (it would be longer)
    positions = shape.positions
    if any(longest <= index and positions[index] - positions[longest] < LOOKBACK for index, _ in points):
        return None
    return longest


def _longest(shape: PromptShape, shadow: CacheShadow, now: float) -> int:
    """The block ending the longest live entry of ``shadow`` that is a prefix of ``shape`` (-1: none).

    Looks at the shadow's entries only (at most a dozen), longest first: usually the first is this
    prompt's prefix, and a single bisection finds its block. (Entries of equal length are taken in any
    order: at most one of them is this prompt's prefix.)"""
    ends, hashes = shape.ends, shape.hashes
    for key, (chars, expiry) in sorted(shadow.entries.items(), key=itemgetter(1), reverse=True):
        if expiry > now:
            i = bisect_left(ends, chars)
            if i < len(ends) and ends[i] == chars and hashes[i] == key:
                return i
    return -1


def add_bridge(body: dict, client: dict, shape: PromptShape, end: int) -> tuple[dict, PromptShape] | None:
    """``body`` (the copy for upstream) with a breakpoint that reaches block ``end`` of ``client``'s prompt.

    ``shape`` is ``client``'s; ``body`` may differ from ``client`` in a message's content (a model's view
    of thinking blocks), in which case a block is marked only where both hold the same block. Returns
    the new body and the shape as the upstream caches it, or None where no block can carry the mark.
    """
    if _marks(body) >= MAX_BREAKPOINTS:
        return None
    points = shape.breakpoints
    # the last block whose lookback still reaches block ``end``: LOOKBACK positions, its own included
    reach = bisect_right(shape.positions, shape.positions[end] + LOOKBACK - 1) - 1
    stop = min(reach, points[-1][0] - 1)
    places = _places(client, shape.blocks)
    if places is None:
        return None
    for index in range(end, stop + 1):
        if any(i == index for i, _ in points):
            return None  # an existing breakpoint sits between: it would have reached the prefix
        marked = _marked(body, client, places[index])
        if marked is not None:
            later_1h = any(ttl == _TTL_1H for i, ttl in points if i > index)
            if later_1h and any(ttl != _TTL_1H for i, ttl in points if i < index):
                return None  # the request already puts a 1h breakpoint after a 5m one: left as it is
            marked_body = _with_mark(body, places[index], "1h" if later_1h else None)
            return marked_body, with_bridge(shape, index, _TTL_1H if later_1h else _TTL_5M)
    return None


def with_bridge(shape: PromptShape, index: int, ttl: float = _TTL_5M) -> PromptShape:
    """``shape`` with one more breakpoint, at block ``index`` (the hashes do not change: a mark is not hashed)."""
    return PromptShape(shape.hashes, shape.ends, tuple(sorted((*shape.breakpoints, (index, ttl)))), shape.rules,
                       shape.positions)


def _places(body: dict, blocks: int) -> list[tuple[str, int, int]] | None:
    """Where each block of the prompt is: (section, index, index in the message's content or -1);
    None where the count differs from the shape's (the shape was not made from this body)."""
    places: list[tuple[str, int, int]] = [("tools", i, -1) for i in range(len(body.get("tools") or ()))]
    system = body.get("system")
    if isinstance(system, list):
        places.extend(("system", i, -1) for i in range(len(system)))
    elif system is not None:
        places.append(("system", -1, -1))
    messages = body.get("messages")
    for m, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            places.extend(("messages", m, b) for b in range(len(content)))
        elif content is not None:
            places.append(("messages", m, -1))
    return places if len(places) == blocks else None


def _block_at(body: dict, place: tuple[str, int, int]) -> object:
    section, i, b = place
    items = body.get(section)
    if not isinstance(items, list) or not 0 <= i < len(items):
        return None
    item = items[i]
    if section != "messages":
        return item
    content = item.get("content") if isinstance(item, dict) else None
    return content[b] if isinstance(content, list) and 0 <= b < len(content) else None


def _marked(body: dict, client: dict, place: tuple[str, int, int]) -> object:
    """The block at ``place`` where it can carry a breakpoint and ``body`` holds the client's own."""
    if place[1] < 0 or (place[0] == "messages" and place[2] < 0):
        return None  # a string: converting it to a block would change the prompt the upstream hashes
    block = _block_at(client, place)
    if not isinstance(block, dict) or block.get("type") in _CANNOT_MARK or block.get("cache_control"):
        return None
    if block.get("type") == "text" and not block.get("text"):
        return None  # the API refuses cache_control on an empty text block
    sent = _block_at(body, place)
    return block if sent is block or sent == block else None


def _with_mark(body: dict, place: tuple[str, int, int], ttl: str | None) -> dict:
    """A copy of ``body`` with ``cache_control`` on the block at ``place``; nothing of ``body`` is changed."""
    section, i, b = place
    mark: dict = {"type": "ephemeral"} if ttl is None else {"type": "ephemeral", "ttl": ttl}
    items = list(body[section])
    if section == "messages":
        message = dict(items[i])
        content = list(message["content"])
        content[b] = {**content[b], "cache_control": mark}
        message["content"] = content
        items[i] = message
    else:
        items[i] = {**items[i], "cache_control": mark}
    return {**body, section: items}


def _marks(body: dict) -> int:
    """The breakpoints the API counts in ``body`` (a mark inside a tool result's content counts too)."""
    count = 1 if body.get("cache_control") else 0
    for section in ("tools", "system"):
        items = body.get(section)
        count += sum(1 for item in items if isinstance(item, dict) and item.get("cache_control")) \
            if isinstance(items, list) else 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            count += 1 if block.get("cache_control") else 0
            inner = block.get("content") if block.get("type") == "tool_result" else None
            count += sum(1 for part in inner if isinstance(part, dict) and part.get("cache_control")) \
                if isinstance(inner, list) else 0
    return count
