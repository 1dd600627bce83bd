"""How the HTTP invoker judges a call, against scripted servers on 127.0.0.1: only a request that
provably never reached the host is retried uncharged; a gateway's 502/503/504 that came after the
whole request was read is an unknown outcome (atMostOnce: failed at once, never run twice;
atLeastOnce: retried per its policy, charged). And the host URL's password never shows in a log
line or a stored error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from cloudqueue import Engine, FakeClock, TaskState
from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.client import QueueClient, QueueUnavailableError
from cloudqueue.adapters.http_invoker.h1 import ConnectFailed, HostClient
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker
from cloudqueue.adapters.http_invoker.outcome import (
    answer_too_large,
    broken_after_sending,
    classify_response,
    timed_out,
)
from cloudqueue.engine.core.events import FailureKind
from cloudqueue.engine.runtime.functions import Failed
from cloudqueue.testing import settle

T0 = 1_700_000_000_000
KEYS = AppKeys("app", "app-key-0123456789", "master-key-0123456789", "hook-key-0123456789")
PASSWORD = "pa55-w0rd-s3cret"


class Gateway:
    """A host behind a proxy: reads each whole request, then answers the next scripted status
    (``502 Bad Gateway`` with an HTML body) for function calls; pings get 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[bytes] = []  # every whole function request read
        self.pings = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)  # the whole request, then the answer
                if head.startswith(b"GET /__engine/1/ping"):
                    self.pings += 1
                    writer.write(_answer(200, b'{"runtime":"test"}', "application/json"))
                else:
                    self.calls.append(head + body)
                    status = self.statuses.pop(0) if self.statuses else 200
                    writer.write(_gateway(status) if status != 200 else
                                 _answer(200, b'{"result":"through"}', "application/json"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _answer(status: int, body: bytes, content_type: str) -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _gateway(status: int) -> bytes:
    return _answer(status, f"<html><h1>{status} gateway</h1></html>".encode(), "text/html")


@pytest.fixture
async def gateway() -> AsyncIterator[Callable[[list[int]], Awaitable[tuple[Gateway, int]]]]:
    servers: list[asyncio.Server] = []

    async def start(statuses: list[int]) -> tuple[Gateway, int]:
        scripted = Gateway(statuses)
        server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0)
        servers.append(server)
        return scripted, server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _update(queue: Engine, uid: str, kind: str) -> dict[str, Any]:
    """The task's next ``kind`` update (watched: no polling)."""
    async with asyncio.timeout(5):
        async for update, task in queue.watch(uid):
            if update == kind:
                return task.to_wire()
    raise AssertionError(f"no {kind!r} update")


async def _probed(invoker: HttpInvoker) -> None:
    """Wait for the invoker's probe (started by a gateway's answer) to find the host up."""
    probe = invoker._probe
    if probe is not None:
        await asyncio.wait_for(asyncio.shield(probe), 5)


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_gateway_answer_after_the_request_fails_an_at_most_once_task_unretried(
        gateway: Any, status: int) -> None:
    scripted, port = await gateway([status])
    invoker = HttpInvoker(f"http://127.0.0.1:{port}", KEYS, probe_min_ms=1)
    async with Engine(clock=FakeClock(T0), invoker=invoker) as queue:
        uid = await queue.enqueue("charge_card", {"cents": 500}, attempts=3, backoff=1_000,
                                  delivery_mode="atMostOnce")
        info = await queue.wait(uid, timeout=5000)
        await _probed(invoker)
        await settle(queue)
    assert len(scripted.calls) == 1  # the function was called once and never again
    assert (info.state, info.attempt, info.status_code) == (TaskState.FAILED, 1, status)
    assert info.error is not None
    assert "outcome is unknown" in info.error and "not retried" in info.error


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_gateway_answer_retries_an_at_least_once_task_charged(
        gateway: Any, status: int) -> None:
    scripted, port = await gateway([status])
    clock = FakeClock(T0)
    invoker = HttpInvoker(f"http://127.0.0.1:{port}", KEYS, probe_min_ms=1)
    async with Engine(clock=clock, invoker=invoker) as queue:
        uid = await queue.enqueue("resize", attempts=1, backoff=1_000)
        await _update(queue, uid, "retry")
        await _probed(invoker)
        waiting = await queue.get_task_info(uid)
        clock.advance(1_000)
        done = await queue.wait(uid, timeout=5000)
    assert (waiting.state, waiting.attempt, waiting.status_code) == (
        TaskState.RETRY_WAIT, 1, status)  # charged: the first of its two runs
    assert waiting.retry_at_ms == T0 + 1_000
    assert (done.state, done.attempt, done.result) == (
        TaskState.SUCCESS, 2, {"result": "through"})
    assert len(scripted.calls) == 2


async def test_refused_is_the_one_uncharged_outcome_even_at_most_once(
        unused_tcp_port: int) -> None:
    invoker = HttpInvoker(f"http://127.0.0.1:{unused_tcp_port}", KEYS, probe_min_ms=60_000)
    async with Engine(clock=FakeClock(T0), invoker=invoker) as queue:
        uid = await queue.enqueue("f", attempts=0, delivery_mode="atMostOnce")
        await settle(queue)
        info = await queue.get_task_info(uid)
        assert not invoker.available
    assert (info.state, info.attempt) == (TaskState.QUEUED, 0)


@pytest.mark.parametrize(("status", "body", "kind"), [
    (504, b"<html>gateway timeout</html>", FailureKind.UNKNOWN),
    (502, b'{"message":"no healthy upstream"}', FailureKind.UNKNOWN),
    (503, b'{"code":124,"error":"The request timed out on the server."}', FailureKind.UNKNOWN),
    (503, b'{"code":1,"error":"the function said no"}', FailureKind.ERROR),
    (500, b"<html>oops</html>", FailureKind.ERROR),
])
def test_no_answer_is_ever_unavailable(status: int, body: bytes, kind: FailureKind) -> None:
    outcome = classify_response(status, "application/json", body)
    assert isinstance(outcome, Failed) and (outcome.kind, outcome.status_code) == (kind, status)


@pytest.mark.parametrize(("status", "content_type", "body", "host_error"), [
    (503, "text/html", b"<html>busy</html>", True),  # a proxy's, or a server shedding load
    (502, "application/json", b'{"message":"no healthy upstream"}', True),
    (503, "application/json", b'{"code":124,"error":"The request timed out."}', True),
    (500, "text/plain", b"Internal Server Error", True),  # the server's page, not the function
    (429, "text/plain", b"Too Many Requests", True),
    (429, "application/json", b'{"code":429,"error":"Too many requests."}', True),
    (503, "application/json", b'{"code":1,"error":"the function said no"}', False),
    (500, "application/json", b'{"code":1,"error":"TypeError: x is undefined"}', False),
    (400, "application/json", b'{"code":1,"error":"bad params"}', False),
    (404, "text/plain", b"Not Found", False),
])
def test_the_host_failing_a_call_is_told_from_the_function_failing_it(
        status: int, content_type: str, body: bytes, host_error: bool) -> None:
    outcome = classify_response(status, content_type, body)
    assert isinstance(outcome, Failed) and outcome.host_error is host_error


def test_no_answer_in_time_and_a_broken_connection_are_the_hosts_failures() -> None:
    late, broken, large = timed_out(1_000), broken_after_sending("reset"), answer_too_large(10)
    assert isinstance(late, Failed) and isinstance(broken, Failed) and isinstance(large, Failed)
    assert late.host_error and broken.host_error
    assert not large.host_error  # the function answered: too much, but it did


async def test_a_gateways_503_backs_the_host_limit_off(gateway: Any) -> None:
    scripted, port = await gateway([503])
    clock = FakeClock(T0)
    invoker = HttpInvoker(f"http://127.0.0.1:{port}", KEYS, probe_min_ms=1)
    async with Engine(clock=clock, invoker=invoker, concurrency=4,
                      host_concurrency="adaptive") as queue:
        uid = await queue.enqueue("resize", attempts=1, backoff=1_000)
        await _update(queue, uid, "retry")
        await _probed(invoker)
        rule = queue.host_limit
        assert rule is not None and (rule.host_errors, rule.backoffs) == (1, 1)
        clock.advance(1_000)
        assert (await queue.wait(uid, timeout=5000)).status == "success"
    assert rule.host_errors == 1 and len(scripted.calls) == 2


async def test_a_connection_gone_before_the_request_is_written_is_connect_failed(
        gateway: Any) -> None:
    _, port = await gateway([])
    client = HostClient(f"http://127.0.0.1:{port}")
    try:
        conn = await client._connect()
        conn._abort()  # the host hung up before anything was written
        with pytest.raises(ConnectFailed, match="before the request was written"):
            await client._exchange(conn, b"GET / HTTP/1.1\r\n\r\n", False)
    finally:
        await client.close()


async def test_a_gateway_answer_to_the_client_may_have_created_the_task(fake: Any) -> None:
    async def bad_gateway(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=502, text="<html>Bad Gateway</html>")

    url = await fake(bad_gateway)
    async with QueueClient(url, KEYS.app_id, master_key=KEYS.master_key) as client:
        with pytest.raises(QueueUnavailableError, match="retry with the same unique_id") as info:
            await client.enqueue("f")
    assert info.value.outcome_unknown


# ---------------------------------------------------------------------------- secrets


async def test_the_host_password_never_shows_in_logs_or_stored_errors(
        gateway: Any, unused_tcp_port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, port = await gateway([502])
    refused = HttpInvoker(f"http://queue:{PASSWORD}@127.0.0.1:{unused_tcp_port}", KEYS,
                          probe_min_ms=60_000)
    async with Engine(clock=FakeClock(T0), invoker=refused) as queue:
        uid = await queue.enqueue("f", attempts=0)
        await _update(queue, uid, "queued")  # handed back uncharged: the host is down
    behind_gateway = HttpInvoker(f"http://queue:{PASSWORD}@127.0.0.1:{port}", KEYS,
                                 probe_min_ms=1)
    async with Engine(clock=FakeClock(T0), invoker=behind_gateway) as queue:
        uid = await queue.enqueue("f", attempts=0)
        error = (await queue.wait(uid, timeout=5000)).to_wire()["error"]
        await _probed(behind_gateway)
    assert caplog.text.count("queue:***@127.0.0.1") >= 3  # down twice, up once
    assert PASSWORD not in caplog.text and PASSWORD not in error


async def test_an_invoker_failure_quoting_a_secret_is_scrubbed(
        unused_tcp_port: int, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://queue:{PASSWORD}@127.0.0.1:{unused_tcp_port}"
    invoker = HttpInvoker(url, KEYS)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"bug while calling {url} with {KEYS.master_key}")

    async with Engine(clock=FakeClock(T0), invoker=invoker) as queue:
        assert invoker._client is not None
        invoker._client.request = broken  # type: ignore[method-assign]
        uid = await queue.enqueue("f", attempts=0)
        await settle(queue)
        error = (await queue.get_task_info(uid)).error or ""
    assert "bug while calling" in error and "bug while calling" in caplog.text
    for secret in (PASSWORD, KEYS.master_key):
        assert secret not in error and secret not in caplog.text


def test_a_bad_host_url_is_refused_without_showing_its_password() -> None:
    with pytest.raises(ValueError, match="must be an http") as info:
        HostClient(f"ftp://queue:{PASSWORD}@example.com/")
    assert PASSWORD not in str(info.value)
