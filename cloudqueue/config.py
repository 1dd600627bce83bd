"""The configuration of ``cloudqueue serve``: apps from the environment or a TOML file.

Without ``--config`` the single app's credentials come from LeanEngine's own variables
(``LEANCLOUD_APP_ID``, ``LEANCLOUD_APP_KEY``, ``LEANCLOUD_APP_MASTER_KEY``,
``LEANCLOUD_APP_HOOK_KEY``). With none of them set, a development app is made up once and its keys
kept in ``DATA_DIR/dev-credentials.json``. Each app keeps its log in ``DATA_DIR/<appId>``, so an
app id must be a safe directory name (:func:`check_app_id`). The TOML keys are in README.md and
``adapters/server.py``; an unknown key is refused, naming it, as is every value that could not be
used, so a mistake stops the server at start instead of surprising it later.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cloudqueue.adapters.auth import MIN_OPERATOR_TOKEN_CHARS, AppKeys
from cloudqueue.engine.config import HOST_CONCURRENCY
from cloudqueue.engine.core.cron import check_timezone
from cloudqueue.engine.core.errors import ConfigError, ValidationError
from cloudqueue.engine.core.names import near_miss
from cloudqueue.engine.core.quotas import Quotas
from cloudqueue.engine.core.redact import redact_url
from cloudqueue.engine.runtime.log_file import FsyncPolicy
from cloudqueue.log_format import check_log_format

DEFAULT_PORT = 3100
APP_ID_RULE = ("1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit "
               "(it names the app's directory under the data directory)")
_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    strict_options: bool = False  # refuse enqueues naming a field the queue does not know
    # modules declaring Python functions (@cloudqueue.define) the app runs in-process
    functions: tuple[str, ...] = ()
    # app-key callers may enqueue (params only): False, True (any function) or these functions
    client_enqueue: bool | frozenset[str] = False
    # "fixed": concurrency runs in flight at the function host; "adaptive": as many as the host
    # takes without its latency rising, up to concurrency (engine/runtime/host_limit.py)
    host_concurrency: str = "fixed"


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
    # GET /metrics (docs/metrics.md), and the engines' counting behind it: false leaves both out
    metrics: bool = True
    # the web dashboard's files at /dashboard/ (docs/dashboard.md); false: not served (the API
    # it reads stays)
    dashboard: bool = True
    # engine/runtime/pacing.py: while the event loop lags, keep fewer runs in flight than each
    # app's concurrency, so that acknowledgements stay fast (tasks wait; nothing is dropped)
    adaptive_concurrency: bool = True
    # engine/runtime/heap.py: freeze what has lived a while out of the cyclic GC every this many
    # ms (0: leave the GC alone), and collect everything once every gc_full_collect_s (0: never)
    gc_freeze_ms: int = 1_000
    gc_full_collect_s: int = 900
    # adapters/http_api/protocol.py: a request's headers must be complete this long after its
    # first byte, its body this long after the headers (else 408); an idle keep-alive connection
    # closes after idle_timeout_ms. 0 turns a timeout off.
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 30_000
    idle_timeout_ms: int = 75_000
    # adapters/http_api/listener.py: beyond this many open connections, new ones wait in the
    # listen backlog until one closes (lowered at start to fit the process's file limit)
    max_connections: int = 1_000
    # adapters/http_api/logs.py: a warning or error that repeats is logged once per this many
    # seconds, with how many were held back (0: every one)
    log_repeat_interval_s: int = 10
    # the operator token (``Authorization: Bearer <token>``): what an app's master key may do, on
    # every app, and the server-wide views (None: no operator access)
    admin_token: str | None = None
    # the viewer token (``Authorization: Bearer <token>``): read what an app's master key may
    # read, on every app (the dashboard's read-only login); None: no viewer access
    viewer_token: str | None = None
    # cloudqueue/log_format.py: "text" lines, or "json": one JSON object per line
    log_format: str = "text"
    # where tasks are kept: None, each app's log in data_dir/<appId> (one node); or a PostgreSQL
    # URL shared by several nodes (docs/multinode.md), each app dispatched by one node at a time
    store: str | None = None
    # with a shared store: the address other nodes forward this node's apps' requests to
    # (default http://<host>:<port>, the machine's name when host is a wildcard)
    node_url: str | None = None
    # with a shared store: an app's lease lasts this long after each renewal (a dead node's apps
    # move to another within about this long)
    lease_ms: int = 4_000


_WHOLE_SETTINGS = {  # name -> least value
    "port": 0, "shutdown_grace_ms": 0, "gc_freeze_ms": 0, "gc_full_collect_s": 0,
    "header_timeout_ms": 0, "body_timeout_ms": 0, "idle_timeout_ms": 0, "max_connections": 1,
    "log_repeat_interval_s": 0, "lease_ms": 1_000,
}
_ZERO_IS_OFF = frozenset({"gc_freeze_ms", "gc_full_collect_s", "header_timeout_ms",
                          "body_timeout_ms", "idle_timeout_ms", "log_repeat_interval_s"})
_FLAG_SETTINGS = ("access_log", "adaptive_concurrency", "metrics", "dashboard")
_TOP_KEYS = frozenset({"host", "data_dir", "apps", "admin_token", "viewer_token", "log_format",
                       "store", "node_url",
                       *_WHOLE_SETTINGS, *_FLAG_SETTINGS})
_APP_KEYS = frozenset({"app_id", "app_key", "master_key", "hook_key", "function_host",
                       "concurrency", "max_timeout_ms", "fsync", "quotas", "timezone",
                       "schedule_concurrency", "strict_options", "functions",
                       "client_enqueue", "host_concurrency"})


def check_app_id(app_id: Any, where: str) -> str:
    """``app_id`` if it is safe as a directory name; ConfigError naming ``where`` otherwise."""
    if isinstance(app_id, str) and _APP_ID.fullmatch(app_id):
        return app_id
    raise ConfigError(f"{where}: app id {app_id!r} is not allowed; an app id is {APP_ID_RULE}")


def check_function_host(url: Any, where: str) -> str | None:
    """An http(s) base URL, or None. The error shows the URL without its password."""
    if url is None or (isinstance(url, str) and is_http_url(url)):
        return url
    shown = redact_url(url) if isinstance(url, str) else repr(url)
    raise ConfigError(f"{where}: function host {shown} is not an http:// or https:// URL "
                      "(e.g. http://127.0.0.1:3000)")


def is_http_url(url: str) -> bool:
    """An http:// or https:// URL naming a host (and a numeric port, if any)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def apps_from_env(env: Mapping[str, str], data_dir: Path, function_host: str | None,
                  concurrency: int, functions: tuple[str, ...] = (),
                  host_concurrency: str = "fixed") -> tuple[AppConfig, ...]:
    names = ("LEANCLOUD_APP_ID", "LEANCLOUD_APP_KEY", "LEANCLOUD_APP_MASTER_KEY")
    given = [n for n in names if env.get(n)]
    if given and len(given) < len(names):
        missing = ", ".join(n for n in names if n not in given)
        raise ConfigError(f"set all of {', '.join(names)} (missing: {missing})")
    if given:
        keys = AppKeys(check_app_id(env["LEANCLOUD_APP_ID"], "LEANCLOUD_APP_ID"),
                       env["LEANCLOUD_APP_KEY"], env["LEANCLOUD_APP_MASTER_KEY"],
                       env.get("LEANCLOUD_APP_HOOK_KEY") or None)
    else:
        keys = _dev_keys(data_dir)
    return (AppConfig(keys, check_function_host(function_host, "--function-host"),
                      concurrency, functions=functions,
                      host_concurrency=check_host_concurrency(host_concurrency,
                                                              "--host-concurrency")),)


def check_host_concurrency(mode: Any, where: str) -> str:
    """``"fixed"`` or ``"adaptive"``; ConfigError naming ``where`` (and a near miss) otherwise."""
    if isinstance(mode, str) and mode in HOST_CONCURRENCY:
        return mode
    meant = near_miss(mode, frozenset(HOST_CONCURRENCY)) if isinstance(mode, str) else None
    hint = f" (did you mean {meant!r}?)" if meant else ""
    raise ConfigError(f"{where} must be \"fixed\" (concurrency runs in flight) or \"adaptive\" "
                      f"(as many as the host takes, up to concurrency), got {mode!r}{hint}")


def dev_admin_token(data_dir: Path, name: str = "admin_token") -> str:
    """The development server's operator token (``name``: or its ``viewer_token``), kept beside
    the development app's keys in ``dev-credentials.json`` (added to a file made before there
    was one)."""
    path = data_dir / "dev-credentials.json"
    _dev_keys(data_dir)
    stored = json.loads(path.read_text())
    token = stored.get(name)
    if isinstance(token, str) and len(token) >= MIN_OPERATOR_TOKEN_CHARS:
        return token
    stored[name] = secrets.token_hex(16)
    partial = path.with_name(path.name + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(stored, f)
    os.replace(partial, path)
    return str(stored[name])


def _dev_keys(data_dir: Path) -> AppKeys:
    path = data_dir / "dev-credentials.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            keys = AppKeys(stored["app_id"], stored["app_key"], stored["master_key"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{path} is not the development app's credentials; delete it "
                              f"to make a new development app (rm {path})") from None
        check_app_id(keys.app_id, str(path))
        return keys
    data_dir.mkdir(parents=True, exist_ok=True)
    stored = {"app_id": "cloudqueue-dev", "app_key": secrets.token_hex(12),
              "master_key": secrets.token_hex(12), "admin_token": secrets.token_hex(16)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(stored, f)
    return AppKeys(stored["app_id"], stored["app_key"], stored["master_key"])


def load_config(path: Path) -> ServeConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    _refuse_unknown(data, _TOP_KEYS, str(path))
    raw_apps = data.get("apps", [])
    if not isinstance(raw_apps, list):
        raise ConfigError(f"{path}: apps must be [[apps]] tables")
    apps = tuple(_app_from_toml(i, raw) for i, raw in enumerate(raw_apps))
    if not apps:
        raise ConfigError(f"{path} defines no [[apps]]")
    ids = [a.keys.app_id for a in apps]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: app ids must be unique")
    return ServeConfig(host=data.get("host", "127.0.0.1"),
                       data_dir=Path(data.get("data_dir", "data")), apps=apps,
                       **_settings(data, str(path)))


def _settings(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The server-wide settings, checked."""
    settings: dict[str, Any] = {name: _whole(data, name, least, where)
                                for name, least in _WHOLE_SETTINGS.items()}
    for name in _FLAG_SETTINGS:
        settings[name] = data.get(name, getattr(ServeConfig, name))
        if not isinstance(settings[name], bool):
            raise ConfigError(f"{where}: {name} must be true or false")
    if settings["port"] > 65535:
        raise ConfigError(f"{where}: port must be from 0 to 65535, got {settings['port']}")
    full_ms = settings["gc_full_collect_s"] * 1000
    if full_ms and full_ms < settings["gc_freeze_ms"]:
        raise ConfigError(f"{where}: gc_full_collect_s must be 0 or at least gc_freeze_ms")
    for name in ("host", "data_dir"):
        if name in data and not isinstance(data[name], str):
            raise ConfigError(f"{where}: {name} must be a string")
    for name in ("store", "node_url"):
        if name in data:
            settings[name] = check_url(data[name], f"{where}: {name}",
                                       ("postgresql", "postgres") if name == "store"
                                       else ("http", "https"))
    settings.update(_tokens(data, where))
    if "log_format" in data:
        settings["log_format"] = check_log_format(data["log_format"], f"{where}: log_format")
    return settings


def _tokens(data: Mapping[str, Any], where: str) -> dict[str, str]:
    """The operator and viewer tokens given, checked (and not the same)."""
    tokens = {name: check_admin_token(data[name], f"{where}: {name}")
              for name in ("admin_token", "viewer_token") if name in data}
    if len(tokens) == 2 and tokens["admin_token"] == tokens["viewer_token"]:
        raise ConfigError(f"{where}: viewer_token must differ from admin_token (the viewer token "
                          "is the read-only one)")
    return tokens


def check_url(url: Any, where: str, schemes: tuple[str, ...]) -> str:
    """``url`` if it is a URL of one of ``schemes``; ConfigError naming ``where`` otherwise."""
    if not isinstance(url, str) or urlsplit(url).scheme not in schemes:
        raise ConfigError(f"{where} must be a {' or '.join(s + '://' for s in schemes)} URL, "
                          f"got {url!r}" if isinstance(url, str) else f"{where} must be a string")
    return url


def check_admin_token(token: Any, where: str) -> str:
    """An operator token long enough not to be guessed; ConfigError naming ``where``."""
    if not isinstance(token, str) or len(token) < MIN_OPERATOR_TOKEN_CHARS or not (
            token.isascii() and token.isprintable()) or " " in token:
        raise ConfigError(f"{where} must be at least {MIN_OPERATOR_TOKEN_CHARS} printable ASCII "
                          "characters without spaces (e.g. python3 -c 'import secrets; "
                          "print(secrets.token_hex(16))')")
    return token


def _refuse_unknown(table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        meant = near_miss(unknown[0], known)
        hint = f"did you mean {meant!r}? " if meant else ""
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r}; {hint}the settings are "
                          f"{', '.join(sorted(known))}")


def _whole(table: Mapping[str, Any], name: str, least: int, where: str) -> int:
    value = table.get(name, getattr(ServeConfig, name))
    if type(value) is not int or value < least:
        off = " (0 turns it off)" if name in _ZERO_IS_OFF else ""
        raise ConfigError(f"{where}: {name} must be a whole number >= {least}{off}, "
                          f"got {value!r}")
    return value


def _app_from_toml(index: int, raw: Any) -> AppConfig:
    where = f"apps[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    _refuse_unknown(raw, _APP_KEYS, where)
    for key in ("app_id", "app_key", "master_key"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}.{key} must be a non-empty string")
    hook_key = raw.get("hook_key") or None
    if hook_key is not None and not isinstance(hook_key, str):
        raise ConfigError(f"{where}.hook_key must be a string")
    concurrency = raw.get("concurrency", 1)
    if type(concurrency) is not int or concurrency < 1:
        raise ConfigError(f"{where}.concurrency must be a whole number >= 1")
    max_timeout_ms = raw.get("max_timeout_ms", 600_000)
    if type(max_timeout_ms) is not int or max_timeout_ms < 1:
        raise ConfigError(f"{where}.max_timeout_ms must be a whole number of ms >= 1")
    return AppConfig(AppKeys(check_app_id(raw["app_id"], f"{where}.app_id"), raw["app_key"],
                             raw["master_key"], hook_key),
                     check_function_host(raw.get("function_host"), f"{where}.function_host"),
                     concurrency, max_timeout_ms, _fsync(where, raw.get("fsync", "always")),
                     _quotas(where, raw.get("quotas", {})),
                     _timezone(where, raw.get("timezone", "UTC")),
                     _positive_or_none(where, "schedule_concurrency",
                                       raw.get("schedule_concurrency")),
                     _flag(where, "strict_options", raw.get("strict_options", False)),
                     _modules(where, raw.get("functions", [])),
                     _client_enqueue(where, raw.get("client_enqueue", False)),
                     check_host_concurrency(raw.get("host_concurrency", "fixed"),
                                            f"{where}.host_concurrency"))


def _client_enqueue(where: str, value: Any) -> bool | frozenset[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and value and all(isinstance(name, str) and name
                                                 for name in value):
        return frozenset(value)
    raise ConfigError(f"{where}.client_enqueue must be true, false or a non-empty list of "
                      f"function names, e.g. [\"hello\"], got {value!r}")


def _modules(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(name, str) and name.replace(".", "").replace("_", "").isalnum()
            for name in value):
        raise ConfigError(f"{where}.functions must be a list of module names, e.g. "
                          f"[\"tasks\"] for ./tasks.py, got {value!r}")
    return tuple(value)


def _flag(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
    return value


def _fsync(where: str, value: Any) -> str:
    try:
        FsyncPolicy.parse(value if isinstance(value, str) else "")
    except ValueError:
        raise ConfigError(f"{where}.fsync must be \"always\", \"never\" or \"interval[:MS]\" "
                          f"(MS a whole number >= 1), got {value!r}") from None
    return str(value)


def _positive_or_none(where: str, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ConfigError(f"{where}.{key} must be a whole number >= 1")
    return value


def _timezone(where: str, name: Any) -> str:
    try:
        return check_timezone(name)
    except ValidationError:
        raise ConfigError(f"{where}.timezone: unknown time zone {name!r} (an IANA name such as "
                          "'Asia/Shanghai' or 'UTC')") from None


def _quotas(where: str, raw: Any) -> Quotas:
    known = frozenset({"rate_per_s", "burst", "per_day", "held"})
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.quotas takes {', '.join(sorted(known))}")
    _refuse_unknown(raw, known, f"{where}.quotas")
    try:
        return Quotas(**raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.quotas: {exc}") from None
