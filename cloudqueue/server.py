"""``cloudqueue serve``: apps from the environment or a TOML file, one engine each, one server.

The configuration (``adapters/config.py``) comes from LeanEngine's ``LEANCLOUD_*`` variables or a
TOML file describing many apps::

    host = "127.0.0.1"
    port = 3100
    data_dir = "data"
    access_log = false                       # a log line per request (costs CPU at load)
    metrics = true                           # GET /metrics (docs/metrics.md); false: none, and
                                             # the engines count nothing for it
    dashboard = true                         # the web dashboard at /dashboard/ (docs/dashboard.md)
    adaptive_concurrency = true              # fewer runs in flight while the server is overloaded
    gc_freeze_ms = 1000                      # freeze long-lived objects out of the GC (0: off)
    gc_full_collect_s = 900                  # then a full collection this often (0: never)
    header_timeout_ms = 10000                # a request's headers complete within (else 408)
    body_timeout_ms = 30000                  # its body complete within, after the headers
    idle_timeout_ms = 75000                  # an idle keep-alive connection closes after
    max_connections = 1000                   # more wait in the listen backlog
    log_repeat_interval_s = 10               # a repeated warning or error: one line this often
    log_format = "text"                      # or "json": one JSON object per line
    [[apps]]
    app_id = "myApp"                         # letters, digits, _ - . (it names a directory)
    app_key = "..."
    master_key = "..."
    hook_key = "..."                         # optional
    function_host = "http://127.0.0.1:3000"  # the LeanEngine app's base URL
    concurrency = 1
    host_concurrency = "fixed"               # "adaptive": as many runs as the host takes without
                                             # slowing, up to concurrency (docs/concurrency.md)
    timezone = "Asia/Shanghai"               # default zone of the app's cron schedules (UTC)
    schedule_concurrency = 1                 # schedules' firings get slots of their own
    [apps.quotas]                            # each optional; 429 + Retry-After past them
    rate_per_s = 100
    per_day = 10000
    held = 1000

Each app keeps its log in ``DATA_DIR/<appId>``, so apps never see each other's tasks. A server that
cannot start (port in use, a log locked or damaged) raises :class:`StartupRefused`, whose message
says what to run; nothing that logs here shows a key or a URL's password.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import resource
import shlex
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from cloudqueue.adapters.http_api.app import APPS, AppStartError, QueueApp, create_app
from cloudqueue.adapters.http_api.cluster import ClusterConfig, ClusterRefused
from cloudqueue.adapters.http_api.listener import Listener, bind
from cloudqueue.adapters.http_api.logs import AccessLog, rate_limit_logs
from cloudqueue.adapters.http_api.metrics import is_loopback
from cloudqueue.adapters.http_api.protocol import (
    ConnectionCount,
    ConnectionLimits,
    GuardedAppRunner,
)
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker
from cloudqueue.config import (
    DEFAULT_PORT,
    AppConfig,
    ServeConfig,
    apps_from_env,
    check_admin_token,
    check_app_id,
    check_function_host,
    check_url,
    dev_admin_token,
    load_config,
)
from cloudqueue.engine.config import EngineConfig
from cloudqueue.engine.core.errors import EngineError
from cloudqueue.engine.core.redact import redact_url
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.clock import Clock
from cloudqueue.engine.runtime.defined import import_functions
from cloudqueue.engine.runtime.heap import HeapFreezer
from cloudqueue.engine.runtime.log_file import LogCorruptError, LogLockedError
from cloudqueue.engine.runtime.log_options import LogOptions
from cloudqueue.engine.runtime.loop_watch import LoopWatch
from cloudqueue.engine.runtime.postgres.urls import shown_url
from cloudqueue.engine.runtime.store import AsyncStoreOpener

__all__ = ["DEFAULT_PORT", "AppConfig", "Running", "ServeConfig", "StartupRefused",
           "apps_from_env", "build_app", "check_admin_token", "check_app_id",
           "check_function_host", "check_url", "dev_admin_token", "load_config", "running", "serve"]

log = logging.getLogger("cloudqueue.serve")

# descriptors kept free of client connections: log segments and locks, the function host's
# connections (one per run in flight), the listening sockets, stdio
_FD_RESERVE = 64


class StartupRefused(Exception):
    """The server cannot start; the message says why and what command to run."""


def build_app(config: ServeConfig, clock: Clock | None = None,
              node_url: Callable[[], str] | None = None) -> web.Application:
    """The server's application. With ``config.store`` (a database) it is a node of several:
    ``node_url()`` says where other nodes reach it."""
    tenants = {}
    by_id = {app.keys.app_id: app for app in config.apps}
    handlers = {app.keys.app_id: import_functions(app.functions) for app in config.apps}

    def build(app_id: str, opener: AsyncStoreOpener | None = None) -> Engine:
        app = by_id[app_id]
        invoker = (HttpInvoker(app.function_host, app.keys, clock=clock)
                   if app.function_host else None)
        engine = Engine(EngineConfig(
            concurrency=app.concurrency, adaptive_concurrency=config.adaptive_concurrency,
            host_concurrency=app.host_concurrency, max_timeout_ms=app.max_timeout_ms,
            quotas=app.quotas, timezone=app.timezone, metrics=config.metrics,
            schedule_concurrency=app.schedule_concurrency,
            data_dir=None if config.store else config.data_dir / app.keys.app_id,
            log=LogOptions(fsync=app.fsync), name=app.keys.app_id),
            invoker=invoker, clock=clock, opener=opener)
        engine.register(*handlers[app_id])
        return engine

    for app in config.apps:
        tenants[app.keys.app_id] = QueueApp(app.keys, build(app.keys.app_id), app.strict_options,
                                            app.client_enqueue)
    cluster = None
    if config.store is not None:
        cluster = ClusterConfig(config.store, build, node_url or (lambda: _node_url(config, 0)),
                                lease_ms=config.lease_ms, grace_ms=config.shutdown_grace_ms,
                                clock=clock)
    return create_app(tenants, operator_token=config.admin_token,
                      viewer_token=config.viewer_token, metrics=config.metrics,
                      dashboard=config.dashboard, listen_host=config.host, cluster=cluster)


def _node_url(config: ServeConfig, port: int) -> str:
    """Where other nodes reach this one: ``node_url``, else ``http://host:port`` (the machine's
    name for a wildcard host)."""
    if config.node_url:
        return config.node_url
    host = config.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class Running:
    port: int  # the port bound (the one asked for, or the one the system chose for port 0)
    connections: ConnectionCount


@contextlib.asynccontextmanager
async def running(config: ServeConfig, clock: Clock | None = None) -> AsyncIterator[Running]:
    """The server, listening and serving, until the block exits (then drained and stopped).
    Its engines, invokers, connection timers and listener read and wait on ``clock`` (default:
    the system's).

    Binds first, so a port in use refuses at once, then opens every app's log (connections wait
    in the backlog meanwhile), then accepts.

    Raises:
        StartupRefused: the address cannot be bound or an app's log cannot be opened.
    """
    limits = connection_limits(config)
    count = ConnectionCount(limits.max_connections)
    with rate_limit_logs(config.log_repeat_interval_s):
        sockets = _bind(config)
        extra: dict[str, Any] = {} if config.access_log else {"access_log": None}
        port = sockets[0].getsockname()[1] if sockets else config.port
        runner = GuardedAppRunner(build_app(config, clock, lambda: _node_url(config, port)),
                                  limits, count, clock,
                                  handle_signals=False,
                                  shutdown_timeout=config.shutdown_grace_ms / 1000,
                                  access_log_class=AccessLog, **extra)
        listener = None
        try:
            await _set_up(runner)
            assert runner.server is not None
            listener = Listener(sockets, runner.server, count, clock)
            listener.start()
            _log_start(config, listener.port, limits, runner.app[APPS])
            yield Running(listener.port, count)
        finally:
            if listener is not None:
                await listener.close()
            for sock in sockets:
                sock.close()
            await runner.cleanup()


async def serve(config: ServeConfig, started: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop taking requests, let runs finish (grace), flush."""
    async with running(config):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        freezer = None
        if config.gc_freeze_ms:
            freezer = asyncio.ensure_future(HeapFreezer(
                freeze_every_s=config.gc_freeze_ms / 1000,
                full_every_s=config.gc_full_collect_s or None).run())
        watch = LoopWatch(loop)  # logs where the loop was held, when it is for a second
        watch.start()
        if started is not None:
            started.set()
        try:
            await stop.wait()
            log.info("shutting down: no new requests; runs in flight get %d ms",
                     config.shutdown_grace_ms)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            watch.stop()
            if freezer is not None:
                freezer.cancel()
                await asyncio.gather(freezer, return_exceptions=True)
                gc.unfreeze()  # leave the process's collector as it was (tests, embedders)


def connection_limits(config: ServeConfig) -> ConnectionLimits:
    return ConnectionLimits(header_timeout_s=config.header_timeout_ms / 1000,
                            body_timeout_s=config.body_timeout_ms / 1000,
                            idle_timeout_s=config.idle_timeout_ms / 1000,
                            max_connections=_fit_file_limit(config))


def _fit_file_limit(config: ServeConfig) -> int:
    """``max_connections``, raising the soft limit on open files to make room for it when the
    hard limit allows, else lowered to what fits (and said so)."""
    wanted = config.max_connections + _FD_RESERVE + sum(a.concurrency for a in config.apps)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return config.max_connections
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    fits = max(1, soft - (wanted - config.max_connections))
    if fits < config.max_connections:
        log.warning("max_connections lowered from %d to %d to fit the limit of %d open files "
                    "(raise it with `ulimit -n %d` before starting)", config.max_connections,
                    fits, soft, wanted)
    return min(fits, config.max_connections)


def _bind(config: ServeConfig) -> list[socket.socket]:
    try:
        return bind(config.host, config.port)
    except OSError as exc:
        raise StartupRefused(bind_refusal(config.host, config.port, exc)) from None


def bind_refusal(host: str, port: int, exc: OSError, command: str = "cloudqueue serve",
                 default_port: int = DEFAULT_PORT) -> str:
    """Why ``command`` cannot listen on ``host:port``, and the command line to try instead."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {where}: another process is using port {port}. Stop it "
                f"(`ss -ltnp 'sport = :{port}'` shows which), or start on another port: "
                f"`{command} --port {port + 1 if port < 65535 else default_port}`")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {where}: ports below 1024 need privileges; start on another "
                f"port: `{command} --port {default_port}`")
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return (f"cannot listen on {where}: {host} is not an address of this machine; "
                f"`{command} --host 127.0.0.1` listens on this machine only")
    return f"cannot listen on {where}: {exc.strerror or exc}"


async def _set_up(runner: GuardedAppRunner) -> None:
    try:
        await runner.setup()
    except AppStartError as exc:
        raise StartupRefused(app_refusal(exc)) from None
    except ClusterRefused as exc:
        raise StartupRefused(str(exc)) from None


def app_refusal(exc: AppStartError) -> str:
    """What to do about an app whose log would not open, naming its own directory."""
    directory = str(exc.data_dir)
    quoted = shlex.quote(directory)
    cause = exc.cause
    if isinstance(cause, LogCorruptError):
        return (f"the log of app {exc.app_id} in {directory} is damaged (segment "
                f"{cause.segment}, offset {cause.offset}: {cause.reason}); nothing was changed. "
                f"Repair it (a backup is kept) with: cloudqueue log repair {quoted}")
    if isinstance(cause, LogLockedError):
        return (f"{directory} (app {exc.app_id}) is in use by another cloudqueue process: stop "
                f"it first (`fuser -v {shlex.quote(str(Path(directory, 'LOCK')))}` shows which),"
                " or start this server with another --data-dir")
    if isinstance(cause, OSError):
        return (f"app {exc.app_id} cannot use {directory}: {cause.strerror or cause}; it must "
                f"be a directory this user may write to (`ls -ld {quoted}` shows what it is)")
    if not isinstance(cause, EngineError):  # unforeseen: keep the details for `-v`
        log.debug("app %s failed to start", exc.app_id, exc_info=cause)
    return (f"app {exc.app_id} cannot start on {directory}: {cause or type(cause).__name__}; "
            f"`cloudqueue log verify {quoted}` says what is wrong with its log")


def _log_start(config: ServeConfig, port: int, limits: ConnectionLimits,
               tenants: dict[str, QueueApp]) -> None:
    for app in config.apps:
        names = ", ".join(tenants[app.keys.app_id].engine.functions.names())
        local = f"functions {names} in-process" if names else ""
        host = redact_url(app.function_host) if app.function_host else ""
        target = (" + ".join(part for part in (local, host) if part)
                  or "nothing to run tasks: no --functions module and no --function-host")
        log.info("app %s -> %s (concurrency %d)", app.keys.app_id, target, app.concurrency)
    where = (f"tasks in {shown_url(config.store)}" if config.store
             else f"data in {config.data_dir}")
    log.info("cloudqueue listening on http://%s:%d (%s; at most %d connections)",
             config.host, port, where, limits.max_connections)
    if config.dashboard:
        log.info("dashboard: http://%s:%d/dashboard/ (docs/dashboard.md)",
                 config.host or "127.0.0.1", port)
    if config.metrics and not is_loopback(config.host):
        if config.admin_token is None:
            log.warning("GET /metrics answers 401 to everyone: the server listens on %s (not "
                        "loopback) and has no admin_token to scrape with", config.host or "*")
        else:
            log.info("GET /metrics needs Authorization: Bearer <admin_token> (the server "
                     "listens on %s, not loopback)", config.host or "*")
