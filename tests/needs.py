"""How a skipped test says what it lacks and how to get it: one wording per dependency.

Every skip in ``tests/`` names the missing piece and a command that provides it
(``tests/unit/test_skip_messages.py`` checks the sources); the servers' wording says which
variable points the tests at another server instead.
"""

from __future__ import annotations

TEST_EXTRAS = "pip install -e '.[test]'"


def postgres(url: str, error: object = "") -> str:
    """Why a test that needs the test PostgreSQL server is skipped."""
    return (f"PostgreSQL not reachable at {url}{f' ({error})' if error else ''}: start one on 127.0.0.1:5432 with "
            "trust auth (Debian: `apt-get install postgresql`), or set CASCADEFLOW_TEST_POSTGRES to a server's URL")


def redis(url: str, variable: str, error: object = "") -> str:
    """Why a test that needs the test Redis server is skipped (``variable`` points it elsewhere)."""
    return (f"Redis not reachable at {url}{f' ({error})' if error else ''}: start one on 127.0.0.1:6379 "
            f"(Debian: `apt-get install redis-server`), or set {variable} to another Redis URL")


def package(what: str) -> str:
    """Why a test that needs a test dependency (a Python package) is skipped."""
    return f"{what} is not installed: `{TEST_EXTRAS}` installs it"


def postgres_or_redis(postgres_url: str, redis_url: str, variable: str, error: object) -> str:
    """Why a test that needs both servers is skipped."""
    return (f"PostgreSQL ({postgres_url}) or Redis ({redis_url}) not reachable ({error}): start both "
            "(Debian: `apt-get install postgresql redis-server`; PostgreSQL with trust auth on 127.0.0.1:5432), "
            f"or set CASCADEFLOW_TEST_POSTGRES / {variable} to other servers")
