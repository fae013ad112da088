"""The streams of a cascade: a draft's read (early checks as it arrives) and the verifier's relay to the client.

A draft is buffered whole before the client sees a byte (:func:`read_draft`); the verifier's
stream goes through as it comes (:func:`relay`), renamed when the client must see another
model name, and read along when shadow mode wants its answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dialects.accumulate import OpenAIAccumulator
from ..dialects.sse import SSEDecoder
from .checks import run_early

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from ..dialects.accumulate import AnthropicAccumulator
    from ..proxy import ProxyStream
    from .answer import Check, CheckResult
    from .drafts import DialectOps

    Accumulator = AnthropicAccumulator | OpenAIAccumulator

__all__ = ["read_draft", "relay", "once"]

_EARLY_EVERY = 8  # run early checks every N delta events (and at every block end)


async def read_draft(
    checks: Iterable[Check], upstream: ProxyStream, accumulator: Accumulator, caller: dict, dialect: str,
) -> CheckResult | None:
    """Buffer the draft's events; return the early check that failed it, if one did."""
    decoder = SSEDecoder()
    deltas = 0
    async for chunk in upstream:
        for event in decoder.feed(chunk):
            closed = accumulator.feed(event)
            deltas += 1
            if closed is None and deltas % _EARLY_EVERY:
                continue
            answer = accumulator.answer(partial=True)
            # only calls known to be complete are judged early
            if isinstance(accumulator, OpenAIAccumulator):  # the openai dialect's
                done = set(accumulator.closed_tool_calls)
                answer.tool_calls = [c for i, c in enumerate(answer.tool_calls) if i in done]
            elif closed is None:
                answer.tool_calls = []
            failed = run_early(checks, caller, answer, dialect)
            if failed is not None:
                await upstream.aclose()
                return failed
    return None


async def relay(
    upstream: ProxyStream, ops: DialectOps, reported: str, verifier: str, read_along: bool,
    ended: Callable[[Accumulator | None], None],
) -> AsyncIterator[bytes]:
    """The verifier's stream to the client, renamed to ``reported`` when it is not ``verifier``.

    With ``read_along`` its answer is also accumulated. However the stream ends (read out, or
    closed early because the client left: the upstream's own accounting runs first),
    ``ended(accumulator)`` is called once (the accumulator is None without ``read_along``).
    """
    rename = reported != verifier
    decoder = SSEDecoder() if rename or read_along else None
    accumulator = ops.accumulator() if read_along else None
    exhausted = False
    try:
        async for chunk in upstream:
            if decoder is None:
                yield chunk
                continue
            events = decoder.feed(chunk)
            if accumulator is not None:
                for event in events:
                    accumulator.feed(event)
            if not rename:
                yield chunk
            elif events:
                yield ops.rename_events(events, reported)
        if rename and decoder is not None and decoder.pending:
            yield decoder.pending
        exhausted = True
    finally:
        if not exhausted:  # closed early (the client left): the upstream's own accounting runs first
            await upstream.aclose()
        ended(accumulator)


async def once(body: bytes) -> AsyncIterator[bytes]:
    yield body
