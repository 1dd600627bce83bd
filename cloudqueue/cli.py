"""The ``cloudqueue`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cloudqueue import cron_cli, tasks_cli

if TYPE_CHECKING:
    from cloudqueue.config import ServeConfig


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from cloudqueue import demo

    asyncio.run(demo.main())
    return 0


def _log(args: argparse.Namespace) -> int:
    from cloudqueue import log_tool

    return log_tool.run(args.action, args.data_dir)


def _serve(args: argparse.Namespace) -> int:
    """Run the server; a refusal to start is one line on stderr saying what to run, exit 1
    (2 for a bad configuration), never a traceback."""
    import asyncio

    from cloudqueue import log_format, server
    from cloudqueue.engine.core.errors import ConfigError

    try:
        config = _serve_config(args)
        log_format.use(config.log_format)
        asyncio.run(server.serve(config))
    except ConfigError as exc:
        where = f" in {args.config}" if args.config is not None else ""
        print(f"cloudqueue serve: bad configuration{where}: {exc}", file=sys.stderr)
        return 2
    except server.StartupRefused as exc:
        print(f"cloudqueue serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the server took over SIGINT
        return 130
    return 0


def _db(args: argparse.Namespace) -> int:
    """``cloudqueue db migrate|status``: one line on stderr and exit 1 when the database cannot
    be used, never a traceback."""
    import asyncio
    import os

    from cloudqueue import db_tool

    url = args.store or os.environ.get("CLOUDQUEUE_STORE")
    if not url:
        print("cloudqueue db: which database? give --store postgresql://USER@HOST/DB (or set "
              "CLOUDQUEUE_STORE)", file=sys.stderr)
        return 2
    return asyncio.run(db_tool.run(args.action, url))


def _host(args: argparse.Namespace) -> int:
    """Run the function host; what stops it from starting is one line on stderr, exit 2 (a key,
    a module) or 1 (the port), never a traceback."""
    import asyncio
    import os

    from cloudqueue import host, server
    from cloudqueue.engine.core.errors import ConfigError

    try:
        given = {name: getattr(args, name) for name in ("app_id", "app_key", "master_key",
                                                        "hook_key", "queue_url")}
        config = host.host_config(os.environ, given, tuple(args.functions), args.host,
                                  args.port)
        asyncio.run(host.serve(config))
    except ConfigError as exc:
        print(f"cloudqueue host: {exc}", file=sys.stderr)
        return 2
    except server.StartupRefused as exc:
        print(f"cloudqueue host: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the host took over SIGINT
        return 130
    return 0


_LIMIT_FLAGS = ("header_timeout_ms", "body_timeout_ms", "idle_timeout_ms", "max_connections")


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    import dataclasses
    import os

    from cloudqueue import server

    if args.config is not None:
        config = server.load_config(args.config)
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                       ("data_dir", args.data_dir)) if v is not None}
        config = dataclasses.replace(config, **overrides)
        if args.host_concurrency is not None:  # the flag sets every app's mode
            config = dataclasses.replace(config, apps=tuple(
                dataclasses.replace(app, host_concurrency=args.host_concurrency)
                for app in config.apps))
    else:
        data_dir = args.data_dir or Path("data")
        apps = server.apps_from_env(os.environ, data_dir, args.function_host, args.concurrency,
                                    tuple(args.functions), args.host_concurrency or "fixed")
        config = server.ServeConfig(
            host=args.host or "127.0.0.1",
            port=args.port if args.port is not None else server.DEFAULT_PORT,
            data_dir=data_dir, apps=apps)
        if "LEANCLOUD_APP_ID" not in os.environ:
            config = dataclasses.replace(
                config, admin_token=server.dev_admin_token(data_dir),
                viewer_token=server.dev_admin_token(data_dir, "viewer_token"))
            print(f"development app {apps[0].keys.app_id}: its keys, the operator token and the "
                  f"viewer token are in {data_dir / 'dev-credentials.json'}", flush=True)
    token = os.environ.get("CLOUDQUEUE_ADMIN_TOKEN")
    if token:
        config = dataclasses.replace(config, admin_token=server.check_admin_token(
            token, "CLOUDQUEUE_ADMIN_TOKEN"))
    token = os.environ.get("CLOUDQUEUE_VIEWER_TOKEN")
    if token:
        config = dataclasses.replace(config, viewer_token=server.check_admin_token(
            token, "CLOUDQUEUE_VIEWER_TOKEN"))
    store = args.store or os.environ.get("CLOUDQUEUE_STORE")
    if store:
        config = dataclasses.replace(config, store=server.check_url(
            store, "--store", ("postgresql", "postgres")))
    if args.node_url:
        config = dataclasses.replace(config, node_url=server.check_url(
            args.node_url, "--node-url", ("http", "https")))
    limits = {name: getattr(args, name) for name in _LIMIT_FLAGS
              if getattr(args, name) is not None}
    config = dataclasses.replace(config, **limits)
    if args.log_format is not None:
        config = dataclasses.replace(config, log_format=args.log_format)
    return _switches(config, args)


def _switches(config: ServeConfig, args: argparse.Namespace) -> ServeConfig:
    """The on/off flags of ``serve``: each one given sets its setting over the config file's."""
    import dataclasses

    if args.access_log:
        config = dataclasses.replace(config, access_log=True)
    if args.fixed_concurrency:
        config = dataclasses.replace(config, adaptive_concurrency=False)
    if args.no_metrics:
        config = dataclasses.replace(config, metrics=False)
    if args.no_dashboard:
        config = dataclasses.replace(config, dashboard=False)
    return config


def _whole(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``least`` (to ``most``)."""
    def parse(text: str) -> int:
        if text.isascii() and text.isdigit() and len(text) <= 12:
            value = int(text)
            if value >= least and (most is None or value <= most):
                return value
        bound = f"from {least} to {most}" if most is not None else f">= {least}"
        raise argparse.ArgumentTypeError(f"expected a whole number {bound}, got {text!r}")
    return parse


def _log_format(text: str) -> str:
    """An argparse type: ``text`` or ``json`` (a near miss named)."""
    from cloudqueue.engine.core.errors import ConfigError
    from cloudqueue.log_format import check_log_format

    try:
        return check_log_format(text, "--log-format")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloudqueue")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def _verbose_anywhere(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``-v`` after the subcommand too (``cloudqueue serve -v``), as before it."""
    for sub in set(commands.choices.values()):
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log at debug level")


def _add_host(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    host = commands.add_parser(
        "host", help="serve Python functions to a queue as a LeanEngine app does (a function "
                     "host for `cloudqueue serve --function-host`)",
        description="Serve the functions that modules declare with @cloudqueue.define at "
                    "/1.1/functions/<name>, over LeanEngine's protocol, for a queue started "
                    "with `cloudqueue serve --function-host http://HOST:PORT`. The app's keys "
                    "come from LEANCLOUD_APP_ID, LEANCLOUD_APP_KEY, LEANCLOUD_APP_MASTER_KEY "
                    "and LEANCLOUD_APP_HOOK_KEY (optional), or the flags below.")
    host.add_argument("--functions", metavar="MODULE", action="append", required=True,
                      help="a module of functions declared with @cloudqueue.define (e.g. "
                           "--functions tasks for ./tasks.py; repeatable)")
    host.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    host.add_argument("--port", type=_whole(0, 65535), help="port (default 3000; 0: any free)")
    host.add_argument("--queue-url", metavar="URL",
                      help="the queue the functions report progress to (default "
                           "$CLOUDQUEUE_URL, else http://127.0.0.1:3100)")
    keys = host.add_argument_group("the app's keys (prefer the variables: arguments show in ps)")
    for flag, variable in (("--app-id", "LEANCLOUD_APP_ID"), ("--app-key", "LEANCLOUD_APP_KEY"),
                           ("--master-key", "LEANCLOUD_APP_MASTER_KEY"),
                           ("--hook-key", "LEANCLOUD_APP_HOOK_KEY")):
        keys.add_argument(flag, metavar="ID" if flag == "--app-id" else "KEY",
                          help=f"default ${variable}")
    host.set_defaults(func=_host)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudqueue",
                                     description="A durable task queue for cloud functions.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--version", action="version", version=f"cloudqueue {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the embedded example: enqueue and run tasks")
    demo.set_defaults(func=_demo)
    log_cmd = commands.add_parser("log", help="inspect, verify, repair or compact a data directory")
    log_cmd.add_argument("action", choices=["inspect", "verify", "repair", "compact"],
                         help="inspect: summary; verify: exit 0 clean, 1 torn tail, 2 damage; "
                              "repair: back up and rewrite; compact: snapshot offline")
    log_cmd.add_argument("data_dir", type=Path, help="the queue's data directory")
    log_cmd.set_defaults(func=_log)
    serve = commands.add_parser("serve", help="run the queue server (LeanCloud's REST protocol)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_whole(0, 65535), help="port (default 3100; 0: any free)")
    serve.add_argument("--data-dir", type=Path, help="where the logs live (default ./data)")
    serve.add_argument("--store", metavar="URL",
                       help="keep tasks in PostgreSQL (postgresql://USER@HOST/DB), shared with "
                            "other nodes (docs/multinode.md); default: a log in --data-dir")
    serve.add_argument("--node-url", metavar="URL",
                       help="with --store: where other nodes reach this one (default "
                            "http://HOST:PORT)")
    serve.add_argument("--function-host", help="base URL of the LeanEngine app to call")
    serve.add_argument("--functions", metavar="MODULE", action="append", default=[],
                       help="a module of Python functions declared with @cloudqueue.define, "
                            "run in-process (e.g. --functions tasks for ./tasks.py; "
                            "repeatable; beside or instead of --function-host)")
    serve.add_argument("--concurrency", type=_whole(1), default=1,
                       help="runs in flight (default 1)")
    serve.add_argument("--config", type=Path, help="TOML file describing many apps")
    serve.add_argument("--access-log", action="store_true",
                       help="log a line per request (off by default: it costs CPU at load)")
    serve.add_argument("--log-format", type=_log_format, metavar="text|json",
                       help="text (default): a line per record; json: one JSON object per "
                            "line, with a failed run's app, function, uniqueId, attempt, error "
                            "and traceback as fields (with --config: its log_format)")
    serve.add_argument("--fixed-concurrency", action="store_true",
                       help="keep --concurrency runs in flight even while the server is "
                            "overloaded (by default it starts fewer while its event loop lags, "
                            "so that enqueues are still acknowledged quickly)")
    serve.add_argument("--no-metrics", action="store_true",
                       help="no GET /metrics, and nothing counted for it (TOML: metrics = "
                            "false)")
    serve.add_argument("--no-dashboard", action="store_true",
                       help="do not serve the web dashboard at /dashboard/ (TOML: dashboard = "
                            "false)")
    serve.add_argument("--host-concurrency", choices=("fixed", "adaptive"),
                       help="fixed (default): --concurrency runs in flight at the function "
                            "host; adaptive: as many as the host takes without its latency "
                            "rising or it erring, up to --concurrency (with --config: every "
                            "app's host_concurrency)")
    serve.add_argument("--max-connections", type=_whole(1),
                       help="open connections at most; more wait in the listen backlog "
                            "(default 1000)")
    serve.add_argument("--header-timeout-ms", type=_whole(0),
                       help="a request's headers must be complete within this (default 10000; "
                            "else 408 and the connection closes; 0: no limit)")
    serve.add_argument("--body-timeout-ms", type=_whole(0),
                       help="its body within this after the headers (default 30000; 0: none)")
    serve.add_argument("--idle-timeout-ms", type=_whole(0),
                       help="close a keep-alive connection idle this long (default 75000)")
    serve.set_defaults(func=_serve)
    db_cmd = commands.add_parser("db", help="the PostgreSQL store's tables: migrate, status")
    db_cmd.add_argument("action", choices=["migrate", "status"],
                        help="migrate: create or bring the tables to this version; status: "
                             "their version, the nodes alive and who dispatches each app")
    db_cmd.add_argument("--store", metavar="URL", required=False,
                        help="postgresql://USER@HOST/DB (default: $CLOUDQUEUE_STORE)")
    db_cmd.set_defaults(func=_db)
    _add_host(commands)
    cron_cli.add_parser(commands)
    tasks_cli.add_parsers(commands)
    _verbose_anywhere(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
