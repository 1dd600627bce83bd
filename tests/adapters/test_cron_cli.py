"""`cloudqueue cron` against a real `cloudqueue serve` process (a development app, whose keys the
server writes to DATA_DIR/dev-credentials.json), and its offline `preview`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from cloudqueue import cron_cli
from cloudqueue.adapters.client import QueueClient
from cloudqueue.engine.core.task import iso_ms

ROOT = Path(__file__).resolve().parents[2]
EXPR = "0 30 10-13 ? * WED,FRI"
# every variable the CLI or the server reads, removed so the host's settings cannot leak in
_OURS = ("CLOUDQUEUE_URL", "LEANCLOUD_APP_ID", "LEANCLOUD_APP_KEY", "LEANCLOUD_APP_MASTER_KEY",
         "LEANCLOUD_APP_HOOK_KEY")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    url: str
    data_dir: Path
    app_id: str
    master_key: str

    @property
    def env(self) -> dict[str, str]:
        """The CLI's environment: the server's URL and credentials in the usual variables."""
        return clean_env(CLOUDQUEUE_URL=self.url, LEANCLOUD_APP_ID=self.app_id,
                         LEANCLOUD_APP_MASTER_KEY=self.master_key)


def wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            with urllib.request.urlopen(f"{url}/__health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)  # polling a real server process until it listens
    raise AssertionError("the server did not become ready")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("serve")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudqueue", "serve", "--port", str(port), "--data-dir",
         str(data_dir)], env=clean_env(), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        stored = json.loads((data_dir / "dev-credentials.json").read_text())
        yield Served(url, data_dir, stored["app_id"], stored["master_key"])
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def cron(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudqueue.cron_cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def inproc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           tmp_path: Path) -> Iterator[Callable[..., Ran]]:
    """``cron_cli.main(argv)`` in this process (an argparse exit counts as its status), with
    only the given variables set and a fresh working directory."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str, env: dict[str, str] | None = None) -> Ran:
        for var in _OURS:
            monkeypatch.delenv(var, raising=False)
        for var, value in (env or {}).items():
            if var in _OURS:
                monkeypatch.setenv(var, value)
        try:
            code = cron_cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    yield run


def schedules(served: Served) -> list[dict[str, object]]:
    out = cron("list", "--json", env=served.env)
    assert out.returncode == 0, out.stderr
    results: list[dict[str, object]] = json.loads(out.stdout)["results"]
    return results


@pytest.fixture
def name(request: pytest.FixtureRequest, served: Served) -> Iterator[str]:
    """A schedule name of this test's own (the server is shared), deleted afterwards."""
    own = request.node.name.replace("[", "-").replace("]", "")[-50:].strip("-_")
    yield own
    cron("delete", own, env=served.env)


# ---------------------------------------------------------------------------- preview (offline)


def test_preview_offline_gives_the_exact_times(tmp_path: Path) -> None:
    # no server, no credentials, no data directory: preview needs none of them
    env = clean_env()
    out = cron("preview", "--cron", EXPR, "--from", "2024-01-01T00:00:00Z", "--count", "6",
               env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "2024-01-03T10:30:00.000Z", "2024-01-03T11:30:00.000Z", "2024-01-03T12:30:00.000Z",
        "2024-01-03T13:30:00.000Z", "2024-01-05T10:30:00.000Z", "2024-01-05T11:30:00.000Z"]
    out = cron("preview", "--cron", EXPR, "--from", "2024-01-01T00:00:00+00:00", "--count", "4",
               "--timezone", "UTC", "--json", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"fireTimes": [
        "2024-01-03T10:30:00.000Z", "2024-01-03T11:30:00.000Z", "2024-01-03T12:30:00.000Z",
        "2024-01-03T13:30:00.000Z"]}


def test_preview_in_a_zone_shows_the_local_time_too() -> None:
    out = cron("preview", "--cron", EXPR, "--from", "2024-01-01T00:00:00Z", "--count", "2",
               "--timezone", "Asia/Shanghai", env=clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "2024-01-03T02:30:00.000Z  (Wed 2024-01-03 10:30:00+0800 Asia/Shanghai)",
        "2024-01-03T03:30:00.000Z  (Wed 2024-01-03 11:30:00+0800 Asia/Shanghai)"]


def test_preview_of_an_interval_counts_from_the_start() -> None:
    out = cron("preview", "--interval", "90000", "--from", "2024-01-01T08:00:00.250+08:00",
               "--count", "2", "--json", env=clean_env())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["fireTimes"] == ["2024-01-01T00:01:30.250Z",
                                                   "2024-01-01T00:03:00.250Z"]


def test_preview_defaults_to_five_times_from_now() -> None:
    before = time.time()
    out = cron("preview", "--cron", "* * * * * ?", "--json", env=clean_env())
    assert out.returncode == 0, out.stderr
    times = [datetime.fromisoformat(t).timestamp() for t in json.loads(out.stdout)["fireTimes"]]
    assert len(times) == 5 and times[0] > before - 1 and times[-1] - times[0] == 4


@pytest.mark.parametrize("args", [
    ["--cron", "0 0 0 31 2 ?"],
    ["--cron", "0 0 12 1 * 2"],
    ["--cron", "not a cron"],
    ["--interval", "0"],
    ["--interval", "soon"],
    ["--cron", EXPR, "--interval", "1000"],
    [],
    ["--cron", EXPR, "--timezone", "Mars/Olympus"],
    ["--cron", EXPR, "--from", "2024-01-01T00:00:00"],
    ["--cron", EXPR, "--from", "yesterday"],
    ["--cron", EXPR, "--count", "0"],
    ["--cron", EXPR, "--count", "1001"],
])
def test_preview_usage_errors_exit_2(inproc: Callable[..., Ran], args: list[str]) -> None:
    out = inproc("preview", *args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip()


def test_the_process_exit_status_of_usage_errors_is_2() -> None:
    for args in (["preview", "--cron", "0 0 0 31 2 ?"], ["set", "x", "--function", "f"], []):
        out = cron(*args, env=clean_env())
        assert out.returncode == 2 and out.stdout == "" and out.stderr.strip(), args


class PreviewSpec(TypedDict, total=False):
    """What ``QueueClient.preview_schedule`` previews, as its keywords."""

    cron: str
    interval: int
    timezone: str


def test_preview_offline_agrees_with_the_servers_preview(served: Served) -> None:
    async def server_side(*, from_ms: int, count: int, **kw: Unpack[PreviewSpec]) -> list[int]:
        async with QueueClient(served.url, served.app_id, master_key=served.master_key) as q:
            return await q.preview_schedule(**kw, from_ms=from_ms, count=count)

    cases: list[tuple[list[str], PreviewSpec]] = [(["--cron", EXPR, "--timezone", "Europe/Berlin"],
              {"cron": EXPR, "timezone": "Europe/Berlin"}),
             (["--cron", "0 */15 * * * ?", "--timezone", "Europe/Berlin"],
              {"cron": "0 */15 * * * ?", "timezone": "Europe/Berlin"}),
             (["--interval", "3600001"], {"interval": 3_600_001})]
    start, start_ms = "2024-03-30T23:59:59.999Z", 1_711_843_199_999
    for args, kw in cases:
        out = cron("preview", *args, "--from", start, "--count", "20", "--json",
                   env=clean_env())
        assert out.returncode == 0, out.stderr
        online = asyncio.run(server_side(**kw, from_ms=start_ms, count=20))
        assert json.loads(out.stdout)["fireTimes"] == [iso_ms(ms) for ms in online], args


# ---------------------------------------------------------------------------- against the server


def test_set_show_list_pause_resume_delete(served: Served, name: str) -> None:
    env = served.env
    out = cron("set", name, "--function", "report", "--params", '{"day": 1}', "--cron", EXPR,
               "--timezone", "Asia/Shanghai", "--attempts", "3", "--backoff", "2000",
               "--delivery-mode", "atMostOnce", "--timeout", "30000", "--keep-result", "0",
               env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:12] == [
        f"name:          {name}", "function:      report", 'params:        {"day": 1}',
        f"cron:          {EXPR}", "timezone:      Asia/Shanghai", "paused:        no",
        "attempts:      3", "backoff:       2000 ms", "deliveryMode:  atMostOnce",
        "timeout:       30000 ms", "keepResult:    0 ms", "nextFireTimes: " + lines[11][15:]]
    assert lines[11].endswith("Asia/Shanghai)") and len(lines) == 16
    assert all(line.startswith(" " * 15) for line in lines[12:])

    out = cron("show", name, "--json", "--count", "7", env=env)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert {k: v for k, v in shown.items() if k != "nextFireTimes"} == {
        "name": name, "function": "report", "params": {"day": 1},
        "timezone": "Asia/Shanghai", "paused": False, "cron": EXPR, "attempts": 3,
        "backoff": 2000, "deliveryMode": "atMostOnce", "timeout": 30000, "keepResult": 0}
    assert len(shown["nextFireTimes"]) == 7

    out = cron("list", env=env)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAME", "FUNCTION", "SCHEDULE", "TIMEZONE", "STATE", "NEXT", "FIRE",
                              "(UTC)", "LAST", "FIRED", "(UTC)"]
    row = next(r for r in rows if r.startswith(name + " "))
    assert EXPR in row and "Asia/Shanghai" in row and "active" in row
    assert shown["nextFireTimes"][0] in row and row.rstrip().endswith("-")

    out = cron("pause", name, env=env)
    assert out.returncode == 0, out.stderr
    assert "paused:        yes" in out.stdout and "nextFireTimes: - (paused)" in out.stdout
    assert "paused" in next(r for r in cron("list", env=env).stdout.splitlines()
                            if r.startswith(name + " "))
    out = cron("resume", name, "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["paused"] is False

    out = cron("run-now", name, env=env)  # one task now, outside the slots
    assert out.returncode == 0, out.stderr
    fired = out.stdout.strip()
    assert fired.startswith(f"cron:{name}:now:")
    assert json.loads(cron("show", name, "--json", env=env).stdout)["paused"] is False

    out = cron("delete", name, env=env)
    assert (out.returncode, out.stdout) == (0, f"deleted schedule {name}\n")
    assert name not in [s["name"] for s in schedules(served)]
    out = cron("delete", name, "--json", env=env)
    assert out.returncode == 1 and f"Schedule '{name}' not found" in out.stderr


def test_set_an_interval_schedule_paused_with_defaults(served: Served, name: str) -> None:
    out = cron("set", name, "--function", "report", "--interval", "60000", "--paused", "--json",
               env=served.env)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer == {"name": name, "function": "report", "params": {}, "timezone": "UTC",
                      "paused": True, "interval": 60000, "attempts": 1, "backoff": 60000,
                      "deliveryMode": "atLeastOnce", "timeout": 15000, "keepResult": 300000,
                      "nextFireTimes": []}
    out = cron("show", name, env=served.env)
    assert "interval:      60000 ms" in out.stdout
    row = next(r for r in cron("list", env=served.env).stdout.splitlines()
               if r.startswith(name + " "))
    assert "every 60000 ms" in row and "paused" in row


@pytest.mark.parametrize("action", ["show", "pause", "resume", "run-now", "delete"])
def test_an_unknown_schedule_exits_1(served: Served, inproc: Callable[..., Ran],
                                     action: str) -> None:
    out = inproc(action, "no-such-schedule", env=served.env)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == f"cloudqueue cron {action}: Schedule 'no-such-schedule' not found\n"


def test_a_wrong_master_key_exits_1_and_never_shows_a_key(served: Served) -> None:
    wrong = "wrong-master-key-31415"
    env = {**served.env, "LEANCLOUD_APP_MASTER_KEY": wrong}
    for args in (["list"], ["show", "x"], ["set", "x", "--function", "f", "--interval", "9"]):
        out = cron(*args, env=env)
        assert out.returncode == 1, out
        assert wrong not in out.stderr + out.stdout
        assert served.master_key not in out.stderr + out.stdout
    # the app id from the dev file, the (wrong) master key from the argument
    out = cron("list", "--master-key", wrong, "--data-dir", str(served.data_dir),
               env=clean_env(CLOUDQUEUE_URL=served.url))
    assert out.returncode == 1 and wrong not in out.stderr


def test_credentials_from_the_dev_file(served: Served, name: str, tmp_path: Path) -> None:
    # no LEANCLOUD_* variables: the app id and master key come from --data-dir's file
    env = clean_env()
    out = cron("set", name, "--function", "report", "--interval", "5000", "--url", served.url,
               "--data-dir", str(served.data_dir), env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # the default --data-dir is ./data
    (tmp_path / "data").symlink_to(served.data_dir)
    out = cron("show", name, "--json", env=clean_env(CLOUDQUEUE_URL=served.url), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == name
    # an app id of another app does not borrow the dev app's master key
    out = cron("show", name, "--app-id", "someone-else", env=env, cwd=tmp_path)
    assert out.returncode == 2 and "no credentials" in out.stderr


def test_arguments_override_the_environment(served: Served, name: str) -> None:
    env = clean_env(CLOUDQUEUE_URL="http://127.0.0.1:1", LEANCLOUD_APP_ID="x",
                    LEANCLOUD_APP_MASTER_KEY="y")
    out = cron("set", name, "--function", "report", "--interval", "5000", "--url", served.url,
               "--app-id", served.app_id, "--master-key", served.master_key, "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == name


def test_no_credentials_exit_2(tmp_path: Path) -> None:
    out = cron("list", env=clean_env(), cwd=tmp_path)
    assert out.returncode == 2 and "no credentials" in out.stderr
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dev-credentials.json").write_text("{not json")
    out = cron("list", env=clean_env(), cwd=tmp_path)
    assert out.returncode == 2 and "dev-credentials.json" in out.stderr


def test_an_unreachable_server_exits_1(tmp_path: Path) -> None:
    out = cron("list", "--url", f"http://127.0.0.1:{free_port()}", "--app-id", "a",
               "--master-key", "secret-key-2718", env=clean_env(), cwd=tmp_path)
    assert out.returncode == 1 and "cannot reach the queue" in out.stderr
    assert "secret-key-2718" not in out.stderr


@pytest.mark.parametrize("args", [
    [],
    ["list", "extra"],
    ["show"],
    ["show", "bad/name"],
    ["show", "x", "--count", "0"],
    ["show", "x", "--count", "101"],
    ["set", "x", "--cron", EXPR],
    ["set", "x", "--function", "f"],
    ["set", "x", "--function", "f", "--cron", EXPR, "--interval", "5"],
    ["set", "x", "--function", "f", "--cron", EXPR, "--params", "{nope"],
    ["set", "x", "--function", "f", "--cron", EXPR, "--params", "[1, 2"],
    ["set", "x", "--function", "f", "--cron", "0 0 12 1 * 2"],
    ["set", "x", "--function", "f", "--cron", EXPR, "--timezone", "Mars/Olympus"],
    ["set", "x", "--function", "f", "--cron", EXPR, "--delivery-mode", "sometimes"],
    ["set", "x", "--function", "f", "--cron", EXPR, "--timeout", "600001"],
    ["set", "x", "--function", "f", "--cron", EXPR, "--attempts", "-1"],
    ["set", "x", "--function", "bad/function", "--cron", EXPR],
    ["pause"],
    ["frobnicate", "x"],
])
def test_usage_errors_exit_2_and_change_nothing(served: Served, inproc: Callable[..., Ran],
                                                args: list[str]) -> None:
    out = inproc(*args, env=served.env)
    assert out.returncode == 2, out
    assert out.stdout == "" and out.stderr.strip()
    listed = inproc("list", "--json", env=served.env)
    assert "x" not in [s["name"] for s in json.loads(listed.stdout)["results"]]


# ---------------------------------------------------------------------------- in process


def test_add_parser_registers_cron_on_the_cloudqueue_command(
        served: Served, name: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CLOUDQUEUE_URL", "LEANCLOUD_APP_ID", "LEANCLOUD_APP_MASTER_KEY"):
        monkeypatch.delenv(var, raising=False)
    parser = argparse.ArgumentParser(prog="cloudqueue")
    commands = parser.add_subparsers(dest="command", required=True)
    cron_cli.add_parser(commands)
    args = parser.parse_args(["cron", "set", name, "--function", "report", "--cron", EXPR,
                              "--url", served.url, "--data-dir", str(served.data_dir)])
    assert args.func is cron_cli.run
    assert args.func(args) == 0
    assert f"name:          {name}" in capsys.readouterr().out
    args = parser.parse_args(["cron", "preview", "--cron", EXPR, "--from",
                              "2024-01-01T00:00:00Z", "--count", "1"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == "2024-01-03T10:30:00.000Z\n"
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["cron"])
    assert exited.value.code == 2


def test_main_in_process(served: Served, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--url", served.url, "--app-id", served.app_id, "--master-key",
              served.master_key]
    assert cron_cli.main(["set", name, "--function", "report", "--interval", "1000", "--json",
                          *common]) == 0
    assert json.loads(capsys.readouterr().out)["interval"] == 1000
    assert cron_cli.main(["show", name, *common]) == 0
    out = capsys.readouterr().out
    assert "interval:      1000 ms" in out and served.master_key not in out
