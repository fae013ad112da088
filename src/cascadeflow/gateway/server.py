"""Run the gateway with uvicorn (uvloop + httptools when available)."""

from __future__ import annotations

import contextlib
import glob
import logging.config
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator

import uvicorn

from ..config import ProxyConfig
from .logs import logging_config

__all__ = ["serve"]


def serve(config: ProxyConfig, config_path: str | None = None) -> None:
    """Serve until interrupted. Several workers re-read the config file in each process."""
    server = config.server
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exit 0 as a service should.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log_config = logging_config(server)
    logging.config.dictConfig(log_config)  # for what happens before uvicorn starts (building the app)
    options = dict(
        log_config=log_config,  # applied by uvicorn again, in every worker
        host=server.host,
        port=server.port,
        log_level=server.log_level,
        access_log=False,
        loop="auto",
        http="auto",
        timeout_graceful_shutdown=server.shutdown_timeout,
        server_header=False,
    )
    if server.workers > 1:
        if config_path:
            os.environ["CASCADEFLOW_CONFIG"] = os.path.abspath(config_path)
        with _metrics_dir():
            uvicorn.run("cascadeflow.gateway.app:create_app_from_env", factory=True, workers=server.workers, **options)
    else:
        from .app import create_app

        uvicorn.run(create_app(config), **options)


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
