"""Adapters that talk to upstreams, one per dialect, over pooled HTTP clients."""

from .adapters import AnthropicAdapter, OpenAIAdapter, adapter_for
from .base import ProviderAdapter, StreamTap, forwardable_request_headers, forwardable_response_headers
from .pool import PoolWait, UpstreamPool

__all__ = [
    "AnthropicAdapter",
    "OpenAIAdapter",
    "ProviderAdapter",
    "StreamTap",
    "UpstreamPool",
    "PoolWait",
    "adapter_for",
    "forwardable_request_headers",
    "forwardable_response_headers",
]
