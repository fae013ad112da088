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
the page would (a file one block writes is there for the next).

Ports in a block (``127.0.0.1:8000``, ``--port 9000``, ``PORT=8311``) are swapped for
free ones (``CASCADEFLOW_PORT`` points at the one that replaces 8000); the official base URLs are replaced by the simulator through
``CASCADEFLOW_*_BASE_URL`` (and ``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL``, which the
library examples read); no client API key is set, so a snippet must work without one.
A shell block runs under ``set -eo pipefail``, and no answer it prints may be an API
error (curl exits 0 on an HTTP error). ``claude`` is a stub that sends one streaming Messages request the way Claude Code does
(``x-api-key`` from ``ANTHROPIC_API_KEY`` to ``ANTHROPIC_BASE_URL``), since the real CLI
is not part of this test. ``tests/`` and ``examples/`` of the checkout are reachable
from the block's working directory.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MASTER = "doc-test-master-key"
SERVER_KEY = "sk-ant-doc-test-server"
MARKER = re.compile(r"^<!--\s*test:\s*([a-z=., ]+?)\s*-->\n```(\w*)\n(.*?)^```", re.M | re.S)
TEXT_BLOCK = re.compile(r"^```text\n(.*?)^```", re.M | re.S)
PORT = re.compile(r"(127\.0\.0\.1:|localhost:|--port |PORT=)(\d{4,5})\b")
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

    def option(self, name: str) -> str | None:
        return next((m.split("=", 1)[1] for m in self.modes if m.startswith(name + "=")), None)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def runnable_blocks() -> list[Block]:
    blocks = []
    for path in [CHECKOUT / "README.md", *sorted((CHECKOUT / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in MARKER.finditer(text):
            modes = frozenset(m.strip() for m in match.group(1).split(","))
            line = text.count("\n", 0, match.start()) + 2
            shown = TEXT_BLOCK.search(text, match.end())
            blocks.append(Block(str(path.relative_to(CHECKOUT)), line, modes, match.group(2), match.group(3),
                                shown.group(1) if shown else ""))
    return blocks


BLOCKS = runnable_blocks()


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


@pytest.fixture(scope="module")
def doc_gateway(place):
    """The gateway the ``gateway`` blocks talk to: embedded defaults (auth off), the simulator upstream."""
    root, env = place
    port = free_port()
    log = open(root / "gateway.log", "wb")  # noqa: SIM115 (the child holds it)
    process = subprocess.Popen(
        [str(BIN / "cascadeflow"), "proxy", "start"], cwd=root, stdout=log, stderr=subprocess.STDOUT,
        env={**env, "CASCADEFLOW_PORT": str(port), "ANTHROPIC_API_KEY": SERVER_KEY, "OPENAI_API_KEY": SERVER_KEY},
        start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", process=process)
        yield port
    finally:
        stop(process)
        log.close()


def workdir(root: Path, block: Block) -> Path:
    """The page's working directory (made by its first block)."""
    folder = root / re.sub(r"[^A-Za-z0-9]+", "-", block.file)
    if not folder.exists():
        folder.mkdir()
        for name in ("tests", "examples"):
            (folder / name).symlink_to(CHECKOUT / name)
    return folder


def command(block: Block, code: str, folder: Path) -> list[str]:
    if block.language == "yaml":
        return [str(BIN / "cascadeflow"), "proxy", "start", "-c", f"config-{block.line}.yaml"]
    if block.language == "python":
        script = folder / "block.py"
        script.write_text(code)
        return [sys.executable, str(script)]
    script = folder / "block.sh"
    script.write_text("set -eo pipefail\n" + code)
    return ["bash", str(script)]


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
    if "gateway" in block.modes:
        fixed["8000"] = request.getfixturevalue("doc_gateway")
    else:  # a gateway the block starts itself listens where the block's 8000 now points
        fixed["8000"] = free_port()
        block_env["CASCADEFLOW_PORT"] = str(fixed["8000"])
    block_env["CASCADEFLOW_URL"] = f"http://127.0.0.1:{fixed['8000']}"  # where `cascadeflow keys` looks
    code, ports = with_ports(block.code, fixed)
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
        finally:
            stop(process)
