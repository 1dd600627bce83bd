"""QueueClient against the real REST server on 127.0.0.1 (and a tiny fake for answers the server
cannot give yet): options, the TaskInfo round trip, every error mapping, polling, no key leaks."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cloudqueue import Engine, RunContext, TaskState
from cloudqueue.adapters.client import (
    QueueClient,
    QueueUnavailableError,
    QuotaExceededError,
    UnexpectedResponseError,
    task_info_from_wire,
)
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.engine.core.errors import (
    ConfigError,
    CorruptionKind,
    DiskFullError,
    DuplicateTaskError,
    EngineClosedError,
    EngineError,
    ForbiddenError,
    InvalidTransitionError,
    LogCorruptError,
    LogPoisonedError,
    OutcomeUnknownError,
    StaleRunError,
    UnauthorizedError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.options import parse_options
from cloudqueue.engine.core.quotas import Quotas
from cloudqueue.engine.core.task import ABSENT, TaskInfo
from tests.adapters.conftest import Handler
from tests.adapters.serving import A, serving

TASKS = "/1.1/engine/cloud-queue/tasks"


@dataclass
class Server:
    url: str
    engine: Engine
    requests: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def client(self, **keys: Any) -> QueueClient:
        keys = keys or {"master_key": A.master_key}
        return QueueClient(self.url, keys.pop("app_id", A.app_id), **keys)

    async def until(self, uid: str, state: TaskState) -> None:
        deadline = time.monotonic() + 5
        while (await self.engine.get_task_info(uid)).state is not state:
            assert time.monotonic() < deadline, f"{uid} never reached {state}"
            await asyncio.sleep(0.005)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    engine = Engine(data_dir=tmp_path / A.app_id, concurrency=2, max_timeout_ms=60_000)
    srv = Server("", engine)

    @engine.define
    async def add(params: Any, ctx: RunContext) -> Any:
        return params["a"] + params["b"]

    @engine.define
    async def nothing(params: Any, ctx: RunContext) -> Any:
        return None

    @engine.define
    async def boom(params: Any, ctx: RunContext) -> Any:
        raise RuntimeError(f"boom on attempt {ctx.attempt}")

    @engine.define
    async def block(params: Any, ctx: RunContext) -> Any:
        await srv.release.wait()
        return "released"

    async with serving(engine, srv.requests) as url:
        srv.url = url
        yield srv
        srv.release.set()


@pytest.fixture
async def queue(server: Server) -> AsyncIterator[QueueClient]:
    async with server.client() as client:
        yield client




def answering(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)
    return handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ---------------------------------------------------------------------------- enqueue


async def test_enqueue_returns_the_unique_id_and_every_option_arrives(
        server: Server, queue: QueueClient) -> None:
    options = {"attempts": 3, "backoff": 1500, "delay": 60_000, "delivery_mode": "atMostOnce",
               "keep_result": 1000.0, "priority": 5, "timeout": 2000, "unique_id": "opts-1"}
    uid = await queue.enqueue("add", {"a": 1, "b": 2}, **options)
    assert uid == "opts-1"
    task = next(t for t in server.engine.core.tasks() if t.unique_id == uid)
    assert task.options == parse_options(options, wire=False)
    assert task.priority == 5 and task.params == {"a": 1, "b": 2}
    info = await queue.get_task_info(uid)
    # the delay holds it: queued, never started; attempts=3 is 4 runs
    assert (info.state, info.started_ms, info.attempt, info.max_runs) == (
        TaskState.QUEUED, None, 0, 4)
    assert info.function == "add" and info.result is ABSENT


async def test_enqueue_without_options_gets_a_uuid_and_the_server_defaults(
        server: Server, queue: QueueClient) -> None:
    uid = await queue.enqueue("add", {"a": 2, "b": 2})
    assert len(uid) == 36
    task = next(t for t in server.engine.core.tasks() if t.unique_id == uid)
    assert task.options == parse_options({}, wire=False)
    info = await queue.wait(uid, timeout=5000, poll_ms=10)
    assert info.result == {"result": 4} and info.return_value == 4


# ---------------------------------------------------------------------------- task info


async def test_task_info_round_trip_equals_the_servers_view(server: Server,
                                                            queue: QueueClient) -> None:
    ok = await queue.enqueue("add", {"a": 1, "b": 2})
    none = await queue.enqueue("nothing")
    failed = await queue.enqueue("boom", attempts=0)
    retrying = await queue.enqueue("boom", attempts=1, backoff=60_000)
    delayed = await queue.enqueue("add", delay=60_000)
    cancelled = await queue.enqueue("add", delay=60_000)
    await queue.cancel(cancelled)
    for uid in (ok, none):
        await server.until(uid, TaskState.SUCCESS)
    await server.until(failed, TaskState.FAILED)
    await server.until(retrying, TaskState.RETRY_WAIT)

    for uid in (ok, none, failed, retrying, delayed, cancelled):
        mine = await queue.get_task_info(uid)
        theirs = await server.engine.get_task_info(uid)
        assert mine == theirs, uid
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}{TASKS}/{uid}",
                                headers={"X-LC-Id": A.app_id, "X-LC-Key": A.app_key}) as r:
                assert mine.to_wire() == await r.json()

    info = await queue.get_task_info(ok)
    assert (info.status, info.result, info.error, info.attempt) == (
        "success", {"result": 3}, None, 1)
    assert (await queue.get_task_info(none)).result == {"result": None}
    info = await queue.get_task_info(failed)
    assert (info.status, info.result, info.error) == (
        "failed", ABSENT, "RuntimeError: boom on attempt 1")
    (run,) = info.runs
    assert (run.attempt, run.outcome, run.error) == (1, "failed", info.error)
    assert run.traceback is not None and run.traceback.endswith(f"\n{info.error}\n")
    info = await queue.get_task_info(retrying)
    assert info.state is TaskState.RETRY_WAIT and info.status == "queued"
    assert info.retry_at_ms is not None and info.finished_ms is None
    assert info.retry_at_ms - (info.started_ms or 0) >= 60_000
    assert (await queue.get_task_info(delayed)).result is ABSENT


async def test_unique_ids_with_url_special_characters_are_percent_encoded(
        queue: QueueClient) -> None:
    for uid in ("a+b&c=d;e:f@g,h$i!j'k(l)m*n", '[x]"<y>`|\\^~_.-'):
        assert await queue.enqueue("add", delay=60_000, unique_id=uid) == uid
        assert (await queue.get_task_info(uid)).unique_id == uid
        assert (await queue.cancel(uid)).state is TaskState.CANCELLED
    with pytest.raises(UnknownTaskError):
        await queue.get_task_info("a/b?c#d%20")


async def test_unique_ids_with_braces_can_be_read_back(queue: QueueClient) -> None:
    assert await queue.enqueue("add", delay=60_000, unique_id="a{b}") == "a{b}"
    assert (await queue.get_task_info("a{b}")).unique_id == "a{b}"


def test_a_plain_leancloud_task_info_without_extension_fields() -> None:
    info = task_info_from_wire({"uniqueId": "x", "status": "failed", "statusCode": 500,
                                "finishedAt": "2019-05-31T07:23:19.467Z", "error": "no"})
    assert info == TaskInfo("x", TaskState.FAILED, "", 0, 0, 0, None, 1559287399467, 500,
                            ABSENT, "no", None, None)
    assert task_info_from_wire({"uniqueId": "y", "status": "success", "result": None}
                               ).result is None
    # a state this client does not know yet (a newer server) falls back to status
    assert task_info_from_wire({"uniqueId": "z", "status": "queued", "state": "paused"}
                               ).state is TaskState.QUEUED
    with pytest.raises(UnexpectedResponseError):
        task_info_from_wire({"uniqueId": "z", "status": "weird"})
    with pytest.raises(UnexpectedResponseError):
        task_info_from_wire({"uniqueId": "z", "status": "queued", "createdAt": "yesterday"})


# ---------------------------------------------------------------------------- errors


async def test_a_held_unique_id_is_a_duplicate(queue: QueueClient) -> None:
    await queue.enqueue("add", delay=60_000, unique_id="dup")
    with pytest.raises(DuplicateTaskError) as caught:
        await queue.enqueue("add", unique_id="dup")
    assert (caught.value.unique_id, caught.value.status, caught.value.state) == (
        "dup", "queued", "queued")
    assert "already exists" in str(caught.value)


async def test_an_unknown_task(queue: QueueClient) -> None:
    with pytest.raises(UnknownTaskError) as caught:
        await queue.get_task_info("nope")
    assert caught.value.unique_id == "nope" and str(caught.value) == "Task 'nope' not found"
    with pytest.raises(UnknownTaskError):
        await queue.cancel("nope")


@pytest.mark.parametrize("call", [
    lambda q: q.enqueue("add", delivery="atMostOnce"),       # typo of delivery_mode
    lambda q: q.enqueue("add", deliveryMode="atMostOnce"),   # the wire spelling
    lambda q: q.enqueue("add", delay=-1),
    lambda q: q.enqueue("add", timeout=0.5),
    lambda q: q.enqueue("add", unique_id="a/b"),
    lambda q: q.enqueue("no such/function"),
    lambda q: q.enqueue("add", {"x": {1, 2}}),
    lambda q: q.list_tasks(state="done"),
    lambda q: q.list_tasks(limit=0),
])
async def test_bad_arguments_fail_locally_before_any_request(
        server: Server, queue: QueueClient, call: Callable[[QueueClient], Awaitable[Any]]
) -> None:
    with pytest.raises(ValidationError):
        await call(queue)
    assert server.requests == []
    await queue.enqueue("add", delay=60_000)
    assert server.requests == [f"POST {TASKS}"]


async def test_a_server_side_validation_error_keeps_the_servers_message(
        server: Server, queue: QueueClient) -> None:
    # 120 s passes the local validator (its limit is 600 s) but not this server (60 s)
    with pytest.raises(ValidationError) as caught:
        await queue.enqueue("add", timeout=120_000)
    assert str(caught.value).startswith("timeout 120000 ms is over this queue's maximum of "
                                        "60000 ms")
    assert caught.value.field == "timeout"
    assert server.requests == [f"POST {TASKS}"] and server.engine.core.tasks() == []


async def test_the_app_key_reads_but_cannot_enqueue_cancel_or_list(
        server: Server, queue: QueueClient) -> None:
    uid = await queue.enqueue("add", delay=60_000)
    async with server.client(app_key=A.app_key) as reader:
        assert (await reader.get_task_info(uid)).state is TaskState.QUEUED
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: reader.enqueue("add"), lambda: reader.cancel(uid), reader.list_tasks]
        for call in calls:
            with pytest.raises(ForbiddenError, match="master key"):
                await call()
    assert len(server.engine.core.tasks()) == 1


@pytest.mark.parametrize("keys", [
    {"master_key": "wrong-master"},
    {"app_key": "wrong-app-key"},
    {"app_key": A.master_key},                          # a master key is not an app key
    {"app_id": "appB", "master_key": A.master_key},
])
async def test_wrong_keys_are_unauthorized_and_never_shown(server: Server,
                                                           keys: dict[str, str]) -> None:
    secret = next(v for k, v in keys.items() if k.endswith("_key"))
    async with server.client(**keys) as client:
        assert secret not in repr(client)
        for call in (lambda: client.get_task_info("x"), lambda: client.enqueue("add")):
            with pytest.raises(UnauthorizedError) as caught:
                await call()
            assert str(caught.value) == "Unauthorized."
            assert secret not in repr(caught.value)


async def test_429_is_a_quota_error_with_retry_after(fake: Any) -> None:
    url = await fake(answering(429, {"code": 429, "error": "over the rate quota"},
                               {"Retry-After": "3"}))
    async with QueueClient(url, A.app_id, master_key=A.master_key) as client:
        with pytest.raises(QuotaExceededError) as caught:
            await client.enqueue("add")
    error = caught.value
    assert (error.retry_after_s, error.server_code, str(error)) == (3.0, 429,
                                                                    "over the rate quota")
    assert error.http_status == 429 and isinstance(error, EngineError)


async def test_the_real_servers_quota_refusal(tmp_path: Path) -> None:
    engine = Engine(data_dir=tmp_path / "q", quotas=Quotas(held=1))
    test_server = TestServer(create_app({A.app_id: QueueApp(A, engine)}), host="127.0.0.1")
    await test_server.start_server()
    try:
        async with QueueClient(f"http://127.0.0.1:{test_server.port}", A.app_id,
                               master_key=A.master_key) as client:
            await client.enqueue("add", delay=60_000)
            with pytest.raises(QuotaExceededError) as caught:
                await client.enqueue("add", delay=60_000)
    finally:
        await test_server.close()
    assert (caught.value.quota, caught.value.server_code) == ("held", 429)
    assert caught.value.retry_after_s == 1.0     # the server's Retry-After: 1
    assert len(engine.core.tasks()) == 1


def in_30_s() -> dict[str, str]:
    return {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=30),
                                           usegmt=True)}


@pytest.mark.parametrize(("headers", "body", "expected"), [
    (in_30_s, {"code": 429, "error": "slow down"}, pytest.approx(30, abs=2)),
    (dict, {"code": 429, "error": "per day", "quota": "per_day", "retryAfterMs": 1500}, 1.5),
    (dict, {"code": 429, "error": "no hint"}, None),
])
async def test_429_retry_after_forms(fake: Any, headers: Callable[[], dict[str, str]],
                                     body: Any, expected: Any) -> None:
    url = await fake(answering(429, body, headers()))
    async with QueueClient(url, A.app_id, master_key=A.master_key) as client:
        with pytest.raises(QuotaExceededError) as caught:
            await client.get_task_info("x")
    assert caught.value.retry_after_s == expected
    assert caught.value.quota == body.get("quota")


@pytest.mark.parametrize(("status", "body", "error"), [
    (503, {"code": 503, "error": "the log could not be written (EIO); nothing more is "
                                 "acknowledged"}, LogPoisonedError),
    (503, {"code": 503, "error": "the engine is closing; it takes no new tasks"},
     EngineClosedError),
    (507, {"code": 507, "error": "the disk is full: this was not stored"}, DiskFullError),
    (502, "<html>Bad Gateway</html>", QueueUnavailableError),
    (500, {"code": 1, "error": "internal error"}, UnexpectedResponseError),
    (404, {"code": 404, "error": "Not Found"}, UnexpectedResponseError),  # enqueue: wrong URL
    (200, "not json", UnexpectedResponseError),
    (200, {"no": "uniqueId"}, UnexpectedResponseError),
])
async def test_other_answers_map_to_typed_errors(fake: Any, status: int, body: Any,
                                                 error: type[Exception]) -> None:
    url = await fake(answering(status, body))
    async with QueueClient(url, A.app_id, master_key=A.master_key) as client:
        with pytest.raises(error) as caught:
            await client.enqueue("add")
    if isinstance(body, dict) and "error" in body and status != 502:
        assert str(caught.value) == body["error"]


async def test_a_closed_engine_answers_engine_closed(server: Server, queue: QueueClient) -> None:
    await server.engine.close()
    with pytest.raises(EngineClosedError, match="takes no new tasks"):
        await queue.enqueue("add")


async def test_connection_refused_is_queue_unavailable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with QueueClient(url, A.app_id, master_key=A.master_key) as client:
        with pytest.raises(QueueUnavailableError) as caught:
            await client.enqueue("add")
    assert f"{url}{TASKS}" in str(caught.value)
    assert caught.value.url == f"{url}{TASKS}" and not caught.value.outcome_unknown
    assert A.master_key not in str(caught.value)


async def test_no_answer_in_time_is_unavailable_with_an_unknown_outcome(fake: Any) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 5)
        return web.json_response({"uniqueId": "late"})

    url = await fake(hang)
    try:
        async with QueueClient(url, A.app_id, master_key=A.master_key, timeout_ms=200) as client:
            with pytest.raises(QueueUnavailableError, match="same unique_id") as caught:
                await client.enqueue("add")
        assert caught.value.outcome_unknown
    finally:
        release.set()


# ---------------------------------------------------------------------------- cancel, list, wait


async def test_cancel(server: Server, queue: QueueClient) -> None:
    uid = await queue.enqueue("add", delay=60_000)
    info = await queue.cancel(uid)
    assert (info.state, info.status, info.error) == (TaskState.CANCELLED, "failed",
                                                     "the task was cancelled")
    assert info == await server.engine.get_task_info(uid)
    with pytest.raises(InvalidTransitionError) as caught:
        await queue.cancel(uid)
    assert (caught.value.task_id, caught.value.state) == (uid, "cancelled")

    running = await queue.enqueue("block")
    await server.until(running, TaskState.RUNNING)
    with pytest.raises(InvalidTransitionError, match="is running: cannot cancel") as caught:
        await queue.cancel(running)
    assert caught.value.state == "running"
    server.release.set()
    assert (await queue.wait(running, timeout=5000, poll_ms=10)).return_value == "released"


async def test_list_tasks(server: Server, queue: QueueClient) -> None:
    uids = [await queue.enqueue("add", delay=60_000, unique_id=f"t{i}") for i in range(3)]
    await queue.cancel("t1")
    listed, total = await queue.list_tasks()
    assert [t.unique_id for t in listed] == uids[::-1] and total == 3
    assert listed == [await server.engine.get_task_info(u) for u in uids[::-1]]
    assert [t.unique_id for t in (await queue.list_tasks(state="cancelled")).tasks] == ["t1"]
    assert [t.unique_id for t in (await queue.list_tasks(TaskState.QUEUED, limit=1)).tasks
            ] == ["t2"]


async def test_wait_returns_the_final_info_or_times_out_in_bounded_time(
        queue: QueueClient) -> None:
    uid = await queue.enqueue("add", {"a": 20, "b": 22})
    info = await queue.wait(uid, timeout=5000, poll_ms=10)
    assert (info.state, info.return_value) == (TaskState.SUCCESS, 42)

    delayed = await queue.enqueue("add", delay=60_000)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="last seen queued"):
        await queue.wait(delayed, timeout=300, poll_ms=50)
    assert time.monotonic() - started < 1.5
    with pytest.raises(UnknownTaskError):
        await queue.wait("nope", timeout=1000)


# ---------------------------------------------------------------------------- construction


async def test_construction_and_lifecycle() -> None:
    with pytest.raises(ConfigError):
        QueueClient("http://127.0.0.1:1", A.app_id)
    with pytest.raises(ConfigError):
        QueueClient("ftp://host", A.app_id, master_key="m")
    client = QueueClient("http://user:pw@127.0.0.1:1/", A.app_id, A.app_key, A.master_key)
    assert repr(client) == "QueueClient('http://127.0.0.1:1/', app_id='appA', role=master)"
    with pytest.raises(RuntimeError, match="async with"):
        await client.get_task_info("x")
    await client.close()


# ---------------------------------------------------------------------------- structured bodies


@pytest.mark.parametrize("error", [
    DuplicateTaskError("d1", "success", "success"),
    InvalidTransitionError("t1", "running", "cancel"),
    StaleRunError("t1", 3),
    OutcomeUnknownError("the fsync failed; retry with the same uniqueId", "u9"),
    LogPoisonedError("the log failed"),
    EngineClosedError("closing now"),      # no "the engine is" prefix: the type decides
    DiskFullError("the disk is full"),
    ForbiddenError("needs the master key"),
    LogCorruptError("wal-1.log", 41, "crc mismatch", CorruptionKind.CRC_MISMATCH),
], ids=lambda e: type(e).__name__)
async def test_a_structured_body_is_rebuilt_from_its_fields(fake: Any,
                                                            error: EngineError) -> None:
    url = await fake(answering(error.http_status, error.body()))
    async with QueueClient(url, A.app_id, master_key=A.master_key) as client:
        with pytest.raises(EngineError) as caught:
            await client.cancel("t1")
    rebuilt = caught.value
    assert type(rebuilt) is type(error) and str(rebuilt) == str(error)
    assert rebuilt.body() == error.body()


async def test_a_plain_leancloud_body_falls_back_to_the_code(fake: Any) -> None:
    url = await fake(answering(409, {"code": 409, "error": "conflict"}))
    async with QueueClient(url, A.app_id, master_key=A.master_key) as client:
        with pytest.raises(DuplicateTaskError) as dup:
            await client.enqueue("add", unique_id="x")
        with pytest.raises(InvalidTransitionError) as bad:
            await client.cancel("x")
    assert (dup.value.unique_id, dup.value.status, str(dup.value)) == ("x", "queued", "conflict")
    assert (bad.value.task_id, bad.value.trigger) == ("x", "cancel")


async def test_the_real_servers_conflicts_carry_their_fields(server: Server,
                                                             queue: QueueClient) -> None:
    uid = await queue.enqueue("add", delay=60_000, unique_id="held")
    await queue.cancel(uid)
    with pytest.raises(DuplicateTaskError) as dup:
        await queue.enqueue("add", unique_id="held")
    assert (dup.value.status, dup.value.state) == ("failed", "cancelled")
    with pytest.raises(InvalidTransitionError) as bad:
        await queue.cancel(uid)
    assert (bad.value.task_id, bad.value.state, bad.value.trigger) == (uid, "cancelled", "cancel")
