"""``cascadeflow claude`` / ``cascadeflow codex``: start a coding agent already pointed at the gateway.

As claude-code-router's ``ccr code`` does: the CLI is found on ``PATH``, given the gateway's
URL (and a key) through its own settings, and *exec*'d, so it owns the terminal and gets
the signals as if the user had started it. Nothing is written to the user's files:

- Claude Code: ``ANTHROPIC_BASE_URL`` is the gateway; the user's ``ANTHROPIC_API_KEY`` /
  ``ANTHROPIC_AUTH_TOKEN`` stay, unless ``CASCADEFLOW_KEY`` (a virtual key) is set, which
  is then sent as the bearer token instead.
- Codex: ``-c`` overrides that define the ``cascadeflow`` model provider exactly as
  docs/codex.md's ``config.toml`` does (Responses API, key from ``CASCADEFLOW_API_KEY``).

With no key at all, a placeholder shaped like a cascadeflow key is sent: the gateway never
forwards one upstream, so a gateway holding the provider keys itself (auth off) just works.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from .startup import StartupError

__all__ = ["AGENTS", "Launch", "launch", "plan_launch"]

DEFAULT_URL = "http://127.0.0.1:8000"
#: sent when the user has no key at all; ``cfk_``-shaped, so the gateway never forwards it
PLACEHOLDER_KEY = "cfk_launcher_no-key-given"
#: the variable docs/codex.md names as the provider's ``env_key``
CODEX_KEY_VARIABLE = "CASCADEFLOW_API_KEY"


@dataclass(frozen=True, slots=True)
class Agent:
    command: str
    title: str
    package: str


AGENTS = {
    "claude": Agent("claude", "the Claude Code CLI", "@anthropic-ai/claude-code"),
    "codex": Agent("codex", "the Codex CLI", "@openai/codex"),
}


@dataclass(frozen=True, slots=True)
class Launch:
    """What to exec: the program's path, its argv (program name first) and its environment."""

    path: str
    argv: list[str]
    env: dict[str, str]


def split_args(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(``--url``, ``--config``, the agent's own arguments): only leading launcher options are ours.

    Long options only, so the agent's short flags (Codex's ``-c``, Claude's ``-p``) pass through;
    ``--`` ends ours explicitly.
    """
    url = config = None
    rest = list(argv)
    while rest:
        head = rest[0]
        name, eq, value = head.partition("=")
        if head == "--":
            rest.pop(0)
            break
        if name not in ("--url", "--config"):
            break
        rest.pop(0)
        if not eq:
            if not rest:
                raise StartupError(f"{name} needs a value")
            value = rest.pop(0)
        if name == "--url":
            url = value
        else:
            config = value
    return url, config, rest


def gateway_url(url: str | None, config_file: str | None, env: Mapping[str, str]) -> str:
    """``--url``, else ``$CASCADEFLOW_URL``, else the config's host and port, else the default."""
    chosen = url or env.get("CASCADEFLOW_URL")
    if chosen:
        return chosen.rstrip("/")
    from .config import ProxyConfig

    config = ProxyConfig.load(config_file)
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: reach it on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


def check_gateway(url: str) -> None:
    """A :class:`StartupError` (one line: what failed, how to start one) unless ``url`` answers /health."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via $HTTP_PROXY: the gateway is near
    try:
        with direct.open(url + "/health", timeout=3) as answer:
            answer.read(0)
    except urllib.error.HTTPError:
        return  # it answered: a gateway is there
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StartupError(
            f"no gateway answers at {url}/health ({getattr(reason, 'strerror', None) or reason}); start one with "
            "`cascadeflow proxy start` (or point at yours with --url URL or CASCADEFLOW_URL)") from None


def plan_launch(name: str, argv: list[str], env: Mapping[str, str]) -> Launch:
    """What ``cascadeflow NAME ARGV…`` execs, once the gateway is known to answer."""
    agent = AGENTS[name]
    url, config_file, rest = split_args(argv)
    base = gateway_url(url, config_file, env)
    path = shutil.which(agent.command, path=env.get("PATH"))
    if path is None:
        raise StartupError(f"{agent.title} (`{agent.command}`) is not on PATH; install it with: "
                           f"npm install -g {agent.package}")
    check_gateway(base)
    child = dict(env)
    virtual = env.get("CASCADEFLOW_KEY")
    if name == "claude":
        child["ANTHROPIC_BASE_URL"] = base
        if virtual:
            child.pop("ANTHROPIC_API_KEY", None)
            child["ANTHROPIC_AUTH_TOKEN"] = virtual
        elif not (env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN")):
            child["ANTHROPIC_AUTH_TOKEN"] = PLACEHOLDER_KEY
        return Launch(path, [agent.command, *rest], child)
    child[CODEX_KEY_VARIABLE] = (virtual or env.get(CODEX_KEY_VARIABLE) or env.get("OPENAI_API_KEY")
                                 or PLACEHOLDER_KEY)
    overrides = {
        "model_provider": "cascadeflow",
        "model_providers.cascadeflow.name": "cascadeflow",
        "model_providers.cascadeflow.base_url": f"{base}/v1",
        "model_providers.cascadeflow.env_key": CODEX_KEY_VARIABLE,
        "model_providers.cascadeflow.wire_api": "responses",
    }
    flags = [part for key, value in overrides.items() for part in ("-c", f'{key}="{value}"')]
    return Launch(path, [agent.command, *flags, *rest], child)


def launch(name: str, argv: list[str]) -> int:
    """Replace this process with the agent (returns only if exec fails)."""
    plan = plan_launch(name, argv, os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(plan.path, plan.argv, plan.env)
    except OSError as exc:
        raise StartupError(f"cannot start {plan.path}: {exc.strerror or exc}") from None
    return 1  # not reached
