"""The Vercel AI SDK's default OpenAI model (``openai(model)``: the Responses API) completes a tool
call through the gateway, with generateText and streamText, forwarded and on a Claude model.

`.ci/run` installs the SDK (npm ``ai``, ``@ai-sdk/openai``, ``zod``) into ``.ci/node_modules``;
without it these tests are skipped (in CI a missing SDK is a failure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cascadeflow import ProxyConfig
from tests.conftest import NO_RETRY

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / ".ci" / "node_modules"
SCRIPT = Path(__file__).with_name("ai_sdk_weather.mjs")


@pytest.fixture(scope="module")
def node_project(tmp_path_factory):
    """A directory holding the script, where Node resolves the SDK from .ci/node_modules."""
    if shutil.which("node") is None or not (MODULES / "ai").exists() or not (MODULES / "@ai-sdk" / "openai").exists():
        if os.environ.get("CI"):
            pytest.fail("the AI SDK is not installed; .ci/run installs it")
        pytest.skip("the AI SDK is not installed (npm install --prefix .ci ai @ai-sdk/openai zod)")
    project = tmp_path_factory.mktemp("ai-sdk")
    (project / "node_modules").symlink_to(MODULES)
    shutil.copy(SCRIPT, project / SCRIPT.name)
    return project


@pytest.fixture(scope="module")
def ai_gw(sim, start_gateway):
    return start_gateway(ProxyConfig.from_dict({"routes": [
        {"name": "anthropic", "provider": "anthropic", "base_url": sim.url, "api_key": "sk-ant-route", **NO_RETRY},
        {"name": "openai", "provider": "openai", "base_url": sim.url + "/v1", "api_key": "sk-openai-route",
         "openai_api": "responses", **NO_RETRY},
    ]}))


@pytest.mark.parametrize("mode", ["json", "stream"])
@pytest.mark.parametrize(("model", "path"), [("gpt-5.4-mini", "/v1/responses"), ("claude-haiku-5-5", "/v1/messages")],
                         ids=["forwarded", "claude"])
def test_ai_sdk_tool_call(node_project, ai_gw, fresh_sim, model, path, mode):
    fresh_sim.set_script([
        {"match": {"prompt_contains": "weather in Lima"}, "tool_calls": [{"name": "get_weather", "input": {"city": "Lima"}}]},
        {"match": {"prompt_contains": "19C in Lima"}, "text": "It is 19C and cloudy in Lima."},
    ])
    result = subprocess.run(["node", SCRIPT.name, ai_gw.url + "/v1", model, mode], cwd=node_project,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"text": "It is 19C and cloudy in Lima.", "calls": ["Lima"]}
    assert [r["path"] for r in fresh_sim.requests if r["method"] == "POST"] == [path, path]
