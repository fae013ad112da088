"""Shared fixtures: the simulated provider and gateways, each a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import cascadeflow
from cascadeflow import ProxyConfig, create_app
from cascadeflow.sim import ServerThread, SimulatedProvider
from cascadeflow.store import Ledger
from tests.parallel import (  # noqa: F401 (hooks)
    pytest_configure,
    pytest_xdist_auto_num_workers,
    pytest_xdist_make_scheduler,
)
from tests.prestart import last_the_early, start_selected, stop_running

#: upstream errors reach the client at once and no breaker opens between tests (resilience tests set their own)
NO_RETRY = {"retry": {"attempts": 1}, "breaker": {"failure_threshold": 1_000_000}}


def sim_routes(sim: SimulatedProvider, *, anthropic_key: str | None = "sk-ant-route-key",
               openai_key: str | None = "sk-openai-route-key") -> list[dict]:
    """One route per dialect to the simulator, without retries."""
    return [
        {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": anthropic_key, **NO_RETRY},
        {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": openai_key, **NO_RETRY},
    ]


def sim_config(sim: SimulatedProvider, **extra) -> ProxyConfig:
    """A config whose two routes point at the simulator, one per dialect."""
    return ProxyConfig.from_dict({"routes": sim_routes(sim), **extra})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last_the_early(config, items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The slow outside commands of the selected tests start now, beside the tests before them (tests/prestart.py)."""
    start_selected(session.config, session.items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_running(session.config)


@pytest.fixture(scope="session", autouse=True)
def compiled_package():
    """Where ``PYTHONDONTWRITEBYTECODE`` is set, the package is compiled once, as a run without that variable
    would leave it (``__pycache__`` beside the sources; git and the image build ignore it): else each of the
    hundreds of processes the tests start (gateways, CLI commands) compiles its ~90 modules again (~0.15 s of
    CPU at each start, about 15% of a ``config check``). The installed packages have theirs already.
    """
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        compileall.compile_dir(Path(cascadeflow.__file__).parent, quiet=1)


@pytest.fixture(scope="session", autouse=True)
def own_data_dir(tmp_path_factory):
    """The suite's default ledger (and anything else under the data directory) stays in a temporary folder.

    Set for the whole session, so gateway processes the tests start inherit it: nothing
    is written into the user's own data directory (``~/.local/share/cascadeflow``).
    """
    path = tmp_path_factory.mktemp("data-dir")
    previous = os.environ.get("CASCADEFLOW_DATA_DIR")
    os.environ["CASCADEFLOW_DATA_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("CASCADEFLOW_DATA_DIR", None)
    else:
        os.environ["CASCADEFLOW_DATA_DIR"] = previous


@pytest.fixture(scope="session")
def sim():
    with SimulatedProvider() as provider:
        yield provider


@pytest.fixture()
def fresh_sim(sim):
    """The session simulator with no script and no recorded requests."""
    sim.set_script([])
    sim.clear()
    yield sim
    sim.set_script([])
    sim.clear()


@pytest.fixture(scope="session")
def start_gateway(tmp_path_factory):
    """Start gateways from configs (each with a ledger file of its own); all stop at the end of the session."""
    servers: list[ServerThread] = []

    def start(config: ProxyConfig) -> ServerThread:
        if config.database_url == ProxyConfig().database_url:
            ledger = tmp_path_factory.mktemp("ledger") / "cascadeflow.db"
            config = config.model_copy(update={"database_url": f"sqlite:///{ledger}"})
        server = ServerThread(create_app(config)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:  # all told at once: each takes ~0.2 s to wind down (uvicorn's 0.1 s tick, the app's
        server.server.should_exit = True  # shutdown), which one after another was ~40 s at the session's end
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def gateway(sim, start_gateway) -> ServerThread:
    return start_gateway(sim_config(sim))


@pytest.fixture()
def gw(gateway, fresh_sim) -> ServerThread:
    """The shared gateway, with the simulator reset for this test."""
    return gateway


@pytest.fixture()
def http(gw):
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        yield client


def launch_gateway_process(tmp_path, config_text: str, log_path=None, server: dict | None = None,
                           *, start_timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """`cascadeflow proxy start` as its own process, from a config file in ``tmp_path``; waits for /health.

    ``config_text`` gets ``server.port`` added; the caller stops the process (:func:`stop_gateway_process`
    also ends its workers if it hangs). Its output goes to ``log_path`` when given. ``server`` adds
    settings to the ``server`` section. The wait has a deadline of its own (a port that accepts but
    never answers would otherwise cost 300 probes of 1 s each) and stops at once if the process exits;
    either way the process is ended and the error quotes its log.
    """
    return launch_gateway_processes(tmp_path, config_text, [log_path], server, start_timeout=start_timeout)[0]


def launch_gateway_processes(tmp_path, config_text: str, log_paths: list, server: dict | None = None,
                             *, start_timeout: float = 60) -> list[tuple[subprocess.Popen, str]]:
    """One :func:`launch_gateway_process` per entry of ``log_paths`` (``None``: no log), all started before
    the first is waited for: their starts (over a second of imports each) overlap, as replicas' do. When
    one fails to answer, all are ended."""
    with contextlib.ExitStack() as held:  # every port held until all are chosen: no two alike
        sockets = [held.enter_context(socket.socket()) for _ in log_paths]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in sockets]
    started = [_spawn_gateway(tmp_path, config_text, log_path, server, port) for log_path, port in zip(log_paths, ports)]
    deadline = time.monotonic() + start_timeout
    try:
        for (process, url), log_path in zip(started, log_paths):
            _await_gateway(process, url, log_path, deadline, start_timeout)
    except BaseException:
        for process, _ in started:
            _kill_group(process)
        raise
    return started


def _spawn_gateway(tmp_path, config_text: str, log_path, server: dict | None,
                   port: int) -> tuple[subprocess.Popen, str]:
    config_file = tmp_path / f"gateway-{port}.yaml"
    extra = "".join(f", {key}: {json.dumps(value)}" for key, value in (server or {}).items())
    config_file.write_text(config_text + f"\nserver: {{port: {port}{extra}}}\n")
    log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115 (the child holds it)
    process = subprocess.Popen(
        [sys.executable, "-m", "cascadeflow.cli", "proxy", "start", "--config", str(config_file)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "CASCADEFLOW_CONFIG": ""},
        start_new_session=True,  # its own process group: its workers can be ended with it
    )
    return process, f"http://127.0.0.1:{port}"


def _await_gateway(process: subprocess.Popen, url: str, log_path, deadline: float, start_timeout: float) -> None:
    while process.poll() is None and time.monotonic() < deadline:
        try:
            httpx.get(url + "/health", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    exited = process.poll()
    _kill_group(process)
    tail = log_path.read_text(errors="replace")[-3000:] if log_path is not None else "(no log kept)"
    why = f"exited with {exited}" if exited is not None else f"did not answer /health within {start_timeout:.0f} s"
    raise RuntimeError(f"the gateway process {why}; its log ends:\n{tail}")


def stop_gateway_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM and wait; one that does not stop in ``timeout`` is killed with its workers, then reported."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise AssertionError(f"the gateway process did not stop within {timeout:.0f} s of SIGTERM") from None


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything in its group (its workers); never leaves one behind."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait(10)


def run_async(coroutine):  # noqa: ANN001, ANN201
    """Run a coroutine to the end in a thread of its own: Playwright's sync API keeps an event loop in this one."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def ledger_rows(url: str, at_least: int = 0) -> list[dict]:
    async def read() -> list[dict]:
        ledger = await Ledger(url, retention_days=None).start()
        try:
            return await ledger.rows()
        finally:
            await ledger.aclose()

    deadline = time.monotonic() + 10
    while True:
        rows = run_async(read())
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)
