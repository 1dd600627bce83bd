"""What `cloudqueue serve` logs and answers never shows a credential: a function host URL's
password, the master or app key, a read token in an EventSource URL."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cloudqueue.adapters.auth import AppKeys
from cloudqueue.config import check_function_host
from cloudqueue.engine.core.errors import ConfigError
from cloudqueue.server import AppConfig, ServeConfig, running
from tests.adapters.hostile import exchange, request

KEYS = AppKeys("appA", "app-key-SECRET-1", "master-key-SECRET-2")
PASSWORD = "host-password-SECRET-3"
TOKEN = f"4102444800000.{'ab' * 32}"  # a read token's shape
SECRETS = (KEYS.app_key, KEYS.master_key, PASSWORD, TOKEN)


async def test_no_credential_reaches_a_log_line_or_an_answer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = AppConfig(KEYS, function_host=f"http://queue:{PASSWORD}@127.0.0.1:9/")
    config = ServeConfig(port=0, data_dir=tmp_path, apps=(app,), gc_freeze_ms=0,
                         access_log=True)
    async with running(config) as server:
        answers = [
            await exchange(server.port, request(
                "GET", f"/1.1/engine/cloud-queue/tasks/t/events?app=appA&token={TOKEN}")),
            # credentials in a request aiohttp refuses to parse
            await exchange(server.port, b"GET / HTTP/1.1\r\nX-LC-Key: " + KEYS.master_key.encode()
                           + b",master\x01\r\n\r\n"),
            await exchange(server.port, b"GET / HTTP/1.1\r\nX-LC-Key: " + KEYS.master_key.encode()
                           + b"a" * 9000 + b"\r\n\r\n"),
            await exchange(server.port, request(
                "GET", "/1.1/engine/cloud-queue/tasks", headers=b"X-LC-Id: appA\r\nX-LC-Key: "
                + KEYS.master_key.encode() + b"\xff,master\r\n")),
        ]
    assert [a.status for a in answers] == [401, 400, 400, 400]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    shown = logged + "\n".join(str(a.body) for a in answers)
    assert [secret for secret in SECRETS if secret in shown] == []
    assert "app appA -> http://queue:***@127.0.0.1:9/ (concurrency 1)" in logged
    assert '"GET /1.1/engine/cloud-queue/tasks/t/events?app=appA&token=*** HTTP/1.1" 401' in logged


def test_a_bad_function_host_is_refused_without_showing_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        check_function_host(f"ftp://queue:{PASSWORD}@example.com", "apps[0].function_host")
    assert str(refused.value) == ("apps[0].function_host: function host "
                                  "ftp://queue:***@example.com is not an http:// or https:// "
                                  "URL (e.g. http://127.0.0.1:3000)")
