"""The proxy guide's example runs as written, pointed at the simulated provider."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from cascadeflow import ModelRegistry, Usage

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "proxy_service_basic.py"


def test_basic_example_prints_answer_and_cost(sim):
    env = {**os.environ, "OPENAI_BASE_URL": sim.url, "OPENAI_API_KEY": "sk-example"}
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    data_line, cost_line = result.stdout.strip().splitlines()[-2:]
    data = ast.literal_eval(data_line)
    assert data["model"] == "gpt-4o"
    assert data["choices"][0]["message"]["content"].startswith("[gpt-4o]")
    usage = data["usage"]
    cost = ModelRegistry().cost("gpt-4o", Usage(usage["prompt_tokens"], usage["completion_tokens"]))
    assert float(cost_line) == cost
    received = [r for r in sim.requests if r["path"] == "/v1/chat/completions"][-1]
    assert received["body"]["model"] == "gpt-4o"  # the "openai:" prefix forced the route and was stripped
    assert received["headers"]["x-correlation-id"] == "trace-001"
    assert received["headers"]["authorization"] == "Bearer sk-example"
