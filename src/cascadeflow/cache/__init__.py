"""The response cache: exact-match answers (memory or Redis), and a semantic layer for single-shot prompts.

See docs/cache.md for what is cached, for whom, and for how long.
"""

from .answer import CachedAnswer, StreamCollector, cacheable, hit_stream
from .key import request_digest, tenant_of
from .service import CacheTicket, ResponseCache
from .stores import MemoryStore, RedisStore

__all__ = ["CachedAnswer", "CacheTicket", "MemoryStore", "RedisStore", "ResponseCache", "StreamCollector",
           "cacheable", "hit_stream", "request_digest", "tenant_of"]
