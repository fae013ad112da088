"""ProxyConfig: the whole config file, its loading (file, environment, defaults) and what derives from it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..paths import default_database_url
from ..route_config import OFFICIAL_BASE_URLS, Provider, ProxyRoute
from .base import _Strict
from .loading import ConfigOrigin, _apply_environment, _describe, _key_paths, interpolate
from .rules import DEFAULT_CASCADES, CascadeModel, CascadeRule, RouterFile, ScorerFile
from .settings import AuthConfig, CacheConfig, LimitsConfig, ModelEntry, ServerConfig, TelemetryConfig

__all__ = ["ProxyConfig", "DEFAULT_CONFIG_FILE"]

DEFAULT_CONFIG_FILE = "cascadeflow-proxy.yaml"


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


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
        if folder is None:
            return rules

        def located(model_file: ScorerFile | RouterFile | None) -> ScorerFile | RouterFile | None:
            if model_file is None or Path(model_file.path).is_absolute():
                return model_file
            return model_file.model_copy(update={"path": str(folder / model_file.path)})

        return [r.model_copy(update={"scorer": located(r.scorer), "router": located(r.router)}) for r in rules]

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
