"""Schedule endpoints over loopback, and firings reaching a real function host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import Engine, FakeClock
from cloudqueue.adapters.auth import sign
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker
from cloudqueue.testing import settle
from tests.adapters.function_host import FunctionHost, ok
from tests.adapters.test_http_api import A, app_role, master
from tests.waiting import until

BASE = "/1.1/engine/cloud-queue/schedules"

T0 = 1_700_000_000_000

# the queue's test client, the function host its tasks reach, the queue
Setup = tuple[TestClient[web.Request, web.Application], FunctionHost, Engine]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    host = FunctionHost(A.app_id, A.master_key, A.hook_key)
    host_server = TestServer(host.app, host="127.0.0.1")
    await host_server.start_server()
    clock = FakeClock(T0)  # the queue's time: it moves only when a test moves it
    engine = Engine(data_dir=tmp_path / "q", concurrency=4, timezone="Asia/Shanghai",
                    clock=clock,
                    invoker=HttpInvoker(str(host_server.make_url("")).rstrip("/"), A,
                                        clock=clock))
    client = TestClient(TestServer(create_app({A.app_id: QueueApp(A, engine)}),
                                   host="127.0.0.1"))
    await client.start_server()
    yield client, host, engine
    await client.close()
    await host_server.close()


async def test_create_show_list_pause_resume_delete(setup: Setup) -> None:
    client, _, _ = setup
    body = {"function": "report", "params": {"k": 1}, "cron": "0 30 10-13 ? * WED,FRI",
            "attempts": 3, "deliveryMode": "atMostOnce"}
    created = await (await client.put(f"{BASE}/nightly", json=body, headers=master())).json()
    assert (created["name"], created["timezone"], created["attempts"]) == (
        "nightly", "Asia/Shanghai", 3)
    assert created["deliveryMode"] == "atMostOnce" and len(created["nextFireTimes"]) == 5
    shown = await (await client.get(f"{BASE}/nightly?count=8", headers=master())).json()
    assert len(shown["nextFireTimes"]) == 8
    listed = await (await client.get(BASE, headers=master())).json()
    assert [s["name"] for s in listed["results"]] == ["nightly"]
    paused = await (await client.post(f"{BASE}/nightly/pause", headers=master())).json()
    assert paused["paused"] is True and paused["nextFireTimes"] == []
    resumed = await (await client.post(f"{BASE}/nightly/resume", headers=master())).json()
    assert resumed["paused"] is False and resumed["nextFireTimes"]
    deleted = await client.delete(f"{BASE}/nightly", headers=master())
    assert await deleted.json() == {"deleted": "nightly"}
    gone = await client.get(f"{BASE}/nightly", headers=master())
    assert gone.status == 404 and (await gone.json())["error"] == "Schedule 'nightly' not found"


async def test_preview_fires_exactly_as_described(setup: Setup) -> None:
    client, _, _ = setup
    cases = {
        "0 */5 * * * ?": ["2024-01-01T00:05:00.000Z", "2024-01-01T00:10:00.000Z"],
        "10 */5 * * * ?": ["2024-01-01T00:00:10.000Z", "2024-01-01T00:05:10.000Z"],
        "0 30 10-13 ? * WED,FRI": ["2024-01-03T10:30:00.000Z", "2024-01-03T11:30:00.000Z",
                                   "2024-01-03T12:30:00.000Z", "2024-01-03T13:30:00.000Z",
                                   "2024-01-05T10:30:00.000Z"],
        "0 */30 8-9 5,20 * ?": ["2024-01-05T08:00:00.000Z", "2024-01-05T08:30:00.000Z",
                                "2024-01-05T09:00:00.000Z", "2024-01-05T09:30:00.000Z",
                                "2024-01-20T08:00:00.000Z"],
    }
    for cron, expected in cases.items():
        response = await client.post(f"{BASE}/preview", headers=master(), json={
            "cron": cron, "timezone": "UTC", "from": "2024-01-01T00:00:00Z",
            "count": len(expected)})
        assert (await response.json())["fireTimes"] == expected, cron


@pytest.mark.parametrize(
    ("body", "message"),
    [({"function": "f", "cron": "0 0 12 ? * 8"}, "cron day-of-week"),
     ({"function": "f", "cron": "0 0 12 ? * 2", "interval": 5}, "exactly one of cron"),
     ({"function": "f", "interval": 1000, "timezone": "Nowhere/City"}, "timezone"),
     ({"function": "f", "interval": 1000, "uniqueId": "x"}, "uniqueId cannot be set"),
     ({"cron": "0 * * * * ?"}, "function must be a non-empty string")],
)
async def test_bad_schedules_get_400_naming_the_field(setup: Setup, body: dict[str, Any],
                                                      message: str) -> None:
    client, _, engine = setup
    response = await client.put(f"{BASE}/s1", json=body, headers=master())
    assert response.status == 400 and message in (await response.json())["error"]
    assert await engine.list_schedules() == []


async def test_schedules_need_the_master_key(setup: Setup) -> None:
    client, _, _ = setup
    assert (await client.get(BASE, headers=app_role())).status == 403
    assert (await client.get(BASE, headers={"X-LC-Id": A.app_id})).status == 401
    forged = {"X-LC-Id": A.app_id, "X-LC-Sign": sign(A.app_key, 1, master=True)}
    assert (await client.put(f"{BASE}/x", json={}, headers=forged)).status == 401


async def test_firings_reach_the_function_host_as_tasks(setup: Setup) -> None:
    client, host, engine = setup

    @host.define("beat")
    async def beat(params: Any, request: web.Request) -> web.Response:
        return ok(request.headers["X-CloudQueue-Unique-Id"])

    clock = engine.clock
    assert isinstance(clock, FakeClock)
    response = await client.put(f"{BASE}/beat", headers=master(),
                                json={"function": "beat", "params": {"n": 1}, "interval": 200})
    assert response.status == 200
    for firings in (1, 2, 3):
        clock.advance(199)
        await settle(engine)
        assert len(host.calls) == firings - 1
        clock.advance(1)
        await until(lambda n=firings: len(host.calls) == n, f"firing {firings}")  # type: ignore[misc]
    await client.delete(f"{BASE}/beat", headers=master())
    uids = [headers["X-CloudQueue-Unique-Id"] for _, _, headers in host.calls]
    assert all(u.startswith("cron:beat:") for u in uids)
    slots = [int(u.rsplit(":", 1)[1]) for u in uids]
    assert slots == [T0 + 200, T0 + 400, T0 + 600]  # consecutive slots, none skipped or doubled
    info = await (await client.get(f"/1.1/engine/cloud-queue/tasks/{uids[0]}",
                                   headers=app_role())).json()
    assert info["status"] == "success" and info["result"] == {"result": uids[0]}
    assert host.calls[0][1] == {"n": 1}


@pytest.mark.parametrize(("name", "body", "message"), [
    ("typo", {"function": "f", "interval": 1000, "timezon": "Asia/Shanghai"},
     "unknown schedule field 'timezon'"),
    ("..", {"function": "f", "interval": 1000}, "schedule name"),
])
async def test_misspelt_fields_and_dot_names_are_refused(setup: Setup, name: str,
                                                        body: dict[str, Any],
                                                        message: str) -> None:
    client, _, engine = setup
    response = await client.put(f"{BASE}/{name}", json=body, headers=master(),
                                allow_redirects=False)
    assert response.status in (400, 404)
    if response.status == 400:
        assert message in (await response.json())["error"]
    assert await engine.list_schedules() == []
