"""The container image, built from the ``Dockerfile`` and run as two replicas sharing PostgreSQL and Redis.

No Docker daemon here: ``buildah`` builds the real image (``--isolation chroot --layers``)
on a Debian base that ``deploy/base-image.sh`` makes with ``debootstrap`` (built once, then
found in buildah's storage), and runs two containers from it — each with the image's
non-root user, entrypoint and command, on the host network, each on its own port —
against the test PostgreSQL (a database of its own) and Redis (database 10, flushed),
with the simulated provider as the upstream. What ``deploy/compose.yaml`` sets up, minus
Docker's networking: tests/unit/test_compose.py checks that file.

Needs root, ``buildah`` and ``debootstrap`` (``apt-get install buildah debootstrap``;
``.ci/run`` installs them); the first run builds the base (about 1.5-3 minutes) and the
image's dependency layer (about 2-3 minutes), later runs reuse both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cascadeflow import ModelRegistry, Usage
from tests import needs
from tests.e2e.test_shared_limits import _ledger_rows
from tests.pg_db import UNREACHABLE, create_database, drop_database
from tests.prestart import Early, Runner

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("CASCADEFLOW_BASE_IMAGE", "localhost/cascadeflow-base:bookworm")
IMAGE = "localhost/cascadeflow:test"
POSTGRES = os.environ.get("CASCADEFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("CASCADEFLOW_TEST_REDIS_CONTAINER", "redis://127.0.0.1:6379/10")
MASTER = "container-master-5b0c"
USAGE = {"input_tokens": 10, "output_tokens": 20}
#: one scripted request's price; a budget of 1.5 of them admits two (admitted while spent + reserved < budget)
COST = ModelRegistry().cost("claude-sonnet-5-5", Usage(**USAGE)) or 0.0
ASK = {"model": "claude-sonnet-5-5", "max_tokens": 20, "messages": [{"role": "user", "content": "spend"}]}
#: above the suite's 300 s default: the first test pays for the base image and the build (up to 900 s each)
pytestmark = pytest.mark.timeout(2400)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytest.skip(reason)


def _buildah(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, check=check)


def _build_image(runner: Runner) -> dict:
    """The image built from the repository's Dockerfile (cached layers): its config as buildah reads it, and its id.

    Started early (tests/prestart.py): on a machine without buildah's layer cache the build is minutes
    of downloads, which overlap the tests before this file.
    """
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        _unavailable(f"the container test needs {' and '.join(missing)}: `apt-get install buildah debootstrap` "
                     "(as root), then `bash deploy/base-image.sh` builds the local Debian base once")
    if os.geteuid() != 0:
        _unavailable("the container test runs buildah as root (chroot isolation, no rootless set-up): run it as root, "
                     "e.g. `sudo -E .venv/bin/python -m pytest tests/e2e/test_container.py`")
    if _buildah("inspect", "--type", "image", BASE_IMAGE, check=False).returncode != 0:
        base = runner.run(["bash", str(ROOT / "deploy" / "base-image.sh")], timeout=900,
                          env={**os.environ, "CASCADEFLOW_BASE_IMAGE": BASE_IMAGE})
        assert base.returncode == 0, f"deploy/base-image.sh failed:\n{base.stderr[-3000:]}"
    with tempfile.TemporaryDirectory(prefix="cascadeflow-image-") as folder:
        iidfile = Path(folder) / "id"
        build = ["bud", "--isolation", "chroot", "--layers", "--force-rm", "--network", "host", "--format", "docker",
                 "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--iidfile", str(iidfile), "-t", IMAGE,
                 "-f", str(ROOT / "Dockerfile")]
        # A build host behind a TLS-inspecting proxy: its CA bundle, mounted for the pip step only (not in the image).
        cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
        if cert and Path(cert).is_file():
            build += ["--secret", f"id=pip_cert,src={cert}"]
        if os.environ.get("PIP_INDEX_URL", "").startswith(("http://", "https://")):
            build += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
        built = runner.run(["buildah", *build, str(ROOT)], timeout=900)
        assert built.returncode == 0, f"buildah bud failed:\n{(built.stdout + built.stderr)[-4000:]}"
        image_id = iidfile.read_text().strip()
    inspected = json.loads(_buildah("inspect", "--type", "image", image_id).stdout)
    return {**inspected["Docker"]["config"], "id": image_id}


IMAGE_BUILD = Early("container-image", _build_image)  # every test of this file uses the image


@pytest.fixture(scope="module")
def image(request) -> dict:
    """The image (:func:`_build_image`); the replicas start from its id, not the tag, so a build from another
    checkout that retags ``localhost/cascadeflow:test`` meanwhile cannot change what this test runs."""
    return IMAGE_BUILD.result(request.config)


@pytest.fixture()
def stores():
    """(PostgreSQL URL of a fresh ``cascadeflow_<hex>`` database, Redis URL of database 10, flushed)."""
    import redis

    try:
        database = create_database(POSTGRES)
        redis.Redis.from_url(REDIS, socket_timeout=2).flushdb()
    except (*UNREACHABLE, redis.RedisError) as exc:
        _unavailable(needs.postgres_or_redis(POSTGRES, REDIS, "CASCADEFLOW_TEST_REDIS_CONTAINER", exc))
    yield database, REDIS
    drop_database(POSTGRES, database)
    redis.Redis.from_url(REDIS).flushdb()


class Replica:
    """One container from the image: `buildah from`, then `buildah run` with its user, entrypoint and command."""

    def __init__(self, config: dict, env: dict[str, str], config_dir: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"cascadeflow-test-{uuid.uuid4().hex[:8]}"
        self.config = config
        self.env = {**env, "CASCADEFLOW_PORT": str(self.port)}
        _buildah("from", "--name", self.name, config["id"])
        flags = [f"--env={key}={value}" for key, value in self.env.items()]
        command = [*config["Entrypoint"], *config["Cmd"]]
        self.log = open(log, "wb")  # noqa: SIM115 (the child holds it until stop())
        try:
            self.process = subprocess.Popen(
                ["buildah", "run", "--isolation", "chroot", "--network", "host", "--user", config["User"],
                 "--volume", f"{config_dir}:/config:ro", *flags, self.name, "--", *command],
                stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError:
            self.log.close()
            _buildah("rm", self.name, check=False)
            raise

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the replica exited:\n{Path(self.log.name).read_text()[-3000:]}"
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the replica never answered /health:\n{Path(self.log.name).read_text()[-3000:]}")

    def processes(self) -> list[int]:
        """Every process still in the replica's session (buildah run, its chroot helpers, the gateway)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == self.process.pid:
                        found.append(int(entry.name))
                except (ProcessLookupError, PermissionError):
                    pass
        return found

    def run_in(self, *command: str) -> subprocess.CompletedProcess:
        """A command in this container, beside the gateway (as ``docker exec`` would run it)."""
        flags = [f"--env={key}={value}" for key, value in self.env.items()]
        return _buildah("run", "--isolation", "chroot", "--network", "host", "--user", self.config["User"],
                        *flags, self.name, "--", *command, check=False)

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while (left := self.processes()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.log.close()
        _buildah("rm", self.name, check=False)


@pytest.fixture()
def replicas(image, stores, fresh_sim, tmp_path):
    """Two containers from the image, sharing the test PostgreSQL and Redis; stopped and removed at the end."""
    pg, rd = stores
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "cascadeflow-proxy.yaml").write_text(yaml.safe_dump({
        "api_keys": {"anthropic": "${ANTHROPIC_API_KEY}", "openai": "${OPENAI_API_KEY}"},
        "auth": {"keys": [
            {"key": "container-budget-key", "user_id": "bea", "limits": {"daily_budget_usd": 1.5 * COST}},
            {"key": "container-free-key", "user_id": "fay"},
        ]},
    }))
    config_dir.chmod(0o755)  # read by the image's user (uid 10001) through the bind mount
    (config_dir / "cascadeflow-proxy.yaml").chmod(0o644)
    env = {  # the variables deploy/compose.yaml sets, pointed at this machine's servers
        "CASCADEFLOW_DATABASE_URL": pg, "CASCADEFLOW_REDIS_URL": rd,
        "CASCADEFLOW_AUTH_MODE": "api_key", "CASCADEFLOW_MASTER_KEY": MASTER,
        "ANTHROPIC_API_KEY": "sk-ant-container-route", "OPENAI_API_KEY": "sk-openai-container-route",
        "CASCADEFLOW_ANTHROPIC_BASE_URL": fresh_sim.url, "CASCADEFLOW_OPENAI_BASE_URL": fresh_sim.url + "/v1",
    }
    started: list[Replica] = []
    try:
        for letter in "ab":
            started.append(Replica(image, env, config_dir, tmp_path / f"replica-{letter}.log"))
        for replica in started:
            replica.wait_healthy()
        yield started, pg
    finally:
        for replica in started:
            replica.stop()
    for replica in started:
        assert replica.processes() == [], "a replica's process outlived the test"
        assert _buildah("inspect", "--type", "container", replica.name, check=False).returncode != 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", replica.port)) != 0, "the replica's port is still served"


def test_the_image_runs_as_a_non_root_user_with_volumes_a_health_check_and_the_gateway_as_entrypoint(image):
    assert image["User"] == "10001:10001"
    assert image["Entrypoint"] == ["cascadeflow"] and image["Cmd"] == ["proxy", "start"]
    assert set(image["Volumes"]) == {"/config", "/data"} and image["WorkingDir"] == "/config"
    assert "8000/tcp" in image["ExposedPorts"]
    env = dict(item.split("=", 1) for item in image["Env"])
    assert env["CASCADEFLOW_DATA_DIR"] == "/data" and env["CASCADEFLOW_HOST"] == "0.0.0.0"
    assert image["Healthcheck"]["Test"][0] == "CMD" and "/health" in image["Healthcheck"]["Test"][-1]
    # With no database_url, the ledger goes to the /data volume, which the image's user can write.
    name = f"cascadeflow-test-{uuid.uuid4().hex[:8]}"
    _buildah("from", "--name", name, image["id"])
    try:
        made = _buildah("run", "--isolation", "chroot", "--user", image["User"], name, "--", "python", "-c",
                        "import asyncio, os; from cascadeflow.paths import default_database_url; "
                        "from cascadeflow.store import Ledger\n"
                        "async def main(): await (await Ledger(default_database_url()).start()).aclose()\n"
                        "asyncio.run(main()); st = os.stat('/data/cascadeflow.db'); print(st.st_uid, oct(st.st_mode))",
                        check=False)
    finally:
        _buildah("rm", name, check=False)
    assert made.returncode == 0, made.stderr
    assert made.stdout.split()[0] == "10001"


def test_two_replicas_from_the_image_share_one_budget_and_one_ledger(replicas, fresh_sim, image):
    (a, b), pg = replicas
    fresh_sim.set_script([{"match": {"prompt_contains": "spend"}, "text": "spent", "usage": USAGE}])

    # Both are the image's gateway, running as its non-root user, and the image's health check passes.
    gateways = [pid for replica in (a, b) for pid in replica.processes()
                if b"proxy\x00start" in Path(f"/proc/{pid}/cmdline").read_bytes()
                and b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(gateways) == 2
    for pid in gateways:
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == ["10001"] * 4
    assert a.run_in(*image["Healthcheck"]["Test"][1:]).returncode == 0

    # Replica A spends the key's budget (two requests); replica B then refuses, in each caller's dialect.
    on_a = anthropic.Anthropic(base_url=a.url, api_key="container-budget-key", max_retries=0)
    assert [on_a.messages.create(**ASK).content[0].text for _ in range(2)] == ["spent", "spent"]
    with pytest.raises(anthropic.APIStatusError) as refused:
        anthropic.Anthropic(base_url=b.url, api_key="container-budget-key", max_retries=0).messages.create(**ASK)
    assert refused.value.status_code == 402
    assert refused.value.body["type"] == "error" and refused.value.body["error"]["type"] == "billing_error"
    with pytest.raises(openai.APIStatusError) as refused_openai:
        openai.OpenAI(base_url=b.url + "/v1", api_key="container-budget-key", max_retries=0).chat.completions.create(
            model="claude-sonnet-5-5", max_tokens=20, messages=[{"role": "user", "content": "spend"}])
    assert refused_openai.value.status_code == 402
    assert refused_openai.value.body["code"] == "budget_exceeded"  # the SDK hands over the body's "error"

    # Replica B serves a key with budget left; both write to the one ledger.
    for replica in (a, b):
        free = anthropic.Anthropic(base_url=replica.url, api_key="container-free-key", max_retries=0)
        assert free.messages.create(**ASK).content[0].text == "spent"
    rows = asyncio.run(_ledger_rows(pg, expected=6))
    assert len(rows) == 6
    bea = [r for r in rows if r["user_id"] == "bea"]
    assert sorted(r["status"] for r in bea) == [200, 200, 402, 402]
    assert sum(r["cost"] or 0 for r in bea) == pytest.approx(2 * COST)
    assert {r["error_type"] for r in bea if r["status"] == 402} == {"budget_exceeded"}
    assert [r["user_id"] for r in rows].count("fay") == 2
    for replica in (a, b):  # each sees the whole ledger
        totals = httpx.get(replica.url + "/stats", headers={"authorization": f"Bearer {MASTER}"}).json()["ledger"]
        assert totals["requests"] == 6

    # Prometheus scrapes each replica with the master key (deploy/prometheus.yml); each counts its own requests.
    counted = []
    for replica in (a, b):
        assert httpx.get(replica.url + "/metrics").status_code == 401
        text = httpx.get(replica.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"}).text
        counted.append(sum(sample.value for family in text_string_to_metric_families(text)
                           for sample in family.samples if sample.name == "cascadeflow_requests_total"))
    assert counted == [3, 3]
