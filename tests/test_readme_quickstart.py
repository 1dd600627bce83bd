"""The README's Quick start, followed as written: its commands are read out of README.md (the
blocks marked ``<!-- quickstart:... -->``), not copied here. The server command runs from a
fresh directory (on a free port instead of 3100), then the first-task block, whose last answer
must be the task's success, then the bulk enqueue and the Python client's script against the
same server; the embedded example runs on its own."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def block(marker: str, language: str = "sh") -> str:
    """The fenced code block right after ``<!-- quickstart:MARKER -->``."""
    found = re.search(rf"<!-- quickstart:{marker} -->\n```{language}\n(.*?)```",
                      README.read_text(), re.S)
    assert found, f"README.md has no quickstart:{marker} block"
    return found.group(1)


def server_command() -> list[str]:
    lines = [line.split("#")[0].strip() for line in block("commands").splitlines()]
    (command,) = [line for line in lines if line.startswith("scripts/run.sh")]
    return command.split()


async def wait_ready(base: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120  # the first run may install the project
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[0]
            try:
                async with session.get(f"{base}/__health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)  # polling a real server process until it listens
    raise AssertionError("the Quick start's server did not become ready")


async def test_the_quick_start_ends_in_success(tmp_path: Path, unused_tcp_port: int) -> None:
    if shutil.which("curl") is None and not os.environ.get("CLOUDQUEUE_REQUIRE_CURL"):
        pytest.skip("the Quick start uses curl, which is not installed (apt-get install curl)")
    command = server_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEANCLOUD_")}
    env["CLOUDQUEUE_VENV"] = sys.prefix  # the environment these tests run in
    server = subprocess.Popen(
        ["bash", str(ROOT / command[0]), *command[1:], "--port", str(unused_tcp_port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        await wait_ready(f"http://127.0.0.1:{unused_tcp_port}", server)
        script = block("first-task").replace("127.0.0.1:3100", f"127.0.0.1:{unused_tcp_port}")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        keys = "\n".join(line for line in block("first-task").splitlines()
                         if line.startswith(("APP_ID=", "KEY=")))
        bulk = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", keys + "\n" + block("bulk").replace(
                "127.0.0.1:3100", f"127.0.0.1:{unused_tcp_port}")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        client = block("client", "python").replace("127.0.0.1:3100",
                                                    f"127.0.0.1:{unused_tcp_port}")
        watched = subprocess.run([sys.executable, "-c", client], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=60)
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["status"], info["result"]) == ("success", {"result": {"greeting":
                                                                       "hello, queue"}}), info
    assert bulk.returncode == 0, bulk.stderr
    first, second = json.loads(bulk.stdout)["results"]
    assert set(first) == {"uniqueId"} and second == {"uniqueId": "hello-b"}
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert lines[0].startswith("state") and lines[-2:] == ["finished 3", "success {'counted': 3}"]
    # live progress in order (a slow reader may miss an intermediate one, never the latest)
    shown = [int(line.split()[1]) for line in lines if line.startswith("progress")]
    assert shown == sorted(shown) and set(shown) <= {1, 2, 3}
    assert server.returncode == 0, output
    assert "functions count-slowly, hello in-process" in output


def test_the_embedded_example_prints_its_success(tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-c", block("embedded", "python")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    status, wire = ran.stdout.splitlines()
    assert status == "success {'image': 'cat.png', 'width': 640}"
    assert "'status': 'success'" in wire and "'result': {'result': {'image': 'cat.png'" in wire
