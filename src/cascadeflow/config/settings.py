"""The gateway's own settings: server, auth and virtual keys, limits and budgets, telemetry, cache, models."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, SecretStr, field_validator

from .base import _Strict

__all__ = [
    "ServerConfig",
    "AuthConfig",
    "VirtualKey",
    "Limits",
    "LimitsConfig",
    "ModelEntry",
    "TelemetryConfig",
    "CacheConfig",
    "SemanticCacheConfig",
]

_NOT_A_SECRET_KEY = ("not a secret key: it must be 32 random bytes in url-safe base64 (a Fernet key); "
                     "`cascadeflow keys new-secret` prints one")


def _secret_key(value: SecretStr | None) -> SecretStr | None:
    """A Fernet key (or several, comma-separated): checked at load so a bad one stops the start, not a request."""
    if value is None:
        return None
    for part in value.get_secret_value().split(","):
        try:
            raw = base64.urlsafe_b64decode(part.strip().encode())
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != 32:
            raise ValueError(_NOT_A_SECRET_KEY)
    return value


def _provider_key_names(keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
    empty = sorted(name for name, key in keys.items() if not key.get_secret_value().strip())
    if empty:
        raise ValueError(f"provider key {empty[0]!r} is empty (is the ${{VAR}} it reads set?)")
    return keys


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    #: ``auto``: readable lines when stderr is a terminal, one JSON object per line otherwise
    log_format: Literal["auto", "json", "text"] = "auto"
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="413 above this")
    #: streams open at once per process; more are refused with 429 and retry-after (None: no limit)
    max_concurrent_streams: int | None = Field(default=None, ge=1)
    #: request headers larger than this in all are refused (400) before anything else is read
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    #: the longest a request may take to arrive, headers and body: then 408 and the connection is closed
    request_read_timeout: float = Field(default=30.0, gt=0)
    #: on SIGTERM, how long in-flight requests (streams included) may take to finish
    shutdown_timeout: float = Field(default=30.0, ge=0)


#: the largest rate limit or budget a config or the admin API may set
_MAX_LIMIT = 10**12


class Limits(_Strict):
    """Caps for one key, user or team; a missing field means no cap of that kind."""

    # bounded so every value is exact in a double (the Redis scripts' numbers) and in JSON
    rpm: int | None = Field(default=None, ge=1, le=_MAX_LIMIT, description="requests per minute")
    tpm: int | None = Field(default=None, ge=1, le=_MAX_LIMIT, description="tokens (input + output) per minute")
    max_concurrent: int | None = Field(default=None, ge=1, le=_MAX_LIMIT, description="requests in flight at once")
    daily_budget_usd: float | None = Field(default=None, ge=0, le=_MAX_LIMIT, allow_inf_nan=False,
                                           description="USD per UTC day")
    monthly_budget_usd: float | None = Field(default=None, ge=0, le=_MAX_LIMIT, allow_inf_nan=False,
                                             description="USD per UTC calendar month")

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in Limits.model_fields)


class VirtualKey(_Strict):
    """A key written in the config file (keys made with ``cascadeflow keys create`` live in the database)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    key: SecretStr
    name: str | None = None
    user_id: str | None = None
    team: str | None = Field(default=None, alias="tier")
    models: list[str] | None = Field(default=None, description="model names or globs this key may use")
    limits: Limits | None = None
    expires_at: float | None = Field(default=None, description="epoch seconds")
    #: the key's own provider keys, used for its requests instead of the route's: by route name,
    #: or by provider kind (``anthropic``, ``openai``: every route of that kind); write ``${VAR}``
    provider_keys: Annotated[dict[str, SecretStr], AfterValidator(_provider_key_names)] = Field(default_factory=dict)
    #: this key's requests use the response cache (True), never do (False), or as the rule says (None)
    cache: bool | None = None


class AuthConfig(_Strict):
    """Who may call the gateway (``none``, ``api_key``, ``pass_through`` or ``hybrid``; see docs/operations.md)."""

    mode: Literal["none", "api_key", "pass_through", "hybrid"] = "none"
    #: plain virtual keys with no user or limits of their own
    api_keys: list[SecretStr] = Field(default_factory=list)
    keys: list[VirtualKey] = Field(default_factory=list)
    #: guards /admin/* and the dashboard
    master_key: SecretStr | None = None
    #: how often each process re-reads the key table, so a revocation anywhere holds everywhere
    refresh_seconds: float = Field(default=0.5, gt=0)
    #: seals the provider keys stored with virtual keys (a Fernet key; ``cascadeflow keys new-secret``)
    secret_key: Annotated[SecretStr | None, AfterValidator(_secret_key)] = None
    #: earlier secret keys (comma-separated), still accepted to open stored credentials during a rotation
    secret_key_previous: Annotated[SecretStr | None, AfterValidator(_secret_key)] = None

    @field_validator("secret_key", "secret_key_previous", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


class LimitsConfig(_Strict):
    """Rate limits and budgets; counters are in memory, or in Redis (``redis_url``) to share them."""

    #: for every virtual key that sets no limits of its own
    per_key: Limits = Field(default_factory=Limits)
    users: dict[str, Limits] = Field(default_factory=dict)
    teams: dict[str, Limits] = Field(default_factory=dict)
    #: for all requests together, whoever sends them
    total: Limits = Field(default_factory=Limits)
    #: when Redis cannot be reached: admit requests (open) or refuse them with 503 (closed)
    on_store_error: Literal["open", "closed"] = "open"
    #: output tokens assumed for a request that sets no max_tokens (for the budget reservation)
    default_output_tokens: int = Field(default=4096, ge=1)
    #: a reservation (in-flight request) left by a process that died is released after this long
    lease_seconds: float = Field(default=900, gt=0)
    #: what a model with no known price costs against a budget, in USD per 1,000 tokens (input, output and
    #: cache alike); None (the default): a request under a budget that may reach such a model is refused (403)
    unpriced_model_price: float | None = Field(default=None, ge=0, le=_MAX_LIMIT, allow_inf_nan=False)


class TelemetryConfig(_Strict):
    """OpenTelemetry traces (needs the ``otel`` extra: ``pip install -e '.[otel]'`` in the checkout); off unless an endpoint is set."""

    #: OTLP/HTTP collector base URL, e.g. http://127.0.0.1:4318 (default: $OTEL_EXPORTER_OTLP_ENDPOINT)
    otlp_endpoint: str | None = None
    service_name: str = "cascadeflow"
    #: share of requests traced (parent-based: a caller's sampled traceparent is always followed)
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class SemanticCacheConfig(_Strict):
    """The semantic layer of the cache (rules opt in with ``semantic_cache: true``)."""

    #: cosine similarity a stored prompt must reach to answer (measured: benchmarks/semantic_cache.py)
    threshold: float = Field(default=0.97, ge=0.0, le=1.0)
    #: agent clients (Claude Code, Codex) never get semantic answers unless this is set
    agents: bool = False
    #: prompts remembered per scope (oldest dropped first)
    max_entries: int = Field(default=10_000, ge=1)


class CacheConfig(_Strict):
    """The response cache (docs/cache.md): present, it is on for whatever opts in.

    Entries live in memory (bounded, LRU) or, with ``redis_url``, in Redis, shared by
    every gateway process.
    """

    #: cache requests that neither their rule nor their key opts in or out of
    default: bool = False
    #: seconds an answer is served from the cache
    ttl_seconds: float = Field(default=3600.0, gt=0)
    #: in memory: answers kept at most (least recently used dropped first)
    max_entries: int = Field(default=10_000, ge=1)
    #: in memory: bytes of answers kept at most
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    #: an answer larger than this is not cached (memory and Redis)
    max_entry_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    #: ``key``: each virtual key (or caller credential) has its own entries; ``team``: the keys of a team
    #: share theirs (a key without a team keeps its own); ``shared``: one cache for all callers
    scope: Literal["key", "team", "shared"] = "key"
    #: cache requests that carry tools (agent loops: off unless a rule says ``cache_tools``)
    tools: bool = False
    #: where entries live: ``auto`` is Redis when ``redis_url`` is set, else memory
    store: Literal["auto", "memory", "redis"] = "auto"
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)


class ModelEntry(_Strict):
    """A custom model for the registry (a local model, or a price override)."""

    provider: str | None = None
    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    cache_read_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    context_window: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    #: media the model reads besides text; a cascade never drafts a request with media on a model without them
    media: list[Literal["image", "document"]] | None = None
    #: an OpenAI-style reasoning model (refuses ``logprobs``, sampling settings and ``max_tokens``); default: by
    #: name (``gpt-5*``, ``o1*``, ``o3*``, ``o4*``). Drafts, self-verification and samples are fitted to it
    reasoning: bool | None = None
