"""The serve configuration: environment, TOML, and the errors a bad file gets."""

from __future__ import annotations

import re
import resource
from pathlib import Path

import pytest

from cloudqueue.engine.core.errors import ConfigError
from cloudqueue.engine.core.quotas import Quotas
from cloudqueue.server import apps_from_env, connection_limits, load_config

GOOD = """
port = 3200
data_dir = "qdata"
[[apps]]
app_id = "a1"
app_key = "k1"
master_key = "m1"
hook_key = "h1"
function_host = "http://127.0.0.1:3000"
concurrency = 4
timezone = "Asia/Shanghai"
[apps.quotas]
rate_per_s = 100
per_day = 10000
held = 1000
[[apps]]
app_id = "a2"
app_key = "k2"
master_key = "m2"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cloudqueue.toml"
    path.write_text(text)
    return path


def test_a_toml_file_describes_many_apps(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert (config.port, config.data_dir, len(config.apps)) == (3200, Path("qdata"), 2)
    first, second = config.apps
    assert (first.keys.app_id, first.keys.hook_key, first.function_host) == (
        "a1", "h1", "http://127.0.0.1:3000")
    assert (first.concurrency, first.timezone) == (4, "Asia/Shanghai")
    assert first.quotas == Quotas(rate_per_s=100, per_day=10_000, held=1_000)
    assert (second.concurrency, second.timezone, second.quotas) == (1, "UTC", Quotas())
    assert (first.functions, first.strict_options) == ((), False)


def test_an_app_names_its_function_modules_and_strictness(tmp_path: Path) -> None:
    text = GOOD.replace('app_id = "a2"', 'app_id = "a2"\nfunctions = ["tasks", "jobs.mail"]\n'
                                          'strict_options = true')
    second = load_config(write(tmp_path, text)).apps[1]
    assert (second.functions, second.strict_options) == (("tasks", "jobs.mail"), True)


@pytest.mark.parametrize(("setting", "allowed"), [
    ("", False), ("client_enqueue = false", False), ("client_enqueue = true", True),
    ('client_enqueue = ["hello", "count-slowly"]', frozenset({"hello", "count-slowly"})),
])
def test_an_app_may_let_clients_enqueue(tmp_path: Path, setting: str,
                                        allowed: bool | frozenset[str]) -> None:
    text = GOOD.replace('app_id = "a2"', f'app_id = "a2"\n{setting}')
    assert load_config(write(tmp_path, text)).apps[1].client_enqueue == allowed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[apps]]\napp_id = 'a'\napp_key = 'k'\n", "apps[0].master_key must be a non-empty"),
        ("port = 1\n", "defines no [[apps]]"),
        (GOOD.replace('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"'),
         "unknown time zone 'Mars/Olympus'"),
        (GOOD.replace("held = 1000", "held = 0"), "quota held must be > 0"),
        (GOOD.replace("held = 1000", "burstiness = 3"), "quotas: unknown setting 'burstiness'"),
        (GOOD.replace("concurrency = 4", "concurrency = 0"), "concurrency must be"),
        (GOOD.replace('app_id = "a2"', 'app_id = "a1"'), "app ids must be unique"),
        ("[[apps]\n", "cannot read"),
        ("access_log = 'yes'\n" + GOOD, "access_log must be true or false"),
        ("adaptive_concurrency = 1\n" + GOOD, "adaptive_concurrency must be true or false"),
        ("gc_freeze_ms = -1\n" + GOOD, "gc_freeze_ms must be a whole number >= 0"),
        ("gc_full_collect_s = 1.5\n" + GOOD, "gc_full_collect_s must be a whole number >= 0"),
        ("gc_freeze_ms = 5000\ngc_full_collect_s = 2\n" + GOOD,
         "gc_full_collect_s must be 0 or at least gc_freeze_ms"),
        ("header_timeout_ms = -1\n" + GOOD,
         "header_timeout_ms must be a whole number >= 0 (0 turns it off), got -1"),
        ("body_timeout_ms = 1.5\n" + GOOD, "body_timeout_ms must be a whole number >= 0"),
        ("idle_timeout_ms = '75'\n" + GOOD, "idle_timeout_ms must be a whole number >= 0"),
        ("max_connections = 0\n" + GOOD, "max_connections must be a whole number >= 1, got 0"),
        ("log_repeat_interval_s = true\n" + GOOD, "log_repeat_interval_s must be a whole number"),
        (GOOD.replace("port = 3200", "port = 70000"), "port must be from 0 to 65535, got 70000"),
        (GOOD.replace("port = 3200", "port = '3200'"),
         "port must be a whole number >= 0, got '3200'"),
        ("max_conections = 5\n" + GOOD, "unknown setting 'max_conections'; did you mean "
                                        "'max_connections'? the settings are "),
        (GOOD.replace("concurrency = 4", "concurency = 4"), "apps[0]: unknown setting "
                                                           "'concurency'; did you mean "
                                                           "'concurrency'?"),
        (GOOD.replace("concurrency = 4", "strict_options = 'yes'"),
         "apps[0].strict_options must be true or false"),
        (GOOD.replace("concurrency = 4", "client_enqueue = 'yes'"),
         "apps[0].client_enqueue must be true, false or a non-empty list of function names"),
        (GOOD.replace("concurrency = 4", "client_enqueue = []"),
         "apps[0].client_enqueue must be true, false or a non-empty list"),
        (GOOD.replace("concurrency = 4", "client_enqeue = true"),
         "did you mean 'client_enqueue'?"),
        (GOOD.replace("concurrency = 4", "functions = 'tasks'"),
         "apps[0].functions must be a list of module names"),
        (GOOD.replace("concurrency = 4", "functions = ['../tasks']"),
         "apps[0].functions must be a list of module names"),
        (GOOD.replace('app_id = "a2"', 'app_id = "../a2"'), "apps[1].app_id: app id '../a2' is "
                                                             "not allowed; an app id is 1 to 64"),
        (GOOD.replace("concurrency = 4", "concurrency = true"), "concurrency must be"),
        (GOOD.replace("concurrency = 4", 'fsync = "sometimes"'),
         'apps[0].fsync must be "always", "never" or "interval[:MS]"'),
        (GOOD.replace("concurrency = 4", 'fsync = "interval:abc"'), "apps[0].fsync must be"),
        (GOOD.replace("concurrency = 4", "max_timeout_ms = 'x'"),
         "apps[0].max_timeout_ms must be a whole number of ms >= 1"),
        (GOOD.replace('timezone = "Asia/Shanghai"', 'timezone = "localtime"'),
         "unknown time zone 'localtime'"),
        (GOOD.replace("concurrency = 4", 'host_concurency = "adaptive"'),
         "apps[0]: unknown setting 'host_concurency'; did you mean 'host_concurrency'?"),
        (GOOD.replace("concurrency = 4", 'host_concurrency = "adaptiv"'),
         'apps[0].host_concurrency must be "fixed" (concurrency runs in flight) or "adaptive" '
         "(as many as the host takes, up to concurrency), got 'adaptiv' (did you mean "
         "'adaptive'?)"),
        (GOOD.replace("concurrency = 4", "host_concurrency = true"),
         "apps[0].host_concurrency must be \"fixed\""),
        (GOOD.replace('"http://127.0.0.1:3000"', '"127.0.0.1:3000"'),
         "apps[0].function_host: function host 127.0.0.1:3000 is not an http:// or https:// URL"),
        ('log_format = "jsn"\n' + GOOD, 'log_format must be "text" or "json" (one JSON object '
                                         "per line), got 'jsn' (did you mean 'json'?)"),
        ("log_format = 1\n" + GOOD, 'log_format must be "text" or "json"'),
        ('log_fromat = "json"\n' + GOOD, "unknown setting 'log_fromat'; did you mean "
                                          "'log_format'?"),
    ],
)
def test_a_bad_file_is_refused_saying_what_to_fix(tmp_path: Path, text: str,
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))


def test_heap_freezing_is_on_by_default_and_can_be_tuned_or_turned_off(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, GOOD))
    assert (default.gc_freeze_ms, default.gc_full_collect_s) == (1_000, 900)
    tuned = load_config(write(tmp_path, "gc_freeze_ms = 0\ngc_full_collect_s = 0\n" + GOOD))
    assert (tuned.gc_freeze_ms, tuned.gc_full_collect_s) == (0, 0)


def test_connection_limits_have_defaults_and_can_be_set(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, GOOD))
    assert (default.header_timeout_ms, default.body_timeout_ms, default.idle_timeout_ms,
            default.max_connections, default.log_repeat_interval_s) == (
        10_000, 30_000, 75_000, 1_000, 10)
    tuned = load_config(write(tmp_path, "header_timeout_ms = 2000\nbody_timeout_ms = 0\n"
                                        "idle_timeout_ms = 5000\nmax_connections = 50\n"
                                        "log_repeat_interval_s = 60\n" + GOOD))
    assert (tuned.header_timeout_ms, tuned.body_timeout_ms, tuned.idle_timeout_ms,
            tuned.max_connections, tuned.log_repeat_interval_s) == (2_000, 0, 5_000, 50, 60)


def test_connections_are_capped_below_the_open_file_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*_args: object) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (256, 256))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    config = load_config(write(tmp_path, GOOD))  # apps' concurrency 4 + 1
    assert connection_limits(config).max_connections == 256 - 64 - 5
    assert caplog.messages == ["max_connections lowered from 1000 to 187 to fit the limit of "
                               "256 open files (raise it with `ulimit -n 1069` before starting)"]


def test_adaptive_concurrency_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).adaptive_concurrency is True
    off = load_config(write(tmp_path, "adaptive_concurrency = false\n" + GOOD))
    assert off.adaptive_concurrency is False


def test_log_format_is_text_by_default_or_json(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).log_format == "text"
    assert load_config(write(tmp_path, 'log_format = "json"\n' + GOOD)).log_format == "json"


def test_host_concurrency_is_fixed_by_default_and_adaptive_per_app(tmp_path: Path) -> None:
    text = GOOD.replace("concurrency = 4", 'concurrency = 64\nhost_concurrency = "adaptive"')
    first, second = load_config(write(tmp_path, text)).apps
    assert (first.concurrency, first.host_concurrency) == (64, "adaptive")
    assert second.host_concurrency == "fixed"


def test_env_credentials_are_leanengines_variables(tmp_path: Path) -> None:
    (app,) = apps_from_env({"LEANCLOUD_APP_ID": "i", "LEANCLOUD_APP_KEY": "k",
                            "LEANCLOUD_APP_MASTER_KEY": "m", "LEANCLOUD_APP_HOOK_KEY": "h"},
                           tmp_path, "http://127.0.0.1:1", 3)
    assert (app.keys.app_id, app.keys.hook_key, app.concurrency) == ("i", "h", 3)
    with pytest.raises(ConfigError, match="missing: LEANCLOUD_APP_MASTER_KEY"):
        apps_from_env({"LEANCLOUD_APP_ID": "i", "LEANCLOUD_APP_KEY": "k"}, tmp_path, None, 1)


def test_without_credentials_a_development_app_is_made_once(tmp_path: Path) -> None:
    (first,) = apps_from_env({}, tmp_path, None, 1)
    (again,) = apps_from_env({}, tmp_path, None, 1)
    assert first.keys == again.keys and first.keys.app_id == "cloudqueue-dev"
    assert (tmp_path / "dev-credentials.json").stat().st_mode & 0o777 == 0o600
    (tmp_path / "dev-credentials.json").write_text("{not json")
    with pytest.raises(ConfigError, match=re.escape(
            f"{tmp_path}/dev-credentials.json is not the development app's credentials; delete "
            f"it to make a new development app (rm {tmp_path}/dev-credentials.json)")):
        apps_from_env({}, tmp_path, None, 1)
