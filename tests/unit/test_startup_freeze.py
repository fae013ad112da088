"""A started gateway has frozen its start-up objects (``gc.freeze``), once per process: full collections
then scan what requests leave, not the ~100,000 objects of imports, config and price tables."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]

#: run in a fresh interpreter: the test process's own heap (and an earlier test's gateway) stay out of it
PROBE = textwrap.dedent("""
    import asyncio, gc, sys
    from cascadeflow import ProxyConfig, create_app

    def config(n):
        return ProxyConfig.from_dict({
            "database_url": f"sqlite:///{sys.argv[1]}/ledger{n}.db",
            "routes": [{"name": "anthropic", "provider": "anthropic", "base_url": "http://127.0.0.1:9", "api_key": "k"}],
            "cascade_rules": [{"name": "opus", "request_model": "claude-opus-5-5", "draft_model": "claude-haiku-5-5"}],
        })

    def tracked(obj):
        return any(o is obj for o in gc.get_objects())

    async def main():
        first = create_app(config(1)).state.gateway
        assert gc.get_freeze_count() == 0 and tracked(first.registry), "nothing frozen before the gateway starts"
        await first.start()
        frozen = gc.get_freeze_count()
        scanned = sum(len(gc.get_objects(g)) for g in range(3))
        print("frozen", frozen, "scanned", scanned, "registry scanned", tracked(first.registry))
        second = create_app(config(2)).state.gateway
        await second.start()
        print("after a second gateway", gc.get_freeze_count(), "its registry scanned", tracked(second.registry))
        await second.aclose()
        await first.aclose()

    asyncio.run(main())
""")


def test_start_freezes_what_start_up_made_once_per_process(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(CHECKOUT / "src")})
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    _, frozen, _, scanned, *_, registry_scanned = first.split()
    assert int(frozen) > 50_000, "imports, config and price tables: the permanent generation"
    assert int(scanned) < int(frozen) // 20, "what a full collection still scans right after start-up: little"
    assert registry_scanned == "False", "the registry, built before start, is among the frozen"
    *_, frozen_after, _, _, _, second_registry_scanned = second.split()
    assert int(frozen_after) <= int(frozen), "a second gateway in the process freezes nothing more (frozen objects may die)"
    assert second_registry_scanned == "True"
