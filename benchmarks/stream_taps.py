"""What reading a stream on the side costs per event, for each dialect's tap.

Every streamed answer the gateway relays is read on the side by its dialect's tap (usage, the end
of the stream, an error event, the characters generated, a malformed event). The streams here are
the shapes the APIs send (an OpenAI chunk as the simulator writes it: id, fingerprint, one choice):
a start, ``--events`` text deltas of a few words with quotes and line breaks in them, and the end.
They are fed as one event a chunk (an upstream generating token by token), four events a chunk,
and the whole stream as one chunk (an upstream faster than the gateway reads); µs of CPU per
event, the best of seven repetitions.

    python benchmarks/stream_taps.py [--events 400]

The taps tell a plain delta from its bytes and read the other events with the SSE decoder
(:class:`cascadeflow.dialects.sse.StreamTap`). Four alternating runs against the taps that decoded
every event, on a shared 2-core machine (a VM with noisy neighbours: single runs moved by up to 2x),
best figure of each (one event a chunk / four / the whole stream): Anthropic 3.38 / 2.94 / 2.66 µs
before, 2.43 / 2.24 / 2.03 after; OpenAI 5.59 / 4.81 / 4.71 before, 3.23 / 2.94 / 2.84 after (a
third of its deltas hold an escaped quote, which made the old tap parse the event); Responses
3.79 / 3.06 / 2.87 before, 2.74 / 2.43 / 2.27 after.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import orjson

from cascadeflow.dialects import encode_event
from cascadeflow.dialects.anthropic import AnthropicStreamTap
from cascadeflow.dialects.openai import OpenAIStreamTap
from cascadeflow.dialects.responses import ResponsesStreamTap
from cascadeflow.dialects.sse import StreamTap


def anthropic(texts: list[str]) -> list[bytes]:
    events = [("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role":
                                                                        "assistant", "usage": {"input_tokens": 9}}}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": text}}) for text in texts]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": 3 * len(texts)}}),
               ("message_stop", {"type": "message_stop"})]
    return [encode_event(orjson.dumps(data), name) for name, data in events]


def openai(texts: list[str]) -> list[bytes]:
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return encode_event(orjson.dumps({
            "id": "chatcmpl-2aa429c9d0121770ad8a0501", "object": "chat.completion.chunk", "created": 1796313729,
            "model": "gpt-5.4-mini", "service_tier": "default", "system_fingerprint": "fp_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}))

    return [chunk({"role": "assistant", "content": ""}), *(chunk({"content": text}) for text in texts),
            chunk({}, "stop"), b"data: [DONE]\n\n"]


def responses(texts: list[str]) -> list[bytes]:
    events = [("response.created", {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})]
    events += [("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": n,
                                               "item_id": "msg_1", "output_index": 0, "content_index": 0,
                                               "delta": text}) for n, text in enumerate(texts)]
    events.append(("response.completed", {"type": "response.completed", "response": {
        "id": "resp_1", "status": "completed", "usage": {"input_tokens": 9, "output_tokens": 3 * len(texts)}}}))
    return [encode_event(orjson.dumps(data), name) for name, data in events]


def per_event(make: Callable[[], StreamTap], chunks: list[bytes], events: int) -> float:
    def read() -> None:
        tap = make()
        for chunk in chunks:
            tap.feed(chunk)

    return min(timeit.repeat(read, number=10, repeat=7)) / 10 / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=400, help="text deltas per stream")
    args = parser.parse_args()
    texts = [f'word{n} said "{n % 7}",\n' if n % 3 == 0 else f" word{n} and more" for n in range(args.events)]
    print(f"µs of CPU per event, {args.events} text deltas a stream (best of 7)")
    print("| dialect | one event a chunk | four events a chunk | the whole stream in one chunk |")
    print("|---|---|---|---|")
    for name, stream, make in (("anthropic", anthropic, AnthropicStreamTap), ("openai", openai, OpenAIStreamTap),
                               ("responses", responses, ResponsesStreamTap)):
        events = stream(texts)
        fours = [b"".join(events[i:i + 4]) for i in range(0, len(events), 4)]
        figures = [per_event(make, chunks, len(events)) for chunks in (events, fours, [b"".join(events)])]
        print(f"| {name} | " + " | ".join(f"{figure:.2f}" for figure in figures) + " |", flush=True)


if __name__ == "__main__":
    main()
