"""``cloudqueue host``: the ``@cloudqueue.define`` functions of some modules on a function host.

::

    cloudqueue host --functions tasks [--functions more] [--host 127.0.0.1] [--port 3000]
                    [--queue-url http://127.0.0.1:3100]

serves them at ``/1.1/functions/<name>`` with :class:`adapters.function_host.FunctionHost`,
exactly as a Python LeanEngine app would (docs/protocol.md §2.2), for a queue started with
``cloudqueue serve --function-host http://127.0.0.1:3000``. The modules are found as
``cloudqueue serve --functions`` finds them (the current directory first).

The app's keys come from LeanEngine's variables, ``LEANCLOUD_APP_ID``, ``LEANCLOUD_APP_KEY``,
``LEANCLOUD_APP_MASTER_KEY`` and (optional) ``LEANCLOUD_APP_HOOK_KEY``, or from ``--app-id``,
``--app-key``, ``--master-key``, ``--hook-key``, which win. The functions report progress to
and fetch checkpoints from ``--queue-url`` (default ``$CLOUDQUEUE_URL``, else
http://127.0.0.1:3100).

A function's option defaults (``@cloudqueue.define("f", attempts=3)``) are known only where the
queue imports its module (``cloudqueue serve --functions``); a queue calling a host cannot see
them, so the host says so at start for each function that has some.

What cannot start raises :class:`cloudqueue.engine.core.errors.ConfigError` (a missing key, a
module that does not load; exit 2) or :class:`cloudqueue.server.StartupRefused` (the port; exit
1), each one line saying what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from aiohttp import web

from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.function_host import FunctionHost
from cloudqueue.adapters.http_api.listener import bind
from cloudqueue.config import DEFAULT_PORT as QUEUE_PORT
from cloudqueue.config import is_http_url
from cloudqueue.engine.core.errors import ConfigError
from cloudqueue.engine.core.redact import redact_url
from cloudqueue.engine.runtime.defined import defined_in, import_functions
from cloudqueue.server import StartupRefused, bind_refusal

__all__ = ["DEFAULT_PORT", "DEFAULT_QUEUE_URL", "HostConfig", "Running", "build_host",
           "host_config", "running", "serve"]

log = logging.getLogger("cloudqueue.host")

DEFAULT_PORT = 3000  # LeanEngine's
DEFAULT_QUEUE_URL = f"http://127.0.0.1:{QUEUE_PORT}"
COMMAND = "cloudqueue host"

# (AppKeys field, LeanEngine's variable, flag, what it is): the keys a host must have
_KEYS = (("app_id", "LEANCLOUD_APP_ID", "--app-id", "app id"),
         ("app_key", "LEANCLOUD_APP_KEY", "--app-key", "app key"),
         ("master_key", "LEANCLOUD_APP_MASTER_KEY", "--master-key", "master key"))
_HOOK_KEY = ("hook_key", "LEANCLOUD_APP_HOOK_KEY", "--hook-key", "hook key")


@dataclass(frozen=True)
class HostConfig:
    keys: AppKeys
    modules: tuple[str, ...]
    queue_url: str = DEFAULT_QUEUE_URL
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    shutdown_grace_ms: int = 10_000  # calls in flight at SIGTERM get this long to answer


def host_config(env: Mapping[str, str], given: Mapping[str, str | None],
                modules: tuple[str, ...], host: str = "127.0.0.1",
                port: int | None = None) -> HostConfig:
    """The configuration from LeanEngine's variables in ``env`` and the flags in ``given``
    (``app_id``, ``app_key``, ``master_key``, ``hook_key``, ``queue_url``; a flag wins).

    Raises:
        ConfigError: a key missing (naming its variable and flag) or a queue URL that is not
            http(s).
    """
    found = {field: given.get(field) or env.get(variable) or None
             for field, variable, _, _ in (*_KEYS, _HOOK_KEY)}
    missing = [key for key in _KEYS if not found[key[0]]]
    if missing:
        raise ConfigError(_missing_keys(missing))
    queue_url = given.get("queue_url") or env.get("CLOUDQUEUE_URL") or DEFAULT_QUEUE_URL
    if not is_http_url(queue_url):
        raise ConfigError(f"--queue-url {redact_url(queue_url)} is not an http:// or https:// "
                          f"URL (the queue's, e.g. {DEFAULT_QUEUE_URL})")
    keys = AppKeys(str(found["app_id"]), str(found["app_key"]), str(found["master_key"]),
                   found["hook_key"])
    return HostConfig(keys, modules, queue_url.rstrip("/"), host,
                      DEFAULT_PORT if port is None else port)


def _missing_keys(missing: list[tuple[str, str, str, str]]) -> str:
    def listed(items: list[str], last: str) -> str:
        return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"

    what = listed([key[3] for key in missing], "or")
    variables = listed([key[1] for key in missing], "and")
    flags = listed([key[2] for key in missing], "and")
    return (f"no {what}: set {variables} or give {flags} (the app's keys, the same as the "
            "queue's)")


def build_host(config: HostConfig) -> FunctionHost:
    """A FunctionHost serving every function the modules declare with ``@cloudqueue.define``.

    Raises:
        ConfigError: a module that cannot be imported or declares no function, or two functions
            of one name (the message names the module and says why).
    """
    declared = defined_in(import_functions(config.modules))
    host = FunctionHost(config.keys, config.queue_url)
    for function in declared:
        host.define(function.name)(function.fn)
        if function.defaults or function.concurrency is not None:
            given = dict(function.wire_defaults())
            if function.concurrency is not None:
                given["concurrency"] = function.concurrency
            options = ", ".join(f"{k}={v!r}" for k, v in sorted(given.items()))
            log.warning("function %s declares option defaults (%s): a queue calling this host "
                        "does not know them, so its tasks get only the options each enqueue "
                        "sets (the defaults apply where the queue imports the module: "
                        "cloudqueue serve --functions)", function.name, options)
    return host


@dataclass(frozen=True)
class Running:
    port: int  # the port bound (the one asked for, or the one the system chose for port 0)
    host: FunctionHost


@contextlib.asynccontextmanager
async def running(config: HostConfig) -> AsyncIterator[Running]:
    """The host, listening and serving, until the block exits (then calls in flight get
    ``shutdown_grace_ms`` to answer). Binds first, so a port in use refuses before the modules
    are imported.

    Raises:
        StartupRefused: the address cannot be bound (the message says what to do).
        ConfigError: from :func:`build_host`.
    """
    try:
        sockets = bind(config.host, config.port)
    except OSError as exc:
        raise StartupRefused(bind_refusal(config.host, config.port, exc, COMMAND,
                                          DEFAULT_PORT)) from None
    try:
        host = build_host(config)
        runner = web.AppRunner(host.app, access_log=None,
                               shutdown_timeout=config.shutdown_grace_ms / 1000)
        await runner.setup()
        try:
            for sock in sockets:
                await web.SockSite(runner, sock).start()
            port = sockets[0].getsockname()[1]
            _log_start(config, host, port)
            yield Running(port, host)
        finally:
            await runner.cleanup()
    finally:
        for sock in sockets:
            sock.close()


async def serve(config: HostConfig) -> None:
    """Serve until SIGTERM or SIGINT."""
    async with running(config):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            log.info("shutting down: calls in flight get %d ms to answer",
                     config.shutdown_grace_ms)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def _log_start(config: HostConfig, host: FunctionHost, port: int) -> None:
    where = ("127.0.0.1" if config.host in ("", "0.0.0.0", "::")  # every address: this one too
             else f"[{config.host}]" if ":" in config.host else config.host)
    url = f"http://{where}:{port}"
    log.info("function host of app %s listening on %s: %s (progress and checkpoints: %s)",
             config.keys.app_id, url, ", ".join(sorted(host.functions)),
             redact_url(config.queue_url))
    log.info("point the queue at it: cloudqueue serve --function-host %s", url)
