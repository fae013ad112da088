"""What ``proxy start`` and ``config check`` verify and print before serving.

A problem found here is reported in one line (:class:`StartupError`) instead of the
traceback it would otherwise become inside the server; the banner and the settings
report say which file, which environment variables and which ledger are in use.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .paths import sqlite_path

if TYPE_CHECKING:
    from .config import ProxyConfig

__all__ = ["StartupError", "check_ledger", "banner", "effective_settings", "build_app", "unshared_limits"]

#: header names whose values are never printed
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie", re.IGNORECASE)


class StartupError(Exception):
    """A problem that stops a command, reported as one line (the exit status is 1)."""


def build_app(config: ProxyConfig) -> Any:
    """The gateway app; a config problem it meets (a custom check that cannot be imported) is a ConfigError."""
    from .gateway import create_app

    try:
        return create_app(config)
    except ValueError as exc:
        message = str(exc)
        if "No module named" in message:
            message += " (is its directory on the path? e.g. PYTHONPATH=. cascadeflow proxy start)"
        raise ConfigError(message) from None


def check_ledger(url: str) -> None:
    """Open the ledger once (connect, migrate), so a bad ``database_url`` is named before serving."""
    from .store import Ledger
    from .store.reports import safe_url

    async def open_and_close() -> None:
        ledger = Ledger(url, retention_days=None)
        try:
            await asyncio.wait_for(ledger.start(), 15)
        finally:
            await ledger.aclose()

    try:
        asyncio.run(open_and_close())
    except Exception as exc:  # any driver error: one line, no traceback, no password
        raise StartupError(f"cannot open the ledger at {safe_url(url)}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "no answer within 15 s"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = re.sub(r"\s*\(Background on this error at:.*", "", text)
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def unshared_limits(config: ProxyConfig) -> str | None:
    """The warning for several workers counting limits each on its own (no ``redis_url``), else None.

    Limits apply when the config sets any, or when virtual keys (which may carry their own) are checked.
    """
    workers = config.server.workers
    if workers <= 1 or config.redis_url:
        return None
    limits = config.limits
    configured = any(not table.is_empty() for table in (limits.per_key, limits.total,
                                                        *limits.users.values(), *limits.teams.values()))
    configured = configured or any(key.limits is not None and not key.limits.is_empty() for key in config.auth.keys)
    if not configured and config.auth.mode not in ("api_key", "hybrid"):
        return None
    return (f"WARNING: {workers} workers and no redis_url: each worker counts rate limits and budgets on its own, "
            f"so each limit admits up to {workers} times what it says; set redis_url to share them")


def banner(config: ProxyConfig, version: str) -> list[str]:
    """The start-up lines: where it listens, the config file, the auth mode, the ledger, the routes."""
    from .store.reports import safe_url  # the store (SQLAlchemy) only for the commands that print a ledger

    origin = config.origin
    lines = [f"cascadeflow {version} listening on http://{config.server.host}:{config.server.port}"]
    if origin.file:
        lines.append(f"  config: {origin.file}")
    else:
        lines.append("  config: no file (embedded defaults; `cascadeflow proxy init` writes one)")
    if origin.overrides:
        lines.append(f"  from the environment: {', '.join(sorted(set(origin.overrides.values())))}")
    master = "master key set" if config.auth.master_key is not None else "no master key"
    secret = "secret key set" if config.auth.secret_key is not None else "no secret key"
    if config.auth.secret_key_previous is not None:
        secret += " (and a previous one: rotating)"
    lines.append(f"  auth: {config.auth.mode} ({origin.source('auth.mode')}; {master}; {secret})")
    path = sqlite_path(config.database_url)
    lines.append(f"  ledger: {path if path else safe_url(config.database_url)} ({origin.source('database_url')})")
    for route in config.effective_routes():
        key = "own key" if route.api_key is not None else "caller's key"
        lines.append(f"  route {route.name}: {route.provider} at {route.base_url} ({key})")
    if (warning := unshared_limits(config)) is not None:
        lines.append(f"  {warning}")
    return lines


def effective_settings(config: ProxyConfig) -> list[str]:
    """Every setting as it will apply, secrets masked, each with where it came from."""
    from .store.reports import safe_url

    origin = config.origin
    lines = [f"config file: {origin.file or 'none (embedded defaults from the environment)'}"]
    data = config.model_dump(mode="json", exclude={"routes"})
    for name in ("database_url", "redis_url"):
        if data.get(name):
            data[name] = safe_url(data[name])
    for section, value in data.items():
        if isinstance(value, dict) and value and section not in ("api_keys", "base_urls", "models", "cascade_models"):
            for key, inner in value.items():
                setting = f"{section}.{key}"
                lines.append(f"{setting} = {_show(inner)}  [{origin.source(setting)}]")
        else:
            lines.append(f"{section} = {_show(value)}  [{origin.source(section)}]")
    lines.append("routes (effective):")
    for route in config.effective_routes():
        key = "own key ***" if route.api_key is not None else "caller's key"
        headers = {k: ("***" if _SECRET_HEADER.search(k) else v) for k, v in route.headers.items()}
        extra = f", headers {headers}" if headers else ""
        models = f", models {sorted(route.models)}" if route.models else ""
        lines.append(f"  {route.name}: {route.provider} at {route.base_url} ({key}{models}{extra})")
    if (warning := unshared_limits(config)) is not None:
        lines.append(warning)
    return lines


def _show(value: object) -> str:
    if isinstance(value, (dict, list)):
        text = repr(value)
        return text if len(text) <= 200 else text[:197] + "..."
    return "null" if value is None else str(value)
