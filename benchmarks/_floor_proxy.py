"""The floor: a bare aiohttp + uvloop pass-through, the least a Python proxy can do per request.

    python benchmarks/_floor_proxy.py UPSTREAM_URL PORT

Every request is forwarded to ``UPSTREAM_URL`` + its path with its body and headers (less the
hop-by-hop ones and ``host``), and the answer relayed: its status and headers, its body read
whole, or chunk by chunk as it arrives when it is a stream. No parsing, no auth, no record —
what ``floor.py`` compares the gateway's CPU per request with.
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"})


def app(upstream: str) -> web.Application:
    application = web.Application()

    async def start(_: web.Application) -> None:
        application["client"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def stop(_: web.Application) -> None:
        await application["client"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with application["client"].request(request.method, upstream + request.path_qs, data=body,
                                                 headers=headers) as answer:
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            if answer.content_type != "text/event-stream":
                return web.Response(status=answer.status, headers=out, body=await answer.read())
            response = web.StreamResponse(status=answer.status, headers=out)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    application.on_startup.append(start)
    application.on_cleanup.append(stop)
    application.router.add_route("*", "/{tail:.*}", forward)
    return application


if __name__ == "__main__":
    uvloop.install()
    web.run_app(app(sys.argv[1].rstrip("/")), host="127.0.0.1", port=int(sys.argv[2]), access_log=None,
                print=None)
