"""``cascadeflow keys create|list|show|revoke|reseal|new-secret``: the admin API from the terminal.

It talks to a running gateway (``--url``, default ``$CASCADEFLOW_URL`` or
http://127.0.0.1:8000) with the master key (``--master-key``, default
``$CASCADEFLOW_MASTER_KEY``), so it works the same against one process or many.
``new-secret`` only prints a fresh secret key for ``CASCADEFLOW_SECRET_KEY``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

__all__ = ["add_keys_command"]

_LIMIT_FLAGS = (
    ("rpm", int, "requests per minute"),
    ("tpm", int, "tokens per minute"),
    ("max_concurrent", int, "requests in flight at once"),
    ("daily_budget_usd", float, "USD per UTC day"),
    ("monthly_budget_usd", float, "USD per UTC month"),
)


class AdminError(Exception):
    pass


def _call(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> dict:
    master = args.master_key or os.environ.get("CASCADEFLOW_MASTER_KEY")
    if not master:
        raise AdminError("the master key is needed: --master-key or CASCADEFLOW_MASTER_KEY")
    if not master.isascii():  # a header cannot carry it (e.g. the docs' `…` placeholder pasted as is)
        raise AdminError("the master key has characters an HTTP header cannot carry; is it still a placeholder?")
    url = (args.url or os.environ.get("CASCADEFLOW_URL") or "http://127.0.0.1:8000").rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "authorization": f"Bearer {master}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise AdminError(f"{exc.code}: {message}") from None
    except urllib.error.URLError as exc:
        raise AdminError(f"cannot reach the gateway at {url}: {exc.reason}") from None


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch)) if epoch else "-"


def _limits_text(limits: dict | None) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in (limits or {}).items()) or "-"


def _provider_keys(args: argparse.Namespace) -> dict[str, str] | None:
    """``--anthropic-key``, ``--openai-key`` and ``--provider-key NAME=KEY``; a value ``env:VAR`` reads ``$VAR``
    (so the key is not in the command line other users of the machine can see)."""
    pairs = [("anthropic", args.anthropic_key), ("openai", args.openai_key)]
    for item in args.provider_key or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise AdminError(f"--provider-key wants NAME=KEY (a route name or provider kind), got {name!r}")
        pairs.append((name.strip(), value))
    found = {}
    for name, value in pairs:
        if value is None:
            continue
        if value.startswith("env:"):
            variable = value[4:]
            value = os.environ.get(variable, "")
            if not value:
                raise AdminError(f"the provider key for {name} reads ${variable}, which is not set")
        found[name] = value
    return found or None


def _create(args: argparse.Namespace) -> int:
    limits = {name: getattr(args, name) for name, _, _ in _LIMIT_FLAGS if getattr(args, name) is not None}
    body = {"name": args.name, "user_id": args.user, "team": args.team, "limits": limits or None,
            "models": [m.strip() for m in args.models.split(",")] if args.models else None,
            "expires_in_days": args.expires_in_days}
    provider_keys = _provider_keys(args)
    if provider_keys:
        body["provider_keys"] = provider_keys
    if args.cache is not None:
        body["cache"] = args.cache
    created = _call(args, "POST", "/admin/keys", body)
    print(created["key"])
    own = ", ".join(sorted(created.get("provider_keys") or {}))
    print(f"key id {created['key_id']} (user {created['user_id'] or '-'}, team {created['team'] or '-'}"
          f"{'; own provider keys: ' + own if own else ''}); the key is shown this once: store it now", file=sys.stderr)
    if created.get("warning"):
        print(f"warning: {created['warning']}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = _call(args, "GET", "/admin/keys")["keys"]
    header = ("key id", "name", "user", "team", "status", "created", "expires", "limits")
    rows = [(k["key_id"], k["name"] or "-", k["user_id"] or "-", k["team"] or "-", k["status"], _when(k["created_at"]),
             _when(k["expires_at"]), _limits_text(k["limits"])) for k in keys]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _show(args: argparse.Namespace) -> int:
    key = _call(args, "GET", f"/admin/keys/{args.key_id}")
    for label, value in (
        ("key id", key["key_id"]), ("name", key["name"]), ("user", key["user_id"]), ("team", key["team"]),
        ("status", key["status"]), ("models", ", ".join(key["models"]) if key["models"] else "any"),
        ("limits", _limits_text(key["limits"])),
        ("cache", "on" if key.get("cache") is True else "off" if key.get("cache") is False else "as the rule says"),
        ("created", _when(key["created_at"])),
        ("expires", _when(key["expires_at"])), ("revoked", _when(key["revoked_at"])),
        ("provider keys", ", ".join(f"{n} ({state})" for n, state in sorted((key.get("provider_keys") or {}).items()))
         or "the routes'"),
        ("spent today", f"${key['spend']['today_usd']:.6f}"), ("spent this month", f"${key['spend']['this_month_usd']:.6f}"),
    ):
        print(f"{label:<17}{value if value is not None else '-'}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    key = _call(args, "DELETE", f"/admin/keys/{args.key_id}")
    print(f"key {key['key_id']} revoked at {_when(key['revoked_at'])} UTC")
    return 0


def _reseal(args: argparse.Namespace) -> int:
    done = _call(args, "POST", "/admin/keys/reseal")
    print(f"provider keys of {done['resealed']} key(s) encrypted again under the current secret key")
    if done["unreadable"]:
        print(f"keys: {len(done['unreadable'])} key(s) could not be opened with any configured secret key and were "
              f"left as they are: {', '.join(done['unreadable'])}", file=sys.stderr)
        return 1
    return 0


def _new_secret(args: argparse.Namespace) -> int:
    from .store.sealing import new_secret_key

    print(new_secret_key())
    return 0


def _guarded(command):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AdminError as exc:
            print(f"keys: {exc}", file=sys.stderr)
            return 1
    return run


def add_keys_command(commands) -> None:  # type: ignore[no-untyped-def]
    """Register ``keys`` and its subcommands on the main parser's subparsers."""
    keys = commands.add_parser("keys", help="issue, list, show and revoke virtual keys (via the admin API)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--url", help="the gateway (default: $CASCADEFLOW_URL or http://127.0.0.1:8000)")
        parser.add_argument("--master-key", help="default: $CASCADEFLOW_MASTER_KEY")
        return parser

    create = common(keys_commands.add_parser("create", help="issue a key (printed once)"))
    create.add_argument("--name")
    create.add_argument("--user", help="user id the key's requests are recorded and limited under")
    create.add_argument("--team", help="team (or tier) for team limits and reports")
    create.add_argument("--models", help="comma-separated model names or globs the key may use (default: any)")
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None,
                        help="answer this key's repeated requests from the response cache, or never (docs/cache.md)")
    for name, kind, meaning in _LIMIT_FLAGS:
        create.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=meaning)
    own = " (env:VAR reads $VAR; stored encrypted, needs CASCADEFLOW_SECRET_KEY on the gateway)"
    create.add_argument("--anthropic-key", help="the key's own key for anthropic routes" + own)
    create.add_argument("--openai-key", help="the key's own key for openai(-compatible) routes" + own)
    create.add_argument("--provider-key", action="append", metavar="NAME=KEY",
                        help="the key's own key for a route (by name) or provider kind; repeatable" + own)
    create.set_defaults(func=_guarded(_create))
    common(keys_commands.add_parser("list", help="all keys (never their secrets)")).set_defaults(func=_guarded(_list))
    show = common(keys_commands.add_parser("show", help="one key, with what it spent"))
    show.add_argument("key_id")
    show.set_defaults(func=_guarded(_show))
    revoke = common(keys_commands.add_parser("revoke", help="refuse the key from now on, in every process"))
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_guarded(_revoke))
    common(keys_commands.add_parser(
        "reseal", help="encrypt every stored provider key again under the gateway's current secret key (rotation)",
    )).set_defaults(func=_guarded(_reseal))
    keys_commands.add_parser("new-secret", help="print a fresh secret key for CASCADEFLOW_SECRET_KEY").set_defaults(
        func=_guarded(_new_secret))
