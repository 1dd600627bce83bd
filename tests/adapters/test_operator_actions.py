"""Operator actions over REST, with the app's master key and with the operator token: retry,
run now, cancel, pause and resume, bulk retry, cancel and purge by filter, the audit list; their
refusals as LeanCloud error bodies; and each one replayed after a restart (and a compaction)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import Engine, FakeClock, RunContext, TaskState
from cloudqueue.engine.core.task import iso_ms
from tests.adapters.test_http_api import T0, A, app_role, master

TOKEN = "operator-token-0123456789abcdef"
BASE = "/1.1/engine/cloud-queue"
Client = TestClient[web.Request, web.Application]


def operator(via: str | None = None) -> dict[str, str]:
    headers = {"X-LC-Id": A.app_id, "Authorization": f"Bearer {TOKEN}"}
    return headers if via is None else {**headers, "X-CloudQueue-Actor": via}


def new_engine(data_dir: Path, clock: FakeClock) -> Engine:
    engine = Engine(data_dir=data_dir, clock=clock, concurrency=2)

    async def work(params: Any, run: RunContext) -> Any:
        if params.get("fail"):
            raise RuntimeError("fails on purpose")
        return params.get("n")

    engine.define("work")(work)
    engine.define("other")(work)  # a second function, for filters
    return engine


@contextlib.asynccontextmanager
async def served(data_dir: Path, clock: FakeClock) -> AsyncIterator[tuple[Client, Engine]]:
    """A server for app A on ``data_dir`` (its engine starts and stops with it)."""
    from cloudqueue.adapters.http_api.app import QueueApp, create_app

    engine = new_engine(data_dir, clock)
    app = create_app({A.app_id: QueueApp(A, engine)}, operator_token=TOKEN)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, engine


async def call(client: Client, method: str, path: str, headers: dict[str, str],
               body: Any = None, status: int = 200) -> Any:
    response = await client.request(method, f"{BASE}{path}", headers=headers, json=body)
    answer = await response.json()
    assert response.status == status, answer
    return answer


async def enqueue(client: Client, body: dict[str, Any]) -> str:
    answer = await call(client, "POST", "/tasks", master(), body)
    unique_id: str = answer["uniqueId"]
    return unique_id


async def test_retry_and_run_now_with_the_master_key_and_the_operator_token(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        uid = await enqueue(client, {"function": "work", "params": {"fail": True},
                                     "attempts": 0, "uniqueId": "broken"})
        assert (await engine.wait(uid, timeout=10_000)).state is TaskState.FAILED
        retried = await call(client, "POST", "/tasks/broken/retry", master())
        assert (retried["state"], retried["attempt"], "error" in retried) == (
            "queued", 0, False)
        assert (await engine.wait(uid, timeout=10_000)).attempt == 1
        await call(client, "POST", "/tasks/broken/retry", operator(via="cli"))
        await engine.wait(uid, timeout=10_000)

        later = await enqueue(client, {"function": "work", "params": {"n": 7},
                                       "delay": 3_600_000, "uniqueId": "later"})
        ready = await call(client, "POST", f"/tasks/{later}/run-now", operator())
        assert ready["state"] == "queued"
        assert (await engine.wait(later, timeout=10_000)).return_value == 7

        audit = await call(client, "GET", "/audit?limit=3", operator())
        assert audit == {"results": [
            {"seq": audit["results"][0]["seq"], "at": iso_ms(T0), "action": "run_now",
             "by": "operator", "uniqueId": "later", "count": 1},
            {"seq": audit["results"][1]["seq"], "at": iso_ms(T0), "action": "retry",
             "by": "operator", "via": "cli", "uniqueId": "broken", "count": 1},
            {"seq": audit["results"][2]["seq"], "at": iso_ms(T0), "action": "retry",
             "by": "master", "uniqueId": "broken", "count": 1}]}


async def test_refusals_are_leancloud_error_bodies_naming_the_state(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        await enqueue(client, {"function": "work", "params": {"n": 1}, "uniqueId": "done"})
        await engine.wait("done", timeout=10_000)
        await enqueue(client, {"function": "work", "delay": 60_000, "uniqueId": "later"})
        body = await call(client, "POST", "/tasks/done/retry", master(), status=409)
        assert body == {"code": 409, "error": "Task 'done' is success: cannot retry it (it "
                        "succeeded: its result stands; enqueue it anew to run it again)",
                        "type": "invalid_transition", "uniqueId": "done", "state": "success",
                        "trigger": "retry"}
        body = await call(client, "POST", "/tasks/done/run-now", master(), status=409)
        assert (body["type"], body["state"], body["trigger"]) == (
            "invalid_transition", "success", "run_now")
        assert (await call(client, "POST", "/tasks/later/retry", master(), status=409)
                )["state"] == "queued"
        assert await call(client, "POST", "/tasks/nope/retry", master(), status=404) == {
            "code": 404, "error": "Task 'nope' not found"}
        for path in ("/tasks/later/retry", "/tasks/later/run-now", "/pause", "/tasks/purge"):
            forbidden = await call(client, "POST", path, app_role(), {}, status=403)
            assert forbidden["code"] == 119
            await call(client, "POST", path, {"X-LC-Id": A.app_id,
                                              "Authorization": "Bearer wrong-token-000000"},
                       {}, status=401)
        for path in ("/audit", "/dispatch"):
            assert (await call(client, "GET", path, app_role(), status=403))["code"] == 119
        bad_actor = await call(client, "POST", "/tasks/later/run-now",
                               {**master(), "X-CloudQueue-Actor": "two words"}, status=400)
        assert (bad_actor["code"], bad_actor["field"]) == (1, "X-CloudQueue-Actor")
        assert (await engine.get_task_info("later")).state is TaskState.QUEUED  # untouched
        assert (await call(client, "GET", "/audit?limit=0", master(), status=400)
                )["field"] == "limit"
        assert await call(client, "GET", "/audit", master()) == {"results": []}


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/tasks/retry", {"state": "queued"}, "state"),
    ("/tasks/cancel", {"state": ["queued", "running"]}, "state"),
    ("/tasks/purge", {"state": {"success": True}}, "state"),
    ("/tasks/purge", {"dryrun": True}, "dryrun"),
    ("/tasks/purge", {"dryRun": "yes"}, "dryRun"),
    ("/tasks/purge", {"limit": 10_001}, "limit"),
    ("/tasks/purge", {"limit": 0}, "limit"),
    ("/tasks/purge", {"createdFrom": "yesterday"}, "createdFrom"),
    ("/tasks/purge", {"createdTo": "2024-01-01T00:00:00"}, "createdTo"),
    ("/tasks/purge", {"createdTo": -5}, "createdTo"),
    ("/tasks/purge", {"function": "a/b"}, "function"),
])
async def test_a_bad_filter_is_a_400_naming_the_field(tmp_path: Path, path: str,
                                                      body: dict[str, Any], field: str) -> None:
    async with served(tmp_path, FakeClock(T0)) as (client, _):
        refused = await call(client, "POST", path, master(), body, status=400)
        assert (refused["code"], refused["type"], refused["field"]) == (1, "validation", field)


async def test_bulk_actions_by_filter_count_first_then_act_in_one_write(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        await call(client, "POST", "/pause", operator())
        for i in range(5):
            clock.set(T0 + 1_000 * i)
            await enqueue(client, {"function": "work" if i < 4 else "other",
                                   "params": {"n": i, "fail": i == 4}, "uniqueId": f"t{i}",
                                   "attempts": 0})
        second = iso_ms(T0 + 1_000)
        body = {"function": "work", "createdFrom": second, "dryRun": True}
        assert await call(client, "POST", "/tasks/cancel", operator(), body) == {
            "count": 3, "matched": 3, "dryRun": True}
        durable = engine.store.durable_seq
        answer = await call(client, "POST", "/tasks/cancel", operator("cli"),
                            {**body, "dryRun": False, "limit": 2})
        assert answer == {"count": 2, "matched": 3, "dryRun": False}
        assert engine.store.durable_seq == durable + 3  # the action and two cancels
        states = {uid: (await engine.get_task_info(uid)).state for uid in
                  ("t0", "t1", "t2", "t3", "t4")}
        assert states == {"t0": TaskState.QUEUED, "t1": TaskState.CANCELLED,
                          "t2": TaskState.CANCELLED, "t3": TaskState.QUEUED,
                          "t4": TaskState.QUEUED}
        assert await call(client, "POST", "/tasks/retry", master(),
                          {"state": "cancelled", "createdTo": T0 + 2_000}) == {
            "count": 1, "matched": 1, "dryRun": False}  # epoch ms works too
        await call(client, "POST", "/resume", master())
        for uid in ("t0", "t1", "t3", "t4"):
            await engine.wait(uid, timeout=10_000)
        assert await call(client, "POST", "/tasks/purge", master(),
                          {"state": ["success", "failed"], "dryRun": True}) == {
            "count": 4, "matched": 4, "dryRun": True}  # t4 failed
        assert await call(client, "POST", "/tasks/purge", master(), {}) == {
            "count": 5, "matched": 5, "dryRun": False}
        await call(client, "GET", "/tasks/t0", master(), status=404)
        entries = (await call(client, "GET", "/audit", master()))["results"]
        assert [(e["action"], e["by"], e.get("via"), e["count"]) for e in entries] == [
            ("purge", "master", None, 5), ("resume", "master", None, 0),
            ("retry", "master", None, 1), ("cancel", "operator", "cli", 2),
            ("pause", "operator", None, 0)]
        assert entries[2]["filter"] == {"state": ["cancelled"], "createdTo": iso_ms(T0 + 2_000)}
        assert entries[3]["filter"] == {"state": ["queued", "retry_wait"], "function": "work",
                                        "createdFrom": second}


async def test_pause_holds_runs_back_takes_enqueues_and_shows_in_info_and_health(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        assert await call(client, "GET", "/dispatch", master()) == {"paused": False}
        clock.set(T0 + 5)
        assert await call(client, "POST", "/pause", master()) == {
            "paused": True, "pausedAt": iso_ms(T0 + 5)}
        assert await call(client, "POST", "/pause", operator()) == {  # already: unchanged
            "paused": True, "pausedAt": iso_ms(T0 + 5)}
        uid = await enqueue(client, {"function": "work", "params": {"n": 3}})
        info = await call(client, "GET", f"/tasks/{uid}", app_role())
        assert (info["state"], info["appPaused"]) == ("queued", True)
        ready = await client.get("/__health/ready")
        assert (ready.status, await ready.json()) == (200, {
            "status": "ready", "paused": {A.app_id: iso_ms(T0 + 5)}})
        assert engine.core.running_count == 0
        assert await call(client, "POST", "/resume", master()) == {"paused": False}
        assert (await engine.wait(uid, timeout=10_000)).return_value == 3
        assert "appPaused" not in await call(client, "GET", f"/tasks/{uid}", master())
        assert await (await client.get("/__health/ready")).json() == {"status": "ready"}
        assert [e["action"] for e in (await call(client, "GET", "/audit", master()))["results"]
                ] == ["resume", "pause"]


async def test_every_action_is_replayed_after_a_restart_and_a_compaction(tmp_path: Path) -> None:
    """Pause, run now, retry, bulk cancel and purge, then restart the server (twice: the second
    time from a snapshot): the paused state, the run-now (no delay comes back), the retried
    task and the audit list are all as they were."""
    clock = FakeClock(T0)
    async with served(tmp_path, clock) as (client, engine):
        await enqueue(client, {"function": "work", "params": {"fail": True}, "attempts": 0,
                               "uniqueId": "broken"})
        await engine.wait("broken", timeout=10_000)
        await call(client, "POST", "/pause", operator("cli"))
        await enqueue(client, {"function": "work", "params": {"n": 1}, "delay": 3_600_000,
                               "uniqueId": "delayed"})
        await call(client, "POST", "/tasks/delayed/run-now", operator("cli"))
        await call(client, "POST", "/tasks/broken/retry", master())
        for i in range(3):
            await enqueue(client, {"function": "other", "delay": 60_000, "uniqueId": f"c{i}"})
        await call(client, "POST", "/tasks/cancel", master(), {"function": "other"})
        await call(client, "POST", "/tasks/purge", master(), {"state": "cancelled",
                                                               "limit": 1})
        audit = await call(client, "GET", "/audit", master())

    for restart in ("replayed", "from a snapshot"):
        clock.advance(1_000)
        assert bool(list(tmp_path.glob("snapshot-*.snap"))) is (restart == "from a snapshot")
        async with served(tmp_path, clock) as (client, engine):
            assert await call(client, "GET", "/dispatch", master()) == {
                "paused": True, "pausedAt": iso_ms(T0)}, restart
            assert await call(client, "GET", "/audit", master()) == audit, restart
            states = {uid: (await engine.get_task_info(uid)).state
                      for uid in ("broken", "delayed", "c1", "c2")}
            assert states == {"broken": TaskState.QUEUED, "delayed": TaskState.QUEUED,
                              "c1": TaskState.CANCELLED, "c2": TaskState.CANCELLED}, restart
            await call(client, "GET", "/tasks/c0", master(), status=404)
            if restart == "replayed":
                await engine.compact()  # the next start reads a snapshot
                assert engine.core.running_count == 0
    async with served(tmp_path, clock) as (client, engine):
        await call(client, "POST", "/resume", master())
        # run now held: the delayed task runs long before its hour is up
        assert (await engine.wait("delayed", timeout=10_000)).return_value == 1
        assert (await engine.wait("broken", timeout=10_000)).attempt == 1
        assert clock.now_ms() == T0 + 2_000
