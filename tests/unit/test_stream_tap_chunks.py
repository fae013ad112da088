"""A stream tap reads a chunk of whole delta events in bulk (``counted_deltas``) and anything else event by event:
whatever the chunking, it must end in the same state as reading the stream one byte at a time (never in bulk)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascadeflow.dialects import encode_event
from cascadeflow.dialects.anthropic import AnthropicStreamTap
from cascadeflow.dialects.openai import OpenAIStreamTap
from cascadeflow.dialects.responses import ResponsesStreamTap
from cascadeflow.dialects.sse import SSEDecoder, StreamTap

#: text with what makes JSON strings hard: quotes, backslashes, line breaks, non-ASCII, and SSE-looking bytes
TEXT = st.lists(st.sampled_from(['a', 'Z', ' ', '"', '\\', '\n', '\r', 'é', '→', '}', '{', 'data: {', '\n\n', '"delta"']),
               max_size=12).map("".join)


def anthropic_events(draw: st.DrawFn) -> list[bytes]:
    delta = st.one_of(
        TEXT.map(lambda t: {"type": "text_delta", "text": t}),
        TEXT.map(lambda t: {"type": "thinking_delta", "thinking": t}),
        TEXT.map(lambda t: {"type": "input_json_delta", "partial_json": t}),
        TEXT.map(lambda t: {"type": "signature_delta", "signature": t}),
    )
    deltas = draw(st.lists(delta, max_size=8))
    events = [("message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 9}}}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": draw(st.integers(0, 12)), "delta": d})
               for d in deltas]
    events.insert(draw(st.integers(2, len(events))), ("ping", {"type": "ping"}))
    if draw(st.booleans()):
        events += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                      "usage": {"output_tokens": draw(st.integers(0, 99))}}),
                   ("message_stop", {"type": "message_stop"})]
    return [encode_event(orjson.dumps(data), name) for name, data in events]


def openai_events(draw: st.DrawFn) -> list[bytes]:
    def chunk(delta: dict, **extra: object) -> dict:
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **extra}

    delta = st.one_of(
        TEXT.map(lambda t: chunk({"content": t})),
        TEXT.map(lambda t: chunk({"content": t}, usage=None)),
        TEXT.map(lambda t: chunk({"content": t}, usage={"prompt_tokens": 3, "completion_tokens": 4})),  # vLLM-style
        TEXT.map(lambda t: chunk({"reasoning_content": t})),
        TEXT.map(lambda t: chunk({"tool_calls": [{"index": 0, "function": {"arguments": t}}]})),
    )
    events = [chunk({"role": "assistant", "content": ""}), *draw(st.lists(delta, max_size=8))]
    if draw(st.booleans()):
        events.append({"id": "c", "object": "chat.completion.chunk", "choices": [],
                       "usage": {"prompt_tokens": 30, "completion_tokens": draw(st.integers(0, 99))}})
    out = [encode_event(orjson.dumps(e)) for e in events]
    return out + [b"data: [DONE]\n\n"] if draw(st.booleans()) else out


def responses_events(draw: st.DrawFn) -> list[bytes]:
    kind = st.sampled_from(["response.output_text.delta", "response.reasoning_text.delta",
                            "response.function_call_arguments.delta"])
    deltas = draw(st.lists(st.tuples(kind, TEXT), max_size=8))
    events = [("response.created", {"type": "response.created", "response": {"id": "r"}})]
    events += [(name, {"type": name, "item_id": "i", "output_index": 0, "delta": text, "sequence_number": n})
               for n, (name, text) in enumerate(deltas)]
    if draw(st.booleans()):
        events.append(("response.completed", {"type": "response.completed", "response": {
            "id": "r", "usage": {"input_tokens": 5, "output_tokens": draw(st.integers(0, 99))}}}))
    return [encode_event(orjson.dumps(data), name) for name, data in events]


def state(tap: StreamTap, out: bytes) -> tuple:
    return (out, tap.usage, tap.complete, tap.error, tap.started, tap.malformed, tap.generated_chars)


def read(tap: StreamTap, chunks: list[bytes]) -> tuple:
    out = b"".join(tap.feed(chunk) for chunk in chunks)
    return state(tap, out + tap.flush())


TAPS = {
    "anthropic": (anthropic_events, AnthropicStreamTap),
    "openai": (openai_events, OpenAIStreamTap),
    "openai, usage stripped": (openai_events, lambda: OpenAIStreamTap(strip_usage=True)),
    "responses": (responses_events, ResponsesStreamTap),
}


@pytest.mark.parametrize("dialect", TAPS)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_a_tap_reads_chunks_of_whole_events_as_it_reads_small_pieces(dialect, data):
    """Pieces of 7 bytes never hold a whole event (the shortest has 10), so they are always decoded event by event."""
    events_of, make = TAPS[dialect]
    events = data.draw(st.composite(events_of)())
    stream = b"".join(events)
    if data.draw(st.booleans()):  # chunks of whole events
        cuts = sorted(data.draw(st.sets(st.integers(0, len(events)), max_size=6)))
        chunks = [b"".join(events[a:b]) for a, b in zip([0, *cuts], [*cuts, len(events)]) if a < b]
    else:  # cut anywhere: some chunks end inside an event, the next ones are read whole or by events again
        cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=8)))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)]) if a < b]
    assert read(make(), chunks) == read(make(), [stream[i:i + 7] for i in range(0, len(stream), 7)])


@pytest.mark.parametrize("dialect", TAPS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_tap_stops_at_a_malformed_event_in_a_chunk_of_deltas(dialect, data):
    """An event that is not JSON among deltas: nothing from it on is forwarded, and what came before is counted."""
    events_of, make = TAPS[dialect]
    events = data.draw(st.composite(events_of)())
    bad = data.draw(st.integers(0, len(events)))
    events.insert(bad, b"event: content_block_delta\ndata: oops\n\n" if dialect != "openai" else b"data: oops\n\n")
    whole, before = make(), make()
    assert whole.feed(b"".join(events)) + whole.flush() == b"".join(before.feed(event) for event in events[:bad])
    assert whole.malformed == b"" and whole.generated_chars == before.generated_chars
    assert (whole.usage, whole.complete, whole.error) == (before.usage, before.complete, before.error)


class CountingDecoder(SSEDecoder):
    """Counts the chunks decoded event by event."""

    def __init__(self) -> None:
        super().__init__()
        self.fed = 0

    def feed(self, chunk: bytes) -> list:
        self.fed += 1
        return super().feed(chunk)


def test_a_chunk_of_deltas_is_read_in_bulk_and_counted_as_its_strings_bytes():
    """The bulk path is taken for the usual chunks (else the test above would compare the slow path with itself)."""
    text = 'say "hi"\\n, café'
    counted = len(orjson.dumps(text)) - 2  # the JSON string's bytes, escapes included
    anthropic_delta = encode_event(orjson.dumps({"type": "content_block_delta", "index": 0, "delta": {
        "type": "text_delta", "text": text}}), "content_block_delta")
    cases = [
        (AnthropicStreamTap(), anthropic_delta * 3, 3),
        (OpenAIStreamTap(), encode_event(orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": text}}],
                                                       "usage": None})) * 2, 2),
        (ResponsesStreamTap(), encode_event(orjson.dumps({"type": "response.output_text.delta", "delta": text}),
                                            "response.output_text.delta"), 1),
    ]
    for tap, chunk, deltas in cases:
        tap._decoder = decoder = CountingDecoder()
        assert tap.feed(chunk) == chunk
        assert decoder.fed == 0 and tap.generated_chars == deltas * counted
        assert tap.started is not isinstance(tap, AnthropicStreamTap)  # as decoding would say (message_start does)
        assert tap.feed(b"event: ping\ndata: {}\n\n" if isinstance(tap, AnthropicStreamTap) else b"data: {}\n\n")
        assert decoder.fed == 1  # anything else is decoded event by event
    # a delta whose data spans two lines (SSE joins them): decoded as the SSE spec reads it, not counted in bulk
    tap = AnthropicStreamTap()
    tap._decoder = decoder = CountingDecoder()
    split = anthropic_delta.replace(b'"delta":', b'\ndata: "delta":')
    assert tap.feed(split) == split and decoder.fed == 1 and tap.generated_chars == counted
