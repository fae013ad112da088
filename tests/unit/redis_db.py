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
