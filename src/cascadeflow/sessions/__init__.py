"""Conversation state the gateway keeps between requests: in memory, or in Redis to share it."""

from .cache import CacheShadow, CacheSplit, PromptShape
from .state import MemorySessions, RedisSessions, Sessions, SessionState, session_store
from .thinking import MemoryThinkingOrigins, RedisThinkingOrigins, ThinkingOrigins, thinking_origins

__all__ = [
    "CacheShadow", "CacheSplit", "MemorySessions", "MemoryThinkingOrigins", "PromptShape", "RedisSessions",
    "RedisThinkingOrigins", "SessionState", "Sessions", "ThinkingOrigins", "session_store", "thinking_origins",
]
