"""Virtual keys with their own provider keys: used upstream instead of the route's, sealed at rest.

Gateway processes started from config files (their whole log captured), the official
SDKs as clients, the simulated provider as the upstream that says which key it got.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import yaml
from cryptography.fernet import Fernet

from cascadeflow import ProxyConfig, create_app
from cascadeflow.sim import ServerThread
from tests import needs
from tests.conftest import launch_gateway_process, sim_routes
from tests.pg_db import UNREACHABLE, create_database, drop_database

MASTER = "master-key-creds-41c7"
OLD_SECRET, NEW_SECRET, WRONG_SECRET = (Fernet.generate_key().decode() for _ in range(3))
ANT_OWN = "fake-anthropic-key-alice-7d1f0c9e2b"
OAI_OWN = "sk-openai-alice-own-5a8e3d6c1f"
DORA_OWN = "fake-anthropic-key-dora-e4b2a7"
ROUTE = {"anthropic": "sk-ant-route-key", "openai": "sk-openai-route-key"}
OPUS, HAIKU, GPT, MINI = "claude-opus-5-5", "claude-haiku-5-5", "gpt-4o", "gpt-4o-mini"
ESCALATE = "credential check"  # drafts answer it with nothing: the cascade escalates to the verifier
SCRIPT = [{"match": {"model": HAIKU, "prompt_contains": ESCALATE}, "text": ""},
          {"match": {"model": MINI, "prompt_contains": ESCALATE}, "text": ""}]
POSTGRES = os.environ.get("CASCADEFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _config(sim, database_url: str, secret: str | None = OLD_SECRET, previous: str | None = None) -> str:
    auth: dict = {"mode": "hybrid", "master_key": MASTER, "refresh_seconds": 0.2,
                  "keys": [{"key": "cfg-key-dora", "user_id": "dora", "provider_keys": {"anthropic": DORA_OWN}}]}
    if secret is not None:
        auth["secret_key"] = secret
    if previous is not None:
        auth["secret_key_previous"] = previous
    return yaml.safe_dump({
        "routes": sim_routes(sim), "database_url": database_url, "auth": auth,
        "cascade_rules": [{"request_model": OPUS, "draft_model": HAIKU, "policies": {"cache_economics": False}},
                          {"request_model": GPT, "draft_model": MINI, "policies": {"cache_economics": False}}],
    })


class Gateway:
    """One `cascadeflow proxy start` process, its log in a file."""

    def __init__(self, tmp_path: Path, config: str) -> None:
        self.log = tmp_path / f"gateway-{uuid.uuid4().hex[:6]}.log"
        self.process, self.url = launch_gateway_process(tmp_path, config, self.log, server={"log_level": "debug"})

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {MASTER}"}, timeout=10)

    def stop(self) -> bytes:
        self.process.terminate()
        self.process.wait(timeout=30)
        return self.log.read_bytes()


@pytest.fixture()
def gateways(tmp_path):
    started: list[Gateway] = []

    def start(config: str) -> Gateway:
        gateway = Gateway(tmp_path, config)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.stop()


def _keys_sent(sim, since: int) -> list[tuple[str, str]]:
    """(model, the one credential the upstream got) for each request since ``since``."""
    seen = []
    for request in sim.requests[since:]:
        headers = request["headers"]
        sent = [v.removeprefix("Bearer ") for k, v in headers.items() if k in ("x-api-key", "authorization", "api-key")]
        assert len(sent) == 1, headers
        seen.append((request["body"]["model"], sent[0]))
    return seen


def _ask(gw_url: str, key: str, model: str, prompt: str = "hello", *, via: str = "anthropic", stream: bool = False):
    """One request with the official SDK of ``via``; the answer's text is checked to be there."""
    if via == "anthropic":
        with anthropic.Anthropic(base_url=gw_url, api_key=key, max_retries=0) as client:
            ask = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}
            if stream:
                with client.messages.stream(**ask) as events:
                    return events.get_final_message()
            return client.messages.create(**ask)
    with openai.OpenAI(base_url=gw_url + "/v1", api_key=key, max_retries=0) as client:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], stream=stream)
        return list(reply) if stream else reply


def _create(gateway: Gateway, **body) -> dict:
    with gateway.admin() as admin:
        made = admin.post("/admin/keys", json=body)
    assert made.status_code == 201, made.text
    return made.json()


def test_a_keys_own_provider_keys_go_upstream_and_nowhere_else(sim, fresh_sim, gateways, tmp_path):
    fresh_sim.set_script(SCRIPT)
    db = tmp_path / "gw.db"
    gw = gateways(_config(sim, f"sqlite:///{db}"))
    created = _create(gw, user_id="alice", provider_keys={"anthropic": ANT_OWN, "openai": OAI_OWN})
    alice, alice_id = created["key"], created["key_id"]
    assert created["provider_keys"] == {"anthropic": "set", "openai": "set"}
    bob = _create(gw, user_id="bob")["key"]

    cases = [  # (sdk, model, prompt, stream, what the upstream must get, for alice then for bob)
        ("anthropic", "claude-sonnet-5-5", "hello", False, [("claude-sonnet-5-5", "anthropic")]),
        ("openai", MINI, "hello", True, [(MINI, "openai")]),
        ("anthropic", MINI, "hello", False, [(MINI, "openai")]),  # translated: the OpenAI route's key kind
        ("openai", "claude-haiku-5-5", "hello", False, [("claude-haiku-5-5", "anthropic")]),
        ("anthropic", OPUS, ESCALATE + " one", False, [(HAIKU, "anthropic"), (OPUS, "anthropic")]),
        ("anthropic", OPUS, ESCALATE + " two", True, [(HAIKU, "anthropic"), (OPUS, "anthropic")]),
        ("openai", GPT, ESCALATE + " three", False, [(MINI, "openai"), (GPT, "openai")]),
        ("openai", GPT, ESCALATE + " four", True, [(MINI, "openai"), (GPT, "openai")]),
    ]
    own = {"anthropic": ANT_OWN, "openai": OAI_OWN}
    for sdk, model, prompt, stream, calls in cases:
        for who, key, keys in (("alice", alice, own), ("bob", bob, ROUTE)):
            since = len(fresh_sim.requests)
            assert _ask(gw.url, key, model, f"{prompt} ({who})", via=sdk, stream=stream)
            assert _keys_sent(fresh_sim, since) == [(m, keys[kind]) for m, kind in calls], (who, sdk, model, stream)
    # a key from the config file: its own anthropic key; no openai key of its own, so the route's
    since = len(fresh_sim.requests)
    _ask(gw.url, "cfg-key-dora", "claude-sonnet-5-5")
    _ask(gw.url, "cfg-key-dora", MINI, via="openai")
    assert _keys_sent(fresh_sim, since) == [("claude-sonnet-5-5", DORA_OWN), (MINI, ROUTE["openai"])]

    with gw.admin() as admin:
        answers = [admin.get("/admin/keys"), admin.get(f"/admin/keys/{alice_id}"), admin.get("/stats"),
                   admin.get("/metrics"), admin.get("/openapi.json")]
        shown = answers[1].json()
        typo = admin.post("/admin/keys", json={"provider_keys": {"antropic": ANT_OWN}})
    assert shown["provider_keys"] == {"anthropic": "set", "openai": "set"}
    listed = {k["key_id"]: k for k in answers[0].json()["keys"]}
    assert listed[alice_id]["provider_keys"] == {"anthropic": "set", "openai": "set"}
    assert typo.status_code == 400 and "'antropic' is neither a route nor a provider kind" in typo.json()["error"]["message"]
    with gw.admin() as admin:  # revoking a key deletes its provider keys: they are of no more use
        revoked = admin.delete(f"/admin/keys/{alice_id}").json()
    assert revoked["status"] == "revoked" and revoked["provider_keys"] == {}
    time.sleep(1.0)  # the ledger writes in batches
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("gw.db*"))  # the file, its WAL and shared memory
    assert alice_id.encode() in stored and b"provider_keys" in stored  # the search covers where the keys live
    log = gw.stop()
    stored += b"".join(p.read_bytes() for p in tmp_path.glob("gw.db*"))
    assert f"key {alice_id} created".encode() in log  # the log was captured (debug level)
    for secret in (ANT_OWN, OAI_OWN, DORA_OWN):
        for where, text in (("the log", log), ("the SQLite files", stored),
                            ("an admin answer", b"".join(a.content for a in answers)),
                            ("the create answer", json.dumps(created).encode())):
            assert secret.encode() not in text, f"{secret} found in {where}"
            assert secret[-12:].encode() not in text, f"part of {secret} found in {where}"


class InProcess:
    """A gateway app served from this process (starts in a fraction of a second): for the rotation's restarts."""

    def __init__(self, config: str) -> None:
        self.server = ServerThread(create_app(ProxyConfig.from_dict(yaml.safe_load(config)))).start()
        self.url = self.server.url

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {MASTER}"}, timeout=10)

    def stop(self) -> None:
        self.server.stop()


def test_rotating_the_secret_key_keeps_every_key_working(sim, fresh_sim, tmp_path, caplog):
    database = f"sqlite:///{tmp_path / 'rotate.db'}"

    def upstream_key(gw: InProcess, key: str) -> str:
        since = len(fresh_sim.requests)
        _ask(gw.url, key, "claude-sonnet-5-5")
        return _keys_sent(fresh_sim, since)[0][1]

    first = InProcess(_config(sim, database, OLD_SECRET))
    made = _create(first, user_id="alice", provider_keys={"anthropic": ANT_OWN})
    alice, alice_id = made["key"], made["key_id"]
    assert upstream_key(first, alice) == ANT_OWN
    first.stop()

    # step 1: the new key seals, the old one still opens
    rotating = InProcess(_config(sim, database, NEW_SECRET, previous=OLD_SECRET))
    assert upstream_key(rotating, alice) == ANT_OWN
    carol = _create(rotating, user_id="carol", provider_keys={"anthropic": "fake-anthropic-key-carol-93b1"})["key"]
    assert upstream_key(rotating, carol) == "fake-anthropic-key-carol-93b1"
    # step 2: every stored credential sealed again under the new key, through the CLI
    resealed = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "keys", "reseal", "--url", rotating.url],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "CASCADEFLOW_MASTER_KEY": MASTER})
    assert resealed.returncode == 0, resealed.stderr
    assert "provider keys of 2 key(s) encrypted again" in resealed.stdout
    rotating.stop()

    # step 3: the old key dropped; everything still opens
    rotated = InProcess(_config(sim, database, NEW_SECRET))
    assert upstream_key(rotated, alice) == ANT_OWN and upstream_key(rotated, carol) == "fake-anthropic-key-carol-93b1"
    rotated.stop()

    # without the old key, before the reseal, it would not have: a wrong or missing secret key refuses
    # the key's requests with one clear 503 (never the route's key, never a 500), and serves everyone else
    for secret in (WRONG_SECRET, None):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="cascadeflow"):
            broken = InProcess(_config(sim, database, secret))
            since = len(fresh_sim.requests)
            with pytest.raises(anthropic.InternalServerError) as refused:
                _ask(broken.url, alice, "claude-sonnet-5-5")
            assert refused.value.status_code == 503
            assert refused.value.response.headers["x-should-retry"] == "false"
            assert "cannot decrypt" in refused.value.message and "CASCADEFLOW_SECRET_KEY" in refused.value.message
            with pytest.raises(openai.InternalServerError) as refused_openai:
                _ask(broken.url, alice, MINI, via="openai")
            assert refused_openai.value.status_code == 503
            assert fresh_sim.requests[since:] == []
            assert upstream_key(broken, "cfg-key-dora") == DORA_OWN  # keys from the file need no secret key
            with broken.admin() as admin:
                assert admin.get(f"/admin/keys/{alice_id}").json()["provider_keys"] == {"anthropic": "unreadable"}
                resealing = admin.post("/admin/keys/reseal")
                if secret is None:  # nothing to seal with: refused at creation and at reseal, clearly
                    refused_create = admin.post("/admin/keys", json={"provider_keys": {"openai": OAI_OWN}})
                    assert refused_create.status_code == 400
                    assert "set CASCADEFLOW_SECRET_KEY" in refused_create.json()["error"]["message"]
                    assert resealing.status_code == 400 and "no secret key" in resealing.json()["error"]["message"]
                else:  # a reseal leaves what it cannot open as it is, and names it
                    assert resealing.json()["resealed"] == 0 and alice_id in resealing.json()["unreadable"]
                    assert len(resealing.json()["unreadable"]) == 2
            broken.stop()
        warnings = [r.getMessage() for r in caplog.records if "no configured secret key opens" in r.getMessage()]
        assert len(warnings) == 1 and "2 key(s)" in warnings[0], warnings  # said once, at start
        assert not any(ANT_OWN in r.getMessage() for r in caplog.records)
    # the keys still work once the right secret key is back
    again = InProcess(_config(sim, database, NEW_SECRET))
    assert upstream_key(again, alice) == ANT_OWN
    again.stop()


def test_a_malformed_secret_key_stops_the_start_with_one_line(sim, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(_config(sim, f"sqlite:///{tmp_path / 'x.db'}", secret=None))
    started = subprocess.run(
        [sys.executable, "-m", "cascadeflow.cli", "proxy", "start", "--config", str(config), "--port", "0"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CASCADEFLOW_CONFIG": "", "CASCADEFLOW_SECRET_KEY": "correct-horse-battery-staple"})
    assert started.returncode == 2, started.stderr
    assert "auth.secret_key (from $CASCADEFLOW_SECRET_KEY): not a secret key" in started.stderr
    assert "correct-horse" not in started.stderr + started.stdout and "Traceback" not in started.stderr
    made = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "keys", "new-secret"], capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0 and Fernet(made.stdout.strip().encode())  # what it prints is a usable key


@pytest.fixture()
def pg_database():
    try:
        database = create_database(POSTGRES)
    except UNREACHABLE as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(needs.postgres(POSTGRES, exc))
    yield database
    drop_database(POSTGRES, database)


def test_provider_keys_are_sealed_in_postgresql(sim, fresh_sim, gateways, pg_database):
    gw = gateways(_config(sim, pg_database))
    created = _create(gw, user_id="alice", provider_keys={"anthropic": ANT_OWN, "openai": OAI_OWN})
    since = len(fresh_sim.requests)
    _ask(gw.url, created["key"], MINI, via="openai")
    assert _keys_sent(fresh_sim, since) == [(MINI, OAI_OWN)]
    time.sleep(1.0)  # the ledger row is written

    async def rows() -> str:
        import asyncpg

        conn = await asyncpg.connect(pg_database.replace("postgresql://", "postgres://"))
        try:
            lines = []
            for table in ("api_keys", "requests", "schema_version"):
                lines += [str(dict(row)) for row in await conn.fetch(f"SELECT * FROM {table}")]
            return "\n".join(lines)
        finally:
            await conn.close()

    dumped = asyncio.run(rows())
    if shutil.which("pg_dump"):
        dump = subprocess.run(["pg_dump", "--data-only", pg_database], capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0, dump.stderr
        dumped += dump.stdout
    assert created["key_id"] in dumped and "gAAAA" in dumped  # the row is there, its provider keys sealed (Fernet)
    for secret in (ANT_OWN, OAI_OWN):
        assert secret not in dumped and secret[-12:] not in dumped
