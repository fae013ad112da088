"""Soak: many concurrent streams, then steady load, through one gateway process.

Phase 1 holds ``--streams`` (default 1,000) concurrent streaming requests for
``--burst`` seconds: each stream lasts about two seconds (the simulator paces its
events) and is replaced as soon as it ends. Phase 2 sends a steady mix of streaming
and JSON requests from ``--steady-clients`` clients for ``--steady`` seconds. Every
``--every`` seconds it prints the requests finished, errors (must stay 0), latency
percentiles in that window, the gateway's resident memory and its open streams.

    python benchmarks/soak.py                       # 3 min of 1,000 streams, then 10 min steady
    python benchmarks/soak.py --burst 30 --steady 60   # a quick look

Traffic goes only to 127.0.0.1: the simulator and the gateway run as local processes.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import free_port, gateway_env, percentile, wait_ready

STREAM_BODY = {"model": "claude-haiku-5-5", "max_tokens": 400, "stream": True,
               "messages": [{"role": "user", "content": "soak stream"}]}
JSON_BODY = {"model": "claude-haiku-5-5", "max_tokens": 100, "messages": [{"role": "user", "content": "soak json"}]}
SCRIPT = '[{"match": {"prompt_contains": "soak stream"}, "words": 90, "chunk_delay": 0.06}]'


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Window:
    """Counts and latencies since the last report."""

    def __init__(self) -> None:
        self.done, self.errors, self.latencies = 0, 0, []

    def take(self) -> tuple[int, int, list[float]]:
        taken = (self.done, self.errors, self.latencies)
        self.done, self.errors, self.latencies = 0, 0, []
        return taken


async def one(session: aiohttp.ClientSession, url: str, body: dict, window: Window) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, json=body) as response:
            data = await response.read()
            ok = response.status == 200 and (not body.get("stream") or b"message_stop" in data)
    except (TimeoutError, aiohttp.ClientError):
        ok = False
    window.latencies.append((time.perf_counter() - started) * 1000)
    window.done += 1
    window.errors += not ok


async def phase(name: str, gw_url: str, gw_pid: int, clients: int, seconds: float, every: float, mixed: bool) -> int:
    window, errors = Window(), 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def client(index: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                body = JSON_BODY if mixed and (index + n) % 2 else STREAM_BODY
                await one(session, gw_url + "/v1/messages", body, window)
                n += 1

        async def report() -> None:
            nonlocal errors
            started = time.monotonic()
            while True:
                await asyncio.sleep(every)
                done, failed, latencies = window.take()
                errors += failed
                async with session.get(gw_url + "/health") as response:
                    open_streams = (await response.json()).get("active_streams")
                print(f"{name:<7} {time.monotonic() - started:>6.0f}s {done:>8} {failed:>6} "
                      f"{percentile(latencies, 0.5):>9.0f} {percentile(latencies, 0.99):>9.0f} "
                      f"{rss_mb(gw_pid):>9.1f} {open_streams:>7}", flush=True)

        reporter = asyncio.create_task(report())
        await asyncio.gather(*(client(i) for i in range(clients)))
        reporter.cancel()
        done, failed, _ = window.take()
        errors += failed
    return errors


async def main_async(args: argparse.Namespace) -> None:
    sim_port, gw_port = free_port(), free_port()
    folder = Path(tempfile.mkdtemp())
    (folder / "script.json").write_text(SCRIPT)
    (folder / "gw.yaml").write_text(
        f'server: {{port: {gw_port}, log_level: warning}}\n'
        f'database_url: "sqlite:///{folder}/ledger.db"\n'
        f'routes: [{{name: sim, provider: anthropic, base_url: "http://127.0.0.1:{sim_port}", api_key: soak, max_connections: 4096}}]\n'
    )
    exe = [sys.executable, "-m", "cascadeflow.cli"]
    sim = subprocess.Popen([*exe, "simulate", "--port", str(sim_port), "--script", str(folder / "script.json")],
                           stdout=subprocess.DEVNULL)
    gw = subprocess.Popen([*exe, "proxy", "start", "--config", str(folder / "gw.yaml")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=gateway_env(folder))
    gw_url = f"http://127.0.0.1:{gw_port}"
    try:
        await wait_ready(f"http://127.0.0.1:{sim_port}/_sim/health")
        await wait_ready(gw_url + "/health")
        print(f"gateway pid {gw.pid}, RSS at start {rss_mb(gw.pid):.1f} MB")
        print(f"{'phase':<7} {'time':>7} {'finished':>8} {'errors':>6} {'p50 ms':>9} {'p99 ms':>9} {'RSS MB':>9} {'streams':>7}")
        errors = await phase("burst", gw_url, gw.pid, args.streams, args.burst, args.every, mixed=False)
        errors += await phase("steady", gw_url, gw.pid, args.steady_clients, args.steady, args.every, mixed=True)
        print(f"errors in all: {errors}; RSS at the end {rss_mb(gw.pid):.1f} MB")
    finally:
        for process in (gw, sim):
            process.terminate()
        for process in (gw, sim):
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams in the burst")
    parser.add_argument("--burst", type=float, default=180, help="seconds of the burst")
    parser.add_argument("--steady-clients", type=int, default=50)
    parser.add_argument("--steady", type=float, default=600, help="seconds of steady load")
    parser.add_argument("--every", type=float, default=10, help="seconds between reports")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
