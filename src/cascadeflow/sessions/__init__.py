"""Conversation state the gateway keeps between requests: in memory, or in Redis to share it."""

from .thinking import MemoryThinkingOrigins, RedisThinkingOrigins, ThinkingOrigins, thinking_origins

__all__ = ["MemoryThinkingOrigins", "RedisThinkingOrigins", "ThinkingOrigins", "thinking_origins"]
