"""``/`` (a landing page) and ``/docs`` (interactive API docs over ``/openapi.json``).

Both are static files bundled in the package, like the dashboard: they load nothing
but their own files and the gateway's endpoints, under a Content-Security-Policy of
``'self'``, so they work offline and behind an air gap. The docs page is a small
vanilla script that renders the OpenAPI description and sends requests from the
browser; keys typed into it stay in the tab (``sessionStorage``).
"""

from __future__ import annotations

import html
from importlib import resources
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..errors import ErrorKind
from .errors import error_response

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["page_routes"]

_ASSETS = {"site.css": "text/css; charset=utf-8", "docs.js": "text/javascript; charset=utf-8"}
_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def page_routes() -> list[Route]:
    """The pages' routes; the files are read once, here."""
    static = resources.files("cascadeflow.gateway").joinpath("static")
    files = {name: static.joinpath(name).read_bytes() for name in _ASSETS}
    landing = static.joinpath("landing.html").read_text().replace("__VERSION__", html.escape(__version__))
    docs = static.joinpath("docs.html").read_bytes()

    async def home(request: Request) -> Response:
        base = html.escape(str(request.base_url).rstrip("/"), quote=True)  # the address the caller used
        return Response(landing.replace("__BASE_URL__", base), media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def api_docs(request: Request) -> Response:
        return Response(docs, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            return error_response("openai", ErrorKind.NOT_FOUND, f"no docs asset {name!r}")
        return Response(files[name], media_type=_ASSETS[name], headers=_HEADERS)

    return [
        Route("/", home, methods=["GET"]),
        Route("/docs", api_docs, methods=["GET"]),
        Route("/docs/static/{name}", asset, methods=["GET"]),
    ]
