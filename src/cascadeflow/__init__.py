"""cascadeflow: a self-hosted LLM gateway that drafts on a cheaper model first.

Public API::

    from cascadeflow import ProxyConfig, ModelRegistry, CostTracker, create_app
    from cascadeflow.proxy import ProxyRoute, ProxyRouter, ProxyHandler, ProxyService, ProxyRequest
    from cascadeflow.sim import SimulatedProvider
"""

__version__ = "0.1.0"

from .config import CascadeRule, ProxyConfig, ServerConfig
from .errors import (
    CascadeflowError,
    ConfigError,
    ErrorKind,
    ProxyError,
    ProxyProtocolError,
    ProxyRoutingError,
    ProxyTransportError,
    ProxyUpstreamError,
    RequestError,
)
from .pricing import ModelInfo, ModelPrice, ModelRegistry
from .proxy import ProxyHandler, ProxyRequest, ProxyResult, ProxyRoute, ProxyRouter, ProxyService, ProxyStream
from .telemetry import CostTracker
from .usage import Usage

__all__ = [
    "__version__",
    "ProxyConfig",
    "ServerConfig",
    "CascadeRule",
    "ModelRegistry",
    "ModelPrice",
    "ModelInfo",
    "CostTracker",
    "Usage",
    "ProxyRoute",
    "ProxyRouter",
    "ProxyHandler",
    "ProxyService",
    "ProxyRequest",
    "ProxyResult",
    "ProxyStream",
    "CascadeflowError",
    "ConfigError",
    "RequestError",
    "ErrorKind",
    "ProxyError",
    "ProxyRoutingError",
    "ProxyUpstreamError",
    "ProxyTransportError",
    "ProxyProtocolError",
    "create_app",
]


def create_app(config=None, **kwargs):
    """Build the gateway's ASGI app (imported lazily: the library layer needs no web server)."""
    from .gateway import create_app as _create_app

    return _create_app(config, **kwargs)
