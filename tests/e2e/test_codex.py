"""The real Codex CLI, headless (`codex exec`), through the gateway to the simulated provider.

Codex speaks only the Responses API (``wire_api = "responses"``), streaming, with
``store: false`` and the whole conversation in ``input``. The simulator drives a tool
loop: the task is answered with an ``exec_command`` call that writes a file, Codex runs
it and sends the output back as a ``function_call_output``, the model gives a final
answer. Run on an OpenAI route (forwarded as received), on a chat-only route (translated
to Chat Completions) and on a Claude model (translated to the Messages API).

`.ci/run` installs the pinned version (npm ``@openai/codex@CODEX_VERSION``); set
``CODEX_BIN`` to try another (the latest, say). Without the CLI these tests are skipped
(in CI a missing CLI is a failure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from cascadeflow import ProxyConfig
from tests.conftest import NO_RETRY

ROOT = Path(__file__).resolve().parents[2]
#: the version these tests were written against (Codex 0.171 sends the request shape issue 14 describes)
CODEX_VERSION = "0.171.0"
TASK = "Create hello.txt containing the word hi"


def codex_bin() -> str | None:
    for candidate in (os.environ.get("CODEX_BIN"), str(ROOT / ".ci" / "node_modules" / ".bin" / "codex"),
                      shutil.which("codex")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def codex():
    path = codex_bin()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the Codex CLI is not installed; .ci/run installs it")
        pytest.skip(f"the Codex CLI is not installed (npm install @openai/codex@{CODEX_VERSION})")
    return path


@pytest.fixture(scope="module")
def codex_gw(sim, start_gateway):
    return start_gateway(ProxyConfig.from_dict({"routes": [
        {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "sk-ant-route", **NO_RETRY},
        {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-openai-route",
         "openai_api": "responses", **NO_RETRY},
        {"name": "chat", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-chat-route", **NO_RETRY},
    ]}))


def run_codex(codex: str, gateway_url: str, workdir: Path, model: str, prompt: str) -> tuple[int, list[dict], str]:
    """`codex exec --json` with a custom model provider pointing at the gateway; (exit code, events, stderr)."""
    home = workdir / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "cascadeflow"\n\n'
        "[model_providers.cascadeflow]\n"
        'name = "cascadeflow"\n'
        f'base_url = "{gateway_url}/v1"\n'
        'env_key = "CASCADEFLOW_API_KEY"\n'
        'wire_api = "responses"\n'
    )
    project = workdir / "project"
    project.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir), "CODEX_HOME": str(home),
           "CASCADEFLOW_API_KEY": "sk-caller-key"}
    result = subprocess.run(
        [codex, "exec", "--skip-git-repo-check", "--json", "--dangerously-bypass-approvals-and-sandbox", prompt],
        cwd=project, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, events, result.stderr


@pytest.mark.parametrize(("model", "served", "path"), [
    ("gpt-5.4", "gpt-5.4", "/v1/responses"),
    ("chat:gpt-5.4-mini", "gpt-5.4-mini", "/v1/chat/completions"),
    ("claude-haiku-5-5", "claude-haiku-5-5", "/v1/messages"),
], ids=["openai-forwarded", "chat-translated", "claude-translated"])
def test_codex_edits_a_file_through_the_gateway(codex, codex_gw, fresh_sim, tmp_path, model, served, path):
    fresh_sim.set_script([
        {"match": {"prompt_contains": TASK}, "tool_calls": [{"name": "exec_command", "input": {"cmd": "printf 'hi\\n' > hello.txt"}}]},
        {"match": {"model": served}, "text": "Created hello.txt."},
    ])
    code, events, stderr = run_codex(codex, codex_gw.url, tmp_path, model, TASK)
    assert code == 0, stderr[-2000:]
    assert (tmp_path / "project" / "hello.txt").read_text() == "hi\n"
    messages = [e["item"]["text"] for e in events if e.get("type") == "item.completed"
                and e["item"].get("type") == "agent_message"]
    assert messages[-1] == "Created hello.txt."
    calls = [r for r in fresh_sim.requests if r["method"] == "POST"]
    assert [r["path"] for r in calls] == [path, path] and {r["body"]["model"] for r in calls} == {served}
    second = calls[1]["body"]
    if path == "/v1/responses":  # forwarded as Codex sent it: its own fields and headers survive
        assert second["store"] is False and second["prompt_cache_key"] and calls[1]["headers"]["originator"]
        assert any(item.get("type") == "function_call_output" for item in second["input"])
    elif path == "/v1/messages":  # the session is cached on Claude, and Codex's web search is Claude's own
        assert second["system"][0]["cache_control"] == {"type": "ephemeral"}
        assert [t for t in second["tools"] if t.get("type", "").startswith("web_search")][0]["name"] == "web_search"
    usage = [e["usage"] for e in events if e.get("type") == "turn.completed"][-1]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    stats = httpx.get(codex_gw.url + "/stats").json()
    assert stats["total_cost"] > 0


@pytest.fixture(scope="module")
def latest_codex():
    """The newest Codex release, beside the pinned one (`.ci/run` installs it into .ci/latest)."""
    path = ROOT / ".ci" / "latest" / "node_modules" / ".bin" / "codex"
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail("the latest Codex CLI is not installed; .ci/run installs it into .ci/latest")
        pytest.skip("the latest Codex CLI is not installed (npm install --prefix .ci/latest @openai/codex@latest)")
    return str(path)


@pytest.mark.parametrize(("model", "served", "path"), [
    ("gpt-5.4", "gpt-5.4", "/v1/responses"), ("claude-haiku-5-5", "claude-haiku-5-5", "/v1/messages"),
], ids=["openai-forwarded", "claude-translated"])
def test_the_latest_codex_edits_a_file_too(latest_codex, codex_gw, fresh_sim, tmp_path, model, served, path):
    """The newest release still works through the gateway (the pinned tests above say what changed if not)."""
    fresh_sim.set_script([
        {"match": {"prompt_contains": TASK}, "tool_calls": [{"name": "exec_command", "input": {"cmd": "printf 'hi\\n' > hello.txt"}}]},
        {"match": {"model": served}, "text": "Created hello.txt."},
    ])
    version = subprocess.run([latest_codex, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    code, _, stderr = run_codex(latest_codex, codex_gw.url, tmp_path, model, TASK)
    assert code == 0, f"{version}: {stderr[-2000:]}"
    assert (tmp_path / "project" / "hello.txt").read_text() == "hi\n", version
    assert {r["path"] for r in fresh_sim.requests if r["method"] == "POST"} == {path}


def test_codex_version_is_the_pinned_one_unless_overridden(codex):
    version = subprocess.run([codex, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if os.environ.get("CODEX_BIN"):
        pytest.skip(f"CODEX_BIN runs {version}, not the pinned {CODEX_VERSION}: unset CODEX_BIN to check the pinned one "
                    f"(npm install --prefix .ci @openai/codex@{CODEX_VERSION})")
    assert version == f"codex-cli {CODEX_VERSION}"


@pytest.fixture(scope="module")
def codex_cascade_gw(sim, start_gateway):
    return start_gateway(ProxyConfig.from_dict({
        "routes": [
            {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "sk-ant-route", **NO_RETRY},
            {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-openai-route",
             "openai_api": "responses", **NO_RETRY},
        ],
        "cascade_rules": [{"name": "gpt", "request_model": "gpt-5.4", "draft_model": "gpt-5.4-mini"},
                          {"name": "opus", "request_model": "claude-opus-5-5", "draft_model": "claude-haiku-5-5"}],
    }))


@pytest.mark.parametrize(("model", "draft", "path"), [
    ("gpt-5.4", "gpt-5.4-mini", "/v1/responses"),
    ("claude-opus-5-5", "claude-haiku-5-5", "/v1/messages"),
], ids=["gpt-rule", "claude-rule"])
def test_codex_through_a_cascade(codex, codex_cascade_gw, fresh_sim, tmp_path, model, draft, path):
    """Both turns of the tool loop are drafted on the cheaper model, checked, accepted and replayed."""
    fresh_sim.set_script([
        {"match": {"prompt_contains": TASK}, "tool_calls": [{"name": "exec_command", "input": {"cmd": "printf 'hi\\n' > hello.txt"}}]},
        {"match": {"model": draft}, "text": "Created hello.txt."},
    ])
    code, events, stderr = run_codex(codex, codex_cascade_gw.url, tmp_path, model, TASK)
    assert code == 0, stderr[-2000:]
    assert (tmp_path / "project" / "hello.txt").read_text() == "hi\n"
    calls = [(r["path"], r["body"]["model"]) for r in fresh_sim.requests if r["method"] == "POST"]
    assert calls == [(path, draft), (path, draft)]
    stats = httpx.get(codex_cascade_gw.url + "/stats").json()
    rule = "gpt" if model.startswith("gpt") else "opus"
    assert stats["cascade"][rule]["accepted"] == stats["cascade"][rule]["requests"] == 2


@pytest.mark.parametrize(("model", "draft", "path"), [
    ("gpt-5.4", "gpt-5.4-mini", "/v1/responses"),
    ("claude-opus-5-5", "claude-haiku-5-5", "/v1/messages"),
], ids=["gpt-rule", "claude-rule"])
def test_a_failed_command_sends_codex_next_turn_to_the_verifier(codex, codex_cascade_gw, fresh_sim, tmp_path, model,
                                                                 draft, path):
    """A Codex thread is a conversation: the drafted turn's command fails (a non-zero exit code in the output Codex
    sends back), so the next turn is not drafted — the verifier answers it (docs/codex.md, cascades). A thread
    cascaded to Claude models (translated) is remembered too."""
    fresh_sim.set_script([
        {"match": {"prompt_contains": TASK}, "tool_calls": [{"name": "exec_command",
                                                              "input": {"cmd": "echo boom; exit 3"}}]},
        {"match": {"model": draft}, "text": "Created hello.txt."},
        {"match": {"model": model}, "text": "The command failed with exit code 3."},
    ])
    code, _, stderr = run_codex(codex, codex_cascade_gw.url, tmp_path, model, TASK)
    assert code == 0, stderr[-2000:]
    calls = [(r["path"], r["body"]["model"]) for r in fresh_sim.requests if r["method"] == "POST"]
    assert calls == [(path, draft), (path, model)]
    rule = "gpt" if model.startswith("gpt") else "opus"
    stats = httpx.get(codex_cascade_gw.url + "/stats").json()["cascade"][rule]
    assert stats["skipped_by_policy"].get("session_signal:tool_error") == 1
