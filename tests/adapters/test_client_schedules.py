"""QueueClient's schedule methods against the real REST server on 127.0.0.1 (and a tiny fake for
answers the server does not give): the round trip, local validation, 404s, auth, previews."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cloudqueue import Engine, RunContext
from cloudqueue.adapters.client import QueueClient, UnexpectedResponseError
from cloudqueue.engine.core.errors import (
    ForbiddenError,
    UnauthorizedError,
    UnknownScheduleError,
    ValidationError,
)
from cloudqueue.engine.core.options import BackoffType, DeliveryMode
from cloudqueue.engine.core.schedules import ScheduleInfo
from tests.adapters.conftest import Handler
from tests.adapters.serving import A, serving

SCHEDULES = "/1.1/engine/cloud-queue/schedules"
EXPR = "0 30 10-13 ? * WED,FRI"
JAN_1_2024_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


@dataclass
class Server:
    url: str
    engine: Engine
    requests: list[str] = field(default_factory=list)
    ran: list[Any] = field(default_factory=list)

    def client(self, **keys: Any) -> QueueClient:
        keys = keys or {"master_key": A.master_key}
        return QueueClient(self.url, keys.pop("app_id", A.app_id), **keys)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # the app's default zone is not UTC, so a schedule sent without a zone shows it
    engine = Engine(data_dir=tmp_path / A.app_id, max_timeout_ms=60_000,
                    timezone="Asia/Shanghai")
    srv = Server("", engine)

    @engine.define
    async def report(params: Any, ctx: RunContext) -> Any:
        srv.ran.append(params)
        return None

    async with serving(engine, srv.requests) as url:
        srv.url = url
        yield srv


@pytest.fixture
async def queue(server: Server) -> AsyncIterator[QueueClient]:
    async with server.client() as client:
        yield client




async def wire(call: Awaitable[ScheduleInfo]) -> dict[str, Any]:
    """The schedule a call answers, as the server sent it."""
    return (await call).to_wire()


async def wires(call: Awaitable[list[ScheduleInfo]]) -> list[dict[str, Any]]:
    return [info.to_wire() for info in await call]


def answering(status: int, body: Any) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)
    return handler


# ---------------------------------------------------------------------------- round trip


async def test_set_sends_every_option_in_the_wire_spelling(server: Server,
                                                           queue: QueueClient) -> None:
    answer = await wire(queue.set_schedule(
        "nightly", "report", {"day": 1}, cron=EXPR, timezone="Europe/Berlin", attempts=3,
        backoff=2_000, delivery_mode="atMostOnce", timeout=30_000, keep_result=0))
    assert server.requests == [f"PUT {SCHEDULES}/nightly"]
    assert {k: v for k, v in answer.items() if k != "nextFireTimes"} == {
        "name": "nightly", "function": "report", "params": {"day": 1},
        "timezone": "Europe/Berlin", "paused": False, "cron": EXPR, "attempts": 3,
        "backoff": 2_000, "deliveryMode": "atMostOnce", "timeout": 30_000, "keepResult": 0}
    assert len(answer["nextFireTimes"]) == 5
    spec = (await server.engine.get_schedule("nightly")).spec
    assert (spec.function, spec.params, spec.cron, spec.timezone) == (
        "report", {"day": 1}, EXPR, "Europe/Berlin")
    assert spec.options.attempts == 3 and spec.options.backoff_ms == 2_000
    assert spec.options.delivery_mode is DeliveryMode.AT_MOST_ONCE
    assert spec.options.timeout_ms == 30_000 and spec.options.keep_result_ms == 0


async def test_a_schedules_exponential_backoff_goes_both_ways(server: Server,
                                                              queue: QueueClient) -> None:
    answer = await wire(queue.set_schedule("retrying", "report", interval=60_000,
                                           backoff=1_000, backoff_type="exponential",
                                           backoff_max=8_000))
    assert (answer["backoffType"], answer["backoffMax"]) == ("exponential", 8_000)
    options = (await queue.get_schedule("retrying")).spec.options
    assert (options.backoff_ms, options.backoff_type, options.backoff_max_ms) == (
        1_000, BackoffType.EXPONENTIAL, 8_000)
    assert (await server.engine.get_schedule("retrying")).spec.options == options


async def test_the_answer_is_the_servers_own_schedule_object(server: Server,
                                                             queue: QueueClient) -> None:
    answer = await wire(queue.set_schedule("tick", "report", interval=60_000))
    info = await server.engine.get_schedule("tick")
    assert answer == info.to_wire()
    assert await wire(queue.get_schedule("tick")) == info.to_wire()


async def test_without_a_timezone_the_servers_default_zone_applies(queue: QueueClient) -> None:
    answer = await wire(queue.set_schedule("nightly", "report", cron=EXPR))
    assert answer["timezone"] == "Asia/Shanghai"
    assert answer["params"] == {} and answer["paused"] is False
    # 10:30 in Shanghai is 02:30Z
    assert {iso[11:] for iso in answer["nextFireTimes"]} <= {
        "02:30:00.000Z", "03:30:00.000Z", "04:30:00.000Z", "05:30:00.000Z"}


async def test_an_interval_given_as_a_whole_float_is_sent_as_an_int(queue: QueueClient) -> None:
    answer = await wire(queue.set_schedule("tick", "report", interval=1_000.0))  # type: ignore[arg-type]
    assert answer["interval"] == 1_000 and isinstance(answer["interval"], int)


async def test_set_replaces_the_whole_schedule(queue: QueueClient) -> None:
    await queue.set_schedule("job", "report", cron=EXPR, attempts=5, paused=True)
    answer = await wire(queue.set_schedule("job", "other", interval=5_000))
    assert answer["function"] == "other" and answer["interval"] == 5_000
    assert "cron" not in answer and answer["attempts"] == 1 and answer["paused"] is False
    assert [s["name"] for s in await wires(queue.list_schedules())] == ["job"]


async def test_get_schedule_returns_the_asked_number_of_upcoming_times(
        queue: QueueClient) -> None:
    await queue.set_schedule("nightly", "report", cron=EXPR, timezone="UTC")
    for upcoming in (1, 7, 100):
        answer = await wire(queue.get_schedule("nightly", upcoming))
        times = [ms(t.rstrip("Z")) for t in answer["nextFireTimes"]]
        assert len(times) == upcoming and times == sorted(set(times))
    default = await wire(queue.get_schedule("nightly"))
    assert len(default["nextFireTimes"]) == 5


async def test_list_is_sorted_by_name_with_one_upcoming_time_each(
        server: Server, queue: QueueClient) -> None:
    assert await queue.list_schedules() == []
    for name in ("zeta", "alpha", "mid"):
        await queue.set_schedule(name, "report", interval=3_600_000)
    listed = await wires(queue.list_schedules())
    assert [s["name"] for s in listed] == ["alpha", "mid", "zeta"]
    assert all(len(s["nextFireTimes"]) == 1 for s in listed)
    assert listed == [i.to_wire() for i in await server.engine.list_schedules()]


async def test_pause_and_resume(server: Server, queue: QueueClient) -> None:
    await queue.set_schedule("nightly", "report", cron=EXPR)
    paused = await wire(queue.pause_schedule("nightly"))
    assert paused["paused"] is True and paused["nextFireTimes"] == []
    assert (await server.engine.get_schedule("nightly")).spec.paused
    assert (await wire(queue.get_schedule("nightly")))["paused"] is True
    resumed = await wire(queue.resume_schedule("nightly"))
    assert resumed["paused"] is False and len(resumed["nextFireTimes"]) == 5
    assert server.requests[-3:] == [f"POST {SCHEDULES}/nightly/pause",
                                    f"GET {SCHEDULES}/nightly",
                                    f"POST {SCHEDULES}/nightly/resume"]


async def test_created_paused(queue: QueueClient) -> None:
    answer = await wire(queue.set_schedule("later", "report", cron=EXPR, paused=True))
    assert answer["paused"] is True and answer["nextFireTimes"] == []


async def test_delete(server: Server, queue: QueueClient) -> None:
    await queue.set_schedule("nightly", "report", cron=EXPR)
    await queue.delete_schedule("nightly")  # returns nothing: its type says so
    assert server.requests[-1] == f"DELETE {SCHEDULES}/nightly"
    assert await queue.list_schedules() == []
    with pytest.raises(UnknownScheduleError):
        await queue.get_schedule("nightly")


async def test_every_allowed_name_character_round_trips(queue: QueueClient) -> None:
    for name in ("a.b~c_d-E9", "x" * 64, "preview", "..."):
        await queue.set_schedule(name, "report", interval=3_600_000, paused=True)
        assert (await wire(queue.get_schedule(name)))["name"] == name
        assert (await wire(queue.pause_schedule(name)))["name"] == name
        await queue.delete_schedule(name)
    assert await queue.list_schedules() == []
    with pytest.raises(ValidationError, match="schedule name"):  # rewritten by proxies
        await queue.set_schedule("..", "report", interval=3_600_000)


async def test_an_interval_schedule_fires_tasks(server: Server, queue: QueueClient) -> None:
    await queue.set_schedule("fast", "report", {"n": 1}, interval=50)
    deadline = time.monotonic() + 10
    while not server.ran:
        assert time.monotonic() < deadline, "the schedule never fired"
        await asyncio.sleep(0.02)
    await queue.delete_schedule("fast")
    assert server.ran[0] == {"n": 1}
    fired = [t for t in (await queue.list_tasks()).tasks if t.unique_id.startswith("cron:fast:")]
    assert fired and all(t.function == "report" and t.schedule == "fast" for t in fired)
    # a firing's info through the client is the server's own, schedule name included
    for info in fired[:3]:
        final = await queue.wait(info.unique_id, timeout=10_000, poll_ms=10)
        assert final == await server.engine.get_task_info(info.unique_id)
        assert final.schedule == "fast" and final.status == "success"
    assert await server.engine.list_schedules() == []


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call", [
    lambda q: q.set_schedule("bad name", "report", cron=EXPR),
    lambda q: q.set_schedule("x" * 65, "report", cron=EXPR),
    lambda q: q.set_schedule("s", "report"),
    lambda q: q.set_schedule("s", "report", cron=EXPR, interval=1_000),
    lambda q: q.set_schedule("s", "report", cron="0 0 12 1 * 2"),
    lambda q: q.set_schedule("s", "report", cron="* * * *"),
    lambda q: q.set_schedule("s", "report", interval=0),
    lambda q: q.set_schedule("s", "report", interval=True),
    lambda q: q.set_schedule("s", "report", cron=EXPR, timezone="Mars/Olympus"),
    lambda q: q.set_schedule("s", "report", cron=EXPR, delay=1_000),
    lambda q: q.set_schedule("s", "report", cron=EXPR, unique_id="x"),
    lambda q: q.set_schedule("s", "report", cron=EXPR, priority=1),
    lambda q: q.set_schedule("s", "report", cron=EXPR, atempts=1),
    lambda q: q.set_schedule("s", "report", cron=EXPR, delivery_mode="sometimes"),
    lambda q: q.set_schedule("s", "report", cron=EXPR, timeout=600_001),
    lambda q: q.set_schedule("s", "report", cron=EXPR, paused="yes"),
    lambda q: q.set_schedule("s", "", cron=EXPR),
    lambda q: q.set_schedule("s", "report", {1: 2}, cron=EXPR),
    lambda q: q.get_schedule("a/b"),
    lambda q: q.get_schedule("s", 0),
    lambda q: q.get_schedule("s", 101),
    lambda q: q.get_schedule("s", True),
    lambda q: q.pause_schedule(""),
    lambda q: q.resume_schedule("a%2Fb"),
    lambda q: q.delete_schedule(None),
    lambda q: q.preview_schedule(),
    lambda q: q.preview_schedule(cron=EXPR, interval=1_000),
    lambda q: q.preview_schedule(cron="0 0 0 31 2 ?"),
    lambda q: q.preview_schedule(interval=-1),
    lambda q: q.preview_schedule(cron=EXPR, timezone="localtime"),
    lambda q: q.preview_schedule(cron=EXPR, count=0),
    lambda q: q.preview_schedule(cron=EXPR, count=1001),
    lambda q: q.preview_schedule(cron=EXPR, from_ms=1.5),
    lambda q: q.preview_schedule(cron=EXPR, from_ms=10**20),
])
async def test_bad_arguments_fail_locally_before_any_request(
        server: Server, queue: QueueClient, call: Callable[[QueueClient], Awaitable[Any]]) -> None:
    with pytest.raises(ValidationError):
        await call(queue)
    assert server.requests == []


async def test_a_server_side_validation_error_keeps_the_servers_message(
        server: Server, queue: QueueClient) -> None:
    # 60 s is this server's max timeout; the client only knows the default bound (600 s)
    with pytest.raises(ValidationError, match="timeout") as caught:
        await queue.set_schedule("slow", "report", cron=EXPR, timeout=120_000)
    assert caught.value.field == "timeout"
    assert server.requests == [f"PUT {SCHEDULES}/slow"]
    assert await server.engine.list_schedules() == []


@pytest.mark.parametrize("call", [
    lambda q: q.get_schedule("nope"),
    lambda q: q.pause_schedule("nope"),
    lambda q: q.resume_schedule("nope"),
    lambda q: q.delete_schedule("nope"),
])
async def test_an_unknown_schedule(queue: QueueClient,
                                   call: Callable[[QueueClient], Awaitable[Any]]) -> None:
    with pytest.raises(UnknownScheduleError, match="Schedule 'nope' not found") as caught:
        await call(queue)
    assert caught.value.name == "nope" and caught.value.code == 404


async def test_the_app_key_cannot_touch_schedules(server: Server) -> None:
    await server.engine.set_schedule("nightly", "report", cron=EXPR)
    calls: list[Callable[[QueueClient], Awaitable[Any]]] = [
        lambda q: q.set_schedule("other", "report", cron=EXPR),
        lambda q: q.get_schedule("nightly"),
        lambda q: q.list_schedules(),
        lambda q: q.pause_schedule("nightly"),
        lambda q: q.resume_schedule("nightly"),
        lambda q: q.delete_schedule("nightly"),
        lambda q: q.preview_schedule(cron=EXPR),
    ]
    async with server.client(app_key=A.app_key) as reader:
        for call in calls:
            with pytest.raises(ForbiddenError, match="master key"):
                await call(reader)
    assert [s.spec.name for s in await server.engine.list_schedules()] == ["nightly"]
    assert not (await server.engine.get_schedule("nightly")).spec.paused


async def test_wrong_keys_are_unauthorized_and_never_shown(server: Server) -> None:
    secret = "not-the-master-key-5555"
    for client in (server.client(master_key=secret),
                   server.client(app_id="nobody", master_key=A.master_key)):
        async with client as queue:
            for call in (queue.list_schedules(), queue.get_schedule("x"),
                         queue.set_schedule("x", "report", cron=EXPR),
                         queue.preview_schedule(cron=EXPR)):
                with pytest.raises(UnauthorizedError) as caught:
                    await call
                assert secret not in str(caught.value) and A.master_key not in str(caught.value)
    assert await server.engine.list_schedules() == []


async def test_a_server_without_schedule_endpoints_is_not_an_unknown_schedule(
        fake: Any) -> None:
    url = await fake(answering(404, {"code": 404, "error": "Not Found"}))
    async with QueueClient(url, "app", master_key="m") as queue:
        for call in (queue.get_schedule("x"), queue.delete_schedule("x"),
                     queue.list_schedules(), queue.preview_schedule(cron=EXPR)):
            with pytest.raises(UnexpectedResponseError) as caught:
                await call
            assert not isinstance(caught.value, UnknownScheduleError)
            assert caught.value.status == 404


@pytest.mark.parametrize("body", [{"fireTimes": "soon"}, {"fireTimes": [1]},
                                  {"fireTimes": ["tomorrow"]}, {"results": []}, []])
async def test_a_malformed_preview_answer(fake: Any, body: Any) -> None:
    url = await fake(answering(200, body))
    async with QueueClient(url, "app", master_key="m") as queue:
        with pytest.raises(UnexpectedResponseError):
            await queue.preview_schedule(cron=EXPR)


@pytest.mark.parametrize("body", [{"results": "x"}, {"results": [1]}, [], {"fireTimes": []}])
async def test_a_malformed_list_answer(fake: Any, body: Any) -> None:
    url = await fake(answering(200, body))
    async with QueueClient(url, "app", master_key="m") as queue:
        with pytest.raises(UnexpectedResponseError):
            await queue.list_schedules()


async def test_a_schedule_answer_that_is_not_an_object(fake: Any) -> None:
    url = await fake(answering(200, ["nightly"]))
    async with QueueClient(url, "app", master_key="m") as queue:
        with pytest.raises(UnexpectedResponseError):
            await queue.get_schedule("nightly")


# ---------------------------------------------------------------------------- preview


async def test_preview_exact_times_in_utc(server: Server, queue: QueueClient) -> None:
    times = await queue.preview_schedule(cron=EXPR, from_ms=JAN_1_2024_MS, count=6)
    assert times == [ms("2024-01-03T10:30:00"), ms("2024-01-03T11:30:00"),
                     ms("2024-01-03T12:30:00"), ms("2024-01-03T13:30:00"),
                     ms("2024-01-05T10:30:00"), ms("2024-01-05T11:30:00")]
    assert server.requests == [f"POST {SCHEDULES}/preview"]


async def test_preview_in_a_zone_and_the_servers_default_zone(queue: QueueClient) -> None:
    shanghai = [ms("2024-01-03T02:30:00"), ms("2024-01-03T03:30:00")]
    assert await queue.preview_schedule(cron=EXPR, timezone="Asia/Shanghai",
                                        from_ms=JAN_1_2024_MS, count=2) == shanghai
    # None: no zone sent, the app's default (Asia/Shanghai here) applies
    assert await queue.preview_schedule(cron=EXPR, timezone=None, from_ms=JAN_1_2024_MS,
                                        count=2) == shanghai


async def test_preview_of_an_interval_counts_from_the_start(queue: QueueClient) -> None:
    start = JAN_1_2024_MS + 1
    assert await queue.preview_schedule(interval=60_000, from_ms=start, count=3) == [
        start + 60_000, start + 120_000, start + 180_000]


async def test_preview_defaults_to_five_times_after_now(queue: QueueClient) -> None:
    before = int(time.time() * 1000)
    times = await queue.preview_schedule(cron="*/2 * * * * ?")
    assert len(times) == 5 and times == sorted(set(times)) and times[0] > before
    assert all(t % 2_000 == 0 for t in times)


async def test_preview_count_up_to_a_thousand(queue: QueueClient) -> None:
    times = await queue.preview_schedule(cron="0 * * * * ?", from_ms=JAN_1_2024_MS, count=1000)
    assert times == [JAN_1_2024_MS + 60_000 * k for k in range(1, 1001)]
