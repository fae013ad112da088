"""The ``cascadeflow`` command line.

A problem a user can fix (a bad setting, a busy port, a missing file) ends the
command with one line on stderr and a non-zero status, never a traceback:
configuration errors exit 2, other refusals (:class:`StartupError`) exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from . import __version__
from .config import DEFAULT_CONFIG_FILE, ProxyConfig, ServerConfig
from .errors import ConfigError
from .keys_cli import add_keys_command
from .paths import sqlite_path
from .startup import StartupError, banner, build_app, check_ledger, effective_settings

__all__ = ["main"]


def _proxy_start(args: argparse.Namespace) -> int:
    from .gateway import serve

    config = ProxyConfig.load(args.config)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers), ("log_level", args.log_level)) if v is not None}
    if overrides:
        try:
            server = ServerConfig.model_validate({**config.server.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigError(f"command line: {exc.errors(include_url=False)[0]['msg']}") from None
        config = config.model_copy(update={"server": server})
    try:
        config.effective_routes()
    except ValidationError as exc:
        raise ConfigError(f"routes: {exc.errors(include_url=False)[0]['msg']}") from None
    app = build_app(config)  # also in the parent with several workers: a bad rule or check is named here
    check_ledger(config.database_url)

    def announce() -> None:
        print("\n".join(banner(config, __version__)), file=sys.stderr, flush=True)

    try:
        serve(config, args.config, app=app if config.server.workers == 1 else None, announce=announce)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}") from None
    return 0


def _config_check(args: argparse.Namespace) -> int:
    config = ProxyConfig.load(args.config)
    build_app(config)  # rules and checks load
    print("\n".join(effective_settings(config)))
    print("the configuration is valid", file=sys.stderr)
    return 0


def _proxy_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} already exists; use --force to overwrite it", file=sys.stderr)
        return 1
    from .cascade.defaults import render_default_rules

    text = resources.files("cascadeflow").joinpath("example-config.yaml").read_text()
    try:
        path.write_text(text.replace("__CASCADE_RULES__\n", render_default_rules()))
    except OSError as exc:
        hint = " (create the directory first)" if not path.parent.is_dir() else ""
        raise StartupError(f"cannot write {path}: {exc.strerror or exc}{hint}") from None
    ProxyConfig.from_yaml(path)  # the shipped example must always load
    print(f"wrote {path}; start the gateway with: cascadeflow proxy start --config {path}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from .sim import run_simulator

    try:
        asyncio.run(run_simulator(args.host, args.port, args.script))
    except KeyboardInterrupt:
        pass
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo()
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluation.commands import run_eval

    run_eval([Path(f) for f in args.data], args.config, args.rule, args.report, args.markdown, concurrency=args.concurrency)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .evaluation.commands import run_calibrate, run_calibrate_from_ledger

    if args.from_ledger:
        if not args.config:
            raise StartupError("calibrate --from-ledger needs the gateway's config (-c FILE): its ledger and its rule")
        run_calibrate_from_ledger(args.config, args.rule, args.target_quality, args.folds, write=not args.dry_run,
                                  level=args.level)
        return 0
    run_calibrate([Path(f) for f in args.data], args.config, args.rule, args.target_quality, args.folds,
                  write=not args.dry_run, concurrency=args.concurrency, level=args.level, learn=not args.no_scorer,
                  route="none" if args.no_router else ("embedding" if args.router_embedding else "text"))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from .store import Ledger
    from .store.queries import overview
    from .store.reports import parse_since, render_overview, safe_url

    config = ProxyConfig.load(args.config)
    since = parse_since(args.since) if args.since else None
    path = sqlite_path(config.database_url)
    if path is not None and not Path(path).is_file():
        raise StartupError(
            f"no ledger at {path}: nothing has been recorded there (the gateway creates it when it first starts); "
            f"give the gateway's config with -c FILE or set CASCADEFLOW_DATABASE_URL")

    async def read() -> tuple[dict, dict]:
        ledger = await Ledger(config.database_url, retention_days=None).start()
        try:
            assert ledger.engine is not None
            return (await overview(ledger.engine, since=since, recent=args.recent, buckets=12),
                    await ledger.summary(since=since, by=args.by))
        finally:
            await ledger.aclose()

    try:
        data, summary = asyncio.run(read())
    except (OSError, ValueError):
        raise
    except Exception as exc:  # a driver error (PostgreSQL down, no such database): one line
        raise StartupError(f"cannot read the ledger at {safe_url(config.database_url)}: {type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    print(render_overview(data, summary, args.by, safe_url(config.database_url), recent=args.recent))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cascadeflow", description="Self-hosted LLM gateway with cascades.")
    parser.add_argument("--version", action="version", version=f"cascadeflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    proxy = commands.add_parser("proxy", help="run or configure the gateway")
    proxy_commands = proxy.add_subparsers(dest="proxy_command", required=True)
    start = proxy_commands.add_parser("start", help="start the gateway")
    start.add_argument("-c", "--config", help=f"config file (default: $CASCADEFLOW_CONFIG, ./{DEFAULT_CONFIG_FILE}, else environment)")
    start.add_argument("--host")
    start.add_argument("--port", type=int)
    start.add_argument("--workers", type=int)
    start.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    start.set_defaults(func=_proxy_start)
    init = proxy_commands.add_parser("init", help="write a commented example config")
    init.add_argument("--path", default=DEFAULT_CONFIG_FILE)
    init.add_argument("--force", action="store_true")
    init.set_defaults(func=_proxy_init)

    config_parser = commands.add_parser("config", help="inspect the configuration")
    config_commands = config_parser.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate the config and print the effective settings (secrets masked)")
    check.add_argument("-c", "--config", help="config file (default: as `proxy start` finds it)")
    check.set_defaults(func=_config_check)

    simulate = commands.add_parser("simulate", help="run the simulated provider (both dialects)")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=9000)
    simulate.add_argument("--script", help="YAML or JSON file of scripted answers and faults")
    simulate.set_defaults(func=_simulate)

    stats = commands.add_parser("stats", help="the dashboard's summary from the ledger, as tables")
    stats.add_argument("-c", "--config", help="config file (for database_url); default as `proxy start`")
    stats.add_argument("--since", help="a duration (30m, 24h, 7d) or an ISO date (default: all time)")
    stats.add_argument("--by", choices=["model", "served", "rule", "user", "key", "team", "route"],
                       help="break the first table down by this column")
    stats.add_argument("--recent", type=int, default=10, help="how many of the latest decisions to list (default 10)")
    stats.set_defaults(func=_stats)

    add_keys_command(commands)

    for name, agent in (("claude", "Claude Code"), ("codex", "the Codex CLI")):
        launcher = commands.add_parser(
            name, help=f"start {agent} pointed at the gateway (cascadeflow {name} [--url URL] [--config FILE] ARGS…)",
            description=f"Start {agent} pointed at the gateway; every argument after the launcher's own options "
                        f"is passed to `{name}`.")
        launcher.add_argument("--url", help="the gateway (default: $CASCADEFLOW_URL, else the config's host:port)")
        launcher.add_argument("--config", help="config file whose server.host/port to use (default: as `proxy start`)")
        launcher.add_argument("args", nargs="*", help=f"passed to `{name}` as given")

    demo = commands.add_parser("demo", help="show a cascade at work, with no API keys")
    demo.set_defaults(func=_demo)

    evaluate = commands.add_parser("eval", help="replay recorded data through the gateway and measure a rule")
    evaluate.add_argument("--data", nargs="+", required=True, help="replay JSON-lines files")
    evaluate.add_argument("-c", "--config", help="config file whose rule to evaluate (default: built-in checks + self-verification)")
    evaluate.add_argument("--rule", help="the rule's name (default: the first)")
    evaluate.add_argument("--report", help="write an HTML report with the deferral and cost-quality curves")
    evaluate.add_argument("--markdown", help="write the table as Markdown")
    evaluate.add_argument("--concurrency", type=int, default=16)
    evaluate.set_defaults(func=_eval)

    calibrate = commands.add_parser("calibrate", help="fit a rule's threshold for a target quality retained")
    source = calibrate.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", nargs="+", help="replay JSON-lines files")
    source.add_argument("--from-ledger", action="store_true",
                        help="shadow mode's labelled pairs from the gateway's own ledger (the config's database_url)")
    calibrate.add_argument("--target-quality", type=float, default=0.98, help="quality retained to reach (0-1)")
    calibrate.add_argument("-c", "--config", help="config file whose rule is fitted and rewritten")
    calibrate.add_argument("--rule", help="the rule's name (default: the first)")
    calibrate.add_argument("--folds", type=int, default=5)
    calibrate.add_argument("--level", type=float, default=0.95,
                           help="one-sided confidence level of the lower bound that must meet the target (default 0.95)")
    calibrate.add_argument("--no-scorer", action="store_true",
                           help="do not try the learned scorer (a model file written beside the config)")
    calibrate.add_argument("--no-router", action="store_true",
                           help="do not try the pre-generation router (a model file written beside the config)")
    calibrate.add_argument("--router-embedding", action="store_true",
                           help="give the router a WordLlama embedding of the prompt too (the semantic extra; "
                                "milliseconds of CPU per request, in a worker thread)")
    calibrate.add_argument("--dry-run", action="store_true", help="report only; do not write the config")
    calibrate.add_argument("--concurrency", type=int, default=16)
    calibrate.set_defaults(func=_calibrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("claude", "codex") and not {"-h", "--help"} & set(argv[1:2]):
        # the agent's own flags (-p, -c, --model …) are not ours to parse: the launcher reads only its leading options
        from .launch import launch

        try:
            return launch(argv[0], argv[1:])
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        except StartupError as exc:
            print(f"cascadeflow {argv[0]}: {exc}", file=sys.stderr)
            return 1
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that stopped early shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # `cascadeflow keys list | awk '… exit'`: the reader had what it wanted; no traceback, no failure under pipefail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"cascadeflow {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as exc:
        if args.command not in ("eval", "calibrate", "stats"):
            raise
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
