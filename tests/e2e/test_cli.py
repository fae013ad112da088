"""The command line as a user runs it: `cascadeflow simulate` and `cascadeflow proxy start` as processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import anthropic
import httpx
import openai
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


@pytest.fixture()
def simulator_process():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cascadeflow.cli", "simulate", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/v1/models", process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise


def start_gateway(sim_url: str, tmp_path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "CASCADEFLOW_ANTHROPIC_BASE_URL": sim_url,
        "CASCADEFLOW_OPENAI_BASE_URL": sim_url + "/v1",
        "ANTHROPIC_API_KEY": "sk-ant-server-key",
        "CASCADEFLOW_CONFIG": "",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cascadeflow.cli", "proxy", "start", "--port", str(port), *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: a failed start ends its workers too
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/health", process)
    except BaseException:  # never answered (or the test was interrupted): it must not outlive the test
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.kill()
        process.wait(10)
        raise
    return process, url


def test_embedded_defaults_serve_both_sdks_and_stop_cleanly(simulator_process, tmp_path):
    process, url = start_gateway(simulator_process, tmp_path)
    try:
        message = anthropic.Anthropic(base_url=url, api_key="caller", max_retries=0).messages.create(
            model="claude-haiku-5-5", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
        )
        assert message.content[0].text.startswith("[claude-haiku-5-5]")
        completion = openai.OpenAI(base_url=url + "/v1", api_key="caller", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        assert completion.choices[0].message.content.startswith("[gpt-4o-mini]")
        recorded = [r for r in httpx.get(simulator_process + "/_sim/requests").json() if r["method"] == "POST"]
        assert recorded[0]["headers"]["x-api-key"] == "sk-ant-server-key"  # from ANTHROPIC_API_KEY
        assert recorded[1]["headers"]["authorization"] == "Bearer caller"  # no OPENAI_API_KEY: caller's key
        stats = httpx.get(url + "/stats").json()
        assert stats["total_queries"] == 2 and stats["total_cost"] > 0
        health = httpx.get(url + "/health").json()
        assert health["status"] == "healthy" and {r["name"] for r in health["routes"]} == {"anthropic", "openai"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    _, err = process.communicate()
    assert "sk-ant-server-key" not in err, "no secret may reach the log"


def test_two_workers_from_a_config_file(simulator_process, tmp_path):
    config = tmp_path / "cascadeflow-proxy.yaml"
    config.write_text(
        """
routes:
  - {name: sim, provider: anthropic, base_url: "${SIM_URL}", api_key: "k"}
"""
    )
    os.environ["SIM_URL"] = simulator_process
    try:
        process, url = start_gateway(simulator_process, tmp_path, "--workers", "2", "--config", str(config))
    finally:
        del os.environ["SIM_URL"]
    try:
        client = anthropic.Anthropic(base_url=url, api_key="caller", max_retries=0)
        for _ in range(6):
            reply = client.messages.create(model="sim:claude-opus-5-5", max_tokens=20, messages=[{"role": "user", "content": "x"}])
            assert reply.content[0].text.startswith("[claude-opus-5-5]")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def test_a_reader_that_stops_early_ends_the_cli_quietly(tmp_path):
    """`cascadeflow keys list | awk '… exit'` under pipefail (docs/operations.md): the reader closing the pipe
    is not the CLI's failure — no traceback, exit 0 (it was a BrokenPipeError traceback and exit 1)."""
    config = tmp_path / "c.yaml"
    config.write_text("routes: []\n")
    command = f"set -o pipefail; {sys.executable} -m cascadeflow.cli config check --config {config} | (exec <&-; sleep 1)"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_bad_config_file_exits_2_with_a_message(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("routes:\n  - name: x\n    provider: anthropic\n    base_url: http://x\n    timeout: -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "cascadeflow.cli", "proxy", "start", "--config", str(config)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "routes.0.timeout" in result.stderr and "Traceback" not in result.stderr


def test_a_master_key_left_as_the_docs_placeholder_is_one_line_not_a_traceback(tmp_path):
    """``export CASCADEFLOW_MASTER_KEY=…`` pasted from the docs: a header cannot carry ``…``; say so in one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADEFLOW_")}
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "cascadeflow.cli", "keys", "list", "--url", url], cwd=tmp_path, env={**env, "CASCADEFLOW_MASTER_KEY": "…"}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "master key" in done.stderr, done.stderr
