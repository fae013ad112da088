"""The first ten minutes, as a user meets them: `cascadeflow` run as a process, its stderr and exit status.

Each mistake a newcomer makes ends in one line that names the problem (never a
traceback), and "listening on" is printed only once the port is really held.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from cascadeflow import ProxyConfig

CLI = str(Path(sys.executable).parent / "cascadeflow")  # the console script a user runs
MASTER = "first-run-master-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    environ = {**os.environ, "CASCADEFLOW_CONFIG": "", **(env or {})}
    return subprocess.run([CLI, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *expected: str) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "listening on" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr  # a config error: the header and one problem


def test_environment_overrides_the_file_and_the_banner_says_what_is_in_use(sim, tmp_path):
    """The README's variables hold after `proxy init` wrote a file; the banner names file, auth and ledger."""
    assert run("proxy", "init", cwd=tmp_path).returncode == 0
    data_dir = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "CASCADEFLOW_CONFIG": "", "CASCADEFLOW_DATA_DIR": str(data_dir),
           "CASCADEFLOW_AUTH_MODE": "api_key", "CASCADEFLOW_MASTER_KEY": MASTER, "CASCADEFLOW_PORT": str(port),
           "CASCADEFLOW_ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": "sk-ant-server-side"}
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([CLI, "proxy", "start"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.05)
        ask = {"model": "claude-haiku-5-5", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(anthropic.AuthenticationError):  # the file says auth none; the environment wins
            anthropic.Anthropic(base_url=url, api_key="not-a-virtual-key", max_retries=0).messages.create(**ask)
        made = run("keys", "create", "--user", "alice", "--url", url, cwd=tmp_path, env={"CASCADEFLOW_MASTER_KEY": MASTER})
        assert made.returncode == 0 and "warning" not in made.stderr, made.stderr
        answer = anthropic.Anthropic(base_url=url, api_key=made.stdout.strip(), max_retries=0).messages.create(**ask)
        assert answer.content[0].text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    text = log.read_text()
    assert f"config: {tmp_path / 'cascadeflow-proxy.yaml'}\n" in text  # found in the working directory, named in full
    assert "auth: api_key ($CASCADEFLOW_AUTH_MODE; master key set; no secret key)" in text
    assert f"ledger: {data_dir / 'cascadeflow.db'} (default)" in text
    assert "from the environment: CASCADEFLOW_ANTHROPIC_BASE_URL, CASCADEFLOW_AUTH_MODE, CASCADEFLOW_MASTER_KEY, CASCADEFLOW_PORT" in text
    assert MASTER not in text and "sk-ant-server-side" not in text
    assert (data_dir / "cascadeflow.db").is_file() and not (tmp_path / "cascadeflow.db").exists()
    assert text.index("listening on") < text.index("Application startup complete")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("case", "expected_status", "expected"), [
    ("base_url_without_scheme", 2, ["base_urls.anthropic (from $CASCADEFLOW_ANTHROPIC_BASE_URL)",
                                    "must start with http:// or https://"]),
    ("custom_check_not_importable", 2, ["cannot load check 'no_such_module:judge'", "PYTHONPATH=."]),
    ("database_unreachable", 1, ["cannot open the ledger at postgresql://nobody:***@127.0.0.1:1/x",
                                 "ConnectionRefusedError"]),
    ("database_url_unknown", 2, ["database_url: must be sqlite:///PATH or postgresql://"]),
    ("port_in_use", 1, ["cannot listen on 127.0.0.1:", "Address already in use"]),
])
def test_start_up_mistakes_end_in_one_line(case, expected_status, expected, tmp_path):
    env: dict[str, str] = {"CASCADEFLOW_PORT": str(free_port())}
    args = ["proxy", "start"]
    held = None
    if case == "base_url_without_scheme":
        env["CASCADEFLOW_ANTHROPIC_BASE_URL"] = "127.0.0.1:9000"
    elif case == "custom_check_not_importable":
        config = _write(tmp_path / "c.yaml", 'cascade_rules: [{request_model: "claude-opus-*", '
                                             'draft_model: claude-sonnet-5-5, checks: ["no_such_module:judge"]}]\n')
        args += ["-c", str(config)]
    elif case == "database_unreachable":
        env["CASCADEFLOW_DATABASE_URL"] = "postgresql://nobody:pw-not-shown@127.0.0.1:1/x"
    elif case == "database_url_unknown":
        args += ["-c", str(_write(tmp_path / "c.yaml", "database_url: mysql://db/x\n"))]
    elif case == "port_in_use":
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen()
        env["CASCADEFLOW_PORT"] = str(held.getsockname()[1])
    try:
        result = run(*args, cwd=tmp_path, env=env, timeout=60)
    finally:
        if held is not None:
            held.close()
    assert_one_line_error(result, expected_status, *expected)
    assert "pw-not-shown" not in result.stderr


def test_init_into_a_missing_directory_says_so(tmp_path):
    result = run("proxy", "init", "--path", str(tmp_path / "missing" / "c.yaml"), cwd=tmp_path)
    assert_one_line_error(result, 1, "cannot write", "No such file or directory (create the directory first)")


@pytest.mark.parametrize(("line", "expected"), [
    ("{not json", "line 2: not valid JSON"),
    ('{"id": 1, "dataset": "x", "messages": []}', "line 2: not a replay record: missing draft, strong"),
    ("[1, 2]", "line 2: not a replay record: each line must be a JSON object"),
])
def test_eval_on_a_malformed_record_names_file_and_line(line, expected, tmp_path):
    good = ('{"id": "a", "dataset": "x", "messages": [{"role": "user", "content": "2+2?"}], '
            '"draft": {"model": "gpt-4o-mini", "text": "4", "score": 1}, "strong": {"model": "gpt-4o", "text": "4", "score": 1}}')
    data = _write(tmp_path / "bad.jsonl", good + "\n" + line + "\n")
    result = run("eval", "--data", str(data), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"eval: {data} {expected}" in result.stderr


def test_stats_refuses_a_ledger_that_does_not_exist_and_creates_none(tmp_path):
    data_dir = tmp_path / "data"
    result = run("stats", cwd=tmp_path, env={"CASCADEFLOW_DATA_DIR": str(data_dir)})
    assert_one_line_error(result, 1, f"no ledger at {data_dir / 'cascadeflow.db'}", "-c FILE")
    assert not data_dir.exists() and not (tmp_path / "cascadeflow.db").exists()


def test_stats_reads_the_ledger_the_gateway_wrote(sim, tmp_path):
    """Started elsewhere, `stats` finds the gateway's ledger in the data directory (not the working directory)."""
    data_dir = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "CASCADEFLOW_CONFIG": "", "CASCADEFLOW_DATA_DIR": str(data_dir), "CASCADEFLOW_PORT": str(port),
           "CASCADEFLOW_ANTHROPIC_BASE_URL": sim.url, "CASCADEFLOW_CASCADE": "off"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    process = subprocess.Popen([CLI, "proxy", "start"], cwd=tmp_path / "a", env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        anthropic.Anthropic(base_url=url, api_key="sk-ant-caller", max_retries=0).messages.create(
            model="claude-haiku-5-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    result = run("stats", cwd=tmp_path / "b", env={"CASCADEFLOW_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    assert f"ledger: sqlite:///{data_dir / 'cascadeflow.db'}" in result.stdout
    total = next(line for line in result.stdout.splitlines() if line.startswith("total"))
    assert total.split()[1] == "1"


def test_config_check_prints_the_effective_settings_with_secrets_masked(tmp_path):
    config = _write(tmp_path / "team.yaml", """
auth: {mode: hybrid, master_key: "${TEAM_MASTER}"}
database_url: "postgresql://gw:db-password-here@127.0.0.1:5432/ledger"
routes:
  - {name: local, provider: openai, base_url: "http://127.0.0.1:11434/v1", api_key: sk-route-secret-1,
     headers: {authorization: "Bearer header-secret-2", x-team: blue}}
""")
    result = run("config", "check", "-c", str(config), cwd=tmp_path,
                 env={"TEAM_MASTER": "master-secret-3", "CASCADEFLOW_PORT": "8123"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"config file: {config}" in out
    assert "auth.mode = hybrid  [file]" in out and "auth.master_key = **********  [file]" in out
    assert "server.port = 8123  [$CASCADEFLOW_PORT]" in out and "server.host = 127.0.0.1  [default]" in out
    assert "database_url = postgresql://gw:***@127.0.0.1:5432/ledger  [file]" in out
    assert "local: openai at http://127.0.0.1:11434/v1 (own key ***" in out and "'x-team': 'blue'" in out
    for secret in ("master-secret-3", "db-password-here", "sk-route-secret-1", "header-secret-2"):
        assert secret not in out + result.stderr
    assert "the configuration is valid" in result.stderr

    broken = run("config", "check", "--config", str(_write(tmp_path / "bad.yaml", "server: {prot: 1}\n")), cwd=tmp_path)
    assert_one_line_error(broken, 2, "server.prot: unknown key")


def test_a_fallbacks_429_names_the_upstream_that_sent_it(fresh_sim, start_gateway, tmp_path):
    """The primary fails (500), its fallback on another upstream refuses (429): the answer and the ledger name the fallback."""
    routes = [{"name": "primary", "provider": "anthropic", "base_url": fresh_sim.url, "api_key": "k",
               "models": ["claude-haiku-5-5"], "fallbacks": ["openai:gpt-4o-mini"], "retry": {"attempts": 1}},
              {"name": "openai", "provider": "openai", "base_url": fresh_sim.url + "/v1", "api_key": "k",
               "retry": {"attempts": 1}}]
    fresh_sim.set_script([{"match": {"model": "claude-haiku-*"}, "status": 500},
                          {"match": {"model": "gpt-4o-mini"}, "status": 429}])
    ledger = tmp_path / "fallback.db"
    gw = start_gateway(ProxyConfig.from_dict({"routes": routes, "database_url": f"sqlite:///{ledger}"}))
    with pytest.raises(anthropic.RateLimitError) as info:
        anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).messages.create(
            model="claude-haiku-5-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert "upstream openai answered 429" in str(info.value) and "primary" not in str(info.value)
    with sqlite3.connect(ledger) as db:
        for _ in range(50):  # the ledger is written off the request path
            found = db.execute("select status, route, detail from requests").fetchall()
            if found:
                break
            time.sleep(0.1)
    assert found == [(429, "openai", "upstream 'openai' answered 429")]
