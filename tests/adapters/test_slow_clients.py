"""Slow and idle clients cannot hold the server: headers and bodies have deadlines (408), idle
keep-alive connections close, connections are capped (more wait in the backlog), and a repeated
error is logged once per interval with a count. Small timeouts; raw sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from cloudqueue import Engine
from cloudqueue.adapters.http_api import stream
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.adapters.http_api.listener import Listener, bind
from cloudqueue.adapters.http_api.logs import RepeatFilter, rate_limit_logs
from cloudqueue.adapters.http_api.protocol import ConnectionCount
from cloudqueue.engine.runtime.clock import FakeClock
from cloudqueue.server import running
from tests.adapters.hostile import (
    KEYS,
    MASTER,
    TASKS,
    Answer,
    config,
    exchange,
    parse,
    request,
    serving,
)
from tests.waiting import turns, until

T0 = 1_700_000_000_000

SHORT_MS = 300  # every timeout under test
LIMITS: dict[str, Any] = {"header_timeout_ms": SHORT_MS, "body_timeout_ms": SHORT_MS,
                          "idle_timeout_ms": SHORT_MS}
# the server on a fake clock: its header and body timers are the clock's only deadlines
ON_THE_CLOCK = {**LIMITS, "adaptive_concurrency": False}


async def timed(coro: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


async def cut_off(clock: FakeClock, port: int, *parts: bytes) -> Answer:
    """Send ``parts``, then move the clock to 1 ms before the server's deadline for this
    connection (armed ``SHORT_MS`` after it began) and to the deadline: the server's answer."""
    answer = asyncio.ensure_future(exchange(port, *parts))
    await until(lambda: clock.next_deadline_ms() == T0 + SHORT_MS, "the connection's timer")
    clock.set(T0 + SHORT_MS - 1)
    await turns()
    assert not answer.done()
    clock.set(T0 + SHORT_MS)
    return await answer


async def test_half_a_header_line_then_silence_is_cut_off_with_a_408(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with serving(tmp_path, clock=clock, **ON_THE_CLOCK) as port:
        answer = await cut_off(clock, port, b"GET /__health/live HTTP/1.1\r\nHo")
    assert (answer.status, answer.body) == (408, {
        "code": 408, "error": "the request headers were not complete within 0.3 s"})


async def test_a_connection_that_never_sends_a_byte_is_cut_off_too(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with serving(tmp_path, clock=clock, **ON_THE_CLOCK) as port:
        answer = await cut_off(clock, port)
    assert answer.status == 408


async def test_a_body_that_stalls_is_answered_408_and_creates_nothing(tmp_path: Path) -> None:
    head = request("POST", TASKS, headers=MASTER + b"Content-Length: 100\r\n"
                   b"Expect: 100-continue\r\n")
    clock = FakeClock(T0)
    async with serving(tmp_path, clock=clock, **ON_THE_CLOCK) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        # the server has the headers (its body timer runs from now): it asks for the body
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        clock.set(T0 + SHORT_MS - 1)
        writer.write(b'{"function": "f", "uniq')
        await writer.drain()
        await turns()
        assert not reader.at_eof()
        clock.set(T0 + SHORT_MS)
        answer = parse(await asyncio.wait_for(reader.read(), 5))
        writer.close()
        listed = await exchange(port, request("GET", TASKS, headers=MASTER))
    assert (answer.status, answer.body) == (408, {
        "code": 408, "error": "the request body was not complete within 0.3 s"})
    assert answer.headers["Connection"] == "close"
    assert listed.body["count"] == 0


async def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, **LIMITS) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("GET", "/__health/live", close=False))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert await reader.readexactly(length) == b'{"status": "live"}'
        # aiohttp's own idle timer runs on the loop's time: a real wait on a real socket
        rest, took = await timed(asyncio.wait_for(reader.read(), 5))
        writer.close()
    assert rest == b"" and 0.25 < took < 2.0  # closed without a word: no request was pending


async def test_over_the_cap_a_client_waits_and_is_served_once_slow_ones_are_cut(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with running(config(tmp_path, max_connections=2, **ON_THE_CLOCK), clock) as server:
        stalled = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        for _reader, writer in stalled:
            writer.write(b"GET / HTTP/1.1\r\nHo")
        await until(lambda: server.connections.open == 2, "both slow clients accepted")
        good = asyncio.ensure_future(exchange(server.port, request("GET", "/__health/live")))
        clock.set(T0 + SHORT_MS - 1)
        await turns()
        assert not good.done() and server.connections.open == 2  # it waits in the backlog
        clock.set(T0 + SHORT_MS)  # the slow ones' header deadline
        cut = [parse(await reader.read()).status for reader, _writer in stalled]
        answer = await good
        for _reader, writer in stalled:
            writer.close()
    assert (answer.status, answer.body) == (200, {"status": "live"})
    assert cut == [408, 408]


async def test_an_idle_event_stream_gets_heartbeats_and_then_the_update(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    # (without metrics: no dashboard sampler waits on the clock beside the heartbeats)
    engine = Engine(data_dir=tmp_path / "q", clock=clock, metrics=False)
    enqueue = request("POST", TASKS, headers=MASTER,
                      body=b'{"function": "f", "delay": 3600000, "uniqueId": "watched"}')
    # the app starts and closes the engine
    server = TestServer(create_app({KEYS.app_id: QueueApp(KEYS, engine)}), host="127.0.0.1")
    await server.start_server()
    try:
        port = server.port
        assert port is not None
        assert (await exchange(port, enqueue)).status == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("GET", f"{TASKS}/watched/events", headers=MASTER))
        seen = await reader.readuntil(b"event: state\n")
        seen += await reader.readuntil(b"\n\n")
        every_ms = int(stream.HEARTBEAT_S * 1000)
        for beats in (1, 2):  # idle past two heartbeats, one every HEARTBEAT_S
            await until(lambda n=beats: clock.next_deadline_ms() == T0 + n * every_ms,  # type: ignore[misc]
                        f"heartbeat {beats} planned")
            clock.set(T0 + beats * every_ms)
            seen += await asyncio.wait_for(reader.readuntil(b": keep-alive\n\n"), 5)
            assert seen.count(b": keep-alive") == beats
        cancel = await exchange(port, request("POST", f"{TASKS}/watched/cancel", headers=MASTER))
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        await server.close()
    assert cancel.status == 200
    assert b"event: finished\n" in rest and b"keep-alive" not in rest


async def test_an_event_subscriber_that_never_reads_does_not_keep_others_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "HEARTBEAT_S", 0.001)
    monkeypatch.setattr(stream, "HEARTBEAT", b":" + b"x" * 65_536 + b"\n\n")  # fills buffers fast
    monkeypatch.setattr(stream, "WRITE_TIMEOUT_S", 0.2)  # a real socket's buffers filling up
    enqueue = request("POST", TASKS, headers=MASTER,
                      body=b'{"function": "f", "delay": 3600000, "uniqueId": "watched"}')
    async with serving(tmp_path, max_connections=1) as port:
        assert (await exchange(port, enqueue)).status == 200
        subscriber = socket.socket()
        subscriber.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        subscriber.connect(("127.0.0.1", port))
        subscriber.sendall(request("GET", f"{TASKS}/watched/events", headers=MASTER))
        good, took = await timed(exchange(port, request("GET", "/__health/live")))
        subscriber.close()
    assert (good.status, good.body) == (200, {"status": "live"})
    assert 0.2 < took < 3.0


async def test_many_malformed_requests_log_one_line(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with serving(tmp_path) as port:
        for _ in range(5):
            answer = await exchange(port, b"GARBAGE\r\n\r\n")
            assert answer.status == 400
    lines = [r.getMessage() for r in caplog.records if "malformed request" in r.getMessage()]
    assert lines == ["malformed request from 127.0.0.1: Invalid method encountered"]


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("cloudqueue.serve", level, __file__, 1, message, None, None)


def test_a_repeated_error_passes_once_an_interval_then_says_how_many_were_held() -> None:
    clock = FakeClock(100_000)
    repeat = RepeatFilter(10.0, clock)
    passed = []
    for step in range(25):  # one every second
        clock.set(100_000 + step * 1000)
        line = record("cannot accept connections: Too many open files")
        if repeat.filter(line):
            passed.append((step, line.getMessage()))
    assert passed == [
        (0, "cannot accept connections: Too many open files"),
        (10, "cannot accept connections: Too many open files [9 more like this in the 10 s "
             "before were not logged]"),
        (20, "cannot accept connections: Too many open files [9 more like this in the 10 s "
             "before were not logged]"),
    ]
    assert repeat.filter(record("another kind"))  # each kind has its own interval
    assert repeat.filter(record("startup line", logging.INFO))  # info passes unless marked
    assert repeat.filter(record("startup line", logging.INFO))


async def test_out_of_descriptors_pauses_accepting_and_logs_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    real_accept = loop.sock_accept
    failures = [OSError(errno.EMFILE, "Too many open files")] * 5

    async def sock_accept(sock: socket.socket) -> tuple[socket.socket, Any]:
        if failures:
            raise failures.pop()
        return await real_accept(sock)

    monkeypatch.setattr(loop, "sock_accept", sock_accept)
    accepted = asyncio.Event()

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set()
            transport.close()

    clock = FakeClock(T0, autojump_threshold_s=0)  # each pause passes as soon as nothing else runs
    with rate_limit_logs(10):
        listening = Listener(bind("127.0.0.1", 0), Accepted, ConnectionCount(10), clock)
        listening.start()
        _reader, writer = await asyncio.open_connection("127.0.0.1", listening.port)
        await asyncio.wait_for(accepted.wait(), 5)
        writer.close()
        await listening.close()
    assert clock.now_ms() == T0 + 5 * 500  # accepted after five pauses of RETRY_S
    lines = [r.getMessage() for r in caplog.records if r.name == "cloudqueue.serve"]
    assert lines == ["cannot accept connections: Too many open files (0 open); retrying in "
                     "0.5 s"]
