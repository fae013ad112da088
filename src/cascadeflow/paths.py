"""Where cascadeflow keeps its data: a per-user directory, so the ledger (and the keys in it)
does not depend on the directory the gateway happens to be started from.

``CASCADEFLOW_DATA_DIR`` moves it (tests and benchmarks use this to stay out of the
user's own directory); otherwise it is the platform's user data directory
(``~/.local/share/cascadeflow`` on Linux, ``~/Library/Application Support/cascadeflow``
on macOS).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["data_dir", "default_database_url", "sqlite_path"]


def data_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """The data directory (not created here: the ledger creates it when it first writes)."""
    env = os.environ if environ is None else environ
    given = env.get("CASCADEFLOW_DATA_DIR")
    return Path(given).expanduser().absolute() if given else Path(platformdirs.user_data_dir("cascadeflow"))


def default_database_url() -> str:
    """The ledger's default: a SQLite file in :func:`data_dir`."""
    return f"sqlite:///{data_dir() / 'cascadeflow.db'}"


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite://`` URL (None for another database or an in-memory one)."""
    if not url.startswith("sqlite"):
        return None
    # imported here: loading the config (which imports this module) needs no SQLAlchemy (~0.15 s)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database
    except ArgumentError:
        return None
    return None if database in (None, "", ":memory:") else database
