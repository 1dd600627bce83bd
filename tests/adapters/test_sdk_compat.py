"""Compatibility with the real LeanEngine SDK (leanengine@3.8.0, leancloud-storage@4.15.2).

Installs the pinned SDK and express from npm (cached between runs), starts a real LeanEngine
function host (``tests/compat/host.js``: ``AV.express()``, ``AV.Cloud.define``, one function
``internal: true``), starts ``cloudqueue serve`` pointed at it with concurrency 1, and drives the
queue with ``AV.Cloud.enqueue`` / ``AV.Cloud.getTaskInfo`` (``tests/compat/driver.js``), which
prints one JSON object of observations. Each test below checks one scenario of it against the
protocol.

Needs ``node`` and ``npm`` on PATH and the npm registry reachable: without them the tests fail
(they do not skip, so a broken compat lane cannot pass unnoticed). The installed ``node_modules``
is kept in ``$CLOUDQUEUE_COMPAT_CACHE`` or ``~/.cache/cloudqueue-compat/<hash of package.json>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPAT = ROOT / "tests" / "compat"
SOURCES = ("package.json", "host.js", "driver.js")
KEYS = {
    "LEANCLOUD_APP_ID": "compatApp",
    "LEANCLOUD_APP_KEY": "compat-app-key-0000000000",
    "LEANCLOUD_APP_MASTER_KEY": "compat-master-key-000000",
    "LEANCLOUD_APP_HOOK_KEY": "compat-hook-key-00000000",
}
NPM_INSTALL_TIMEOUT_S = 240
START_TIMEOUT_S = 30
DRIVER_TIMEOUT_S = 120
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

pytestmark = pytest.mark.timeout(NPM_INSTALL_TIMEOUT_S + 180)


# ------------------------------------------------------------------------------ npm install


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: the SDK compatibility test needs Node.js 18+ and "
                    "npm (CI machines have them; install Node.js to run this test locally)",
                    pytrace=False)
    return path


def _cache_root() -> Path:
    if os.environ.get("CLOUDQUEUE_COMPAT_CACHE"):
        return Path(os.environ["CLOUDQUEUE_COMPAT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cloudqueue-compat"


def _text(output: str | bytes | None) -> str:
    """A TimeoutExpired's output: bytes even under ``text=True`` (CPython), or None."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _installed_modules(npm: str) -> Path:
    """``node_modules`` for tests/compat/package.json, installed once per package.json."""
    manifest = (COMPAT / "package.json").read_bytes()
    target = _cache_root() / hashlib.sha256(manifest).hexdigest()[:16]
    if (target / "complete").exists():
        return target / "node_modules"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f"staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        (staging / "package.json").write_bytes(manifest)
        try:
            done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                                  cwd=staging, capture_output=True, text=True,
                                  timeout=NPM_INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"npm install did not finish in {NPM_INSTALL_TIMEOUT_S} s (is the npm "
                        f"registry reachable?)\n{_text(exc.stdout)}{_text(exc.stderr)}",
                        pytrace=False)
        if done.returncode != 0:
            pytest.fail(f"npm install of tests/compat/package.json failed (exit "
                        f"{done.returncode}); the SDK compatibility test needs the npm registry"
                        f"\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}", pytrace=False)
        (staging / "complete").write_text("installed\n")
        try:
            staging.rename(target)
        except OSError:
            if not (target / "complete").exists():  # not a concurrent run that got there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "node_modules"


# ------------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_host(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = re.search(r"^READY (\d+)$", log.read_text(errors="replace"), re.MULTILINE)
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)  # polling a real Node host process until it prints READY
    pytest.fail(f"the LeanEngine host did not print READY (exit {process.poll()}):\n"
                f"{log.read_text(errors='replace')}", pytrace=False)


def _wait_for_queue(process: subprocess.Popen[bytes], log: Path, base: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/__health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)  # polling a real server process until it listens
    pytest.fail(f"cloudqueue serve did not become ready (exit {process.poll()}):\n"
                f"{log.read_text(errors='replace')}", pytrace=False)


@dataclass
class Run:
    """What the driver observed, and the logs of the two servers."""

    obs: dict[str, Any]
    queue_url: str
    queue_log: str
    host_log: str
    driver_stderr: str

    def scenario(self, name: str) -> dict[str, Any]:
        got = self.obs.get(name)
        assert isinstance(got, dict), f"the driver reported nothing for {name!r}"
        assert "crashed" not in got, f"driver scenario {name!r} crashed:\n{got['crashed']}"
        return got


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    node, npm = _tool("node"), _tool("npm")
    modules = _installed_modules(npm)
    work = tmp_path_factory.mktemp("sdk-compat")
    for name in SOURCES:
        shutil.copy2(COMPAT / name, work / name)
    (work / "node_modules").symlink_to(modules, target_is_directory=True)
    env = {**os.environ, **KEYS}
    env.pop("LEANCLOUD_API_SERVER", None)
    host_log, queue_log = work / "host.log", work / "queue.log"
    queue_port = _free_port()
    queue_url = f"http://127.0.0.1:{queue_port}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with host_log.open("wb") as out:
            host = subprocess.Popen([node, "host.js"], cwd=work, env={**env, "PORT": "0"},
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        processes.append(host)
        host_url = f"http://127.0.0.1:{_wait_for_host(host, host_log)}"
        python_path = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with queue_log.open("wb") as out:
            queue = subprocess.Popen(
                [sys.executable, "-m", "cloudqueue", "serve", "--port", str(queue_port),
                 "--data-dir", str(work / "data"), "--function-host", host_url,
                 "--concurrency", "1"],
                cwd=ROOT, env={**env, "PYTHONPATH": python_path}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT)
        processes.append(queue)
        _wait_for_queue(queue, queue_log, queue_url)
        try:
            driven = subprocess.run([node, "driver.js"], cwd=work, capture_output=True,
                                    text=True, timeout=DRIVER_TIMEOUT_S, stdin=subprocess.DEVNULL,
                                    env={**env, "QUEUE_URL": queue_url, "HOST_URL": host_url})
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"driver.js ran over {DRIVER_TIMEOUT_S} s\n{exc.stdout!r}\n{exc.stderr!r}"
                        f"\n--- queue log\n{queue_log.read_text(errors='replace')}",
                        pytrace=False)
        try:
            obs = json.loads(driven.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pytest.fail(f"driver.js exited {driven.returncode} without its JSON report\n"
                        f"--- stdout\n{driven.stdout}\n--- stderr\n{driven.stderr}",
                        pytrace=False)
    finally:
        for process in reversed(processes):
            _stop(process, grace_s=15)
    yield Run(obs, queue_url, queue_log.read_text(errors="replace"),
              host_log.read_text(errors="replace"), driven.stderr)


# --------------------------------------------------------------------------------- helpers


def _date(value: Any, what: str) -> float:
    """Epoch ms of a Date the SDK made (the driver writes it as {"$date": iso})."""
    assert isinstance(value, dict) and set(value) == {"$date"}, \
        f"{what} should be a Date made by the SDK from an ISO string, got {value!r}"
    return datetime.fromisoformat(value["$date"].replace("Z", "+00:00")).timestamp() * 1000


def _rejected(answer: Any, code: int | tuple[int, ...], what: str) -> None:
    codes = code if isinstance(code, tuple) else (code,)
    assert isinstance(answer, dict) and answer.get("rejected"), \
        f"{what}: the SDK call should have been rejected, it resolved with {answer!r}"
    assert answer["code"] in codes, \
        f"{what}: err.code should be {' or '.join(map(str, codes))}, got {answer!r}"


def _host_saw_queue_credentials(calls: list[dict[str, Any]]) -> None:
    for call in calls:
        assert call["master"] and call["hook"] and not call["session"], \
            f"the queue should call the host with master + hook key and no session: {call}"


# ----------------------------------------------------------------------------------- tests


def test_enqueue_runs_the_function_and_reports_success(run: Run) -> None:
    s = run.scenario("success")
    assert set(s["enqueued"]) == {"uniqueId"}, f"enqueue should resolve {{uniqueId}}: {s}"
    assert UUID_RE.match(s["enqueued"]["uniqueId"]), \
        f"a generated uniqueId should be a 36-char UUID: {s['enqueued']}"
    final = s["final"]
    assert final["status"] == "success", f"task did not succeed: {final}"
    assert final["statusCode"] == 200
    assert final["result"] == {"result": s["params"]}, \
        f"result should be the host's whole body {{result: params}}: {final['result']!r}"
    _date(final["finishedAt"], "finishedAt")
    assert "error" not in final and "retryAt" not in final, final
    assert all(h["status"] == "queued" for h in s["history"][:-1]), s["history"]
    assert len(s["hostCalls"]) == 1, f"the host should have run echo once: {s['hostCalls']}"
    _host_saw_queue_credentials(s["hostCalls"])


def test_custom_unique_id_is_returned_and_a_duplicate_gets_409(run: Run) -> None:
    s = run.scenario("customUniqueId")
    assert s["first"] == {"uniqueId": s["uniqueId"]}, s["first"]
    url = f"{run.queue_url}/1.1/engine/cloud-queue/tasks"
    for what in ("duplicate", "duplicateAfterFinish"):
        _rejected(s[what], 409, f"{what} enqueue")
        assert s[what]["message"].endswith(f"[409 POST {url}]"), s[what]
    assert s["final"]["status"] == "success"
    assert s["final"]["result"] == {"result": {"key": s["uniqueId"], "which": "first"}}
    assert len(s["hostCalls"]) == 1 and s["duplicateHostCalls"] == [], \
        f"a rejected duplicate must not run: {s['hostCalls']} {s['duplicateHostCalls']}"


def test_failure_is_retried_with_backoff_then_fails(run: Run) -> None:
    s = run.scenario("failure")
    uid = s["uniqueId"]
    waiting = [h for h in s["history"] if "retryAt" in h]
    assert waiting, f"never saw the task waiting for a retry (retryAt): {s['history']}"
    for h in waiting:
        assert h["status"] == "queued", f"a task waiting for a retry reads queued: {h}"
        _date(h["retryAt"], "retryAt")
        assert "boom" in h["error"] and h["statusCode"] == 500, h
    assert waiting[0]["error"] == f"boom-{uid} (attempt 1)", waiting[0]
    final = s["final"]
    assert final["status"] == "failed", f"task should end failed: {final}"
    assert final["statusCode"] == 500
    assert final["error"] == f"boom-{uid} (attempt 3)", \
        f"attempts: 2 means 3 runs, the last error kept: {final}"
    assert "retryAt" not in final, final
    _date(final["finishedAt"], "finishedAt")
    starts = [c["startedAt"] for c in s["hostCalls"]]
    assert len(starts) == 3, f"the host should have run fail 3 times: {s['hostCalls']}"
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(gap >= 450 for gap in gaps), f"backoff 500 ms not respected, gaps {gaps} ms"
    for h in waiting:
        run_no = int(re.findall(r"attempt (\d+)", h["error"])[-1])
        due_after = _date(h["retryAt"], "retryAt") - starts[run_no - 1]
        assert 450 <= due_after <= 2500, \
            f"retryAt should be ~500 ms (backoff) after failed run {run_no}: {h}, {starts}"


def test_timeout_under_at_most_once_is_final_after_one_call(run: Run) -> None:
    s = run.scenario("timeoutAtMostOnce")
    final = s["final"]
    assert final["status"] == "failed", final
    assert "timed out" in final["error"], final
    assert "statusCode" not in final, f"a timed-out run got no HTTP answer: {final}"
    assert not any("retryAt" in h for h in s["history"]), s["history"]
    assert len(s["hostCalls"]) == 1, \
        f"atMostOnce must not retry a timed-out run, even with attempts left: {s['hostCalls']}"
    elapsed = _date(final["finishedAt"], "finishedAt") - s["hostCalls"][0]["startedAt"]
    assert elapsed < 2500, \
        f"the queue should give up at the 500 ms timeout (slow sleeps 3 s), took {elapsed} ms"


def test_timeout_under_at_least_once_is_retried(run: Run) -> None:
    s = run.scenario("timeoutAtLeastOnce")
    final = s["final"]
    assert final["status"] == "failed" and "timed out" in final["error"], final
    assert len(s["hostCalls"]) == 2, \
        f"attempts: 1 under atLeastOnce means 2 runs: {s['hostCalls']}"
    assert any("retryAt" in h and "timed out" in h["error"] for h in s["history"]), s["history"]


def test_delay_holds_the_first_run_back(run: Run) -> None:
    s = run.scenario("delay")
    assert s["at500"]["status"] == "queued", f"at +500 ms of a 1500 ms delay: {s['at500']}"
    assert s["hostCallsAt500"] == [], s["hostCallsAt500"]
    final = s["final"]
    assert final["status"] == "success", final
    finished = _date(final["finishedAt"], "finishedAt")
    assert finished >= s["enqueuedAt"] + 1500 - 5, \
        f"finishedAt {finished} is earlier than enqueue {s['enqueuedAt']} + 1500 ms"
    assert s["hostCalls"][0]["startedAt"] >= s["enqueuedAt"] + 1500 - 5, s["hostCalls"]


def test_lower_priority_value_runs_first_with_concurrency_1(run: Run) -> None:
    s = run.scenario("priority")
    assert s["blockerStartedBeforeOthers"], "the blocker never started on the host"
    assert all(f["status"] == "success" for f in s["finals"].values()), s["finals"]
    assert s["runOrder"] == s["expectedOrder"], \
        f"priorities 3, 1, 2 should run as 1, 2, 3 after the blocker: {s['runOrder']}"


def test_internal_function_runs_through_the_queue(run: Run) -> None:
    s = run.scenario("internalFunction")
    final = s["final"]
    assert final["status"] == "success" and final["result"] == {"result": "inside"}, final
    _host_saw_queue_credentials(s["hostCalls"])
    assert s["directInternalCall"]["status"] == 401, \
        f"the host should refuse an app-key call of an internal function: {s}"
    assert s["directPublicCall"]["status"] == 200, s["directPublicCall"]


def test_unknown_unique_id_is_404(run: Run) -> None:
    _rejected(run.scenario("unknownId")["answer"], 404, "getTaskInfo of an unknown id")


def test_keep_result_expires_and_frees_the_unique_id(run: Run) -> None:
    s = run.scenario("keepResult")
    assert s["first"]["status"] == "success", s["first"]
    _rejected(s["duplicateWhileKept"], 409, "enqueue while the finished task is kept")
    assert s["atHalf"]["status"] == "success", f"still kept at +500 ms: {s['atHalf']}"
    _rejected(s["gone"], 404, "getTaskInfo after keepResult")
    assert 990 <= s["goneAfterMs"] <= 3500, \
        f"keepResult 1000 ms: the task went away {s['goneAfterMs']} ms after finishedAt"
    assert s["again"] == {"uniqueId": s["uniqueId"]}, f"the id should be free again: {s}"
    assert s["againFinal"]["status"] == "success"
    assert s["againFinal"]["result"] == {"result": {"key": s["uniqueId"], "round": 2}}


def test_credentials_are_enforced(run: Run) -> None:
    s = run.scenario("credentials")
    clients = s["clients"]
    for name, client in clients.items():
        assert "crashed" not in client, f"client {name} crashed: {client['crashed']}"
    _rejected(clients["wrongMasterKey"]["results"][0], 401, "enqueue with a wrong master key")
    app_only = clients["appKeyOnly"]
    assert "fall back to use appKey" in app_only["stderr"], app_only
    _rejected(app_only["results"][0], (401, 119), "enqueue signed with the app key")
    assert app_only["results"][1]["status"] == "success", \
        f"getTaskInfo with the app-key signature (no useMasterKey) should work: {app_only}"
    for i, what in enumerate(("getTaskInfo", "enqueue")):
        _rejected(clients["wrongAppKey"]["results"][i], 401, f"{what} with a wrong app key")
    for i, what in enumerate(("enqueue", "getTaskInfo")):
        _rejected(clients["wrongAppId"]["results"][i], 401, f"{what} with a wrong app id")
    assert clients["useMasterKey"]["results"][0]["status"] == "success", clients["useMasterKey"]
    for name, created in s["created"].items():
        _rejected(created["info"], 404, f"a refused enqueue ({name}) must create nothing")
        assert created["hostCalls"] == [], f"a refused enqueue ({name}) ran: {created}"


def test_queue_logged_no_unexpected_error(run: Run) -> None:
    assert "Traceback" not in run.queue_log and "unexpected error" not in run.queue_log, \
        run.queue_log
