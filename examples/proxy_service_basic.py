"""The proxy library end to end: two routes, a router, a handler with a cost tracker.

Runs against the real APIs (set OPENAI_API_KEY), or against the simulated provider:

    cascadeflow simulate --port 9312 &
    OPENAI_BASE_URL=http://127.0.0.1:9312 OPENAI_API_KEY=x python examples/proxy_service_basic.py

See docs/proxy-library.md.
"""

import asyncio
import os

from cascadeflow.proxy import ProxyHandler, ProxyRequest, ProxyRoute, ProxyRouter, ProxyService
from cascadeflow.telemetry import CostTracker

routes = [
    ProxyRoute(
        name="openai",
        provider="openai",
        base_url=os.getenv("OPENAI_BASE_URL", "https://api.openai.com"),
        api_key=os.getenv("OPENAI_API_KEY"),
        models={"gpt-4o", "gpt-4o-mini"},
    ),
    ProxyRoute(
        name="anthropic",
        provider="anthropic",
        base_url=os.getenv("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
        api_key=os.getenv("ANTHROPIC_API_KEY"),
        models={"claude-3-5-sonnet"},
    ),
]

router = ProxyRouter(routes)
tracker = CostTracker()
handler = ProxyHandler(cost_tracker=tracker)
service = ProxyService(router, handler)

request = ProxyRequest(
    method="POST",
    path="/v1/chat/completions",
    headers={"x-correlation-id": "trace-001"},
    body={
        "model": "openai:gpt-4o",
        "messages": [{"role": "user", "content": "Hello"}],
    },
)


async def main() -> None:
    try:
        result = await service.handle(request)
        print(result.data)
        print(result.cost)
    finally:
        await service.aclose()


asyncio.run(main())
