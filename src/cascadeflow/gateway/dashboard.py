"""``/dashboard``: the ledger at a glance, served by the gateway itself.

The page is a static shell (HTML, CSS, vanilla JS drawing inline SVG) bundled in
the package, so it works offline and behind an air gap: it loads nothing but its
own files and ``/dashboard/api/overview``. A Content-Security-Policy of ``'self'``
makes the browser refuse anything else. The shell holds no data and is served to
anyone; the data API needs the master key when auth is on (the page asks for it
on a 401 and keeps it in ``sessionStorage``).
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import TYPE_CHECKING

import orjson
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..errors import ErrorKind
from ..store.queries import RANGES, overview
from .admin_guard import admin_refusal
from .errors import error_response

if TYPE_CHECKING:
    from starlette.requests import Request

    from .app import Gateway

__all__ = ["dashboard_routes"]

log = logging.getLogger("cascadeflow.dashboard")

#: the bundled files, and their media types (nothing else under static/ is served)
_ASSETS = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
_SHELL_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


async def slash(request: Request) -> Response:
    """``/dashboard/`` → ``/dashboard`` (relative, so it holds behind a path prefix): the page's links are relative."""
    return RedirectResponse("../dashboard")


async def api_overview(request: Request) -> Response:
    """The figures the page shows: ``?range=1h|6h|24h|7d|30d|all`` (default 24h), ``&recent=N`` (default 50)."""
    refusal = admin_refusal(request, read_only=True)
    if refusal is not None:
        return refusal
    gateway: Gateway = request.app.state.gateway
    span = request.query_params.get("range", "24h")
    if span not in RANGES:
        return error_response("openai", ErrorKind.INVALID_REQUEST, f"range must be one of {', '.join(RANGES)}")
    try:
        recent = min(max(int(request.query_params.get("recent", "50")), 0), 500)
    except ValueError:
        return error_response("openai", ErrorKind.INVALID_REQUEST, "recent must be a whole number")
    if gateway.ledger.engine is None:
        return error_response("openai", ErrorKind.UNAVAILABLE, "the ledger is not open yet")
    seconds = RANGES[span]
    since = time.time() - seconds if seconds is not None else None
    try:
        body = await overview(gateway.ledger.engine, since=since, recent=recent)
    except Exception as exc:  # a database outage must not look like a gateway crash
        log.warning("dashboard: the ledger could not be read (%s)", type(exc).__name__)
        return error_response("openai", ErrorKind.UNAVAILABLE, f"ledger unavailable: {type(exc).__name__}")
    body["range"]["name"] = span
    return Response(orjson.dumps(body), media_type="application/json", headers={"cache-control": "no-store"})


def dashboard_routes() -> list[Route]:
    """The dashboard's routes; its files are read once, here, so serving them does no file I/O."""
    files = {name: resources.files("cascadeflow.gateway").joinpath("static", name).read_bytes() for name in _ASSETS}

    def send(name: str) -> Response:
        return Response(files[name], media_type=_ASSETS[name], headers=_SHELL_HEADERS)

    async def page(request: Request) -> Response:
        return send("dashboard.html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            return error_response("openai", ErrorKind.NOT_FOUND, f"no dashboard asset {name!r}")
        return send(name)

    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/", slash, methods=["GET"]),
        Route("/dashboard/static/{name}", asset, methods=["GET"]),
        Route("/dashboard/api/overview", api_overview, methods=["GET"]),
    ]
