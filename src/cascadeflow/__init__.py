"""cascadeflow: a self-hosted LLM gateway that drafts on a cheaper model first.

Public API::

    from cascadeflow import ProxyConfig, ModelRegistry, CostTracker, create_app
    from cascadeflow.proxy import ProxyRoute, ProxyRouter, ProxyHandler, ProxyService, ProxyRequest
    from cascadeflow.sim import SimulatedProvider

Loading the config (``import cascadeflow.config``) imports no proxy stack: the names
above the config (proxy, pricing, telemetry) are resolved on first use.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

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
from .route_config import ProxyRoute
from .usage import Usage

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from .pricing import ModelInfo, ModelPrice, ModelRegistry
    from .proxy import ProxyHandler, ProxyRequest, ProxyResult, ProxyRouter, ProxyService, ProxyStream
    from .telemetry import CostTracker
    from .tiered_prices import TieredRates

#: Names resolved on first use (PEP 562), so ``import cascadeflow.config`` loads neither the
#: proxy stack (aiohttp, dialects) nor the price data.
_LAZY = {
    "ModelRegistry": "pricing",
    "ModelPrice": "pricing",
    "ModelInfo": "pricing",
    "TieredRates": "tiered_prices",
    "CostTracker": "telemetry",
    "ProxyRouter": "proxy",
    "ProxyHandler": "proxy",
    "ProxyService": "proxy",
    "ProxyRequest": "proxy",
    "ProxyResult": "proxy",
    "ProxyStream": "proxy",
}

__all__ = [
    "__version__",
    "ProxyConfig",
    "ServerConfig",
    "CascadeRule",
    "ModelRegistry",
    "ModelPrice",
    "ModelInfo",
    "TieredRates",
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


def create_app(config: ProxyConfig | None = None, **kwargs: Any) -> "Starlette":
    """Build the gateway's ASGI app (imported lazily: the library layer needs no web server)."""
    from .gateway import create_app as _create_app

    return _create_app(config, **kwargs)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cascadeflow' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
