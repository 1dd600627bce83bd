"""What a run hands back must fit the log, or it once killed the log writer, and after a restart
the task ran and killed it again. Now the one place where an outcome becomes an event
(``EngineCore.run_succeeded`` / ``run_continued`` / ``run_failed``) checks it: a result or a
checkpoint the log cannot store fails the run as an unknown outcome (atMostOnce: final;
atLeastOnce: retried while its runs last, never forever), error texts are cut and made valid
Unicode, and every answer is valid JSON."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cloudqueue import Continue, Engine, FakeClock, RunContext, TaskState, ValidationError
from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.http_invoker.h1_answer import AnswerTooLarge, ResponseParser
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker
from cloudqueue.engine.core.batch_codec import encode_batch, encode_segment_header
from cloudqueue.engine.core.events import Event, RunStarted, RunSucceeded, TaskSubmitted
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.task import MAX_ERROR_CHARS, json_safe
from cloudqueue.engine.runtime.log_file import read_log, segment_name
from cloudqueue.testing import settle

T0 = 1_700_000_000_000
KEYS = AppKeys("app", "app-key-0123456789", "master-key-0123456789")
HUGE = 1 << 64

UNSTORABLE: list[tuple[Any, str]] = [
    (HUGE, "beyond the 64-bit range"),
    (-(HUGE * HUGE), "beyond the 64-bit range"),
    (float("nan"), "nan is not a JSON number"),
    ({"x": [float("inf")]}, "inf is not a JSON number"),
    ({1, 2}, "a set cannot be stored"),
    ({"text": "\ud800"}, "not valid Unicode"),
    ("x" * (5 * 1024 * 1024), "over the 4194304 bytes"),
]


async def _writer_lives(queue: Engine, data: Path) -> None:
    uid = await queue.enqueue("noop", delay=60_000)
    assert queue.store.failure is None
    assert uid in {e.unique_id for e in read_log(data)[0]}


@pytest.mark.parametrize(("value", "says"), UNSTORABLE, ids=lambda v: repr(v)[:20])
async def test_an_unstorable_return_value_fails_the_task_and_the_log_lives_on(
        tmp_path: Path, value: Any, says: str) -> None:
    calls = 0

    async def give(params: Any, ctx: RunContext) -> Any:
        nonlocal calls
        calls += 1
        return value

    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:
        queue.define("give")(give)
        uid = await queue.enqueue("give", delivery_mode="atMostOnce", attempts=5)
        info = await queue.wait(uid, timeout=10_000)
        await _writer_lives(queue, tmp_path)
    assert (info.state, calls) == (TaskState.FAILED, 1)
    assert info.error is not None
    assert info.error.startswith("the function's result cannot be stored: ") and says in info.error
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:  # a restart
        queue.define("give")(give)
        await settle(queue)
        assert (await queue.get_task_info(uid)).state is TaskState.FAILED
    assert calls == 1  # never run again


async def test_at_least_once_retries_an_unstorable_result_only_while_its_runs_last(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    calls = 0

    async def give(params: Any, ctx: RunContext) -> Any:
        nonlocal calls
        calls += 1
        return HUGE

    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        queue.define("give")(give)
        uid = await queue.enqueue("give", attempts=2, backoff=1_000)
        for _ in range(2):
            await settle(queue)
            clock.advance(1_000)
        info = await queue.wait(uid, timeout=10_000)
        await _writer_lives(queue, tmp_path)
    assert (info.state, info.attempt, calls) == (TaskState.FAILED, 3, 3)


async def test_an_unstorable_checkpoint_or_error_text_does_not_reach_the_writer(
        tmp_path: Path) -> None:
    async def checkpoint(params: Any, ctx: RunContext) -> Any:
        return Continue({"offset": HUGE})

    message = "bad \ud800 text " + "y" * (2 * MAX_ERROR_CHARS)

    async def raises(params: Any, ctx: RunContext) -> Any:
        raise RuntimeError(message)

    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:
        queue.define("checkpoint")(checkpoint)
        queue.define("raises")(raises)
        cp = await queue.wait(await queue.enqueue("checkpoint", delivery_mode="atMostOnce",
                                                  attempts=3), timeout=10_000)
        err = await queue.wait(await queue.enqueue("raises", attempts=0), timeout=10_000)
        await _writer_lives(queue, tmp_path)
    assert cp.state is TaskState.FAILED and cp.attempt == 1 and cp.slices == 0
    assert cp.error is not None and "checkpoint cannot be stored" in cp.error
    error = f"RuntimeError: {message}"
    assert err.error is not None and err.error.startswith("RuntimeError: bad ? text yyy")
    assert len(err.error) < MAX_ERROR_CHARS + 100
    assert err.error.endswith(f"... ({len(error) - MAX_ERROR_CHARS} more characters)")
    # its traceback keeps the function's frame, the message's line cut short
    trace = err.runs[-1].traceback
    assert trace is not None and len(trace) < 2_000 and "in raises" in trace
    assert "RuntimeError: bad ? text yyy" in trace


async def test_a_progress_report_the_log_cannot_store_is_refused_to_the_function(
        tmp_path: Path) -> None:
    async def report(params: Any, ctx: RunContext) -> str:
        try:
            await ctx.progress(message="half \udc00 way")
        except ValidationError as exc:
            return f"refused: {exc}"
        return "accepted"

    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:
        queue.define("report")(report)
        info = await queue.wait(await queue.enqueue("report"), timeout=10_000)
        await _writer_lives(queue, tmp_path)
    assert "not valid Unicode" in str(info.return_value)


# ---------------------------------------------------------------------------- the host


Host = Callable[[bytes], Awaitable[int]]


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    """A function host answering every call with ``body`` (a JSON 200) after reading it."""
    servers: list[asyncio.Server] = []

    async def start(body: bytes) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    await reader.readexactly(length)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("body", "says"), [
    (b'{"result": 18446744073709551616}', "beyond the 64-bit range"),
    (b'{"result": [1, NaN]}', "nan is not a JSON number"),
    (b'{"result": Infinity}', "inf is not a JSON number"),
    (b'{"result": "\\ud800"}', "not valid Unicode"),
    (b'{"result": "' + b"z" * 70_000 + b'"}', "over the 65536-byte cap"),
], ids=["int", "nan", "infinity", "surrogate", "too-large"])
async def test_an_unstorable_host_answer_fails_the_task_once(
        tmp_path: Path, host: Host, body: bytes, says: str) -> None:
    port = await host(body)
    invoker = HttpInvoker(f"http://127.0.0.1:{port}", KEYS, max_answer_bytes=64 * 1024)
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0), invoker=invoker) as queue:
        uid = await queue.enqueue("f", delivery_mode="atMostOnce", attempts=3)
        info = await queue.wait(uid, timeout=10_000)
        await _writer_lives(queue, tmp_path)
        wire = json.dumps(info.to_wire(), allow_nan=False)
    assert (info.state, invoker.calls) == (TaskState.FAILED, 1)
    assert info.error is not None and "result cannot be stored" in info.error
    assert says in info.error and says in wire


def test_an_answer_over_the_cap_is_refused_while_it_is_read() -> None:
    parser = ResponseParser(head_only=False, max_body=1_000)
    with pytest.raises(AnswerTooLarge, match="Content-Length 1073741824"):
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
    parser = ResponseParser(head_only=False, max_body=1_000)
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    parser.feed(b"200\r\n" + b"a" * 0x200 + b"\r\n")  # 512 bytes: within the cap
    with pytest.raises(AnswerTooLarge, match="1024\\+ bytes"):
        parser.feed(b"200\r\n")  # the next 512 would pass it: refused before they arrive
    parser = ResponseParser(head_only=False, max_body=1_000)
    parser.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"b" * 1_000)
    with pytest.raises(AnswerTooLarge):
        parser.feed(b"b")


# ---------------------------------------------------------------------------- JSON answers


def test_answers_are_valid_json_even_for_a_non_finite_value_stored_before() -> None:
    value = {"result": {"a": [1.5, float("nan"), {"b": float("-inf")}], "c": "d"}}
    assert json_safe(value) == {"result": {"a": [1.5, None, {"b": None}], "c": "d"}}
    clean = {"result": [1, 2.5, "x"]}
    assert json_safe(clean) is clean  # nothing to replace: no copy
    assert json_safe(math.inf) is None


async def test_a_logged_nan_result_replays_into_valid_json(tmp_path: Path) -> None:
    options = TaskOptions()
    events: list[Event] = [TaskSubmitted(1, T0, "old", "f", {}, options, T0),
                           RunStarted(2, T0, "old", 1),
                           RunSucceeded(3, T0 + 5, "old", 2, {"result": float("nan")}, 200)]
    tmp_path.mkdir(exist_ok=True)
    header = encode_segment_header(1, 0)
    (tmp_path / segment_name(1)).write_bytes(
        header + encode_batch(events, len(header), len(header)))
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0 + 10)) as queue:
        info = await queue.get_task_info("old")
    assert json.loads(json.dumps(info.to_wire(), allow_nan=False))["result"] == {"result": None}
