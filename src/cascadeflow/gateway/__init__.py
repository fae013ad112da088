"""The gateway server: ASGI app, endpoints, and the uvicorn runner."""

from .app import Gateway, create_app, create_app_from_env
from .server import serve
from .upstreams import ServiceUpstreams

__all__ = ["Gateway", "create_app", "create_app_from_env", "serve", "ServiceUpstreams"]
