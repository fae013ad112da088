"""What makes two requests the same question: the normalised request, digested.

The digest covers everything that changes the answer — the model as requested, the
messages or input, system or instructions, tools and tool choice, every sampling
parameter — and the caller's endpoint (a hit is answered in the dialect it was stored
in) and tenant (``cache.scope: key``: each virtual key, or caller credential, has its
own entries, so no tenant is ever served another's answer). Left out: ``stream`` (a
stored answer is replayed as a stream or returned as JSON) and fields that only label
a request (``metadata``, ``user``, ``store``, prompt-cache keys). The body is serialised
once, with sorted keys, so key order never splits an entry.
"""

from __future__ import annotations

import hashlib

import orjson

__all__ = ["request_digest", "tenant_of", "IGNORED_FIELDS", "ANSWER_HEADERS"]

#: top-level request fields that do not change the answer (any dialect)
IGNORED_FIELDS = frozenset({
    "stream", "stream_options", "metadata", "user", "safety_identifier", "prompt_cache_key",
    "prompt_cache_retention", "store", "service_tier", "background",
})
#: request headers that change the answer (beta features, API versions)
ANSWER_HEADERS = ("anthropic-beta", "anthropic-version", "openai-beta")
_CREDENTIALS = ("x-api-key", "authorization", "api-key")


def tenant_of(key_id: str | None, headers: dict[str, str]) -> str:
    """Whose entries these are: the virtual key's id, else a digest of the caller's own credential."""
    if key_id is not None:
        return "k:" + key_id
    for name in _CREDENTIALS:
        value = headers.get(name)
        if value:
            return "c:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:32]
    return "-"


def request_digest(endpoint: str, tenant: str, headers: dict[str, str], body: dict,
                   ignored: frozenset[str] = IGNORED_FIELDS) -> str | None:
    """The cache key of a request (None: it cannot be serialised canonically, so it is not cached)."""
    material = [endpoint, tenant, [headers.get(name) for name in ANSWER_HEADERS],
                {k: v for k, v in body.items() if k not in ignored}]
    try:
        canonical = orjson.dumps(material, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # an integer beyond 64 bits, say
        return None
    return hashlib.sha256(canonical).hexdigest()
