"""The real Claude Code CLI, headless, through the gateway to the simulated provider.

The simulator drives a tool loop: the model answers the task with a Write tool call,
Claude Code writes the file and sends the tool result, the model gives a final answer.
`.ci/run` installs the CLI (npm `@anthropic-ai/claude-code`) at the version these tests were
written against (``CLAUDE_CODE_VERSION``), and the newest release into `.ci/latest` for one
test that says whether it still works; elsewhere set CLAUDE_BIN or install it, or these tests
are skipped (in CI a missing CLI is a failure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cascadeflow import ModelRegistry, ProxyConfig, Usage
from tests.conftest import sim_routes

ROOT = Path(__file__).resolve().parents[2]
OPUS, SONNET, MINI = "claude-opus-5-5", "claude-sonnet-5-5", "gpt-5.4-mini"
#: the release these tests were written against (`.ci/run` installs it; the latest runs beside it)
CLAUDE_CODE_VERSION = "2.1.332"


def claude_bin() -> str | None:
    for candidate in (os.environ.get("CLAUDE_BIN"), str(ROOT / ".ci" / "node_modules" / ".bin" / "claude"), shutil.which("claude")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def claude():
    path = claude_bin()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the Claude Code CLI is not installed; .ci/run installs it")
        pytest.skip("the Claude Code CLI is not installed (npm install @anthropic-ai/claude-code)")
    return path


def run_claude(claude: str, gateway_url: str, workdir: Path, prompt: str,
               api_key: str = "sk-ant-dummy-key-for-tests", **env_extra: str) -> tuple[int, list[dict], str]:
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway_url,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        **env_extra,
    }
    result = subprocess.run(
        [claude, "-p", prompt, "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=180,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, lines, result.stderr


def write_loop(model: str, target: Path, **draft_extra) -> list[dict]:
    """Script: the task is answered with a Write call, the tool result with a final text."""
    return [
        {"match": {"model": model, "prompt_contains": "Create hello.txt"},
         "tool_calls": [{"name": "Write", "input": {"file_path": str(target), "content": "hi\n"}}], **draft_extra},
        {"match": {"model": model, "prompt_contains": "success"}, "text": "Created hello.txt.", **draft_extra},
    ]


def models_called(sim) -> list[tuple[str, str]]:
    return [(r["path"], r["body"]["model"]) for r in sim.requests if r["path"] in ("/v1/messages", "/v1/chat/completions")]


def config_for(sim, **extra) -> ProxyConfig:
    return ProxyConfig.from_dict(
        {
            "routes": sim_routes(sim, anthropic_key=None, openai_key="sk-openai-route"),
            **extra,
        }
    )


def assert_tool_loop_done(code: int, lines: list[dict], stderr: str, target: Path) -> None:
    assert code == 0, stderr[-2000:]
    assert target.read_text() == "hi\n"
    result = next(line for line in reversed(lines) if line.get("type") == "result")
    assert result["subtype"] == "success" and not result.get("is_error")
    assert "Created hello.txt." in result["result"]


def test_pass_through_to_an_anthropic_upstream(claude, sim, fresh_sim, start_gateway, tmp_path):
    target = tmp_path / "hello.txt"
    sim.set_script(write_loop(OPUS, target))
    gateway = start_gateway(config_for(sim))
    assert_tool_loop_done(*run_claude(claude, gateway.url, tmp_path, "Create hello.txt containing hi"), target)
    calls = models_called(sim)
    assert calls == [("/v1/messages", OPUS)] * 2
    first = next(r for r in sim.requests if r["path"] == "/v1/messages")
    assert first["query"] in ("beta=true", {"beta": "true"}, {"beta": ["true"]})
    assert first["body"]["stream"] is True and "anthropic-beta" in first["headers"]


def test_cascade_drafting_on_an_openai_model_accepted(claude, sim, fresh_sim, start_gateway, tmp_path):
    target = tmp_path / "hello.txt"
    sim.set_script(write_loop(MINI, target, logprob=-0.02))
    rule = {"request_model": "claude-opus-*", "draft_model": MINI, "quality_threshold": 0.7}
    gateway = start_gateway(config_for(sim, cascade_rules=[rule]))
    assert_tool_loop_done(*run_claude(claude, gateway.url, tmp_path, "Create hello.txt containing hi"), target)
    calls = models_called(sim)
    assert calls == [("/v1/chat/completions", MINI)] * 2, "both turns answered by the OpenAI-dialect draft"
    draft = next(r for r in sim.requests if r["path"] == "/v1/chat/completions")
    assert draft["body"]["tools"][0]["type"] == "function" and draft["headers"]["authorization"] == "Bearer sk-openai-route"
    second = [r for r in sim.requests if r["path"] == "/v1/chat/completions"][1]
    assert any(m["role"] == "tool" for m in second["body"]["messages"]), "the tool result came back as a tool message"


def test_claude_code_asking_for_an_openai_model_is_cascaded_on_a_cheaper_one(claude, sim, fresh_sim, start_gateway,
                                                                            tmp_path):
    """ANTHROPIC_MODEL=gpt-5.4 (docs/claude-code.md): every request is translated to Chat Completions; a rule for
    gpt-5.4 drafts both turns on gpt-5.4-mini, priced against gpt-5.4."""
    target = tmp_path / "hello.txt"
    sim.set_script(write_loop(MINI, target))
    rule = {"name": "gpt", "request_model": "gpt-5.4", "draft_model": MINI, "quality_threshold": 0.7}
    gateway = start_gateway(config_for(sim, cascade_rules=[rule]))
    assert_tool_loop_done(*run_claude(claude, gateway.url, tmp_path, "Create hello.txt containing hi",
                                      ANTHROPIC_MODEL="gpt-5.4"), target)
    assert models_called(sim) == [("/v1/chat/completions", MINI)] * 2
    stats = httpx.get(gateway.url + "/stats").json()["cascade"]["gpt"]
    assert stats["accepted"] == stats["requests"] == 2 and stats["baseline_cost"] > stats["cost"] > 0


def test_cascade_drafting_on_an_openai_model_escalated(claude, sim, fresh_sim, start_gateway, tmp_path):
    target = tmp_path / "hello.txt"
    # the draft is unsure (low log-probabilities; gpt-4o-mini returns them, GPT-5 models refuse them): every turn
    # escalates to Opus, which does the work
    sim.set_script([{"match": {"model": "gpt-4o-mini"}, "text": "Maybe I could write it?", "logprob": -3.0}, *write_loop(OPUS, target)])
    rule = {"request_model": "claude-opus-*", "draft_model": "gpt-4o-mini", "quality_threshold": 0.7,
            "policies": {"sticky_escalations": 0, "cache_economics": False}}
    gateway = start_gateway(config_for(sim, cascade_rules=[rule]))
    assert_tool_loop_done(*run_claude(claude, gateway.url, tmp_path, "Create hello.txt containing hi"), target)
    calls = models_called(sim)
    assert calls == [("/v1/chat/completions", "gpt-4o-mini"), ("/v1/messages", OPUS)] * 2


def test_a_team_member_with_a_virtual_key(claude, sim, fresh_sim, start_gateway, tmp_path):
    """The seed's set-up: ANTHROPIC_API_KEY holds a cascadeflow key; the provider key stays on the server."""
    target = tmp_path / "hello.txt"
    sim.set_script(write_loop(OPUS, target))
    config = ProxyConfig.from_dict({
        "routes": sim_routes(sim, anthropic_key="sk-ant-server-side"), "database_url": f"sqlite:///{tmp_path / 'l.db'}",
        "auth": {"mode": "api_key", "keys": [{"key": "cascade-dev-alice", "user_id": "alice", "tier": "pro",
                                              "limits": {"rpm": 60, "daily_budget_usd": 5}}]},
    })
    gateway = start_gateway(config)
    started = time.monotonic()
    code, lines, stderr = run_claude(claude, gateway.url, tmp_path, "Create hello.txt containing hi", api_key="not-a-team-key")
    result = next(line for line in reversed(lines) if line.get("type") == "result")
    assert code != 0 and result["is_error"] and result.get("api_error_status") == 401
    assert not target.exists() and models_called(sim) == []
    # x-should-retry: false on the 401; without it Claude Code retried for three minutes
    assert time.monotonic() - started < 60
    assert_tool_loop_done(*run_claude(claude, gateway.url, tmp_path, "Create hello.txt containing hi",
                                      api_key="cascade-dev-alice"), target)
    turns = [r for r in sim.requests if r["path"] == "/v1/messages"]
    assert len(turns) == 2
    assert {r["headers"].get("x-api-key") for r in turns} == {"sk-ant-server-side"}
    assert not any("cascade-dev-alice" in json.dumps(r["headers"]) for r in sim.requests)


def test_a_team_member_whose_key_carries_its_own_provider_key(claude, sim, fresh_sim, start_gateway, tmp_path):
    """The seed's hybrid set-up: the virtual key maps to the member's own Anthropic key, used on every turn."""
    target = tmp_path / "hello.txt"
    sim.set_script(write_loop(OPUS, target))
    config = ProxyConfig.from_dict({
        "routes": sim_routes(sim, anthropic_key="sk-ant-server-side"), "database_url": f"sqlite:///{tmp_path / 'l.db'}",
        "auth": {"mode": "hybrid", "keys": [{"key": "cascade-dev-bea", "user_id": "bea",
                                             "provider_keys": {"anthropic": "sk-ant-bea-own"}}]},
    })
    gateway = start_gateway(config)
    assert_tool_loop_done(*run_claude(claude, gateway.url, tmp_path, "Create hello.txt containing hi",
                                      api_key="cascade-dev-bea"), target)
    turns = [r for r in sim.requests if r["path"] == "/v1/messages"]
    assert len(turns) == 2 and {r["headers"].get("x-api-key") for r in turns} == {"sk-ant-bea-own"}
    assert not any("cascade-dev-bea" in json.dumps(r["headers"]) for r in sim.requests)


def thinking_loop(hello: Path, bye: Path) -> list[dict]:
    """A three-turn tool loop through an Opus ← Sonnet cascade, every answer thinking (Claude Code asks for it).

    Turn 1: Sonnet's draft writes hello.txt (accepted). Turn 2: Sonnet's draft calls Write without content
    (the tool check fails), so Opus takes over in the middle of the loop and writes bye.txt. Turn 3:
    Sonnet's draft closes the loop (accepted). Each model gets only thinking blocks it can read.
    """
    write = lambda path, content: {"name": "Write", "input": {"file_path": str(path), "content": content}}  # noqa: E731
    return [
        {"match": {"model": SONNET, "prompt_contains": "Create hello.txt"}, "tool_calls": [write(hello, "hi\n")]},
        {"match": {"model": SONNET, "prompt_contains": str(hello)}, "tool_calls": [{"name": "Write", "input": {"file_path": str(bye)}}]},
        {"match": {"model": OPUS, "prompt_contains": str(hello)}, "tool_calls": [write(bye, "bye\n")]},
        {"match": {"model": SONNET, "prompt_contains": str(bye)}, "text": "Created hello.txt and bye.txt."},
    ]


def test_thinking_tool_loop_through_a_claude_cascade(claude, sim, fresh_sim, start_gateway, tmp_path):
    hello, bye = tmp_path / "hello.txt", tmp_path / "bye.txt"
    sim.set_script(thinking_loop(hello, bye))
    rule = {"request_model": "claude-opus-*", "draft_model": SONNET, "quality_threshold": 0.7,
            "policies": {"sticky_escalations": 0, "cache_economics": False}}
    gateway = start_gateway(config_for(sim, cascade_rules=[rule], database_url=f"sqlite:///{tmp_path / 'ledger.db'}"))
    code, lines, stderr = run_claude(claude, gateway.url, tmp_path, "Create hello.txt containing hi, then bye.txt")
    assert code == 0, stderr[-2000:]
    assert hello.read_text() == "hi\n" and bye.read_text() == "bye\n"
    result = next(line for line in reversed(lines) if line.get("type") == "result")
    assert result["subtype"] == "success" and "Created hello.txt and bye.txt." in result["result"]
    main = [r for r in sim.requests if r["path"] == "/v1/messages" and r["body"].get("tools")]
    assert [r["body"]["model"] for r in main] == [SONNET, SONNET, OPUS, SONNET]
    assert all(r["body"]["thinking"]["type"] == "adaptive" for r in main), "thinking stays on for every model"
    # the client was handed the draft's own thinking, and echoed it back to the draft model
    assert main[1]["body"]["messages"][-2]["content"][0]["type"] == "thinking"
    # Opus never received Sonnet's block: the loop's Sonnet turn reached it as text
    assert not any(b.get("type") == "thinking" for m in main[2]["body"]["messages"] if isinstance(m["content"], list)
                   for b in m["content"])
    # the ledger's cost is what the upstream billed, every call priced at its model's rates
    registry = ModelRegistry()
    billed = sum(registry.cost(r["body"]["model"], Usage(
        r["usage"]["input_tokens"], r["usage"]["output_tokens"], r["usage"]["cache_creation_input_tokens"],
        r["usage"]["cache_read_input_tokens"])) for r in sim.requests if r.get("usage"))
    deadline = time.monotonic() + 10
    while True:
        ledger = httpx.get(f"{gateway.url}/stats").json()["ledger"]
        if ledger.get("requests", 0) >= len(main) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ledger["cost"] == pytest.approx(billed, rel=1e-6) and billed > 0


def test_claude_code_version_is_the_pinned_one_unless_overridden(claude):
    version = subprocess.run([claude, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    if os.environ.get("CLAUDE_BIN"):
        pytest.skip(f"CLAUDE_BIN runs {version}, not the pinned {CLAUDE_CODE_VERSION}: unset CLAUDE_BIN to check the "
                    f"pinned one (npm install --prefix .ci @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION})")
    assert version.split()[0] == CLAUDE_CODE_VERSION, version


@pytest.fixture(scope="module")
def latest_claude():
    """The newest Claude Code release, beside the pinned one (`.ci/run` installs it into .ci/latest)."""
    path = ROOT / ".ci" / "latest" / "node_modules" / ".bin" / "claude"
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail("the latest Claude Code CLI is not installed; .ci/run installs it into .ci/latest")
        pytest.skip("the latest Claude Code CLI is not installed "
                    "(npm install --prefix .ci/latest @anthropic-ai/claude-code@latest)")
    return str(path)


def test_the_latest_claude_code_completes_a_tool_loop_too(latest_claude, sim, fresh_sim, start_gateway, tmp_path):
    """The newest release still runs its tool loop through a Claude cascade with thinking (the pinned tests above
    say what changed if not)."""
    hello, bye = tmp_path / "hello.txt", tmp_path / "bye.txt"
    sim.set_script(thinking_loop(hello, bye))
    rule = {"request_model": "claude-opus-*", "draft_model": SONNET, "quality_threshold": 0.7,
            "policies": {"sticky_escalations": 0, "cache_economics": False}}
    gateway = start_gateway(config_for(sim, cascade_rules=[rule]))
    version = subprocess.run([latest_claude, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    code, _, stderr = run_claude(latest_claude, gateway.url, tmp_path, "Create hello.txt containing hi, then bye.txt")
    assert code == 0, f"{version}: {stderr[-2000:]}"
    assert hello.read_text() == "hi\n" and bye.read_text() == "bye\n", version
