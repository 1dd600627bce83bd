"""``cloudqueue serve``: apps from the environment or a TOML file, one engine each, one server.

Without ``--config`` the single app's credentials come from LeanEngine's own variables
(``LEANCLOUD_APP_ID``, ``LEANCLOUD_APP_KEY``, ``LEANCLOUD_APP_MASTER_KEY``,
``LEANCLOUD_APP_HOOK_KEY``). With none of them set, a development app is made up once and its keys
kept in ``DATA_DIR/dev-credentials.json`` (printed at start). Each app keeps its log in
``DATA_DIR/<appId>``, so apps never see each other's tasks.

A TOML config describes many apps::

    host = "127.0.0.1"
    port = 3100
    data_dir = "data"
    access_log = false                       # a log line per request (costs CPU at load)
    adaptive_concurrency = true              # fewer runs in flight while the server is overloaded
    gc_freeze_ms = 1000                      # freeze long-lived objects out of the GC (0: off)
    gc_full_collect_s = 900                  # then a full collection this often (0: never)
    [[apps]]
    app_id = "myApp"
    app_key = "..."
    master_key = "..."
    hook_key = "..."                         # optional
    function_host = "http://127.0.0.1:3000"  # the LeanEngine app's base URL
    concurrency = 1
    timezone = "Asia/Shanghai"               # default zone of the app's cron schedules (UTC)
    schedule_concurrency = 1                 # schedules' firings get slots of their own
    [apps.quotas]                            # each optional; 429 + Retry-After past them
    rate_per_s = 100
    per_day = 10000
    held = 1000
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import signal
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from adapters.http_api.app import QueueApp, create_app
from adapters.http_api.auth import AppKeys
from adapters.http_invoker.invoker import HttpInvoker
from engine.core.errors import ConfigError
from engine.core.quotas import Quotas
from engine.embedded import Engine
from engine.runtime.heap import HeapFreezer

log = logging.getLogger("cloudqueue.serve")

DEFAULT_PORT = 3100


@dataclass(frozen=True)
class AppConfig:
    keys: AppKeys
    function_host: str | None = None
    concurrency: int = 1
    max_timeout_ms: int = 600_000
    fsync: str = "always"
    quotas: Quotas = field(default_factory=Quotas)
    timezone: str = "UTC"  # the default zone of the app's cron schedules
    schedule_concurrency: int | None = None  # a group of their own for schedules' firings


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = Path("data")
    apps: tuple[AppConfig, ...] = field(default_factory=tuple)
    shutdown_grace_ms: int = 10_000
    # a line per request on the "aiohttp.access" logger: off by default, because at a thousand
    # requests a second writing it costs the server 6-18 % of its CPU
    access_log: bool = False
    # engine/runtime/pacing.py: while the event loop lags, keep fewer runs in flight than each
    # app's concurrency, so that acknowledgements stay fast (tasks wait; nothing is dropped)
    adaptive_concurrency: bool = True
    # engine/runtime/heap.py: freeze what has lived a while out of the cyclic GC every this many
    # ms (0: leave the GC alone), and collect everything once every gc_full_collect_s (0: never)
    gc_freeze_ms: int = 1_000
    gc_full_collect_s: int = 900


def apps_from_env(env: Mapping[str, str], data_dir: Path, function_host: str | None,
                  concurrency: int) -> tuple[AppConfig, ...]:
    names = ("LEANCLOUD_APP_ID", "LEANCLOUD_APP_KEY", "LEANCLOUD_APP_MASTER_KEY")
    given = [n for n in names if env.get(n)]
    if given and len(given) < len(names):
        missing = ", ".join(n for n in names if n not in given)
        raise ConfigError(f"set all of {', '.join(names)} (missing: {missing})")
    if given:
        keys = AppKeys(env["LEANCLOUD_APP_ID"], env["LEANCLOUD_APP_KEY"],
                       env["LEANCLOUD_APP_MASTER_KEY"], env.get("LEANCLOUD_APP_HOOK_KEY") or None)
    else:
        keys = _dev_keys(data_dir)
    return (AppConfig(keys, function_host, concurrency),)


def _dev_keys(data_dir: Path) -> AppKeys:
    path = data_dir / "dev-credentials.json"
    if path.exists():
        stored = json.loads(path.read_text())
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        stored = {"app_id": "cloudqueue-dev", "app_key": secrets.token_hex(12),
                  "master_key": secrets.token_hex(12)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(stored, f)
    return AppKeys(stored["app_id"], stored["app_key"], stored["master_key"])


def load_config(path: Path) -> ServeConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    apps = tuple(_app_from_toml(i, raw) for i, raw in enumerate(data.get("apps", [])))
    if not apps:
        raise ConfigError(f"{path} defines no [[apps]]")
    ids = [a.keys.app_id for a in apps]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: app ids must be unique")
    flags: dict[str, bool] = {}
    for name in ("access_log", "adaptive_concurrency"):
        flags[name] = data.get(name, getattr(ServeConfig, name))
        if not isinstance(flags[name], bool):
            raise ConfigError(f"{path}: {name} must be true or false")
    gc_settings: dict[str, int] = {}
    for name in ("gc_freeze_ms", "gc_full_collect_s"):
        value = data.get(name, getattr(ServeConfig, name))
        if type(value) is not int or value < 0:
            raise ConfigError(f"{path}: {name} must be a whole number >= 0 (0 turns it off), "
                              f"got {value!r}")
        gc_settings[name] = value
    full_ms = gc_settings["gc_full_collect_s"] * 1000
    if full_ms and full_ms < gc_settings["gc_freeze_ms"]:
        raise ConfigError(f"{path}: gc_full_collect_s must be 0 or at least gc_freeze_ms")
    return ServeConfig(host=str(data.get("host", "127.0.0.1")),
                       port=int(data.get("port", DEFAULT_PORT)),
                       data_dir=Path(data.get("data_dir", "data")), apps=apps,
                       access_log=flags["access_log"],
                       adaptive_concurrency=flags["adaptive_concurrency"],
                       gc_freeze_ms=gc_settings["gc_freeze_ms"],
                       gc_full_collect_s=gc_settings["gc_full_collect_s"])


def _app_from_toml(index: int, raw: Any) -> AppConfig:
    where = f"apps[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    for key in ("app_id", "app_key", "master_key"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}.{key} must be a non-empty string")
    concurrency = raw.get("concurrency", 1)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"{where}.concurrency must be a whole number >= 1")
    return AppConfig(AppKeys(raw["app_id"], raw["app_key"], raw["master_key"],
                             raw.get("hook_key") or None),
                     raw.get("function_host"), concurrency,
                     int(raw.get("max_timeout_ms", 600_000)), str(raw.get("fsync", "always")),
                     _quotas(where, raw.get("quotas", {})),
                     _timezone(where, raw.get("timezone", "UTC")),
                     _positive_or_none(where, "schedule_concurrency",
                                       raw.get("schedule_concurrency")))


def _positive_or_none(where: str, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.{key} must be a whole number >= 1")
    return value


def _timezone(where: str, name: Any) -> str:
    try:
        ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}.timezone: unknown time zone {name!r} (an IANA name such as "
                          "'Asia/Shanghai' or 'UTC')") from None
    return str(name)


def _quotas(where: str, raw: Any) -> Quotas:
    known = {"rate_per_s", "burst", "per_day", "held"}
    if not isinstance(raw, dict) or set(raw) - known:
        raise ConfigError(f"{where}.quotas takes {', '.join(sorted(known))}")
    try:
        return Quotas(**raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.quotas: {exc}") from None


def build_app(config: ServeConfig) -> web.Application:
    tenants = {}
    for app in config.apps:
        invoker = (HttpInvoker(app.function_host, app.keys) if app.function_host else None)
        engine = Engine(concurrency=app.concurrency, max_timeout_ms=app.max_timeout_ms,
                        quotas=app.quotas, timezone=app.timezone,
                        schedule_concurrency=app.schedule_concurrency,
                        data_dir=config.data_dir / app.keys.app_id, fsync=app.fsync,
                        invoker=invoker, adaptive_concurrency=config.adaptive_concurrency)
        tenants[app.keys.app_id] = QueueApp(app.keys, engine)
    return create_app(tenants)


async def serve(config: ServeConfig, started: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop taking requests, let runs finish (grace), flush."""
    extra: dict[str, Any] = {} if config.access_log else {"access_log": None}
    runner = web.AppRunner(build_app(config), handle_signals=False,
                           shutdown_timeout=config.shutdown_grace_ms / 1000, **extra)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for app in config.apps:
        target = app.function_host or "no function host: in-process functions only"
        log.info("app %s -> %s (concurrency %d)", app.keys.app_id, target, app.concurrency)
    log.info("cloudqueue listening on http://%s:%d (data in %s)", config.host, config.port,
             config.data_dir)
    freezer = None
    if config.gc_freeze_ms:
        freezer = asyncio.ensure_future(HeapFreezer(
            freeze_every_s=config.gc_freeze_ms / 1000,
            full_every_s=config.gc_full_collect_s or None).run())
    if started is not None:
        started.set()
    try:
        await stop.wait()
        log.info("shutting down: no new requests; runs in flight get %d ms",
                 config.shutdown_grace_ms)
    finally:
        if freezer is not None:
            freezer.cancel()
            await asyncio.gather(freezer, return_exceptions=True)
            gc.unfreeze()  # leave the process's collector as it was (tests, embedders)
        await runner.cleanup()
