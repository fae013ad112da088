"""Run the gateway with uvicorn (uvloop + httptools when available)."""

from __future__ import annotations

import logging
import os
import signal
import sys

import uvicorn

from ..config import ProxyConfig

__all__ = ["serve"]


def serve(config: ProxyConfig, config_path: str | None = None) -> None:
    """Serve until interrupted. Several workers re-read the config file in each process."""
    server = config.server
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exit 0 as a service should.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = dict(
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
        uvicorn.run("cascadeflow.gateway.app:create_app_from_env", factory=True, workers=server.workers, **options)
    else:
        from .app import create_app

        uvicorn.run(create_app(config), **options)
