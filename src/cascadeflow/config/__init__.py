"""ProxyConfig: the YAML config (``cascadeflow-proxy.yaml``) as strict pydantic models.

Unknown keys are errors. String values may use ``${VAR}`` or ``${VAR:-default}``,
read from the environment when the file is loaded. Without a file, the gateway
runs on defaults built from the environment (:meth:`ProxyConfig.from_env`).

One rule for the environment: the documented ``CASCADEFLOW_*`` variables
(:data:`ENV_SETTINGS`) override the matching setting, with a config file or without
one, and the loaded config remembers which ones did (:class:`ConfigOrigin`), so the
start-up banner and ``cascadeflow config check`` can say where each setting came from.

The models are split by job: :mod:`.rules` (cascade rules), :mod:`.settings` (server, auth,
limits, telemetry, cache, models), :mod:`.loading` (``${VAR}`` interpolation, environment
overrides, error messages) and :mod:`.proxy_config` (the whole file and its loading); every
public name is re-exported here, so ``from cascadeflow.config import X`` is the import to use.
"""

from .loading import ENV_SETTINGS, ConfigOrigin, interpolate
from .proxy_config import DEFAULT_CONFIG_FILE, ProxyConfig
from .rules import (
    DEFAULT_CASCADES,
    CascadeModel,
    CascadeRule,
    CascadeStage,
    Combiner,
    DraftPolicies,
    RouterFile,
    SampleAgreement,
    ScorerFile,
    SelfVerify,
    ShadowMode,
)
from .settings import (
    AuthConfig,
    CacheConfig,
    Limits,
    LimitsConfig,
    ModelEntry,
    SemanticCacheConfig,
    ServerConfig,
    TelemetryConfig,
    VirtualKey,
)

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
    "RouterFile",
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
