import orjson
from hypothesis import given
from hypothesis import strategies as st

from cascadeflow.dialects import SSEDecoder, encode_event
from cascadeflow.dialects.anthropic import AnthropicStreamTap
from cascadeflow.dialects.openai import OpenAIStreamTap
from cascadeflow.usage import Usage


def anthropic_stream() -> bytes:
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 12, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(encode_event(orjson.dumps(data), name) for name, data in events)


@given(st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=30))
def test_sse_decoder_is_independent_of_chunking(cuts):
    data = anthropic_stream().replace(b"\n", b"\r\n")
    decoder = SSEDecoder()
    events, pos = [], 0
    for size in cuts:
        events += decoder.feed(data[pos : pos + size])
        pos += size
    events += decoder.feed(data[pos:])
    assert [e.event for e in events] == [
        "message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]
    assert orjson.loads(events[3].data)["delta"]["text"] == "hi"
    assert decoder.pending == b""


def test_anthropic_tap_reads_usage_and_forwards_bytes_unchanged():
    data = anthropic_stream()
    tap = AnthropicStreamTap()
    out = b"".join(tap.feed(data[i : i + 17]) for i in range(0, len(data), 17))
    assert out == data
    assert tap.complete
    assert tap.usage == Usage(input_tokens=12, output_tokens=42, cache_write_tokens=7, cache_read_tokens=100)


def test_anthropic_tap_notices_a_cut_stream():
    data = anthropic_stream()
    tap = AnthropicStreamTap()
    tap.feed(data[: data.index(b"event: message_delta")])
    assert not tap.complete and tap.usage.input_tokens == 12


def openai_stream(with_usage: bool) -> bytes:
    chunks = [
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None},
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hello"}}], "usage": None},
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
    ]
    if with_usage:
        chunks.append({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35, "prompt_tokens_details": {"cached_tokens": 10}}})
    return b"".join(encode_event(orjson.dumps(c)) for c in chunks) + b"data: [DONE]\n\n"


def test_openai_tap_strips_the_usage_chunk_it_asked_for():
    tap = OpenAIStreamTap(strip_usage=True)
    data = openai_stream(with_usage=True)
    out = b"".join(tap.feed(data[i : i + 23]) for i in range(0, len(data), 23)) + tap.flush()
    assert out == openai_stream(with_usage=False)
    assert tap.complete
    assert tap.usage == Usage(input_tokens=20, output_tokens=5, cache_read_tokens=10)


def test_openai_tap_keeps_usage_chunk_the_caller_asked_for():
    tap = OpenAIStreamTap(strip_usage=False)
    data = openai_stream(with_usage=True)
    assert tap.feed(data) == data
    assert tap.usage.output_tokens == 5 and tap.complete


_LINE = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)


@given(st.lists(st.tuples(st.sampled_from(["data", "event", "", "id", "data:", "event:"]), _LINE), min_size=1, max_size=4))
def test_sse_fast_shapes_read_as_the_spec_reads_them(lines):
    """Whatever the lines, the decoder reads an event as the SSE spec does (its fast path for the usual shapes too)."""
    raw = b"".join((f"{field}: {value}" if field and not field.endswith(":") else f"{field}{value}").encode() + b"\n"
                   for field, value in lines) + b"\n"
    if b"\n\n" in raw[:-2]:
        return  # an empty line inside: two events, not one
    name, data = None, []
    for line in raw.decode().split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    events = SSEDecoder().feed(raw)
    if name is None and not data:
        assert events == []
    else:
        assert [(e.event, e.data.decode()) for e in events] == [(name, "\n".join(data))]
