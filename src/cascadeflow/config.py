"""ProxyConfig: the YAML config (``cascadeflow-proxy.yaml``) as strict pydantic models.

Unknown keys are errors. String values may use ``${VAR}`` or ``${VAR:-default}``,
read from the environment when the file is loaded. Without a file, the gateway
runs on defaults built from the environment (:meth:`ProxyConfig.from_env`).

One rule for the environment: the documented ``CASCADEFLOW_*`` variables
(:data:`ENV_SETTINGS`) override the matching setting, with a config file or without
one, and the loaded config remembers which ones did (:class:`ConfigOrigin`), so the
start-up banner and ``cascadeflow config check`` can say where each setting came from.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .paths import default_database_url
from .route_config import OFFICIAL_BASE_URLS, Provider, ProxyRoute

__all__ = [
    "ProxyConfig",
    "ConfigOrigin",
    "ENV_SETTINGS",
    "ServerConfig",
    "CascadeRule",
    "CascadeStage",
    "CascadeModel",
    "DraftPolicies",
    "SelfVerify",
    "SampleAgreement",
    "ShadowMode",
    "Combiner",
    "ScorerFile",
    "AuthConfig",
    "VirtualKey",
    "Limits",
    "LimitsConfig",
    "ModelEntry",
    "TelemetryConfig",
    "CacheConfig",
    "SemanticCacheConfig",
    "interpolate",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_CASCADES",
]

DEFAULT_CONFIG_FILE = "cascadeflow-proxy.yaml"

#: The cascades used when no config file is given, and written by ``proxy init``:
#: (requested model glob, draft model). The verifier is the requested model.
DEFAULT_CASCADES: tuple[tuple[str, str], ...] = (
    ("claude-opus-*", "claude-haiku-5-5"),  # not Sonnet: see docs/cascade.md, "Conversations and prompt caching"
    ("claude-sonnet-*", "claude-haiku-5-5"),
    ("gpt-5.5", "gpt-5.4-mini"),
    ("gpt-5.4", "gpt-5.4-mini"),
    ("gpt-4o", "gpt-4o-mini"),
)
#: The documented variables that override the config file: variable → setting (a key path).
#: ``CASCADEFLOW_CASCADE=off`` (also 0, false, no) empties ``cascade_rules`` as well.
ENV_SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CASCADEFLOW_HOST", ("server", "host")),
    ("CASCADEFLOW_PORT", ("server", "port")),
    ("CASCADEFLOW_AUTH_MODE", ("auth", "mode")),
    ("CASCADEFLOW_MASTER_KEY", ("auth", "master_key")),
    ("CASCADEFLOW_SECRET_KEY", ("auth", "secret_key")),
    ("CASCADEFLOW_SECRET_KEY_PREVIOUS", ("auth", "secret_key_previous")),
    ("CASCADEFLOW_DATABASE_URL", ("database_url",)),
    ("CASCADEFLOW_REDIS_URL", ("redis_url",)),
    ("CASCADEFLOW_ANTHROPIC_BASE_URL", ("base_urls", "anthropic")),
    ("CASCADEFLOW_OPENAI_BASE_URL", ("base_urls", "openai")),
    ("CASCADEFLOW_GROQ_BASE_URL", ("base_urls", "groq")),
)
_OFF = ("off", "0", "false", "no")
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


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


@dataclass(frozen=True)
class ConfigOrigin:
    """Where a loaded config came from: its file (None: embedded defaults) and what the environment set."""

    file: str | None = None
    #: setting ("auth.mode") → the ``CASCADEFLOW_*`` variable that set it
    overrides: Mapping[str, str] = field(default_factory=dict)
    #: settings ("auth.mode", "database_url") the file itself wrote
    in_file: frozenset[str] = frozenset()

    def source(self, setting: str) -> str:
        """``$VARIABLE``, ``file`` or ``default``, for a setting's key path."""
        if setting in self.overrides:
            return f"${self.overrides[setting]}"
        return "file" if setting in self.in_file else "default"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class CascadeStage(_Strict):
    """One draft model tried in turn; its answer is kept when confidence ≥ its threshold."""

    model: str
    quality_threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="default: the rule's")


class DraftPolicies(_Strict):
    """When not to draft at all (the draft would be paid for in vain)."""

    #: skip when the request forces a tool (tool_choice any/tool/required/function)
    skip_forced_tool_choice: bool = False
    #: skip when the prompt's estimated tokens exceed this share of the draft's context window
    max_context_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    #: skip after this many consecutive escalations in one conversation (0 = never)
    sticky_escalations: int = Field(default=2, ge=0)
    #: …for this long after the last escalation, then try drafting again
    sticky_seconds: float = Field(default=1800.0, gt=0)
    #: in a conversation, draft only when the expected saving — priced with each model's prompt cache
    #: as it is, and the conversation's draft failures — is positive (docs/cascade.md)
    cache_economics: bool = True
    #: the request kinds this rule drafts (main, subagent, background, codex, other; docs/claude-code.md);
    #: requests of other kinds go straight to the verifier. Default: every kind
    draft_kinds: list[Literal["main", "subagent", "background", "codex", "other"]] | None = None


class SelfVerify(_Strict):
    """Ask a model whether the draft is right and use P(yes) as one more check score."""

    model: str | None = Field(default=None, description="default: the draft model itself")


class SampleAgreement(_Strict):
    """Sample the draft model again and score how many samples reach the draft's final answer."""

    samples: int = Field(default=5, ge=2, le=20)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)


class ShadowMode(_Strict):
    """Quality measured on live traffic: for a share of judged drafts, the verifier's answer too, labelled.

    An accepted draft's pair costs one verifier call, made after the client has its answer; an
    escalated draft's costs nothing (the verifier served). Pairs are kept in the ledger's
    ``shadow_pairs`` table, answers included, for ``cascadeflow calibrate --from-ledger``.
    """

    share: float = Field(default=0.1, gt=0.0, le=1.0, description="share of judged drafts to pair")
    #: the most the extra verifier (and judge) calls may cost per UTC day, per gateway process
    max_daily_usd: float = Field(default=1.0, ge=0.0)
    #: a model that labels pairs whose answers have no comparable final answer (none: such pairs stay unlabelled)
    judge_model: str | None = None


class Combiner(_Strict):
    """A fitted logistic model over check scores (written by ``cascadeflow calibrate``)."""

    weights: dict[str, float]
    bias: float = 0.0
    means: dict[str, float] = Field(default_factory=dict)
    scales: dict[str, float] = Field(default_factory=dict)


class ScorerFile(_Strict):
    """The learned scorer's model file (written by ``cascadeflow calibrate`` beside the config)."""

    #: relative paths are read from the config file's folder
    path: str
    #: the file's SHA-256: a file changed since calibration is refused at start
    sha256: str | None = None


class _CascadeFields(_Strict):
    name: str | None = None
    draft_model: str | None = None
    verifier_model: str | None = Field(default=None, description="defaults to the requested model")
    quality_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    #: send every request straight to the verifier (``calibrate`` writes it when no threshold meets the target)
    never_draft: bool = False
    checks: list[str] | None = Field(default=None, description="default: structural, tool_use, format, logprobs")
    combine: Literal["min", "mean", "product", "logistic"] = "min"
    #: with ``combine: logistic``: the fitted model (``cascadeflow calibrate`` writes it)
    combiner: Combiner | None = None
    #: a learned scorer over the prompt's and the draft's text (check ``learned``); needs no log-probabilities
    scorer: ScorerFile | None = None
    self_verify: SelfVerify | None = None
    sample_agreement: SampleAgreement | None = None
    #: shadow mode: pair a share of judged drafts with the verifier's answer, to measure quality on live traffic
    shadow: ShadowMode | None = None
    stages: list[CascadeStage] | None = None
    #: cap on the draft's max_tokens (a draft model may allow fewer output tokens than the verifier)
    draft_max_tokens: int | None = Field(default=None, ge=1)
    policies: DraftPolicies = Field(default_factory=DraftPolicies)
    #: the ``model`` named in answers: the one the client asked for, or the one that served
    report_model: Literal["requested", "served"] = "requested"
    #: answer repeated requests from the response cache (``cache:`` section; None: its ``default``)
    cache: bool | None = None
    #: cache requests that carry tools too (None: ``cache.tools``)
    cache_tools: bool | None = None
    #: also answer single-shot, tool-free prompts that mean the same (an embedding's cosine ≥ the threshold)
    semantic_cache: bool = False
    #: cosine similarity a cached prompt must reach (None: ``cache.semantic.threshold``)
    semantic_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _draft_or_stages(self) -> _CascadeFields:
        if self.combine == "logistic" and self.combiner is None:
            raise ValueError("combine: logistic needs a combiner (run cascadeflow calibrate)")
        if not self.draft_model and not self.stages:
            raise ValueError("a cascade rule needs draft_model or stages")
        if self.draft_model and self.stages:
            raise ValueError("give either draft_model or stages, not both")
        return self

    def draft_stages(self) -> list[CascadeStage]:
        """The drafts in order, each with its threshold filled in."""
        stages = self.stages or [CascadeStage(model=self.draft_model or "")]
        return [
            CascadeStage(model=s.model, quality_threshold=self.quality_threshold if s.quality_threshold is None else s.quality_threshold)
            for s in stages
        ]


class CascadeRule(_CascadeFields):
    """Try the draft model (or each stage) first for requests to ``request_model``."""

    request_model: str = Field(description="exact name or glob, e.g. claude-opus-*")


class CascadeModel(_CascadeFields):
    """A virtual model (e.g. ``cascade/claude``): clients ask for it by name; it has no upstream of its own."""

    verifier_model: str  # type: ignore[assignment]


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


class ProxyConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    routes: list[ProxyRoute] = Field(default_factory=list)
    api_keys: dict[Literal["anthropic", "openai", "groq"], SecretStr | None] = Field(default_factory=dict)
    cascade_rules: list[CascadeRule] = Field(default_factory=list)
    cascade_models: dict[str, CascadeModel] = Field(default_factory=dict)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    #: the response cache (docs/cache.md); absent: no request is cached, and no work is done for it
    cache: CacheConfig | None = None
    #: ``redis://…`` makes every gateway process share rate-limit and budget counters
    redis_url: str | None = None
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    #: the usage ledger: a SQLite file in the per-user data directory by default (no setup;
    #: ``$CASCADEFLOW_DATA_DIR`` moves it); ``postgresql://…`` to share it between processes
    database_url: str = Field(default_factory=default_database_url)
    #: ledger rows older than this many days are deleted (None: keep everything)
    ledger_retention_days: float | None = Field(default=90, gt=0)
    #: base URL overrides for the routes made from ``api_keys`` (e.g. a local mirror)
    base_urls: dict[Literal["anthropic", "openai", "groq"], Annotated[str, AfterValidator(_http_url)]] = Field(
        default_factory=dict)

    _origin: ConfigOrigin = PrivateAttr(default_factory=ConfigOrigin)

    @property
    def origin(self) -> ConfigOrigin:
        """The file and environment variables this config was loaded from."""
        return self._origin

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "sqlite+aiosqlite://", "postgresql://", "postgres://",
                                 "postgresql+asyncpg://")):
            raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be redis://HOST:PORT/DB (or rediss://, unix://)")
        return value

    @model_validator(mode="after")
    def _cache_section(self) -> ProxyConfig:
        """A rule or key that opts in turns the cache on with its defaults (no ``cache:`` section needed)."""
        if self.cache is None:
            wanted: list[Any] = [*self.cascade_rules, *self.cascade_models.values(), *self.auth.keys]
            if any(item.cache or getattr(item, "semantic_cache", False) for item in wanted):
                self.cache = CacheConfig()
        if self.cache is not None and self.cache.store == "redis" and not self.redis_url:
            raise ValueError("cache.store is redis but redis_url is not set")
        return self

    @model_validator(mode="after")
    def _unique_route_names(self) -> ProxyConfig:
        names = [r.name for r in self.routes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"route names must be unique; repeated: {', '.join(duplicates)}")
        for index, entry in enumerate(self.auth.keys):
            if entry.provider_keys and (unknown := sorted(set(entry.provider_keys) - self.provider_key_names())):
                raise ValueError(f"auth.keys.{index}.provider_keys: {unknown[0]!r} is neither a route nor a provider kind "
                                 f"(routes and kinds: {', '.join(sorted(self.provider_key_names()))})")
        clashes = sorted(set(names) & {k for k, v in self.api_keys.items() if v is not None and v.get_secret_value()})
        if clashes:
            raise ValueError(
                f"api_keys.{clashes[0]} would be ignored: a route named {clashes[0]!r} is defined in `routes`; "
                "set api_key on that route instead"
            )
        return self

    # -- loading ---------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> ProxyConfig:
        """Load a YAML file; a problem raises :class:`ConfigError` naming the key."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        data = interpolate(data)
        in_file = frozenset(_key_paths(data))
        data, overrides = _apply_environment(data, os.environ)
        config = cls.from_dict(data, source=str(path), overrides=overrides)
        config._origin = ConfigOrigin(file=str(path.absolute()), overrides=overrides, in_file=in_file)
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config",
                  overrides: Mapping[str, str] | None = None) -> ProxyConfig:
        """Validate a parsed config (``overrides``: settings the environment set, named in errors)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, source, overrides or {})) from None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ProxyConfig:
        """Embedded defaults: official routes keyed from ``ANTHROPIC_API_KEY``/``OPENAI_API_KEY``.

        The :data:`DEFAULT_CASCADES` apply unless ``CASCADEFLOW_CASCADE=off``; the
        :data:`ENV_SETTINGS` variables set their settings, as they do over a file.
        """
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {"api_keys": {p: env.get(f"{p.upper()}_API_KEY") for p in OFFICIAL_BASE_URLS}}
        data["cascade_rules"] = [{"request_model": glob, "draft_model": draft} for glob, draft in DEFAULT_CASCADES]
        data, overrides = _apply_environment(data, env)
        config = cls.from_dict(data, source="environment", overrides=overrides)
        config._origin = ConfigOrigin(file=None, overrides=overrides)
        return config

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> ProxyConfig:
        """The file given, else ``$CASCADEFLOW_CONFIG``, else ``./cascadeflow-proxy.yaml``, else env."""
        if path is None:
            path = os.environ.get("CASCADEFLOW_CONFIG") or None
        if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
            path = DEFAULT_CONFIG_FILE
        return cls.from_yaml(path) if path else cls.from_env()

    # -- derived ---------------------------------------------------------------

    def all_cascade_rules(self) -> list[CascadeRule]:
        """Virtual cascade models first (as rules matching their own name), then the rules."""
        virtual = [
            CascadeRule(request_model=name, **{"name": model.name or name, **model.model_dump(exclude={"name"})})
            for name, model in self.cascade_models.items()
        ]
        rules = virtual + list(self.cascade_rules)
        folder = Path(self._origin.file).parent if self._origin.file else None
        return [r.model_copy(update={"scorer": r.scorer.model_copy(update={"path": str(folder / r.scorer.path)})})
                if r.scorer is not None and folder is not None and not Path(r.scorer.path).is_absolute() else r
                for r in rules]

    def provider_key_names(self) -> set[str]:
        """What a virtual key's ``provider_keys`` may be named: a route, or a provider kind."""
        return {r.name for r in self.effective_routes()} | set(get_args(Provider))

    def effective_routes(self) -> list[ProxyRoute]:
        """The explicit routes, then one per provider named in ``api_keys``.

        A named ``anthropic`` or ``openai`` entry makes its route even with an empty
        key (the caller's own key is then forwarded); other providers need a key. A
        config with neither ``routes`` nor ``api_keys`` gets both official routes.
        """
        routes = list(self.routes)
        names = {r.name for r in routes}
        if self.api_keys:
            wanted: dict[str, SecretStr | None] = {name: key for name, key in self.api_keys.items()}
        else:
            wanted = {} if self.routes else {"anthropic": None, "openai": None}
        for name, key in wanted.items():
            if name in names:
                continue
            secret = key.get_secret_value() if key is not None else ""
            if not secret and name not in ("anthropic", "openai"):
                continue
            provider, base_url = OFFICIAL_BASE_URLS[name]
            routes.append(
                ProxyRoute(
                    name=name,
                    provider=provider,
                    base_url=self.base_urls.get(name, base_url),  # type: ignore[call-overload]
                    api_key=secret or None,
                )
            )
        return routes


def interpolate(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed document."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        if "${" not in value:
            return value
        return _ENV_PATTERN.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


def _apply_environment(data: dict[str, Any], env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``data`` with the :data:`ENV_SETTINGS` variables that are set (non-empty) written over it."""
    overrides: dict[str, str] = {}
    data = dict(data)
    for variable, path in ENV_SETTINGS:
        value = env.get(variable)
        if not value:
            continue
        target = data
        for part in path[:-1]:
            section = target.get(part)
            target[part] = dict(section) if isinstance(section, dict) else {}
            target = target[part]
        target[path[-1]] = value
        overrides[".".join(path)] = variable
    if env.get("CASCADEFLOW_CASCADE", "").lower() in _OFF:
        data["cascade_rules"] = []
        overrides["cascade_rules"] = "CASCADEFLOW_CASCADE"
    return data, overrides


def _key_paths(data: dict[str, Any]) -> list[str]:
    """``section`` and ``section.key`` for every key of a parsed file (two levels deep)."""
    paths = []
    for key, value in data.items():
        paths.append(str(key))
        if isinstance(value, dict):
            paths.extend(f"{key}.{inner}" for inner in value)
    return paths


def _describe(exc: ValidationError, source: str, overrides: Mapping[str, str] | None = None) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s) in the configuration"]
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        variable = next((v for setting, v in (overrides or {}).items()
                         if where == setting or where.startswith(setting + ".")), None)
        if variable:
            where = f"{where} (from ${variable})"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (not a cascadeflow setting; check its spelling and indentation)"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif "input" in error and not isinstance(error["input"], (dict, list)):
            shown = "***" if "key" in where.lower() else repr(_no_password(str(error["input"])))
            message = f"{message} (got {shown})"
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)


def _no_password(text: str) -> str:
    """A URL's password masked (``postgresql://user:***@host/db``)."""
    return re.sub(r"(//[^:/@\s]+):[^@/\s]*@", r"\1:***@", text)
