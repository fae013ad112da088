"""``GET`` / ``DELETE /v1/responses/{id}``, ``POST /v1/responses/{id}/cancel`` and ``GET …/input_items``.

cascadeflow keeps no store of responses (see docs/codex.md). A response id can still name
one: OpenAI stores what was forwarded to it (``store`` defaults to true there), and a
``background: true`` request is polled by id. So these calls are forwarded to the routes
that serve the Responses API themselves (``openai_api: responses``), with the credentials
any other call to that route would carry; with several such routes each is asked in turn
until one knows the id (ids are unique, so a 404 means "not here"). With none, or when no
route knows the id, the answer is an OpenAI-shaped 404 that says why and what to send
instead — never a bare 404 or 405.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import CascadeflowError, ErrorKind, ProxyUpstreamError
from ..proxy import ProxyRequest
from .errors import (
    error_response,
    exception_response,
    request_id_of,
    upstream_error_response,
)

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["stored_response_routes"]

log = logging.getLogger("cascadeflow.gateway")

#: what a response id can be (OpenAI's are ``resp_`` and hex): anything else is no id, and never reaches a URL
_ID = re.compile(r"[A-Za-z0-9_.-]{1,256}")
#: what the caller is told when no route can answer for a stored response
NO_STORE = ("cascadeflow keeps no stored responses, and {reach}. Responses answered by translation (chat-only and "
            "Anthropic routes) are never stored: send the whole conversation in `input` with store: false "
            "(as Codex does) instead of previous_response_id or a response id")


async def _stored(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    request_id = request_id_of(request)
    response_id = request.path_params["response_id"]
    path = request.url.path.rstrip("/")
    lease = None
    try:
        identity = await gateway.auth.identify(dict(request.headers))
        routes = [r for r in gateway.service.router.routes if r.provider == "openai" and r.serves_responses]
        if not routes:
            raise _not_found(NO_STORE.format(reach="no route of this gateway reaches an upstream that stores them "
                                                   "(an OpenAI route serving /v1/responses)"))
        if not _ID.fullmatch(response_id):
            raise _not_found(f"No response found with id {response_id[:64]!r}: not a response id")
        lease = await gateway.limits.admit_call(identity)
        query = request.scope["query_string"].decode("latin-1")
        upstream = ProxyRequest(request.method, path, dict(request.headers), None, None, query, identity.upstream,
                                request_id)
        for route in routes:
            try:
                result = await gateway.service.handler.send(route, "", upstream)
            except ProxyUpstreamError as exc:
                if exc.upstream_status != 404:
                    return upstream_error_response("openai", exc, request_id)
                continue  # not this upstream's
            headers = {k: v for k, v in result.headers.items() if k != "content-type"}
            headers |= {"x-cascadeflow-route": route.name, "x-request-id": request_id}
            return Response(result.raw, result.status, headers=headers, media_type="application/json")
        names = ", ".join(repr(r.name) for r in routes)
        raise _not_found(f"No response found with id {response_id!r} on the routes whose upstream stores responses "
                         f"({names}). " + NO_STORE.format(reach="only those routes' upstreams store any"))
    except CascadeflowError as exc:
        return exception_response("openai", exc, request_id)
    except Exception:  # a bug must not take the worker down
        log.exception("unexpected error while handling %s %s", request.method, path)
        return error_response("openai", ErrorKind.INTERNAL, "internal gateway error; see the gateway log",
                              request_id=request_id)
    finally:
        if lease is not None:
            gateway.background(gateway.limits.release(lease))


def _not_found(message: str) -> CascadeflowError:
    return CascadeflowError(message, kind=ErrorKind.NOT_FOUND, final=True)


def stored_response_routes() -> list[Route]:
    """The routes of the stored-response calls (the POST of ``cancel`` included: it is not a generation)."""
    return [
        Route("/v1/responses/{response_id}", _stored, methods=["GET", "DELETE"]),
        Route("/v1/responses/{response_id}/cancel", _stored, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", _stored, methods=["GET"]),
    ]
