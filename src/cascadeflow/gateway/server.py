"""Run the gateway with uvicorn (uvloop + httptools when available)."""

from __future__ import annotations

import contextlib
import glob
import logging.config
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.supervisors import Multiprocess

from ..config import ProxyConfig, ServerConfig
from .head_deadline import GatewayServerConfig
from .logs import logging_config

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["serve", "bind"]

#: uvicorn's exit status when the app cannot start
STARTUP_FAILURE = 3


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is known before anything says "listening".

    Raises ``OSError`` (e.g. address in use) for the caller to report in one line.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)  # the workers serve it
    return sock


def serve(config: ProxyConfig, config_path: str | None = None, *, app: Starlette | None = None,
          announce: Callable[[], None] | None = None) -> None:
    """Serve until interrupted. Several workers re-read the config file in each process.

    The port is bound first (an ``OSError`` if it cannot be), then ``announce`` runs, then
    the app (``app``, else one built from ``config``) serves on that socket.
    """
    server = config.server
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exit 0 as a service should.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log_config = logging_config(server)
    logging.config.dictConfig(log_config)  # for what happens before uvicorn starts (building the app)
    sock = bind(server.host, server.port)
    if announce is not None:
        announce()
    if server.workers > 1:
        if config_path:
            os.environ["CASCADEFLOW_CONFIG"] = os.path.abspath(config_path)
        with _metrics_dir():
            multi = _uvicorn_config("cascadeflow.gateway.app:create_app_from_env", server, log_config)
            Multiprocess(multi, sockets=[sock]).run()
        return
    if app is None:
        from .app import create_app

        app = create_app(config)
    single = uvicorn.Server(_uvicorn_config(app, server, log_config))
    try:
        single.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    if not single.started:
        sys.exit(STARTUP_FAILURE)


def _uvicorn_config(app: Starlette | str, server: ServerConfig, log_config: dict) -> GatewayServerConfig:
    """uvicorn's settings from ours; an import string names the factory each worker builds its app with."""
    return GatewayServerConfig(
        app,
        factory=isinstance(app, str),
        workers=server.workers if isinstance(app, str) else 1,
        log_config=log_config,  # applied by uvicorn again, in every worker
        host=server.host,
        port=server.port,
        log_level=server.log_level,
        access_log=False,
        loop="auto",
        request_read_timeout=server.request_read_timeout,  # the head's deadline (HeadDeadlineProtocol)
        timeout_graceful_shutdown=server.shutdown_timeout,
        server_header=False,
    )


@contextlib.contextmanager
def _metrics_dir() -> Iterator[None]:
    """Point the workers' metrics at one directory (prometheus_client's multiprocess mode).

    Set before the workers start, so each one writes its values there and a scrape of any
    of them sums them all. The environment's ``PROMETHEUS_MULTIPROC_DIR`` is used (emptied
    first) if set; else a temporary directory, removed at exit.
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.remove(stale)
        yield
        return
    path = tempfile.mkdtemp(prefix="cascadeflow-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(path, ignore_errors=True)
