"""What owning a stream's life costs: GatewayStream against starlette's StreamingResponse.

Both answer the same in-memory stream (``--chunks`` events of a typical delta's size) to an
ASGI ``send`` that only collects, with a ``receive`` that waits for a disconnect that never
comes, as uvicorn's does; the accounting callback does nothing. The difference per stream is
what the lifecycle class adds (or saves) on every streamed request.

    python benchmarks/stream_lifecycle.py [--streams 20000] [--chunks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from starlette.responses import StreamingResponse

from cascadeflow.gateway.streaming import GatewayStream, StreamOutcome

CHUNK = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
         b'"delta":{"type":"text_delta","text":"word "}}\n\n')
SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}}


async def _source(chunks: int):
    for _ in range(chunks):
        yield CHUNK


async def _settle(outcome: StreamOutcome) -> None:
    return None


async def _run(kind: str, streams: int, chunks: int) -> float:
    never = asyncio.Event()

    async def receive() -> dict:
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        return None

    started = time.perf_counter()
    for _ in range(streams):
        if kind == "GatewayStream":
            response = GatewayStream(_source(chunks), 200, {"x-request-id": "r"}, dialect="anthropic",
                                     request_id="r", settle=_settle)
        else:
            response = StreamingResponse(_source(chunks), 200, {"x-request-id": "r"}, media_type="text/event-stream")
        await response(SCOPE, receive, send)
    return (time.perf_counter() - started) / streams * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=20_000)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"StreamingResponse": [], "GatewayStream": []}
    for _ in range(3):  # interleaved rounds: a loaded machine affects both alike
        for kind in results:
            results[kind].append(asyncio.run(_run(kind, args.streams, args.chunks)))
    print(f"{args.streams} streams of {args.chunks} chunks, best of 3 rounds (µs per stream)")
    print(f"{'response class':<20} {'µs/stream':>10}")
    for kind, figures in results.items():
        print(f"{kind:<20} {min(figures):>10.1f}")
    print(f"{'difference':<20} {min(results['GatewayStream']) - min(results['StreamingResponse']):>+10.1f}")


if __name__ == "__main__":
    main()
