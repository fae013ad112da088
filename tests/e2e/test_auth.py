"""Auth modes, virtual keys and the admin API, driven with the official SDKs and the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import anthropic
import httpx
import openai
import pytest

from cascadeflow import ProxyConfig
from cascadeflow.store import Ledger
from tests.conftest import sim_routes

MASTER = "master-key-for-tests-7f3a"
ROUTE_KEY = "sk-ant-route-key"
ASK = {"max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}


def _config(sim, tmp_path, mode: str, **extra) -> ProxyConfig:
    return ProxyConfig.from_dict({
        "routes": sim_routes(sim), "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
        "auth": {"mode": mode, "master_key": MASTER, **extra.pop("auth", {})}, **extra,
    })


def _admin(gw) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MASTER}"}, timeout=10)


def _sent_key(sim) -> str | None:
    """The one credential the provider received (as x-api-key or a bearer token)."""
    sent = [v.removeprefix("Bearer ") for v in _upstream_credentials(sim).values() if v]
    assert len(sent) <= 1, sent
    return sent[0] if sent else None


def _upstream_credentials(sim) -> dict:
    last = sim.requests[-1]["headers"]
    return {k: last.get(k) for k in ("x-api-key", "authorization")}


def test_api_key_mode_needs_a_valid_virtual_key_and_never_forwards_it(fresh_sim, start_gateway, tmp_path):
    gw = start_gateway(_config(fresh_sim, tmp_path, "api_key", auth={"keys": [
        {"key": "cascade-dev-alice", "user_id": "alice", "tier": "pro"},
        {"key": "cascade-dev-bob", "user_id": "bob", "models": ["claude-haiku-*"]},
        {"key": "cascade-dev-old", "user_id": "old", "expires_at": time.time() - 60},
    ]}))
    bare = httpx.post(gw.url + "/v1/messages", json={"model": "claude-sonnet-5-5", **ASK})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"
    assert "required" in bare.json()["error"]["message"]
    assert bare.headers["x-should-retry"] == "false"  # clients must not retry a refusal that cannot change
    for key in ("wrong-key", "cfk_0123456789ab_guessed"):
        client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as refused:
            client.messages.create(model="claude-sonnet-5-5", **ASK)
        assert refused.value.body["error"]["type"] == "authentication_error"
        assert key not in refused.value.message  # a presented key is never echoed
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key="nope", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.AuthenticationError, match="expired"):
        anthropic.Anthropic(base_url=gw.url, api_key="cascade-dev-old", max_retries=0).messages.create(
            model="claude-sonnet-5-5", **ASK)
    assert fresh_sim.requests == []  # nothing refused reached the provider

    alice = anthropic.Anthropic(base_url=gw.url, api_key="cascade-dev-alice", max_retries=0)
    assert alice.messages.create(model="claude-sonnet-5-5", **ASK).content[0].text
    assert _upstream_credentials(fresh_sim) == {"x-api-key": ROUTE_KEY, "authorization": None}
    # Claude Code with ANTHROPIC_AUTH_TOKEN sends a bearer token (and may send x-api-key too)
    both = anthropic.Anthropic(base_url=gw.url, auth_token="cascade-dev-alice", default_headers={"x-api-key": "stale"},
                               max_retries=0)
    assert both.messages.create(model="claude-sonnet-5-5", **ASK).content
    assert _upstream_credentials(fresh_sim) == {"x-api-key": ROUTE_KEY, "authorization": None}

    bob = anthropic.Anthropic(base_url=gw.url, api_key="cascade-dev-bob", max_retries=0)
    assert bob.messages.create(model="claude-haiku-5-5", **ASK).content
    with pytest.raises(anthropic.PermissionDeniedError, match="may not use model"):
        bob.messages.create(model="claude-opus-5-5", **ASK)
    assert [m.id for m in bob.models.list()] and all(m.id.startswith("claude-haiku-") for m in bob.models.list())
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).models.list()


def test_pass_through_mode_forwards_the_callers_own_key(fresh_sim, start_gateway, tmp_path):
    gw = start_gateway(_config(fresh_sim, tmp_path, "pass_through"))
    assert httpx.post(gw.url + "/v1/messages", json={"model": "claude-sonnet-5-5", **ASK}).status_code == 401
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-callers-own", max_retries=0)
    assert client.messages.create(model="claude-sonnet-5-5", **ASK).content
    assert _sent_key(fresh_sim) == "sk-ant-callers-own"  # not the route's key
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-openai-callers-own", max_retries=0)
    oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert _upstream_credentials(fresh_sim)["authorization"] == "Bearer sk-openai-callers-own"


def test_hybrid_mode_takes_virtual_keys_and_forwards_provider_keys(fresh_sim, start_gateway, tmp_path):
    gw = start_gateway(_config(fresh_sim, tmp_path, "hybrid"))
    with _admin(gw) as admin:
        issued = admin.post("/admin/keys", json={"user_id": "carol"}).json()["key"]
    anthropic.Anthropic(base_url=gw.url, api_key=issued, max_retries=0).messages.create(model="claude-sonnet-5-5", **ASK)
    assert _sent_key(fresh_sim) == ROUTE_KEY
    anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-own", max_retries=0).messages.create(model="claude-sonnet-5-5", **ASK)
    assert _sent_key(fresh_sim) == "sk-ant-own"
    calls = len(fresh_sim.requests)
    with pytest.raises(anthropic.AuthenticationError):  # a cascadeflow-shaped key is never sent to a provider
        anthropic.Anthropic(base_url=gw.url, api_key=issued[:-3] + "xyz", max_retries=0).messages.create(
            model="claude-sonnet-5-5", **ASK)
    assert len(fresh_sim.requests) == calls


def test_hybrid_mode_never_sends_a_virtual_key_upstream_beside_a_provider_key(fresh_sim, start_gateway, tmp_path):
    """Every header that may carry a credential (x-api-key, Authorization, api-key) is read: a valid virtual
    key in any of them is consumed (the route's key goes upstream), a cfk_-shaped one that is not valid is
    refused, and when the caller's provider key is forwarded nothing of ours goes with it."""
    gw = start_gateway(_config(fresh_sim, tmp_path, "hybrid"))
    with _admin(gw) as admin:
        issued = admin.post("/admin/keys", json={"user_id": "carol"}).json()["key"]
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    claude = {"model": "claude-sonnet-5-5", **ASK}
    cases = [  # (path, body, headers, the key the upstream must get)
        ("/v1/chat/completions", chat, {"x-api-key": "sk-own", "api-key": issued}, "sk-openai-route-key"),
        ("/v1/chat/completions", chat, {"authorization": "Bearer sk-own", "api-key": issued}, "sk-openai-route-key"),
        ("/v1/chat/completions", chat, {"api-key": "sk-own", "x-api-key": issued}, "sk-openai-route-key"),
        ("/v1/messages", claude, {"x-api-key": "sk-own", "authorization": f"Bearer {issued}"}, ROUTE_KEY),
        ("/v1/messages", claude, {"x-api-key": "sk-own", "api-key": issued}, ROUTE_KEY),
    ]
    for path, body, headers, expected in cases:
        fresh_sim.clear()
        answer = httpx.post(gw.url + path, json=body, headers=headers, timeout=10)
        assert answer.status_code == 200, (headers, answer.text)
        sent = fresh_sim.requests[-1]["headers"]
        assert issued not in json.dumps(sent) and "cfk_" not in json.dumps(sent), (headers, sent)
        assert _sent_key(fresh_sim) == expected, headers
    # the official SDK with the caller's provider key, and a virtual key in api-key, to a translated route
    fresh_sim.clear()
    anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-own", default_headers={"api-key": issued},
                        max_retries=0).messages.create(model="gpt-4o-mini", **ASK)
    assert "cfk_" not in json.dumps(fresh_sim.requests[-1]["headers"])
    assert _sent_key(fresh_sim) == "sk-openai-route-key"
    # a cfk_-shaped key that is not (or no longer) ours, beside a provider key: refused, nothing sent
    fresh_sim.clear()
    for header in ("api-key", "authorization", "x-api-key"):
        other = "x-api-key" if header != "x-api-key" else "authorization"
        forged = issued[:-3] + "xyz"
        headers = {header: f"Bearer {forged}" if header == "authorization" else forged,
                   other: "Bearer sk-own" if other == "authorization" else "sk-own"}
        refused = httpx.post(gw.url + "/v1/chat/completions", json=chat, headers=headers, timeout=10)
        assert refused.status_code == 401, (headers, refused.text)
    assert fresh_sim.requests == []
    # the caller's own provider key alone is still forwarded, in every header it may come in
    for headers in ({"api-key": "sk-own"}, {"x-api-key": "sk-own"}, {"authorization": "Bearer sk-own"}):
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat, headers=headers, timeout=10).status_code == 200
        assert _sent_key(fresh_sim) == "sk-own", headers


def test_admin_api_issues_lists_shows_and_revokes_keys(fresh_sim, start_gateway, tmp_path):
    config = _config(fresh_sim, tmp_path, "api_key")
    gw = start_gateway(config)
    assert httpx.get(gw.url + "/admin/keys").status_code == 401
    assert httpx.get(gw.url + "/admin/keys", headers={"authorization": "Bearer wrong"}).status_code == 401
    with _admin(gw) as admin:
        bad = admin.post("/admin/keys", json={"limits": {"rpm": -1}, "colour": "red"})
        assert bad.status_code == 400 and "rpm" in bad.json()["error"]["message"]
        created = admin.post("/admin/keys", json={"name": "ci", "user_id": "dave", "team": "backend",
                                                  "limits": {"rpm": 100, "daily_budget_usd": 5}}).json()
        secret, key_id = created["key"], created["key_id"]
        assert secret.startswith(f"cfk_{key_id}_") and created["status"] == "active"
        client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
        reply = client.messages.with_raw_response.create(model="claude-sonnet-5-5", **ASK)
        listed = admin.get("/admin/keys").json()["keys"]
        assert [k["key_id"] for k in listed] == [key_id]
        assert secret not in json.dumps(listed) and "hash" not in json.dumps(listed)
        time.sleep(0.8)  # the ledger writes in batches
        shown = admin.get(f"/admin/keys/{key_id}").json()
        assert shown["limits"] == {"rpm": 100, "daily_budget_usd": 5.0} and shown["team"] == "backend"
        assert shown["spend"]["today_usd"] == pytest.approx(float(reply.headers["x-cascadeflow-cost-usd"]))
        revoked = admin.delete(f"/admin/keys/{key_id}").json()
        assert revoked["status"] == "revoked"
        assert admin.get("/admin/keys/nope").status_code == 404
    with pytest.raises(anthropic.AuthenticationError, match="revoked"):
        client.messages.create(model="claude-sonnet-5-5", **ASK)

    async def ledger_rows() -> list[dict]:
        ledger = await Ledger(config.database_url).start()
        try:
            return await ledger.rows()
        finally:
            await ledger.aclose()

    deadline = time.monotonic() + 5
    while len(rows := asyncio.run(ledger_rows())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [(r["key_id"], r["user_id"], r["team"], r["status"]) for r in rows] == [
        (key_id, "dave", "backend", 200), (None, None, None, 401)]


def test_the_keys_command_drives_the_admin_api(fresh_sim, start_gateway, tmp_path):
    gw = start_gateway(_config(fresh_sim, tmp_path, "api_key"))

    def keys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cascadeflow.cli", "keys", *args, "--url", gw.url],
                              capture_output=True, text=True, timeout=60, env={"CASCADEFLOW_MASTER_KEY": MASTER, "PATH": ""})

    made = keys("create", "--user", "erin", "--team", "data", "--models", "claude-*", "--rpm", "30",
                "--daily-budget-usd", "2.5")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    key_id = secret.split("_")[1]
    assert "shown this once" in made.stderr and "warning" not in made.stderr
    anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0).messages.create(model="claude-haiku-5-5", **ASK)
    listed = keys("list")
    assert listed.returncode == 0 and key_id in listed.stdout and "erin" in listed.stdout and "rpm=30" in listed.stdout
    assert secret not in listed.stdout
    shown = keys("show", key_id)
    assert "daily_budget_usd=2.5" in shown.stdout and "active" in shown.stdout
    assert keys("revoke", key_id).returncode == 0
    assert "revoked" in keys("show", key_id).stdout
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0).messages.create(model="claude-haiku-5-5", **ASK)
    wrong = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "keys", "list", "--url", gw.url, "--master-key", "bad"],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "401" in wrong.stderr


def test_issuing_a_key_on_a_gateway_that_does_not_check_keys_warns(fresh_sim, start_gateway, tmp_path):
    gw = start_gateway(_config(fresh_sim, tmp_path, "none"))
    with _admin(gw) as admin:
        created = admin.post("/admin/keys", json={"user_id": "zoe"}).json()
    assert created["key"].startswith("cfk_") and "does not check virtual keys" in created["warning"]
