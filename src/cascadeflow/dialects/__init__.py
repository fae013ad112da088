"""Wire protocols: one module per dialect (error bodies, stream taps, request checks)."""

from . import anthropic, openai
from .sse import SSEDecoder, SSEEvent, encode_event

__all__ = ["anthropic", "openai", "SSEDecoder", "SSEEvent", "encode_event"]
