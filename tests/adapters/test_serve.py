"""`cloudqueue serve` as a real process: env credentials, enqueue, SIGTERM, restart, replay."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from cloudqueue.adapters.auth import sign

ROOT = Path(__file__).resolve().parents[2]
ENV = {"LEANCLOUD_APP_ID": "srv", "LEANCLOUD_APP_KEY": "srv-app-key",
       "LEANCLOUD_APP_MASTER_KEY": "srv-master-key"}


def start(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "cloudqueue", "serve", "--port", str(port), "--data-dir",
         str(data_dir), *extra], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


async def wait_ready(session: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/__health/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)  # polling a real server process until it listens
    raise AssertionError("server did not become ready")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


async def test_serve_acknowledges_shuts_down_on_sigterm_and_replays(
        tmp_path: Path, unused_tcp_port: int) -> None:
    base = f"http://127.0.0.1:{unused_tcp_port}"
    headers = {"X-LC-Id": "srv", "X-LC-Sign": sign("srv-master-key", 1, master=True)}
    process = start(tmp_path, unused_tcp_port)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base)
            async with session.post(f"{base}/1.1/engine/cloud-queue/tasks", headers=headers,
                                    json={"function": "later", "delay": 3_600_000,
                                          "uniqueId": "survivor"}) as response:
                assert response.status == 200
        output = stop(process)
        assert "cloudqueue listening on http://127.0.0.1" in output
        assert f"dashboard: {base}/dashboard/" in output
        assert "shutting down" in output
        assert "aiohttp.access" not in output  # no line per request unless asked for
        process = start(tmp_path, unused_tcp_port, "--access-log")
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base)
            async with session.get(f"{base}/1.1/engine/cloud-queue/tasks/survivor",
                                   headers=headers) as response:
                assert (await response.json())["status"] == "queued"
        assert (tmp_path / "srv").is_dir()
        output = stop(process)
        assert "aiohttp.access" in output and "GET /1.1/engine/cloud-queue/tasks/survivor" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
