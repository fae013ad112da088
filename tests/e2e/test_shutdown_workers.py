"""SIGTERM (or Ctrl-C's SIGINT) to a gateway of two worker processes, as systemd or a user sends it.

``test_shutdown_deadline.py`` shows one process; here ``server.workers: 2`` and requests in flight
on both workers (checked: each worker holds open connections on the gateway's port when the
signal is sent), the signal sent to the parent alone (`kill PID`, docker stop) or to the whole
process group (systemd's default, a terminal's Ctrl-C). The parent must pass the signal on and wait; each worker, past
``shutdown_timeout``, answers its callers in their dialect and writes every row (cancelled, with
what it used) before it exits, the two writing to one SQLite file or PostgreSQL database at once.
With Redis holding the limits, the leases of the cancelled requests are given back. Within the
deadline every answer completes and every row is written as served.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest
import yaml

from tests import needs
from tests.conftest import launch_gateway_process, ledger_rows, sim_routes
from tests.e2e.test_shutdown_deadline import KINDS, OPUS, SCRIPT, _check_answer, _send
from tests.pg_db import throwaway_ledger

POSTGRES = os.environ.get("CASCADEFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("CASCADEFLOW_TEST_REDIS", "redis://127.0.0.1:6379/7")
HAIKU = "claude-haiku-5-5"
#: which worker holds which connection is read from /proc
pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc: run the suite on Linux, as `.ci/run` does")
#: answers that take ~2 s: finished well inside a 15 s deadline
QUICK_SCRIPT = [
    {"match": {"prompt_contains": "slow json"}, "latency": 2},
    {"match": {"prompt_contains": "long stream"}, "words": 20, "chunk_delay": 0.1},
]


def _established(pid: int, port: int) -> int:
    """How many TCP connections accepted on ``port`` process ``pid`` holds (from /proc: no test hook in the product)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                count += 1
    return count


def _workers(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and b"resource_tracker" not in (stat.parent / "cmdline").read_bytes():
            children.append(int(stat.parent.name))  # a worker (not multiprocessing's resource tracker)
    return children


def _connections_per_worker(parent: int, port: int) -> dict[int, int]:
    return {pid: _established(pid, port) for pid in _workers(parent)}


def _redis_leftovers(url: str) -> tuple[list[str], float]:
    """(leases still held, the budget spent) in the limits' Redis database."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        held = [key.decode() for key in client.scan_iter("cf:c:*") if client.type(key) == b"zset" and client.zcard(key)]
        spent = sum(float(client.hget(key, "spent") or 0) for key in client.scan_iter("cf:b:*"))
        reserved = [key.decode() for key in client.scan_iter("cf:b:*") if abs(float(client.hget(key, "reserved") or 0)) > 1e-9]
        return held + reserved, spent
    finally:
        client.close()


def _start(sim, tmp_path, ledger_url: str, shutdown_timeout: float, redis_url: str | None):
    config: dict = {
        "routes": sim_routes(sim, anthropic_key="k", openai_key="k"), "database_url": ledger_url,
        "cascade_rules": [{"name": "opus", "request_model": OPUS, "draft_model": HAIKU},
                          {"name": "gpt", "request_model": "gpt-4o", "draft_model": "gpt-4o-mini"}],
    }
    if redis_url:
        import redis

        try:
            redis.Redis.from_url(redis_url).flushdb()
        except redis.RedisError as exc:
            pytest.skip(needs.redis(redis_url, "CASCADEFLOW_TEST_REDIS", exc))
        config["redis_url"] = redis_url
        config["limits"] = {"total": {"max_concurrent": 1000, "daily_budget_usd": 1000}}
    process, url = launch_gateway_process(tmp_path, yaml.safe_dump(config), tmp_path / "gateway.log",
                                          server={"shutdown_timeout": shutdown_timeout, "workers": 2})
    deadline = time.monotonic() + 30  # /health answered from one worker: wait for the other to serve too
    while (tmp_path / "gateway.log").read_text().count("Application startup complete") < 2:
        assert time.monotonic() < deadline and process.poll() is None, "both workers start"
        time.sleep(0.05)
    return process, url, int(url.rsplit(":", 1)[1])


def _send_all(sim, url: str, port: int, process, count: int) -> tuple[list, dict, dict[int, int]]:
    """Start ``count`` requests (KINDS in turn) and wait until all reached the upstream and both workers hold some."""
    results: dict[int, tuple] = {}
    sends = [(i, KINDS[i % len(KINDS)]) for i in range(count)]
    threads = [threading.Thread(target=_send, args=(url, i, kind, results)) for i, kind in sends]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(sim.requests) < len(sends) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sim.requests) == len(sends), "every request reached the upstream"
    spread = _connections_per_worker(process.pid, port)
    return sends, {"threads": threads, "results": results}, spread


#: (ledger, limits in Redis, who gets which signal): ``parent`` as `kill PID`, docker stop or systemd's
#: KillMode=mixed send it; ``group`` as systemd's default KillMode=control-group (SIGTERM) or Ctrl+C (SIGINT)
CASES = [
    ("sqlite", False, "parent", signal.SIGTERM),
    ("postgresql", False, "group", signal.SIGTERM),
    ("sqlite", True, "group", signal.SIGINT),
    ("postgresql", True, "parent", signal.SIGTERM),
]


@pytest.mark.parametrize(("ledger", "with_redis", "to", "sig"), CASES,
                         ids=[f"{c[0]}-{'redis' if c[1] else 'memory'}-{c[2]}-{c[3].name}" for c in CASES])
def test_two_workers_past_the_deadline_answer_and_record_everything(sim, fresh_sim, tmp_path, ledger, with_redis,
                                                                     to, sig):
    fresh_sim.set_script(SCRIPT)
    with throwaway_ledger(ledger, tmp_path / "ledger.db", POSTGRES) as ledger_url:
        _past_the_deadline(fresh_sim, tmp_path, ledger_url, REDIS if with_redis else None,
                           lambda pid: os.kill(pid, sig) if to == "parent" else os.killpg(pid, sig))


def _past_the_deadline(sim, tmp_path, ledger_url: str, redis_url: str | None, send_signal) -> None:
    process, url, port = _start(sim, tmp_path, ledger_url, 1, redis_url)
    try:
        sends, sent, spread = _send_all(sim, url, port, process, 32)
        time.sleep(0.3)  # the started streams are streaming
        busy = [pid for pid, held in spread.items() if held]
        assert len(spread) == 2 and len(busy) == 2, f"both workers serve requests: connections per worker {spread}"
        send_signal(process.pid)
        assert process.wait(20) == 0
        for thread in sent["threads"]:
            thread.join(10)
        assert not any(Path(f"/proc/{pid}").exists() and _is_running(pid) for pid in spread), "no worker is left"
    finally:
        _end(process)
    log = (tmp_path / "gateway.log").read_text()
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log[-3000:]
    started = 0
    for index, kind in sends:
        name, status, content_type, raw, headers = sent["results"][index]
        _check_answer(name, kind[1], kind[3], status, content_type, raw, headers)
        started += status == 200
    assert started >= 6, "the long streams had started (their error event was checked)"
    rows = {row["request_id"]: row for row in ledger_rows(ledger_url, at_least=len(sends))}
    assert len(rows) == len(sends), f"{len(sends) - len(rows)} of {len(sends)} rows missing"
    for index, kind in sends:
        row = rows[f"shutdown-{index}"]
        assert row["status"] == 503 and row["cancelled"], (kind[0], row)
        assert row["input_tokens"] > 0 and row["cost"] > 0, f"{kind[0]}: what it used is priced ({row})"
    if redis_url:
        held, spent = _redis_leftovers(redis_url)
        assert held == [], f"leases or reservations left in Redis after shutdown: {held}"
        assert spent == pytest.approx(sum(row["cost"] for row in rows.values()), rel=1e-6), "Redis charged what the ledger says"


def test_two_workers_within_the_deadline_finish_every_answer(sim, fresh_sim, tmp_path):
    fresh_sim.set_script(QUICK_SCRIPT)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    process, url, port = _start(fresh_sim, tmp_path, ledger_url, 15, None)
    try:
        sends, sent, spread = _send_all(fresh_sim, url, port, process, 24)
        assert len(spread) == 2 and all(spread.values()), f"both workers serve requests: connections per worker {spread}"
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(20) == 0
        for thread in sent["threads"]:
            thread.join(10)
    finally:
        _end(process)
    for index, (name, path, _model, stream, _prompt) in sends:
        _name, status, _content_type, raw, _headers = sent["results"][index]
        assert status == 200, f"{name}: {status} {raw[:200]!r}"
        if not stream:
            assert orjson.loads(raw).get("usage"), f"{name}: a complete answer"
        elif path == "/v1/messages":
            assert b"event: message_stop" in raw and b"event: error" not in raw, f"{name}: {raw[-200:]!r}"
        else:
            assert raw.rstrip().endswith(b"data: [DONE]"), f"{name}: {raw[-200:]!r}"
    rows = {row["request_id"]: row for row in ledger_rows(ledger_url, at_least=len(sends))}
    assert len(rows) == len(sends), f"{len(sends) - len(rows)} of {len(sends)} rows missing"
    assert all(row["status"] == 200 and not row["cancelled"] for row in rows.values()), list(rows.values())


def _end(process) -> None:
    """A gateway that did not stop is killed with its workers (its process group), never left behind."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(5)


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
