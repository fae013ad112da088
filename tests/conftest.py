"""Shared fixtures: the simulated provider and gateways, each a real HTTP server on loopback."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from cascadeflow import ProxyConfig, create_app
from cascadeflow.testing import SimulatedProvider


class ServerThread:
    """Runs an ASGI app under uvicorn in a background thread, on a free loopback port."""

    def __init__(self, app) -> None:
        self.app = app
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def sim_config(sim: SimulatedProvider, **extra) -> ProxyConfig:
    """A config whose two routes point at the simulator, one per dialect."""
    data = {
        "routes": [
            {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "sk-ant-route-key"},
            {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-openai-route-key"},
        ],
        **extra,
    }
    return ProxyConfig.from_dict(data)


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
def start_gateway():
    """Start gateways from configs; all are stopped at the end of the session."""
    servers: list[ServerThread] = []

    def start(config: ProxyConfig) -> ServerThread:
        server = ServerThread(create_app(config)).start()
        servers.append(server)
        return server

    yield start
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
