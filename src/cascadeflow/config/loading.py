"""From a parsed document to validated input: ``${VAR}`` interpolation, the ``CASCADEFLOW_*`` overrides.

Also where a loaded config came from (:class:`ConfigOrigin`) and how a validation error is
told (each key named, secrets and URL passwords masked). No pydantic model lives here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

__all__ = ["ENV_SETTINGS", "ConfigOrigin", "interpolate"]

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
