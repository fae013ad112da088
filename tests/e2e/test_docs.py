"""Every runnable block of README.md and docs/*.md, run as written against the simulated provider.

A block is runnable when an HTML comment names how, on the line before its fence:

- ``<!-- test: run -->`` — a shell or Python block that runs to the end and exits 0
  (servers it starts with ``&`` are stopped afterwards);
- ``<!-- test: run, gateway -->`` — the same, with a gateway already listening on the
  port the docs use (8000): embedded defaults (auth off, server-side provider keys)
  pointed at the simulator, its ledger where ``cascadeflow stats`` looks;
- ``<!-- test: serve -->`` — a shell block that ends by serving the gateway: it passes
  once that gateway answers a Messages request;
- ``<!-- test: config -->`` — a YAML config: ``cascadeflow config check -c`` accepts it;
  ``<!-- test: config, serve -->`` also serves it and sends a Claude request through it;
- ``<!-- test: config, error, as=bad.yaml -->`` — a config with mistakes, written as
  ``bad.yaml``: ``cascadeflow proxy start --config bad.yaml`` exits 2 and prints exactly
  the page's next ``text`` block;
- ``<!-- test: file -->`` — a file the page asks the reader to write, named on the block's
  first line (``# mychecks.py``); later blocks of the page use it.

The blocks of one page run in order in one working directory, as a reader following
the page would (a file one block writes is there for the next). Pages are independent of
each other: the suite's workers share them out, a page whole to one (``tests/parallel.py``).

Ports in a block (``127.0.0.1:8000``, ``--port 9000``, ``PORT=8311``) are swapped for
free ones (``CASCADEFLOW_PORT`` points at the one that replaces 8000); the official base URLs are replaced by the simulator through
``CASCADEFLOW_*_BASE_URL`` (and ``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL``, which the
library examples read); no client API key is set, so a snippet must work without one.
A shell block runs under ``set -eo pipefail``, and no answer it prints may be an API
error (curl exits 0 on an HTTP error). ``claude`` is a stub that sends one streaming Messages request the way Claude Code does
(``x-api-key`` from ``ANTHROPIC_API_KEY`` to ``ANTHROPIC_BASE_URL``), since the real CLI
is not part of this test. ``tests/`` and ``examples/`` of the checkout are reachable
from the block's working directory.

Every fenced block has a marker (``test_every_block_is_marked``), so a new block cannot slip
in unrun. Besides the modes above:

- ``<!-- test: output -->`` — what a command prints (an answer, a transcript, a table): not run;
- ``<!-- test: not run: <reason> -->`` — a command this machine cannot run; the reason says why
  and which test covers it instead;
- ``<!-- test: ci -->`` — a README command that ``.ci/run`` runs: ``.ci/run`` holds it verbatim;
- ``<!-- test: serve, installed -->`` — a command that creates the virtual environment and
  installs the checkout first: that part is the test's own environment, the rest is served;
- ``<!-- test: route -->`` — the keys of one route (indented under ``routes:``): put in a route
  and checked as a config; ``<!-- test: fragment -->`` — an excerpt of a config the page runs
  later: every line of it is in a later block of the page;
- ``<!-- test: codex -->`` — a Codex ``config.toml``: parsed, its provider is the one
  ``cascadeflow codex`` passes as overrides;
- ``<!-- test: prometheus -->`` — a Prometheus scrape config: every target (the gateway's port
  swapped as above) answers its ``metrics_path`` with cascadeflow metrics;
- ``<!-- test: metrics -->`` — PromQL: every ``cascadeflow_*`` series it names is in ``/metrics``;
- ``<!-- test: run, keys -->`` — a shell block run with a gateway on port 8000 that has virtual keys
  on (``auth.mode: api_key``) and ``CASCADEFLOW_MASTER_KEY`` set (a ``CASCADEFLOW_MASTER_KEY=…``
  placeholder in the block is that key);
- ``shows`` (with ``run``) — what the block prints holds the page's next ``text`` block, line by
  line, in shape (strings and numbers masked: ids and generated words change from run to run);
- ``after=N`` (Python) — the block runs after the page's block at line N, in the namespace it
  left, with top-level ``await`` allowed; ``init`` — ``cascadeflow proxy init`` made the
  page's ``cascadeflow-proxy.yaml`` first.

A ``console`` block runs its ``$ `` lines (and their ``\\`` continuations); the rest is output.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import yaml

from cascadeflow.launch import CODEX_KEY_VARIABLE

CHECKOUT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MASTER = "doc-test-master-key"
SERVER_KEY = "sk-ant-doc-test-server"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
MARK = re.compile(r"<!--\s*test:\s*(.*?)\s*-->")
#: the modes a marker may name (``as=`` and ``after=`` take a value)
MODES = {"run", "gateway", "serve", "config", "error", "file", "output", "not run", "ci", "installed", "route",
         "fragment", "codex", "prometheus", "metrics", "init", "keys", "shows", "as", "after"}
NOT_RUN = ("output", "not run", "ci")  # ci: .ci/run runs it (the whole suite)
TEXT_BLOCK = re.compile(r"^```text\n(.*?)^```", re.M | re.S)
PORT = re.compile(r"(127\.0\.0\.1:|localhost:|--port |PORT=)(\d{4,5})\b")
#: where a ``route`` block's keys go: one route, and a second one its fallbacks may name
ROUTES = """routes:
  - name: backup
    provider: anthropic
    base_url: https://api.anthropic.com
  - name: anthropic
    provider: anthropic
    base_url: https://api.anthropic.com
"""
#: runs an ``after=N`` Python block: the earlier block, then this one, in one namespace
AFTER = """import ast, asyncio, sys
namespace = {"__name__": "__main__"}
for path in sys.argv[1:]:
    with open(path) as source:
        code = compile(source.read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
"""
CLAUDE_STUB = """#!/bin/sh
# stands in for the Claude Code CLI: one streaming Messages request, as it sends them
exec curl -sSf -o /dev/null "$ANTHROPIC_BASE_URL/v1/messages?beta=true" -H "x-api-key: $ANTHROPIC_API_KEY" \\
  -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \\
  -d '{"model": "claude-sonnet-5-5", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
"""


@dataclass(frozen=True)
class Block:
    file: str
    line: int
    modes: frozenset[str]
    language: str
    code: str
    #: the page's next ``text`` block (what a command is documented to print)
    shown: str = ""
    #: the marker as written (``None``: the block has none)
    marker: str | None = None

    def option(self, name: str) -> str | None:
        return next((m.split("=", 1)[1] for m in self.modes if m.startswith(name + "=")), None)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def parse_modes(marker: str) -> frozenset[str]:
    if marker.startswith("not run:"):
        return frozenset({"not run"})
    return frozenset(m.strip() for m in marker.split(","))


def all_blocks() -> list[Block]:
    """Every fenced block of README.md and docs/*.md, with the marker on the line before it."""
    blocks = []
    for path in [CHECKOUT / "README.md", *sorted((CHECKOUT / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in FENCE.finditer(text):
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1] if match.start() else ""
            marked = MARK.fullmatch(before.strip())
            marker = marked.group(1) if marked else None
            line = text.count("\n", 0, match.start()) + 1
            shown = TEXT_BLOCK.search(text, match.end())
            blocks.append(Block(str(path.relative_to(CHECKOUT)), line, parse_modes(marker or ""), match.group(1),
                                match.group(2), shown.group(1) if shown else "", marker))
    return blocks


def runnable_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.marker is not None and not b.modes & set(NOT_RUN)]


ALL_BLOCKS = all_blocks()


def test_every_block_is_marked():
    """A block without a marker (or with one this runner does not know) would go unrun unnoticed."""
    unmarked = [b.id for b in ALL_BLOCKS if b.marker is None]
    assert not unmarked, f"fenced blocks with no <!-- test: ... --> marker: {unmarked}"
    unknown = {b.id: sorted(m for m in b.modes if m.split("=", 1)[0] not in MODES) for b in ALL_BLOCKS}
    assert not any(unknown.values()), f"unknown modes: { {k: v for k, v in unknown.items() if v} }"
    for block in ALL_BLOCKS:
        if "not run" in block.modes:
            reason = block.marker.split(":", 1)[1].strip()
            assert len(reason) >= 30, f"{block.id}: say concretely why it cannot run here: {reason!r}"
    assert sum("ci" in b.modes for b in ALL_BLOCKS) == 1, "the README's test command is marked ci"


def test_the_readme_test_command_is_what_ci_runs():
    """``.ci/run`` runs the README's test command as written, so the two cannot drift apart."""
    ci_run = (CHECKOUT / ".ci" / "run").read_text().splitlines()
    for block in ALL_BLOCKS:
        if "ci" in block.modes:
            assert block.file == "README.md", block.id
            assert block.code.strip() in ci_run, f"{block.id}: .ci/run does not run {block.code.strip()!r}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_ports(code: str, fixed: dict[str, int]) -> tuple[str, dict[str, int]]:
    """The block with each port it names swapped for a free one (``fixed`` ports keep their mapping)."""
    mapping = dict(fixed)
    for _, port in PORT.findall(code):
        mapping.setdefault(port, free_port())
    return PORT.sub(lambda m: m.group(1) + str(mapping.get(m.group(2), m.group(2))), code), mapping


def wait_for(url: str, timeout: float = 30, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited with {process.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def stop(process: subprocess.Popen) -> None:
    """The block's whole process group (servers it left running with ``&`` included)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(5)


@pytest.fixture(scope="module")
def place(tmp_path_factory, sim):
    """What every block shares: the stub ``claude``, the environment, the checkout's tests/ and examples/."""
    root = tmp_path_factory.mktemp("docs")
    stubs = root / "bin"
    stubs.mkdir()
    (stubs / "claude").write_text(CLAUDE_STUB)
    (stubs / "claude").chmod(0o755)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CASCADEFLOW_", "ANTHROPIC_", "OPENAI_", "GROQ_"))}
    env.update({
        "PATH": f"{stubs}:{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(root / "home"),
        "CASCADEFLOW_ANTHROPIC_BASE_URL": sim.url,
        "CASCADEFLOW_OPENAI_BASE_URL": sim.url + "/v1",
        "ANTHROPIC_BASE_URL": sim.url,  # the library examples read these
        "OPENAI_BASE_URL": sim.url + "/v1",
        "CASCADEFLOW_DATA_DIR": str(root / "data"),
        "PYTHONUNBUFFERED": "1",
    })
    return root, env


def start_gateway(root: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen, int]:
    """``cascadeflow proxy start`` on a free port, its output in ``{name}.log``; returns once it answers."""
    port = free_port()
    with open(root / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            [str(BIN / "cascadeflow"), "proxy", "start"], cwd=root, stdout=log, stderr=subprocess.STDOUT,
            env={**env, "CASCADEFLOW_PORT": str(port), "ANTHROPIC_API_KEY": SERVER_KEY, "OPENAI_API_KEY": SERVER_KEY},
            start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", process=process)
    except AssertionError:
        stop(process)
        raise
    return process, port


@pytest.fixture(scope="module")
def doc_gateway(place):
    """The gateway the ``gateway`` blocks talk to: embedded defaults (auth off), the simulator upstream;
    its log is ``gateway.log`` in every page's folder."""
    root, env = place
    process, port = start_gateway(root, env, "gateway")
    try:
        yield port
    finally:
        stop(process)


@pytest.fixture(scope="module")
def keys_gateway(place):
    """The gateway the ``keys`` blocks talk to: virtual keys on (``auth.mode: api_key``), master key ``MASTER``."""
    root, env = place
    process, port = start_gateway(root, {**env, "CASCADEFLOW_AUTH_MODE": "api_key", "CASCADEFLOW_MASTER_KEY": MASTER},
                                  "keys-gateway")
    try:
        yield port
    finally:
        stop(process)


@pytest.fixture(scope="module")
def exposed_metrics(keys_gateway, sim):
    """``/metrics`` after traffic that gives every metric family a series: a cascaded and a passed-through
    request, one refused (no key), one the upstream refuses (scripted: a 400)."""
    url = f"http://127.0.0.1:{keys_gateway}"
    sim.set_script([{"match": {"model": "claude-refused-by-upstream"}, "status": 400}])
    created = httpx.post(url + "/admin/keys", json={"name": "metrics"}, timeout=10,
                         headers={"authorization": f"Bearer {MASTER}"})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    for model, headers, status in [("claude-opus-5-5", {"x-api-key": key}, 200),
                                   ("claude-haiku-5-5", {"x-api-key": key}, 200),
                                   ("claude-haiku-5-5", {}, 401),
                                   ("claude-refused-by-upstream", {"x-api-key": key}, 400)]:
        try:
            answer = httpx.post(url + "/v1/messages", timeout=30, headers=headers, json={
                "model": model, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]})
        finally:
            if status == 400:
                sim.set_script([])
        assert answer.status_code == status, answer.text
    metrics = httpx.get(url + "/metrics", timeout=10, headers={"authorization": f"Bearer {MASTER}"})
    assert metrics.status_code == 200, metrics.text
    return metrics.text


def workdir(root: Path, block: Block) -> Path:
    """The page's working directory (made by its first block)."""
    folder = root / re.sub(r"[^A-Za-z0-9]+", "-", block.file)
    if not folder.exists():
        folder.mkdir()
        for name in ("tests", "examples", "gateway.log"):
            (folder / name).symlink_to(CHECKOUT / name if name != "gateway.log" else root / name)
    return folder


def console_commands(code: str) -> str:
    """The ``$ `` lines of a console transcript (with their continuation lines); the rest is output."""
    commands, continued = [], False
    for line in code.splitlines():
        if line.startswith("$ ") or continued:
            commands.append(line[2:] if line.startswith("$ ") and not continued else line)
            continued = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


def command(block: Block, code: str, folder: Path) -> list[str]:
    if block.language == "yaml":
        return [str(BIN / "cascadeflow"), "proxy", "start", "-c", f"config-{block.line}.yaml"]
    if block.language == "python":
        script = folder / f"block-{block.line}.py"
        script.write_text(code)
        after = block.option("after")
        if after is None:
            return [sys.executable, str(script)]
        earlier = next((b for b in ALL_BLOCKS if b.file == block.file and b.line == int(after)), None)
        assert earlier is not None, f"{block.file}:{block.line} runs after={after}, but no block starts at line {after}"
        (folder / f"block-{after}.py").write_text(earlier.code)
        (folder / "after.py").write_text(AFTER)
        return [sys.executable, str(folder / "after.py"), str(folder / f"block-{after}.py"), str(script)]
    script = folder / "block.sh"
    script.write_text("set -eo pipefail\n" + code)
    return ["bash", str(script)]


def shapes(text: str) -> list[str]:
    """Each line with its strings and numbers masked: what a printed answer keeps from run to run."""
    masked = (re.sub(r"'[^']*'|\"[^\"]*\"", "S", re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", line))
              for line in text.splitlines())
    return [line.strip() for line in masked if line.strip()]


def check_fragment(block: Block) -> None:
    later = "\n".join(b.code for b in ALL_BLOCKS if b.file == block.file and b.line > block.line)
    missing = [line for line in block.code.splitlines() if line.strip() and line.strip() not in later]
    assert not missing, f"{block.id}: not in a later block of the page: {missing}"


def check_codex(block: Block) -> None:
    """The provider the page writes is the one ``cascadeflow codex`` passes (launch.py's overrides)."""
    config = tomllib.loads(block.code)
    assert config["model_provider"] == "cascadeflow", block.id
    assert config["model_providers"]["cascadeflow"] == {
        "name": "cascadeflow", "base_url": "http://127.0.0.1:8000/v1", "env_key": CODEX_KEY_VARIABLE,
        "wire_api": "responses"}, block.id
    assert isinstance(config["model"], str), block.id


def check_metrics(block: Block, exposed: str) -> None:
    """Every series a PromQL block names is exposed, with every label it matches or groups by."""
    series: dict[str, set[str]] = {}
    for name, labels in re.findall(r"^(cascadeflow_\w+)(?:\{(.*?)\})? ", exposed, re.M):
        series.setdefault(name, set()).update(re.findall(r"(\w+)=", labels or ""))
    used = set(re.findall(r"\bcascadeflow_\w+", block.code))
    assert used, block.id
    assert used <= series.keys(), f"{block.id}: not in /metrics: {sorted(used - series.keys())}"
    for name, labels in re.findall(r"\b(cascadeflow_\w+)\{(.*?)\}", block.code):
        named = set(re.findall(r"(\w+)\s*[!=]~?", labels))
        assert named <= series[name], f"{block.id}: {name} has no label {sorted(named - series[name])}"
    grouped = {label.strip() for group in re.findall(r"by \((.*?)\)", block.code) for label in group.split(",")}
    every = set().union(*(series[name] for name in used))
    assert grouped <= every, f"{block.id}: no series has the labels {sorted(grouped - every)}"


def check_prometheus(block: Block, port: int) -> None:
    """Each scrape target (the docs' port swapped for the gateway's) answers with cascadeflow metrics."""
    code, _ = with_ports(block.code, {"8000": port})
    scrape = yaml.safe_load(code)
    targets = [(target, job.get("metrics_path", "/metrics")) for job in scrape["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]]
    assert targets, block.id
    for target, path in targets:
        answer = httpx.get(f"http://{target}{path}", timeout=10)
        assert answer.status_code == 200 and "cascadeflow_requests_total" in answer.text, f"{block.id}: {target}"


BLOCKS = runnable_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(block: Block, place, request):
    root, env = place
    folder = workdir(root, block)
    if "file" in block.modes:
        name = block.code.splitlines()[0].lstrip("# ").strip()
        (folder / name).write_text(block.code)
        return
    if "error" in block.modes:
        name = block.option("as") or "bad.yaml"
        (folder / name).write_text(block.code)
        refused = subprocess.run([str(BIN / "cascadeflow"), "proxy", "start", "--config", name], cwd=folder, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2, f"{block.id}: {refused.returncode} {refused.stderr}"
        assert refused.stderr.strip() == block.shown.strip(), f"{block.id} prints:\n{refused.stderr}"
        return
    if "fragment" in block.modes:
        return check_fragment(block)
    if "codex" in block.modes:
        return check_codex(block)
    if "metrics" in block.modes:
        return check_metrics(block, request.getfixturevalue("exposed_metrics"))
    if "prometheus" in block.modes:
        return check_prometheus(block, request.getfixturevalue("doc_gateway"))
    if "route" in block.modes:
        block = replace(block, modes=block.modes | {"config"},
                        code=ROUTES + textwrap.indent(textwrap.dedent(block.code), "    "))
    if "init" in block.modes and not (folder / "cascadeflow-proxy.yaml").exists():
        subprocess.run([str(BIN / "cascadeflow"), "proxy", "init"], cwd=folder, env=env, check=True,
                       capture_output=True, timeout=60)
    if "config" in block.modes:
        config = folder / f"config-{block.line}.yaml"
        config.write_text(block.code)
        checked = subprocess.run([str(BIN / "cascadeflow"), "config", "check", "-c", config.name], cwd=folder,
                                 env={**env, "CASCADEFLOW_MASTER_KEY": MASTER}, capture_output=True, text=True,
                                 timeout=60)
        assert checked.returncode == 0, f"{block.id}: {checked.stderr}"
        if "serve" not in block.modes:
            return
    fixed: dict[str, int] = {}
    block_env = dict(env)
    source = console_commands(block.code) if block.language == "console" else block.code
    if "keys" in block.modes:  # the master key set as the pages ask (``export CASCADEFLOW_MASTER_KEY=…``)
        fixed["8000"] = request.getfixturevalue("keys_gateway")
        block_env["CASCADEFLOW_MASTER_KEY"] = MASTER
        source = source.replace("CASCADEFLOW_MASTER_KEY=…", f"CASCADEFLOW_MASTER_KEY={MASTER}")
    elif "gateway" in block.modes:
        fixed["8000"] = request.getfixturevalue("doc_gateway")
    else:  # a gateway the block starts itself listens where the block's 8000 now points
        fixed["8000"] = free_port()
        block_env["CASCADEFLOW_PORT"] = str(fixed["8000"])
    block_env["CASCADEFLOW_URL"] = f"http://127.0.0.1:{fixed['8000']}"  # where `cascadeflow keys` looks
    if "installed" in block.modes:  # the test's environment is that virtual environment, the checkout installed
        source, installs = re.subn(r"^python3 -m venv \.venv && \. \.venv/bin/activate && pip install -e \S+ && ",
                                   "", source.strip())
        assert installs == 1, f"{block.id}: no install to drop"
    code, ports = with_ports(source, fixed)
    out = folder / "output.log"
    with open(out, "wb") as log:
        process = subprocess.Popen(command(block, code, folder), cwd=folder, env=block_env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if "serve" in block.modes:
                url = f"http://127.0.0.1:{ports['8000']}"
                try:
                    wait_for(url + "/health", process=process)
                except AssertionError as exc:
                    raise AssertionError(f"{block.id}: {exc}\n{out.read_text()}") from None
                answer = httpx.post(url + "/v1/messages", timeout=30, headers={"x-api-key": "sk-ant-doc-caller"},
                                    json={"model": "claude-haiku-5-5", "max_tokens": 32,
                                          "messages": [{"role": "user", "content": "hi"}]})
                assert answer.status_code == 200, answer.text
            else:
                try:
                    status = process.wait(90)
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"{block.id} did not finish within 90 s:\n{out.read_text()}") from None
                output = out.read_text()
                assert status == 0, f"{block.id} exited with {status}:\n{output}"
                assert '"type":"error"' not in output and '{"error":' not in output, f"{block.id}:\n{output}"
                if "shows" in block.modes:
                    printed, shown = shapes(output), shapes(block.shown)
                    assert shown and any(printed[i:i + len(shown)] == shown for i in range(len(printed))), (
                        f"{block.id} printed, unlike the page's next text block:\n{output}")
        finally:
            stop(process)
