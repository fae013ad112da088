"""The Redis database the unit tests own (announced in the README), and a skip when none answers."""

from __future__ import annotations

import os

import pytest

from tests import needs

REDIS = os.environ.get("CASCADEFLOW_TEST_REDIS_UNIT", "redis://127.0.0.1:6379/8")


async def require_redis() -> str:
    """The unit tests' Redis URL; skips the test when nothing answers there."""
    import redis.asyncio as redis

    probe = redis.Redis.from_url(REDIS)
    try:
        await probe.ping()
    except Exception:  # noqa: BLE001 - any failure to reach it means: no Redis here
        pytest.skip(needs.redis(REDIS, "CASCADEFLOW_TEST_REDIS_UNIT"))
    finally:
        await probe.aclose()
    return REDIS


#: a script that keeps Redis busy for ARGV[1] seconds (as ``DEBUG SLEEP`` would, which servers often refuse)
_BUSY = """
local t = redis.call('TIME')
local start = t[1] + t[2] / 1e6
while true do
  local n = redis.call('TIME')
  if n[1] + n[2] / 1e6 - start > tonumber(ARGV[1]) then return 1 end
end
"""


def stall(url: str, seconds: float):  # type: ignore[no-untyped-def]
    """Make the Redis at ``url`` answer nothing for ``seconds`` (from now, in a thread); returns the thread.

    Commands that arrive meanwhile wait on their sockets and run when it resumes, even those
    whose callers have given up: the case a lost reply must be safe in.
    """
    import threading
    import time

    import redis

    client = redis.Redis.from_url(url, socket_timeout=seconds + 10)
    client.ping()
    thread = threading.Thread(target=client.eval, args=(_BUSY, 0, seconds), daemon=True)
    thread.start()
    time.sleep(0.05)  # the script has started
    return thread
