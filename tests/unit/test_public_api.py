"""The public API is pinned, and loading the config stays light.

``tests/data/public_api.txt`` lists every name in the ``__all__`` of the package, its
subpackages and its top-level modules. A name that disappears (or appears) fails here, so
changing the API is a deliberate edit of that file:
``python tests/unit/test_public_api.py --write`` rewrites it from the tree.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

PINNED = Path(__file__).resolve().parents[1] / "data" / "public_api.txt"

#: the modules whose ``__all__`` is the public API
MODULES = (
    "cascadeflow",
    "cascadeflow.config",
    "cascadeflow.route_config",
    "cascadeflow.errors",
    "cascadeflow.pricing",
    "cascadeflow.usage",
    "cascadeflow.telemetry",
    "cascadeflow.proxy",
    "cascadeflow.dialects",
    "cascadeflow.providers",
    "cascadeflow.cascade",
    "cascadeflow.gateway",
    "cascadeflow.store",
    "cascadeflow.sessions",
    "cascadeflow.cache",
    "cascadeflow.sim",
    "cascadeflow.evaluation",
)


def current_api() -> list[str]:
    """``module: name`` for every exported name, sorted within each module."""
    lines = []
    for name in MODULES:
        module = importlib.import_module(name)
        lines += [f"{name}: {attr}" for attr in sorted(module.__all__)]
    return lines


def test_the_public_api_matches_the_pinned_list():
    pinned = [line for line in PINNED.read_text().splitlines() if line and not line.startswith("#")]
    current = current_api()
    removed = sorted(set(pinned) - set(current))
    added = sorted(set(current) - set(pinned))
    assert not removed and not added, (
        f"public API changed: removed {removed}, added {added}. If deliberate, run "
        "`python tests/unit/test_public_api.py --write` and commit tests/data/public_api.txt")


def test_every_exported_name_exists():
    for name in MODULES:
        module = importlib.import_module(name)
        missing = [attr for attr in module.__all__ if not hasattr(module, attr)]
        assert not missing, f"{name}.__all__ names what the module lacks: {missing}"


def test_loading_the_config_imports_no_proxy_stack(tmp_path):
    """``ProxyConfig`` and its route schemas load without the proxy, providers, dialects, aiohttp or SQLAlchemy."""
    config = tmp_path / "cascadeflow-proxy.yaml"
    config.write_text("routes:\n  - {name: local, provider: openai, base_url: 'http://127.0.0.1:1/v1',"
                      " retry: {attempts: 2}, breaker: {cooldown: 5}}\n")
    code = ("import sys; from cascadeflow.config import ProxyConfig; "
            f"c = ProxyConfig.load({str(config)!r}); assert c.routes[0].retry.attempts == 2; "
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not heavy_packages(out), f"import cascadeflow.config loaded {heavy_packages(out)}"


HEAVY = ("cascadeflow.proxy", "cascadeflow.providers", "cascadeflow.dialects", "cascadeflow.gateway",
         "cascadeflow.cascade", "cascadeflow.pricing", "cascadeflow.store", "aiohttp", "genai_prices", "starlette",
         "sqlalchemy")


def heavy_packages(modules: list[str]) -> list[str]:
    """The packages of :data:`HEAVY` among ``modules`` (a cascadeflow one by its first two parts)."""
    loaded = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    return sorted({".".join(m.split(".")[:2]) if m.startswith("cascadeflow.") else m.split(".")[0] for m in loaded})


def test_the_command_line_loads_the_gateway_only_for_the_commands_that_need_it():
    """``cascadeflow claude``, ``codex``, ``keys``, ``proxy init`` start without the proxy stack or the ledger's
    SQLAlchemy (each is ~0.15-0.5 s of a command's start); the commands that need them import them themselves."""
    code = "import sys, cascadeflow.cli, cascadeflow.launch, cascadeflow.keys_cli; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not heavy_packages(out), f"import cascadeflow.cli loaded {heavy_packages(out)}"


def test_the_lazy_names_resolve_to_the_same_objects():
    import cascadeflow
    from cascadeflow.pricing import ModelRegistry
    from cascadeflow.proxy import ProxyRoute, ProxyService

    assert cascadeflow.ModelRegistry is ModelRegistry
    assert cascadeflow.ProxyService is ProxyService
    assert cascadeflow.ProxyRoute is ProxyRoute
    assert set(cascadeflow.__all__) <= set(dir(cascadeflow))


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/unit/test_public_api.py --write")
    header = "# The public API (tests/unit/test_public_api.py): `module: name` per line. Edit deliberately.\n"
    PINNED.write_text(header + "\n".join(current_api()) + "\n")
    print(f"wrote {PINNED}")
