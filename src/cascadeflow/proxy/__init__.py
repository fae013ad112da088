"""The proxy library: route OpenAI/Anthropic-style requests to providers and track cost.

``ProxyRoute`` (an upstream), ``ProxyRouter`` (model → route), ``ProxyHandler``
(send, read usage, price), ``ProxyService`` (both together). See docs/proxy-library.md.
"""

from ..errors import ProxyError, ProxyProtocolError, ProxyRoutingError, ProxyTransportError, ProxyUpstreamError
from ..route_config import ProxyRoute, RoutePrice
from .handler import ProxyHandler
from .router import ProxyRouter, RouteMatch
from .service import ProxyService
from .types import ProxyRequest, ProxyResult, ProxyStream, UpstreamAuth

__all__ = [
    "ProxyRoute",
    "RoutePrice",
    "ProxyRouter",
    "RouteMatch",
    "ProxyHandler",
    "ProxyService",
    "ProxyRequest",
    "ProxyResult",
    "ProxyStream",
    "UpstreamAuth",
    "ProxyError",
    "ProxyRoutingError",
    "ProxyUpstreamError",
    "ProxyTransportError",
    "ProxyProtocolError",
]
