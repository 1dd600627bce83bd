"""The operator's views the dashboard reads: the viewer token (read-only), the apps a login
covers, the overview (counts kept as the queue works, the last minutes' points on the clock),
cursor-paged listing with server-side filters, task detail (params, options, why a task waits,
the operator actions on it, kept across a restart and a compaction), the app-wide event stream,
and firing a schedule now."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import cloudqueue
from cloudqueue import Engine, FakeClock, RunContext, TaskState
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.engine.core.task import iso_ms
from tests.adapters.test_http_api import T0, A, B, app_role, master
from tests.adapters.test_operator_actions import call, enqueue

OPERATOR = "operator-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef00"
BASE = "/1.1/engine/cloud-queue"
Client = TestClient[web.Request, web.Application]


def bearer(token: str, app_id: str = A.app_id, via: str | None = None) -> dict[str, str]:
    headers = {"X-LC-Id": app_id, "Authorization": f"Bearer {token}"}
    return headers if via is None else {**headers, "X-CloudQueue-Actor": via}


class Gate:
    """Runs of ``held`` wait here until the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.started = 0


def new_engine(data_dir: Path, clock: FakeClock, gate: Gate, concurrency: int = 2) -> Engine:
    engine = Engine(data_dir=data_dir, clock=clock, concurrency=concurrency)

    async def work(params: Any, run: RunContext) -> Any:
        if params.get("fail"):
            raise KeyError("missing thing")
        return params.get("n")

    async def held(params: Any, run: RunContext) -> Any:
        gate.started += 1
        await gate.open.wait()
        return "done"

    engine.define("work")(work)
    engine.define("other")(work)
    async def one_at_a_time(params: Any, run: RunContext) -> Any:
        return await held(params, run)

    engine.define("held")(held)
    engine.register(cloudqueue.define("one_at_a_time", concurrency=1)(one_at_a_time))
    return engine


@contextlib.asynccontextmanager
async def served(data_dir: Path, clock: FakeClock, gate: Gate | None = None,
                 concurrency: int = 2) -> AsyncIterator[tuple[Client, Engine]]:
    gate = gate or Gate()
    engine = new_engine(data_dir / "a", clock, gate, concurrency)
    other = Engine(data_dir=data_dir / "b", clock=clock)
    app = create_app({A.app_id: QueueApp(A, engine), B.app_id: QueueApp(B, other)},
                     operator_token=OPERATOR, viewer_token=VIEWER)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        try:
            yield client, engine
        finally:
            gate.open.set()


# ---------------------------------------------------------------- who may look, who may act


async def test_the_viewer_token_reads_everything_and_changes_nothing(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        uid = await enqueue(client, {"function": "work", "params": {"fail": True},
                                     "attempts": 0})
        await engine.wait(uid, timeout=10_000)
        await call(client, "PUT", "/schedules/nightly", master(),
                   {"function": "work", "cron": "0 0 3 * * *"})
        viewer = bearer(VIEWER)
        for path in ("/tasks", f"/tasks/{uid}", f"/tasks/{uid}/detail", "/overview",
                     "/audit", "/dispatch", "/schedules", "/schedules/nightly"):
            await call(client, "GET", path, viewer)
        refused = [("POST", "/tasks", {"function": "work"}),
                   ("POST", "/tasks/batch", {"tasks": [{"function": "work"}]}),
                   ("POST", f"/tasks/{uid}/retry", None), ("POST", f"/tasks/{uid}/cancel", None),
                   ("POST", "/tasks/purge", {"dryRun": True}), ("POST", "/pause", None),
                   ("PUT", "/schedules/x", {"function": "work", "interval": 1000}),
                   ("POST", "/schedules/nightly/run-now", None),
                   ("DELETE", "/schedules/nightly", None)]
        for method, path, body in refused:
            answer = await call(client, method, path, viewer, body, status=403)
            assert "read-only" in answer["error"] or "master key" in answer["error"], path
        # nothing changed: one task, failed; the schedule still there; dispatch running
        page = await call(client, "GET", "/tasks", master())
        assert [(t["uniqueId"], t["state"]) for t in page["results"]] == [(uid, "failed")]
        assert (await call(client, "GET", "/dispatch", master()))["paused"] is False
        assert (await call(client, "GET", "/audit", master()))["results"] == []


async def test_the_apps_a_login_covers(tmp_path: Path) -> None:
    async with served(tmp_path, FakeClock(T0)) as (client, _):
        assert await call(client, "GET", "/apps", {"Authorization": f"Bearer {OPERATOR}"}) == {
            "role": "operator", "apps": ["appA", "appB"]}
        assert await call(client, "GET", "/apps", {"Authorization": f"Bearer {VIEWER}"}) == {
            "role": "viewer", "apps": ["appA", "appB"]}
        assert await call(client, "GET", "/apps", master(B)) == {"role": "master",
                                                                 "apps": ["appB"]}
        await call(client, "GET", "/apps", app_role(), status=403)
        await call(client, "GET", "/apps", {"Authorization": "Bearer wrong-token-0123456789"},
                   status=401)


# ---------------------------------------------------------------- listing


async def test_pages_follow_the_cursor_newest_first_with_filters_on_the_server(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        await call(client, "POST", "/pause", master())  # nothing runs: states stay queued
        for n in range(7):
            await enqueue(client, {"function": "work" if n % 2 == 0 else "other",
                                   "params": {"n": n}, "uniqueId": f"t{n}"})
            clock.advance(1_000)
        seen, cursor, counts = [], None, []
        while True:
            query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
            page = await call(client, "GET", f"/tasks{query}", bearer(VIEWER))
            seen.append([t["uniqueId"] for t in page["results"]])
            counts.append(page["count"])
            cursor = page.get("next")
            if cursor is None:
                break
        assert seen == [["t6", "t5", "t4"], ["t3", "t2", "t1"], ["t0"]]
        assert counts == [7, 7, 7]  # kept by state: the same on every page

        by_function = await call(client, "GET", "/tasks?function=other&limit=2", master())
        assert [t["uniqueId"] for t in by_function["results"]] == ["t5", "t3"]
        assert "count" not in by_function  # a function in the filter: not counted
        rest = await call(client, "GET", f"/tasks?function=other&limit=2&cursor="
                                         f"{by_function['next']}", master())
        assert ([t["uniqueId"] for t in rest["results"]], rest.get("next")) == (["t1"], None)

        window = (f"/tasks?createdFrom={iso_ms(T0 + 2_000)}&createdTo={T0 + 5_000}"
                  "&state=queued")
        assert [t["uniqueId"] for t in (await call(client, "GET", window, master()))[
            "results"]] == ["t4", "t3", "t2"]

        bad = await call(client, "GET", "/tasks?cursor=abc", master(), status=400)
        assert "cursor" in bad["error"]
        typo = await call(client, "GET", "/tasks?functoin=work", master(), status=400)
        assert "did you mean 'function'" in typo["error"]
        client_page = await engine.list_tasks(limit=3, function="work")
        t2 = engine.core.task("t2")
        assert t2 is not None
        assert ([t.unique_id for t in client_page.tasks], client_page.total,
                client_page.next) == (["t6", "t4", "t2"], None, str(t2.seq))


# ---------------------------------------------------------------- detail and why it waits


async def test_detail_says_why_each_waiting_task_waits(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    gate = Gate()
    async with served(tmp_path, clock, gate, concurrency=2) as (client, engine):
        delayed = await enqueue(client, {"function": "work", "delay": 60_000})
        detail = await call(client, "GET", f"/tasks/{delayed}/detail", bearer(VIEWER))
        assert detail["waiting"] == {"reason": "delay", "until": iso_ms(T0 + 60_000),
                                     "message": "it was enqueued with a delay"}
        assert detail["params"] == {}
        assert detail["options"] == {"attempts": 1, "backoff": 60_000, "delay": 60_000,
                                     "deliveryMode": "atLeastOnce", "keepResult": 300_000,
                                     "priority": None, "timeout": 15_000,
                                     "backoffType": "fixed"}

        first = await enqueue(client, {"function": "one_at_a_time", "params": {"k": [1, 2]}})
        second = await enqueue(client, {"function": "one_at_a_time"})
        while gate.started < 1:
            await asyncio.sleep(0)
        detail = await call(client, "GET", f"/tasks/{second}/detail", master())
        assert detail["waiting"]["reason"] == "function_concurrency"
        assert detail["waiting"]["message"] == ("one_at_a_time already runs 1 tasks, its own "
                                                "limit")
        running = await call(client, "GET", f"/tasks/{first}/detail", master())
        assert (running["state"], running["params"], "waiting" in running) == (
            "running", {"k": [1, 2]}, False)

        await enqueue(client, {"function": "held"})  # the app's second slot
        while gate.started < 2:
            await asyncio.sleep(0)
        third = await enqueue(client, {"function": "work"})
        detail = await call(client, "GET", f"/tasks/{third}/detail", master())
        assert detail["waiting"] == {"reason": "concurrency", "message":
                                     "the app already runs 2 tasks, its run limit now"}

        await call(client, "POST", "/pause", master())
        detail = await call(client, "GET", f"/tasks/{third}/detail", master())
        assert detail["waiting"]["reason"] == "paused"
        await call(client, "POST", "/resume", master())
        gate.open.set()
        await engine.wait(third, timeout=10_000)

        failing = await enqueue(client, {"function": "work", "params": {"fail": True},
                                         "attempts": 2, "backoff": 30_000})
        while (await engine.get_task_info(failing)).state is not TaskState.RETRY_WAIT:
            await asyncio.sleep(0)
        detail = await call(client, "GET", f"/tasks/{failing}/detail", master())
        assert detail["waiting"] == {"reason": "backoff", "until": detail["retryAt"],
                                     "message": "run 1 of 3 failed; the next run waits for "
                                                "its backoff"}
        assert detail["runs"][0]["error"] == "KeyError: 'missing thing'"
        await call(client, "GET", "/tasks/nope/detail", master(), status=404)


async def test_operator_actions_stay_on_the_task_after_a_restart_and_a_compaction(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        uid = await enqueue(client, {"function": "work", "params": {"fail": True},
                                     "attempts": 0, "uniqueId": "broken"})
        await engine.wait(uid, timeout=10_000)
        clock.advance(1_000)
        await call(client, "POST", "/tasks/broken/retry", bearer(OPERATOR, via="dashboard"))
        await engine.wait(uid, timeout=10_000)
        clock.advance(1_000)
        await call(client, "POST", "/tasks/retry", master(), {"state": "failed"})
        await engine.wait(uid, timeout=10_000)
        expected = [{"at": iso_ms(T0 + 1_000), "action": "retry", "by": "operator",
                     "via": "dashboard"},
                    {"at": iso_ms(T0 + 2_000), "action": "retry", "by": "master",
                     "bulk": True}]
        assert (await call(client, "GET", "/tasks/broken", master()))["actions"] == expected
        assert [a.action for a in (await engine.get_task_info(uid)).actions] == ["retry"] * 2
    async with served(tmp_path, clock) as (client, engine):  # replayed from the log
        assert (await call(client, "GET", "/tasks/broken/detail", master()))[
            "actions"] == expected
        await engine.compact()
    async with served(tmp_path, clock) as (client, _):  # restored from the snapshot
        assert (await call(client, "GET", "/tasks/broken", master()))["actions"] == expected


# ---------------------------------------------------------------- the overview


async def test_the_overview_counts_by_state_and_draws_the_last_minutes(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        body = await call(client, "GET", "/overview", bearer(VIEWER))
        assert body["series"] == {"stepS": 5.0, "points": []}
        for n in range(10):
            await enqueue(client, {"function": "work", "params": {"fail": n < 2},
                                   "attempts": 0})
        await call(client, "POST", "/pause", master())
        await enqueue(client, {"function": "work"})
        while engine.core.tasks_by_state()[TaskState.QUEUED] != 1 or \
                engine.core.running_count:
            await asyncio.sleep(0.001)
        clock.advance(5_000)
        for _ in range(20):  # the sampler takes its sample on the loop's next turns
            await asyncio.sleep(0)
        body = await call(client, "GET", "/overview", bearer(VIEWER))
        assert body["tasks"] == {"queued": 1, "running": 0, "retry_wait": 0, "success": 8,
                                 "failed": 2, "cancelled": 0, "total": 11}
        assert (body["paused"], body["concurrency"], body["runLimit"], body["host"]) == (
            True, 2, 2, {"configured": False, "up": None})
        assert body["quotas"] == {"ratePerS": None, "perDay": None, "held": None,
                                  "today": 11, "unfinished": 1}
        [point] = body["series"]["points"]
        assert point["at"] == iso_ms(T0 + 5_000)
        assert (point["enqueuedPerS"], point["finishedPerS"], point["failedPerS"]) == (
            2.2, 2.0, 0.4)
        assert point["runP50Ms"] is not None and point["ackP99Ms"] is not None
        assert body["oldestReadyAgeMs"] == 5_000


# ---------------------------------------------------------------- the event stream


async def read_events(response: Any, wanted: int) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    kind = ""
    while len(found) < wanted:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: "):
            found.append((kind, json.loads(line[len("data: "):])))
    return found


async def test_the_event_stream_sends_the_overview_and_each_change(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        response = await client.get(f"{BASE}/events", headers=bearer(VIEWER))
        assert response.headers["Content-Type"] == "text/event-stream"
        [(kind, body)] = await read_events(response, 1)
        assert (kind, body["tasks"]["total"]) == ("overview", 0)
        uid = await enqueue(client, {"function": "work", "params": {"n": 4}})
        await engine.wait(uid, timeout=10_000)
        clock.advance(500)
        [(kind, body)] = await read_events(response, 1)
        assert kind == "tasks"
        assert [(t["uniqueId"], t["state"], t["result"]) for t in body["tasks"]] == [
            (uid, "success", {"result": 4})]
        assert (body["more"], "runs" in body["tasks"][0]) == (False, False)
        await call(client, "POST", "/tasks/purge", master(), {})
        clock.advance(500)
        [(kind, body)] = await read_events(response, 1)
        assert (kind, body["gone"], body["tasks"]) == ("tasks", [uid], [])
        clock.advance(1_000)  # two seconds since the first: the overview again
        [(kind, body)] = await read_events(response, 1)
        assert (kind, body["tasks"]["total"]) == ("overview", 0)
        response.close()
        await call(client, "GET", "/events", app_role(), status=403)


# ---------------------------------------------------------------- schedules


async def test_a_schedule_fired_now_is_a_task_and_an_audit_entry(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        await call(client, "PUT", "/schedules/nightly", master(),
                   {"function": "work", "params": {"n": 9}, "cron": "0 0 3 * * *"})
        fired = await call(client, "POST", "/schedules/nightly/run-now",
                           bearer(OPERATOR, via="dashboard"))
        uid = fired["uniqueId"]
        assert uid.startswith("cron:nightly:now:")
        assert (await engine.wait(uid, timeout=10_000)).result == {"result": 9}
        [entry] = (await call(client, "GET", "/audit", master()))["results"]
        assert (entry["action"], entry["by"], entry["via"], entry["uniqueId"]) == (
            "run_schedule", "operator", "dashboard", uid)
        schedule = await call(client, "GET", "/schedules/nightly", master())
        assert "lastFiredAt" not in schedule  # its slots are untouched
        await call(client, "POST", "/schedules/nope/run-now", master(), status=404)
