"""`cascadeflow claude` and `cascadeflow codex`: the real CLIs, started by the launcher, reach the gateway.

The launcher finds the CLI on PATH only; the tests put ``.ci/node_modules/.bin`` (where `.ci/run`
installs both) on PATH, as a user's global npm install would. The agent gets no settings of its
own (an empty home): everything that points it at the gateway comes from the launcher.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cascadeflow import ProxyConfig
from tests.conftest import ledger_rows, sim_routes

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / ".ci" / "node_modules" / ".bin"


def needs(command: str, package: str) -> None:
    if not (NODE_BIN / command).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{command} is not installed; .ci/run installs it")
        pytest.skip(f"{command} is not in {NODE_BIN} (install it: npm install --prefix .ci {package}, or run .ci/run)")


def launcher(args: list[str], home: Path, env: dict[str, str] | None = None, path: str | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess:
    base = {"PATH": path if path is not None else f"{NODE_BIN}:{os.environ.get('PATH', '')}", "HOME": str(home),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "CASCADEFLOW_CONFIG": "",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    return subprocess.run([sys.executable, "-m", "cascadeflow.cli", *args], cwd=home, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture()
def routed(sim, fresh_sim, start_gateway, tmp_path):
    config = ProxyConfig.from_dict({"routes": sim_routes(sim, anthropic_key="sk-ant-route", openai_key="sk-oai-route"),
                                    "database_url": f"sqlite:///{tmp_path / 'ledger.db'}"})
    (tmp_path / "home").mkdir()
    return start_gateway(config), config, tmp_path / "home"


def test_cascadeflow_claude_completes_a_prompt_through_the_gateway(routed, fresh_sim):
    needs("claude", "@anthropic-ai/claude-code")
    gateway, config, home = routed
    fresh_sim.set_script([{"match": {"prompt_contains": "launcher check"}, "text": "Launched through cascadeflow."}])
    done = launcher(["claude", "--url", gateway.url, "-p", "launcher check", "--output-format", "json"], home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["result"] == "Launched through cascadeflow."
    rows = ledger_rows(config.database_url, at_least=1)
    assert any(r["endpoint"] == "/v1/messages" and r["status"] == 200 and r["served_model"] for r in rows), rows
    # no key of the user's: the launcher's placeholder never went upstream, the route's key did
    sent = [r["headers"] for r in fresh_sim.requests if r["path"] == "/v1/messages"]
    assert sent and all(h.get("x-api-key") == "sk-ant-route" and "authorization" not in h for h in sent)


def test_cascadeflow_codex_runs_with_no_config_of_its_own(routed, fresh_sim):
    needs("codex", "@openai/codex")
    gateway, config, home = routed
    fresh_sim.set_script([{"match": {"prompt_contains": "launcher check"}, "text": "Codex via cascadeflow."}])
    (home / "codex-home").mkdir()
    done = launcher(["codex", "exec", "--skip-git-repo-check", "--json", "-m", "gpt-5.4", "launcher check"], home,
                    env={"CASCADEFLOW_URL": gateway.url, "CODEX_HOME": str(home / "codex-home"),
                         "CASCADEFLOW_KEY": "sk-user-openai"})
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    texts = [e["item"].get("text") for e in events if e.get("type") == "item.completed"]
    assert texts[-1] == "Codex via cascadeflow."
    rows = ledger_rows(config.database_url, at_least=1)
    assert any(r["endpoint"] == "/v1/responses" and r["status"] == 200 and r["served_model"] == "gpt-5.4" for r in rows), rows


def test_no_gateway_is_one_line_saying_how_to_start_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stub = tmp_path / "bin" / "claude"  # a CLI on PATH (installed or not here): the gateway's absence is what fails
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    done = launcher(["claude", "--url", f"http://127.0.0.1:{port}", "-p", "hi"], tmp_path, timeout=30,
                    path=f"{stub.parent}:{os.environ.get('PATH', '')}")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"127.0.0.1:{port}/health" in done.stderr and "cascadeflow proxy start" in done.stderr


@pytest.mark.parametrize(("command", "package"), [("claude", "@anthropic-ai/claude-code"), ("codex", "@openai/codex")])
def test_a_cli_missing_from_path_names_the_npm_package(tmp_path, command, package):
    done = launcher([command, "--url", "http://127.0.0.1:9", "exec"], tmp_path, path=str(tmp_path), timeout=30)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"npm install -g {package}" in done.stderr and "PATH" in done.stderr


def test_the_url_comes_from_the_config_when_not_given(tmp_path):
    from cascadeflow.launch import gateway_url, split_args

    config = tmp_path / "gw.yaml"
    config.write_text("server: {host: 0.0.0.0, port: 8123}\n")
    assert gateway_url(None, str(config), {}) == "http://127.0.0.1:8123"
    assert gateway_url(None, str(config), {"CASCADEFLOW_URL": "http://gw:9/"}) == "http://gw:9"
    assert split_args(["--url=http://x", "--config", "f.yaml", "-c", "model=o3", "--url", "y"]) == (
        "http://x", "f.yaml", ["-c", "model=o3", "--url", "y"])
    assert split_args(["--", "--url", "y"]) == (None, None, ["--url", "y"])
