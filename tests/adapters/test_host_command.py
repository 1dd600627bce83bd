"""``cloudqueue host --functions MODULE``: a module's ``@cloudqueue.define`` functions served over
LeanEngine's protocol by a real process, a real queue calling them (progress and continuation
included); keys from LeanEngine's variables or flags; what keeps it from starting is one line
saying what to do, never a traceback."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cloudqueue import Engine, QueueClient
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker
from cloudqueue.cli import main
from cloudqueue.engine.core.errors import ConfigError
from cloudqueue.host import host_config
from tests.adapters.serving import A, serving

ROOT = Path(__file__).resolve().parents[2]
KEYS_ENV = {"LEANCLOUD_APP_ID": A.app_id, "LEANCLOUD_APP_KEY": A.app_key,
            "LEANCLOUD_APP_MASTER_KEY": A.master_key}

MODULE = textwrap.dedent('''
    import cloudqueue

    @cloudqueue.define
    async def hello(params, run):
        return {"greeting": "hello, " + params["name"], "attempt": run.attempt}

    @cloudqueue.define("count-up", attempts=3)
    async def count_up(params, run):
        step = (run.checkpoint or {}).get("step", 0) + 1
        await run.progress(done=step, total=3, message=f"step {step}")
        if step < 3:
            return run.continue_with({"step": step})
        return {"counted": step, "slices before": run.slice}
''')


def readme_tasks() -> str:
    """The README's example module for the host (the block after ``<!-- host:tasks.py -->``)."""
    found = re.search(r"<!-- host:tasks.py -->\n```python\n(.*?)```",
                      (ROOT / "README.md").read_text(), re.S)
    assert found, "README.md has no host:tasks.py block"
    return found.group(1)


def start_host(cwd: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEANCLOUD_")}
    return subprocess.Popen(
        [sys.executable, "-m", "cloudqueue", "host", "--port", str(port), *extra],
        env={**env, **KEYS_ENV, "PYTHONPATH": str(ROOT)}, cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def wait_listening(process: subprocess.Popen[str]) -> str:
    """The host's output up to the line saying it listens (it reads nothing sooner)."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if " listening on " in line:
            return "".join(lines)
    raise AssertionError("the host ended before it listened:\n" + "".join(lines))


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


async def test_a_queue_runs_the_modules_functions_on_the_host(
        tmp_path: Path, unused_tcp_port: int) -> None:
    (tmp_path / "mytasks.py").write_text(MODULE)
    (tmp_path / "tasks.py").write_text(readme_tasks())
    host_url = f"http://127.0.0.1:{unused_tcp_port}"
    engine = Engine(data_dir=tmp_path / "queue", invoker=HttpInvoker(host_url, A))
    async with serving(engine) as queue_url:  # the queue's REST API, calling the host
        process = start_host(tmp_path, unused_tcp_port, "--functions", "mytasks",
                             "--functions", "tasks", "--queue-url", queue_url)
        try:
            started = await asyncio.to_thread(wait_listening, process)
            async with QueueClient(queue_url, A.app_id, master_key=A.master_key) as queue:
                hello = await queue.wait(await queue.enqueue("hello", {"name": "host"}),
                                         timeout=20_000)
                counted = await queue.wait(await queue.enqueue("count-up", {}), timeout=20_000)
                installed = await queue.wait(await queue.enqueue("install", {"template": "blog"}),
                                             timeout=20_000)
            async with aiohttp.ClientSession() as session:  # LeanEngine's credential check
                async with session.post(f"{host_url}/1.1/functions/hello", json={"name": "x"},
                                        headers={"X-LC-Id": A.app_id,
                                                 "X-LC-Key": "wrong,master"}) as response:
                    refused = (response.status, await response.json())
        finally:
            output = stop(process) if process.poll() is None else ""
    assert (hello.status, hello.result) == (
        "success", {"result": {"greeting": "hello, host", "attempt": 1}})
    # continued twice, with progress reported to the queue the host was given
    assert (counted.status, counted.slices) == ("success", 2)
    assert counted.result == {"result": {"counted": 3, "slices before": 2}}
    assert counted.progress is not None
    assert (counted.progress["done"], counted.progress["message"]) == (3, "step 3")
    # the README's example
    assert (installed.status, installed.result, installed.slices) == (
        "success", {"result": {"installed": "blog"}}, 5)
    assert installed.progress is not None
    assert installed.progress["message"] == "copied 50 files"
    assert refused == (401, {"code": 401, "error": "Unauthorized."})
    assert (f"function host of app {A.app_id} listening on {host_url}: count-up, hello, install "
            f"(progress and checkpoints: {queue_url})") in started
    assert f"point the queue at it: cloudqueue serve --function-host {host_url}" in output
    # a queue calling the host cannot see a function's declared defaults: said at start
    assert "function count-up declares option defaults (attempts=3)" in started
    assert counted.max_runs == 2  # indeed: the enqueue's own (default) attempts
    assert "shutting down" in output and "Traceback" not in started + output


@pytest.fixture
def keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEANCLOUD_APP_ID", "LEANCLOUD_APP_KEY", "LEANCLOUD_APP_MASTER_KEY",
                 "LEANCLOUD_APP_HOOK_KEY", "CLOUDQUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in KEYS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def host(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(["host", *argv])
    return status, capsys.readouterr().err


def test_keys_come_from_leanengines_variables_and_flags_win() -> None:
    env = {**KEYS_ENV, "LEANCLOUD_APP_HOOK_KEY": "hook"}
    config = host_config(env, {}, ("tasks",))
    assert (config.keys.app_id, config.keys.app_key, config.keys.master_key,
            config.keys.hook_key) == (A.app_id, A.app_key, A.master_key, "hook")
    assert (config.host, config.port, config.queue_url) == (
        "127.0.0.1", 3000, "http://127.0.0.1:3100")
    config = host_config({"CLOUDQUEUE_URL": "http://queue:9/"},
                         {"app_id": "i", "app_key": "k", "master_key": "m"}, ("tasks",))
    assert (config.keys.app_id, config.keys.hook_key, config.queue_url) == (
        "i", None, "http://queue:9")
    config = host_config(env, {"master_key": "other", "queue_url": "https://q.example"}, ())
    assert (config.keys.master_key, config.queue_url) == ("other", "https://q.example")


@pytest.mark.parametrize(("unset", "message"), [
    (["LEANCLOUD_APP_MASTER_KEY"],
     "no master key: set LEANCLOUD_APP_MASTER_KEY or give --master-key"),
    (["LEANCLOUD_APP_ID", "LEANCLOUD_APP_KEY", "LEANCLOUD_APP_MASTER_KEY"],
     "no app id, app key or master key: set LEANCLOUD_APP_ID, LEANCLOUD_APP_KEY and "
     "LEANCLOUD_APP_MASTER_KEY or give --app-id, --app-key and --master-key"),
])
@pytest.mark.usefixtures("keys_env")
def test_a_missing_key_names_its_variable_and_flag(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        unused_tcp_port: int, unset: list[str], message: str) -> None:
    for name in unset:
        monkeypatch.setenv(name, "")  # set but empty is missing too
    status, err = host(capsys, "--functions", "examples.tasks", "--port", str(unused_tcp_port))
    assert (status, err) == (2, f"cloudqueue host: {message} (the app's keys, the same as the "
                                "queue's)\n")


@pytest.mark.usefixtures("keys_env")
def test_a_queue_url_that_is_not_http_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--queue-url ftp://x is not an http:// or https://"):
        host_config(os.environ, {"queue_url": "ftp://x"}, ())
    status, err = host(capsys, "--functions", "examples.tasks", "--queue-url",
                       "http://user:secret@")
    assert status == 2 and "secret" not in err and err.count("\n") == 1


@pytest.mark.usefixtures("keys_env")
def test_a_module_that_cannot_load_is_one_line_saying_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        unused_tcp_port: int) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command adds the directory to it
    (tmp_path / "host_broken.py").write_text("raise ValueError('oops')\n")
    (tmp_path / "host_plain.py").write_text("async def f(params, run):\n    return 1\n")
    for module, expected in (
            ("host_missing", f"--functions host_missing: no module 'host_missing' in {tmp_path} "
                             "or on the Python path (for ./tasks.py, say --functions tasks)"),
            ("host_broken", "--functions host_broken: importing it failed: ValueError: oops"),
            ("host_plain", "module 'host_plain' declares no function with @cloudqueue.define")):
        status, err = host(capsys, "--functions", module, "--port", str(unused_tcp_port))
        assert (status, err) == (2, f"cloudqueue host: {expected}\n")


@pytest.mark.usefixtures("keys_env")
def test_a_port_in_use_names_the_port_and_another_to_use(
        busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = host(capsys, "--functions", "examples.tasks", "--port", str(busy_port))
    assert (status, err) == (1, (
        f"cloudqueue host: cannot listen on 127.0.0.1:{busy_port}: another process is using "
        f"port {busy_port}. Stop it (`ss -ltnp 'sport = :{busy_port}'` shows which), or start "
        f"on another port: `cloudqueue host --port {busy_port + 1}`\n"))


def test_as_a_process_a_missing_key_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEANCLOUD_")}
    result = subprocess.run(
        [sys.executable, "-m", "cloudqueue", "host", "--functions", "examples.tasks"],
        env={**env, "PYTHONPATH": str(ROOT), "LEANCLOUD_APP_ID": "a",
             "LEANCLOUD_APP_KEY": "k"}, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", "cloudqueue host: no master key: set LEANCLOUD_APP_MASTER_KEY or give "
               "--master-key (the app's keys, the same as the queue's)\n")
