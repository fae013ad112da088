"""ProxyRoute: one upstream (provider, base URL, key, allowlist, timeouts, prices, retries, breaker).

The route schemas are part of the config, not of the proxy: loading a config must not import
the proxy stack (aiohttp, the dialects, the handler). :mod:`cascadeflow.proxy` re-exports them.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["ProxyRoute", "RoutePrice", "RetrySettings", "BreakerSettings", "Provider", "OFFICIAL_BASE_URLS"]

Provider = Literal["anthropic", "openai"]

#: Where the official APIs live, for routes created from ``api_keys`` shorthand.
OFFICIAL_BASE_URLS: dict[str, tuple[Provider, str]] = {
    "anthropic": ("anthropic", "https://api.anthropic.com"),
    "openai": ("openai", "https://api.openai.com/v1"),
    "groq": ("openai", "https://api.groq.com/openai/v1"),
}


class RetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=3, ge=1, le=20, description="tries in all, the first included")
    backoff: float = Field(default=0.5, ge=0, description="first wait in seconds; doubles per retry")
    max_backoff: float = Field(default=8.0, ge=0, description="cap on one wait (retry-after included)")
    max_total: float = Field(default=30.0, ge=0, description="cap on the time spent waiting to retry")


class BreakerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=5, ge=1, description="consecutive failures that open the breaker")
    cooldown: float = Field(default=30.0, gt=0, description="seconds open before one probe is allowed")


class RoutePrice(BaseModel):
    """A price override in USD per 1,000 tokens (cache prices default to ``input``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)


class ProxyRoute(BaseModel):
    """How to reach one upstream.

    ``provider`` is the dialect the upstream speaks: ``anthropic``, or ``openai`` for
    every OpenAI-compatible server (OpenAI, vLLM, Ollama, Groq, llama.cpp…).
    ``models`` is an optional allowlist (names or globs); a route without one accepts
    any model routed to it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    provider: Provider
    base_url: str
    api_key: SecretStr | None = None
    models: frozenset[str] | None = None
    timeout: float = Field(default=600.0, gt=0, description="total seconds for one upstream call")
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float | None = Field(
        default=None, gt=0, description="longest silence before the response (default: timeout)"
    )
    stream_idle_timeout: float = Field(default=120.0, gt=0, description="longest silence inside a stream")
    first_byte_timeout: float | None = Field(
        default=None, gt=0, description="longest wait for the response to begin (default: no bound of its own)"
    )
    cost_per_1k_tokens: float | RoutePrice | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    pass_through_auth: bool = Field(
        default=False, description="forward the caller's own provider key instead of api_key"
    )
    max_connections: int = Field(default=512, ge=1, description="pooled keep-alive connections")
    pool_timeout: float = Field(
        default=10.0, gt=0,
        description="longest wait to get a connection (one of max_connections to come free, then open); then 503",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    #: models (any route, ``route:model`` allowed) tried in order when this route keeps failing
    fallbacks: list[str] = Field(default_factory=list)
    #: how ``/v1/responses`` callers reach an OpenAI-compatible upstream: ``responses`` forwards the
    #: request as received, ``chat`` translates it to Chat Completions (servers without the Responses
    #: API). Default: ``responses`` for api.openai.com, ``chat`` for every other base URL.
    openai_api: Literal["responses", "chat"] | None = None
    #: the upstream is the project's simulator replaying recorded answers (``cascadeflow eval`` sets it):
    #: sample agreement's extra samples then carry ``x-sample-index`` to pick a recorded sample.
    #: A real upstream never gets that header.
    replay: bool = False

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("models", mode="before")
    @classmethod
    def _models_list(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset([value])
        return value

    @field_validator("models")
    @classmethod
    def _models_not_empty(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        if value is not None and not value:
            raise ValueError("an empty allowlist would make the route unreachable; omit `models` to accept any model")
        return value

    @property
    def serves_responses(self) -> bool:
        """True when this route's upstream answers ``/v1/responses`` itself."""
        if self.openai_api is not None:
            return self.openai_api == "responses"
        return self.provider == "openai" and self.base_url.startswith("https://api.openai.com")

    def allows(self, model: str) -> bool:
        """True when ``model`` is in the allowlist (or there is none)."""
        if self.models is None:
            return True
        return model in self.models or any(fnmatchcase(model, pattern) for pattern in self.models)

    def lists(self, model: str) -> bool:
        """True only when the allowlist names ``model`` (a route without one lists nothing)."""
        return self.models is not None and self.allows(model)

    def url(self, path: str) -> str:
        """The upstream URL for an API path such as ``/v1/messages``.

        A base URL that already ends in ``/v1`` (the OpenAI SDK convention) is not doubled.
        """
        if self.base_url.endswith("/v1") and path.startswith("/v1/"):
            return self.base_url + path[3:]
        return self.base_url + path
