"""Schemathesis over the served OpenAPI document, against a real `cloudqueue serve` process.

Every operation in ``/1.1/engine/cloud-queue/openapi.json`` is fuzzed (coverage phase plus a
bounded, derandomized Hypothesis phase, valid and invalid data) four times: with the master key,
with the app key, with wrong credentials and with none. The server must never answer 5xx, must
answer only status codes, content types and bodies the document declares, and must turn away a
caller without valid credentials (401) or without the master key (403) on every guarded operation.

The server has no function host, so enqueued tasks wait (``delay``) or fail at once with
"No such cloud function"; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis

ROOT = Path(__file__).resolve().parents[2]
BASE = "/1.1/engine/cloud-queue"
APP_ID = "fuzz"
APP_KEY = "fuzz-app-key-0123456789"
MASTER_KEY = "fuzz-master-key-0123456789"
MAX_EXAMPLES = 25  # Hypothesis examples per operation and credential set


@dataclass(frozen=True)
class Credentials:
    name: str
    headers: dict[str, str]
    role: int  # 0 none, 1 app, 2 master


CREDENTIALS = [
    Credentials("master", {"X-LC-Id": APP_ID, "X-LC-Key": f"{MASTER_KEY},master"}, 2),
    Credentials("app", {"X-LC-Id": APP_ID, "X-LC-Key": APP_KEY}, 1),
    # the app key passed off as the master key
    Credentials("invalid", {"X-LC-Id": APP_ID, "X-LC-Key": f"{APP_KEY},master"}, 0),
    Credentials("none", {}, 0),
]

# operationId -> the role it needs; operations without one need none.
NEEDS = {"enqueue": 2, "listTasks": 2, "cancelTask": 2, "getTaskInfo": 1,
         **dict.fromkeys(["retryTask", "runTaskNow", "retryTasks", "cancelTasks", "purgeTasks",
                          "pauseDispatch", "resumeDispatch", "getDispatch", "getAudit",
                          "listApps", "getOverview", "getTaskDetail", "runScheduleNow"], 2)}


@dataclass
class Server:
    base_url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 40) -> str:
        """The server's own output, less the access log."""
        text = [line for line in self.log.read_text(errors="replace").splitlines()
                if "aiohttp.access" not in line][-lines:]
        return "server output (tail, access log left out):\n" + "\n".join(text)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited early\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/__health/ready", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)  # polling a real server process until it listens
    raise AssertionError(f"server did not become ready\n{server.log_tail()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEANCLOUD_APP_ID": APP_ID,
           "LEANCLOUD_APP_KEY": APP_KEY, "LEANCLOUD_APP_MASTER_KEY": MASTER_KEY}
    env.pop("LEANCLOUD_APP_HOOK_KEY", None)
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudqueue", "serve", "--host", "127.0.0.1", "--port",
             str(port), "--data-dir", str(workdir / "data")],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    running = Server(f"http://127.0.0.1:{port}", log, process)
    try:
        _wait_ready(running)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module", params=CREDENTIALS, ids=[c.name for c in CREDENTIALS])
def credentials(request: pytest.FixtureRequest) -> Credentials:
    given: Credentials = request.param
    return given


@pytest.fixture(scope="module")
def api_schema(server: Server, credentials: Credentials) -> Any:
    """The document as served, with this credential set's headers on every request."""
    config = schemathesis.Config.from_dict({
        "base-url": server.base_url,
        "seed": 20240601,
        "headers": credentials.headers,
        "request-timeout": 10,
        "generation": {
            "mode": "all",  # valid and invalid data
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            # the credentials are the headers above, never generated ones
            "with-security-parameters": False,
        },
        # The checks every response must pass; the rest (negative_data_rejection, …) are off.
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
    })
    return schemathesis.openapi.from_url(f"{server.base_url}{BASE}/openapi.json",
                                         config=config, timeout=10)


# The app's event stream never ends (its messages are tested in tests/adapters/test_console.py);
# every other operation is fuzzed.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(operation_id="streamAppEvents")


def _expected_refusal(case: Any, credentials: Credentials) -> int | None:
    if case.method.upper() != case.operation.method.upper():
        return None  # the coverage phase's unsupported-method probes: 405 before any auth
    need = NEEDS.get(case.operation.definition.raw.get("operationId", ""), 0)
    if credentials.role >= need:
        return None
    return 401 if credentials.role == 0 else 403


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: Any, credentials: Credentials,
                                              server: Server) -> None:
    try:
        response = case.call_and_validate()
        refusal = _expected_refusal(case, credentials)
        if refusal is not None:
            assert response.status_code == refusal, (
                f"{case.operation.label} with {credentials.name} credentials answered "
                f"{response.status_code}, not {refusal}: {response.text[:200]}")
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is the latter
        exc.add_note(server.log_tail())
        raise
