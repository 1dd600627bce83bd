"""Bulk enqueue over REST (``POST /tasks/batch``): one request, many tasks, each with its own
answer (its uniqueId or the error that refused it), every accepted task durable before the
answer; ``atomic`` for all or none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import Engine
from cloudqueue.adapters.http_api.app import APPS, IGNORED_HEADER, QueueApp, create_app
from cloudqueue.engine.core.batch_items import MAX_BATCH_ITEMS
from cloudqueue.engine.core.quotas import Quotas
from tests.adapters.test_http_api import A, B, app_role, master

URL = "/1.1/engine/cloud-queue/tasks/batch"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    tenants = {A.app_id: QueueApp(A, Engine(data_dir=tmp_path / "a")),
               B.app_id: QueueApp(B, Engine(data_dir=tmp_path / "b",
                                            quotas=Quotas(held=2)))}
    async with TestClient(TestServer(create_app(tenants), host="127.0.0.1")) as test_client:
        yield test_client
    for queue_app in tenants.values():
        await queue_app.engine.close()


def engine_of(client: Client, keys: Any = A) -> Engine:
    app = client.app
    assert app is not None
    return app[APPS][keys.app_id].engine


async def post(client: Client, body: Any, headers: dict[str, str] | None = None
               ) -> tuple[int, Any, Any]:
    response = await client.post(URL, json=body, headers=headers or master())
    return response.status, await response.json(), response.headers


async def test_each_item_gets_its_own_answer_and_the_accepted_are_durable(
        client: Client) -> None:
    status, body, headers = await post(client, {"tasks": [
        {"function": "resize", "params": {"w": 64}, "uniqueId": "r-64", "delay": 60_000},
        {"function": "resize", "unique_id": "r-32"},
        {"function": "resize", "uniqueId": "r-64"},
        "resize",
        {"function": "resize", "delay": 60_000, "color": "red"},
    ]})
    assert status == 200
    results = body["results"]
    assert results[0] == {"uniqueId": "r-64"}
    assert results[1] == {"code": 1, "type": "validation", "field": "unique_id", "index": 1,
                          "error": "item 1: unknown field 'unique_id': did you mean "
                                   "'uniqueId'? (the body uses LeanCloud's camelCase names)"}
    assert results[2] == {"code": 409, "type": "duplicate_task", "uniqueId": "r-64",
                          "status": "queued", "state": "queued", "index": 2,
                          "error": "item 2: uniqueId 'r-64' is also given to item 0 of this "
                                   "batch"}
    assert (results[3]["code"], results[3]["index"], results[3]["field"]) == (1, 3, "function")
    assert "got string 'resize'" in results[3]["error"]
    assert set(results[4]) == {"uniqueId"}
    assert headers[IGNORED_HEADER] == '"color"'
    engine = engine_of(client)
    accepted = [results[0]["uniqueId"], results[4]["uniqueId"]]
    seqs = [engine.core.task_info_at(uid, 0)[1] for uid in accepted]
    assert engine.store.durable_seq >= max(seqs) == 2  # both durable before the answer
    assert (await engine.list_tasks()).total == 2


async def test_atomic_is_all_or_none(client: Client) -> None:
    status, body, _ = await post(client, {"atomic": True, "tasks": [
        {"function": "f", "uniqueId": "a-1"}, {"function": "f", "attempts": "3"}]})
    assert status == 400
    assert (body["code"], body["index"], body["field"]) == (1, 1, "attempts")
    assert body["error"].startswith("item 1: attempts must be a whole number")
    status, body, _ = await post(client, {"atomic": True, "tasks": [
        {"function": "f", "uniqueId": "a-1"}, {"function": "f", "uniqueId": "a-1"}]})
    assert (status, body["code"], body["index"]) == (409, 409, 1)
    assert (await engine_of(client).list_tasks()).total == 0
    status, body, _ = await post(client, {"atomic": True, "tasks": [
        {"function": "f", "uniqueId": "a-1"}, {"function": "f", "uniqueId": "a-2"}]})
    assert (status, body) == (200, {"results": [{"uniqueId": "a-1"}, {"uniqueId": "a-2"}]})


@pytest.mark.parametrize(("body", "field", "message"), [
    ({}, "tasks", "tasks must be an array of 1 to 10000 enqueue bodies, got null"),
    ({"tasks": []}, "tasks", "tasks must be an array of 1 to 10000 enqueue bodies, got 0 items"),
    ({"tasks": {"function": "f"}}, "tasks", "got an object"),
    ({"tasks": [{"function": "f"}] * (MAX_BATCH_ITEMS + 1)}, "tasks", "got 10001 items"),
    ({"task": [{"function": "f"}]}, "task", "unknown field 'task' of a bulk enqueue; did you "
                                            "mean 'tasks'?"),
    ({"tasks": [{"function": "f"}], "atomic": "yes"}, "atomic",
     "atomic must be true or false, got string 'yes'"),
])
async def test_a_bad_request_body_is_a_400_naming_the_field(client: Client, body: Any,
                                                            field: str, message: str) -> None:
    status, answer, _ = await post(client, body)
    assert (status, answer["code"], answer["field"]) == (400, 1, field)
    assert message in answer["error"]
    assert (await engine_of(client).list_tasks()).total == 0


async def test_a_bulk_enqueue_needs_the_master_key(client: Client) -> None:
    status, body, _ = await post(client, {"tasks": [{"function": "f"}]}, app_role())
    assert (status, body["code"]) == (403, 119)
    assert (await engine_of(client).list_tasks()).total == 0


async def test_quotas_count_the_batch_as_a_whole(client: Client) -> None:
    status, body, _ = await post(client, {"tasks": [{"function": "f", "delay": 60_000}] * 3},
                                 master(B))
    assert (status, body["code"], body["quota"]) == (429, 429, "held")
    assert (await engine_of(client, B).list_tasks()).total == 0
    status, body, _ = await post(client, {"tasks": [{"function": "f", "delay": 60_000}] * 2},
                                 master(B))
    assert status == 200 and all("uniqueId" in result for result in body["results"])
