"""What the benchmark scripts share: free ports and waiting for a server to answer."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_ready(url: str, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers below 500, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def gateway_env(folder: str | Path) -> dict[str, str]:
    """The environment for a benchmark's gateway: its own data directory, and no ``CASCADEFLOW_*``
    variable of the user's overriding the benchmark's config (a ``CASCADEFLOW_DATABASE_URL`` would
    otherwise send the benchmark's rows into the user's ledger)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADEFLOW_")}
    env["CASCADEFLOW_DATA_DIR"] = str(Path(folder) / "data")
    return env


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0–1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
