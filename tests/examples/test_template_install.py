"""The template-install story (examples/template_install) end to end: the command line run, and
its progress page in a real headless Chromium, with screenshots kept as artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from examples.template_install.demo import Demo
from examples.template_install.install import Installer
from examples.template_install.template import expected_contents
from tests.browser import Browser, find_chromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CLOUDQUEUE_ARTIFACTS", ROOT / "artifacts"))
SMALL = {"users": 300, "posts": 1_500, "comments": 4_000}


def check_installed(data: Path, result: dict[str, Any]) -> None:
    """Every file of the archive is in storage with the same bytes; every row is in SQLite."""
    files, collections = expected_contents(data / "archives" / "blog.zip")
    storage = data / "storage" / "blog"
    stored = {str(p.relative_to(storage)): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in storage.rglob("*") if p.is_file()}
    assert stored == files
    assert result["files"] == len(files)
    assert result["rows"] == {name: len(rows) for name, rows in collections.items()}
    with sqlite3.connect(data / "site.sqlite3") as db:
        for name, rows in collections.items():
            got = dict(db.execute(f"SELECT objectId, data FROM {name}").fetchall())
            assert got == {r["objectId"]: json.dumps(r, separators=(",", ":")) for r in rows}
    assert not (data / "work").exists() or not any((data / "work").iterdir())  # scratch gone


def test_the_install_runs_end_to_end_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    command = [sys.executable, "-m", "examples.template_install", "--data", str(data),
               "--queue-port", "0", "--host-port", "0", "--pause-ms", "0", "--budget-ms", "0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("queued install ")
    assert lines[1].startswith("progress page: http://127.0.0.1:")
    bars = [line for line in lines if line.startswith("[")]
    percents = [float(line.split("]")[1].split("%")[0]) for line in bars]
    assert percents == sorted(percents) and percents[-1] == 100.0  # the bar only moves forward
    assert any("importing" in line for line in bars) and any("unpacking" in line for line in bars)
    summary = json.loads(lines[-1])
    assert summary["status"] == "success", summary
    # many short slices (one unit of work each: the same count on any machine), all as the
    # first attempt: no slice hit its 2-second timeout
    assert summary["slices"] >= 20 and summary["attempt"] == 1
    check_installed(data, summary["result"]["result"])


def test_the_example_listens_beside_the_quick_start_server() -> None:
    """Its default ports are neither the Quick start's server's (`scripts/run.sh`, `cloudqueue
    serve`) nor `cloudqueue host`'s, so they run at once, and its watcher's default queue is the
    example's own."""
    from cloudqueue.config import DEFAULT_PORT as SERVE_PORT
    from cloudqueue.host import DEFAULT_PORT as HOST_PORT
    from examples.template_install.__main__ import build_parser
    from examples.template_install.watch import build_parser as watch_parser

    args = build_parser().parse_args([])
    assert len({args.queue_port, args.host_port, SERVE_PORT, HOST_PORT}) == 4
    watched = watch_parser().parse_args(["some-task", "--app-id", "a", "--app-key", "k"])
    assert watched.queue == f"http://127.0.0.1:{args.queue_port}"


def test_a_port_in_use_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        for flag in ("--queue-port", "--host-port"):
            other = "--host-port" if flag == "--queue-port" else "--queue-port"
            done = subprocess.run(
                [sys.executable, "-m", "examples.template_install", "--data",
                 str(tmp_path / "data"), flag, str(busy), other, "0"],
                cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert (done.returncode, done.stdout) == (1, "")
            assert done.stderr == (
                f"python -m examples.template_install: cannot listen on 127.0.0.1:{busy}: "
                f"another process is using port {busy}. Stop it (`ss -ltnp 'sport = :{busy}'` "
                f"shows which), or give another port: `{flag} 0` takes any free one\n")
    assert not (tmp_path / "data").exists()  # refused before anything was made


class TimedInstaller(Installer):
    """Records how long each slice's work took."""

    durations: list[float]

    async def run_slice(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return await super().run_slice(*args, **kwargs)
        finally:
            self.durations.append(time.monotonic() - started)


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        # scripts/test.sh says why it could not install chromium
        why = (os.environ.get("CLOUDQUEUE_BROWSER_MISSING")
               or "no chromium on this machine (apt-get install chromium; scripts/test.sh "
                  "installs it when it can)")
        if os.environ.get("CLOUDQUEUE_REQUIRE_BROWSER"):
            pytest.fail(f"CLOUDQUEUE_REQUIRE_BROWSER is set but no chromium was found: {why}")
        pytest.skip(f"browser test: {why}")
    return binary


@pytest.mark.browser
@pytest.mark.timeout(180)
async def test_the_progress_page_shows_the_install_live_in_chromium(
        tmp_path: Path, chromium: str) -> None:
    data = tmp_path / "data"
    async with Demo(data, files=40, collections=SMALL) as demo, demo.client() as queue:
        assert demo.installer is not None
        demo.installer.__class__ = TimedInstaller
        timed: Any = demo.installer
        timed.durations = []
        async with await Browser.launch(chromium) as browser:
            # one unit of work a slice (so the number of slices is the same on any machine),
            # paced, so the page sees the bar move; the page opens once the task is queued
            # (it needs the id), and as any late subscriber it gets the current state first
            unique_id = await demo.enqueue_install(queue, budget_ms=0, pause_ms=20)
            page = await browser.open(await demo.page_url(queue, unique_id))
            await page.wait_for("window.progressSeen.some((p) => p > 20 && p < 100)", 60)
            await page.screenshot(ARTIFACTS / "template-install-progress-running.png")
            status = await page.wait_for(
                "['success', 'failed'].includes(document.body.dataset.status) && "
                "document.body.dataset.status", 120)
            await page.wait_for("(() => { const bar = document.getElementById('bar');"
                                " return bar.getBoundingClientRect().width >="
                                " bar.parentElement.getBoundingClientRect().width - 1 })()")
            png = await page.screenshot(ARTIFACTS / "template-install-progress-done.png")
            seen = await page.evaluate("window.progressSeen")
            shown = await page.evaluate(
                "({bar: document.getElementById('bar').style.width,"
                " percent: document.getElementById('percent').textContent,"
                " message: document.getElementById('message').textContent,"
                " slices: Number(document.getElementById('slices').textContent),"
                " outcome: JSON.parse(document.getElementById('outcome').textContent),"
                " template: document.getElementById('template').textContent})")
            console = list(browser.console)
        info = await queue.get_task_info(unique_id)

    assert status == "success", (shown, console)
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
    assert len(seen) >= 5 and seen == sorted(seen) and seen[-1] == 100, seen
    assert shown["bar"] == "100%" and shown["percent"] == "100%"
    assert shown["message"] == "installed" and shown["template"] == "blog"
    assert shown["slices"] == info.slices >= 10
    assert shown["outcome"] == info.result
    assert info.attempt == 1
    # each slice's work stays well inside its 2 s timeout (one unit of work)
    assert timed.durations and max(timed.durations) < 1.0, max(timed.durations)
    check_installed(data, info.result["result"])


async def test_every_slice_can_run_twice(tmp_path: Path) -> None:
    """A crash after a slice did its work but before its checkpoint was stored runs that slice
    again from the previous checkpoint: the install must still end exactly right. Here every
    slice's work is done, thrown away and done again (so, for one, the download file is longer
    than its checkpoint when the slice reruns, as after a crash mid-write)."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from examples.template_install.template import make_archive

    data = tmp_path / "data"
    archive = make_archive(data / "archives" / "blog.zip", files=40, collections=SMALL)

    async def serve(request: web.Request) -> web.FileResponse:
        return web.FileResponse(archive)

    app = web.Application()
    app.router.add_get("/blog.zip", serve)
    installer = Installer(storage=data / "storage", database=data / "site.sqlite3",
                          work=data / "work")
    async with TestServer(app, host="127.0.0.1") as server:
        params = {"template": "blog", "archive_url": str(server.make_url("/blog.zip"))}
        checkpoint: dict[str, Any] = {"phase": "fetch", "at": 0}
        phases_redone: set[str] = set()
        result = None
        for slice_ in range(10_000):
            # a deadline already passed: every slice does exactly one unit of work, so each
            # phase starts on a slice of its own whatever the machine's speed (a wall-clock
            # budget let a fast machine finish the import and clean up in one slice)
            after, result = await installer.run_slice(params, checkpoint, "task-1",
                                                      deadline=float("-inf"))
            if slice_ % 2 == 0:  # lost, even the result: do it again from the old checkpoint
                phases_redone.add(checkpoint["phase"])
                continue
            if result is not None:
                break
            checkpoint = after
        await installer.close()
    assert result is not None
    assert phases_redone == {"fetch", "unpack", "copy", "import", "cleanup"}
    check_installed(data, result)
