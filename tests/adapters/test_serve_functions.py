"""``cloudqueue serve --functions MODULE``: a module of ``@cloudqueue.define`` functions from the
current directory, run in-process by a real server process, their defaults applied to REST
enqueues; a module that cannot load is one line saying why."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.adapters.test_serve import ROOT, stop, wait_ready

MODULE = textwrap.dedent('''
    import cloudqueue

    @cloudqueue.define
    async def hello(params, run):
        return {"greeting": "hello, " + params["name"]}

    @cloudqueue.define("flaky", attempts=4, backoff=1)
    async def flaky(params, run):
        if run.attempt < 3:
            raise RuntimeError(f"not yet ({run.attempt})")
        return run.attempt
''')


async def final(session: aiohttp.ClientSession, url: str, headers: dict[str, str]
                ) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        async with session.get(url, headers=headers) as response:
            info: dict[str, Any] = await response.json()
        if info["status"] != "queued":
            return info
        await asyncio.sleep(0.05)  # polling a real server process until the task is final
    raise AssertionError(f"not final: {info}")


def serve(cwd: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEANCLOUD_")}
    return subprocess.Popen(
        [sys.executable, "-m", "cloudqueue", "serve", "--port", str(port), *extra],
        env={**env, "PYTHONPATH": str(ROOT)}, cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


async def test_serve_runs_the_functions_of_a_module_in_the_current_directory(
        tmp_path: Path, unused_tcp_port: int) -> None:
    (tmp_path / "mytasks.py").write_text(MODULE)
    base = f"http://127.0.0.1:{unused_tcp_port}"
    process = serve(tmp_path, unused_tcp_port, "--functions", "mytasks")
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base)
            keys = json.loads((tmp_path / "data" / "dev-credentials.json").read_text())
            headers = {"X-LC-Id": keys["app_id"], "X-LC-Key": f"{keys['master_key']},master"}
            uids = []
            for body in ({"function": "hello", "params": {"name": "queue"}},
                         {"function": "flaky"}):
                async with session.post(f"{base}/1.1/engine/cloud-queue/tasks", json=body,
                                        headers=headers) as response:
                    assert response.status == 200, await response.text()
                    uids.append((await response.json())["uniqueId"])
            infos = [await final(session, f"{base}/1.1/engine/cloud-queue/tasks/{uid}",
                                 headers) for uid in uids]
    finally:
        output = stop(process)
    assert "functions flaky, hello in-process" in output
    hello, flaky = infos
    assert (hello["status"], hello["result"]) == ("success", {"result": {"greeting":
                                                                         "hello, queue"}})
    # the declared attempts=4 applied to a REST enqueue that set none
    assert (flaky["status"], flaky["result"], flaky["maxRuns"]) == ("success", {"result": 3}, 5)


def test_a_module_that_cannot_load_is_one_line_saying_why(tmp_path: Path,
                                                          unused_tcp_port: int) -> None:
    (tmp_path / "broken.py").write_text("import cloudqueue\nraise ValueError('oops')\n")
    for module, expected in (("missing", "--functions missing: no module 'missing' in"),
                             ("broken", "--functions broken: importing it failed: ValueError: "
                                        "oops")):
        process = serve(tmp_path, unused_tcp_port, "--functions", module)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 2, output
        assert expected in output and "Traceback" not in output


FAILING = textwrap.dedent('''
    import cloudqueue

    @cloudqueue.define("lookup", attempts=1, backoff=1)
    async def lookup(params, run):
        raise KeyError("missing thing")
''')


async def test_a_failed_run_over_rest_and_in_the_json_log(tmp_path: Path,
                                                          unused_tcp_port: int) -> None:
    """``raise KeyError("missing thing")`` reads ``KeyError: 'missing thing'`` with its
    traceback over REST; each failed run is one JSON line on stderr naming the app (never its
    keys)."""
    (tmp_path / "failing.py").write_text(FAILING)
    base = f"http://127.0.0.1:{unused_tcp_port}"
    keys = {"LEANCLOUD_APP_ID": "shop", "LEANCLOUD_APP_KEY": "shop-app-key-5",
            "LEANCLOUD_APP_MASTER_KEY": "shop-master-key-6"}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LEANCLOUD_")}, **keys}
    with (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudqueue", "serve", "--port", str(unused_tcp_port),
             "--functions", "failing", "--log-format", "json"],
            env={**env, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=stderr, text=True)
        try:
            async with aiohttp.ClientSession() as session:
                await wait_ready(session, base)
                headers = {"X-LC-Id": "shop", "X-LC-Key": "shop-master-key-6,master"}
                async with session.post(f"{base}/1.1/engine/cloud-queue/tasks",
                                        json={"function": "lookup", "uniqueId": "L1"},
                                        headers=headers) as response:
                    assert response.status == 200, await response.text()
                info = await final(session, f"{base}/1.1/engine/cloud-queue/tasks/L1", headers)
        finally:
            stop(process)
    assert (info["status"], info["error"]) == ("failed", "KeyError: 'missing thing'")
    first, second = info["runs"]
    assert [(r["attempt"], r["outcome"], r["error"]) for r in (first, second)] == [
        (1, "failed", "KeyError: 'missing thing'"), (2, "failed", "KeyError: 'missing thing'")]
    trace = second["traceback"]
    assert "traceback" not in first
    assert trace == ('Traceback (most recent call last):\n  File "failing.py", line 6, in lookup\n'
                     '    raise KeyError("missing thing")\nKeyError: \'missing thing\'\n')

    text = (tmp_path / "stderr").read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    failed = [line for line in lines if line["logger"] == "cloudqueue.runs"]
    assert [(f["level"], f["attempt"]) for f in failed] == [("WARNING", 1), ("ERROR", 2)]
    for line in failed:
        assert {k: line[k] for k in ("app", "function", "uniqueId", "maxRuns", "outcome",
                                     "error", "traceback")} == {
            "app": "shop", "function": "lookup", "uniqueId": "L1", "maxRuns": 2,
            "outcome": "failed", "error": "KeyError: 'missing thing'", "traceback": trace}
    assert failed[1]["message"] == ("task L1 (lookup, app shop) failed for good on attempt 2 "
                                    "of 2: KeyError: 'missing thing'")
    assert "shop-master-key-6" not in text and "shop-app-key-5" not in text
