"""deploy/compose.yaml and deploy/prometheus.yml: valid, and wired as docs/deployment.md says.

Docker (and so ``docker compose config``) is not available where the suite runs; the
Compose Specification's JSON schema (as check-jsonschema vendors it) checks the file
instead, and the tests below check what a schema cannot: that the two gateways share one
database and one Redis, and that Prometheus scrapes both with the master key. The image
itself is run by tests/e2e/test_container.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV = {"POSTGRES_PASSWORD": "pg-secret", "CASCADEFLOW_MASTER_KEY": "master-secret"}
GATEWAYS = ("gateway-a", "gateway-b")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``$$``."""
    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op") or "", match.group("arg") or ""
        value = env.get(name)
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("?") and unset:
            raise KeyError(f"{name}: {arg}")
        return arg if op.endswith("-") and unset else (value or "")

    return re.sub(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}", one, text)


def check_schema(path: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("check_jsonschema") is None:
        if os.environ.get("CI"):
            raise RuntimeError("check-jsonschema is missing")
        pytest.skip("needs check-jsonschema (in the test extras: pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), ENV))


def test_the_compose_file_follows_the_compose_specification(tmp_path):
    checked = check_schema(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # ...and the check is live: a misspelt key in a service is refused
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restat: unless-stopped\n", 1))
    refused = check_schema(broken)
    assert refused.returncode != 0 and "'restat' was unexpected" in refused.stdout


def test_the_stack_refuses_to_start_without_a_master_key_or_a_database_password():
    for missing in ENV:
        with pytest.raises(KeyError, match=missing):
            interpolate(COMPOSE.read_text(), {k: v for k, v in ENV.items() if k != missing})


def test_two_gateways_from_the_dockerfile_share_one_database_and_one_redis(compose):
    services = compose["services"]
    gateways = [services[name] for name in GATEWAYS]
    for gateway in gateways:
        assert (DEPLOY / gateway["build"]["context"] / gateway["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
        assert gateway["image"] == gateways[0]["image"]
        assert gateway["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                         "redis": {"condition": "service_healthy"}}
        assert "./config:/config:ro" in gateway["volumes"] and (DEPLOY / "config").is_dir()
    env_a, env_b = (g["environment"] for g in gateways)
    assert env_a == env_b
    database, redis = urlsplit(env_a["CASCADEFLOW_DATABASE_URL"]), urlsplit(env_a["CASCADEFLOW_REDIS_URL"])
    assert database.scheme == "postgresql" and database.hostname == "postgres" and redis.hostname == "redis"
    postgres = services["postgres"]["environment"]
    assert (database.username, database.password, database.path) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], "/" + postgres["POSTGRES_DB"])
    assert env_a["CASCADEFLOW_MASTER_KEY"] == ENV["CASCADEFLOW_MASTER_KEY"]
    assert env_a["CASCADEFLOW_AUTH_MODE"] == "api_key"
    # each keeps its own data volume, and publishes the port the image listens on
    data = [next(v for v in g["volumes"] if v.endswith(":/data")) for g in gateways]
    assert len(set(data)) == 2 and all(v.split(":")[0] in compose["volumes"] for v in data)
    ports = [g["ports"][0].rsplit(":", 2) for g in gateways]
    assert len({host for _, host, _ in ports}) == 2 and {container for *_, container in ports} == {"8000"}
    assert "CASCADEFLOW_PORT=8000" in (ROOT / "Dockerfile").read_text().replace(" ", "")


def test_every_gateway_variable_is_one_the_configuration_reference_documents(compose):
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", (ROOT / "docs" / "configuration.md").read_text(), re.M))
    for name in GATEWAYS:
        assert set(compose["services"][name]["environment"]) <= documented


def test_prometheus_scrapes_both_gateways_with_the_master_key(compose):
    prometheus = compose["services"]["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    assert len(scrape) == 1
    job = scrape[0]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:8000" for name in GATEWAYS} and job["metrics_path"] == "/metrics"
    # /metrics needs the master key while auth is on: the same variable the gateways read, as a secret file
    (secret,) = prometheus["secrets"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": f"/run/secrets/{secret['target']}"}
    assert compose["secrets"][secret["source"]] == {"environment": "CASCADEFLOW_MASTER_KEY"}
