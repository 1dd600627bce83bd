"""Clients may enqueue when the app allows it (``client_enqueue``): with the app key, params
only - any option needs the master key - and only the functions the app names; quotas apply;
by default only the master key enqueues, as on LeanCloud."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import Engine, ForbiddenError, QueueClient, RemoteQuotaExceededError
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.engine.core.quotas import Quotas
from tests.adapters.test_http_api import A, B, app_role, master

URL = "/1.1/engine/cloud-queue/tasks"
Client = TestClient[web.Request, web.Application]
C = B.__class__("appC", "appC-key-0123456789", "appC-master-0123456789")


@pytest.fixture
async def tenants(tmp_path: Path) -> AsyncIterator[dict[str, QueueApp]]:
    tenants = {
        A.app_id: QueueApp(A, Engine(data_dir=tmp_path / "a")),  # the default: master only
        B.app_id: QueueApp(B, Engine(data_dir=tmp_path / "b", quotas=Quotas(held=2)),
                           client_enqueue=True),
        C.app_id: QueueApp(C, Engine(data_dir=tmp_path / "c"),
                           client_enqueue=frozenset({"hello"})),
    }
    yield tenants
    for queue_app in tenants.values():
        await queue_app.engine.close()


@pytest.fixture
async def client(tenants: dict[str, QueueApp]) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(tenants), host="127.0.0.1")) as test_client:
        yield test_client


async def post(client: Client, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    response = await client.post(URL, json=body, headers=headers)
    return response.status, await response.json()


async def held(tenants: dict[str, QueueApp], app_id: str) -> int:
    total = (await tenants[app_id].engine.list_tasks()).total
    assert total is not None
    return total


async def test_by_default_only_the_master_key_enqueues(client: Client,
                                                       tenants: dict[str, QueueApp]) -> None:
    status, body = await post(client, {"function": "hello"}, app_role(A))
    assert (status, body["code"]) == (403, 119)
    assert "needs the master key" in body["error"] and "client_enqueue" in body["error"]
    assert await held(tenants, A.app_id) == 0


async def test_an_app_that_allows_it_takes_a_clients_params(client: Client,
                                                            tenants: dict[str, QueueApp]) -> None:
    status, body = await post(client, {"function": "hello", "params": {"name": "ada"},
                                       "prod": 1}, app_role(B))
    assert status == 200
    info = await tenants[B.app_id].engine.get_task_info(body["uniqueId"])
    assert (info.function, info.max_runs) == ("hello", 2)  # the defaults, not the client's say
    status, body = await post(client, {"function": "hello", "attempts": 5}, master(B))
    assert status == 200  # the master key still sets options


@pytest.mark.parametrize(("options", "named"), [
    ({"delay": 1_000}, "delay needs the master key"),
    ({"uniqueId": "mine"}, "uniqueId needs the master key"),
    ({"attempts": 3, "priority": 1}, "attempts, priority need the master key"),
])
async def test_a_client_may_not_set_any_option(client: Client, tenants: dict[str, QueueApp],
                                               options: dict[str, Any], named: str) -> None:
    status, body = await post(client, {"function": "hello", **options}, app_role(B))
    assert (status, body["code"]) == (403, 119)
    assert body["error"] == f"clients may enqueue with function and params only; {named}"
    assert await held(tenants, B.app_id) == 0


async def test_an_app_may_allow_clients_some_functions_only(
        client: Client, tenants: dict[str, QueueApp]) -> None:
    status, _ = await post(client, {"function": "hello", "params": {}}, app_role(C))
    assert status == 200
    status, body = await post(client, {"function": "charge-card"}, app_role(C))
    assert (status, body["code"]) == (403, 119)
    assert body["error"] == ("clients of this app may enqueue only hello, not 'charge-card'; "
                             "other functions need the master key")
    status, body = await post(client, {"params": {}}, app_role(C))  # no function: a 400
    assert (status, body["code"], body["field"]) == (400, 1, "function")
    assert await held(tenants, C.app_id) == 1


async def test_quotas_hold_for_clients_too(client: Client, tenants: dict[str, QueueApp]) -> None:
    for _ in range(2):
        status, _ = await post(client, {"function": "hello"}, app_role(B))
        assert status == 200
    status, body = await post(client, {"function": "hello"}, app_role(B))
    assert (status, body["quota"]) == (429, "held")


async def test_the_python_client_with_the_app_key(client: Client,
                                                  tenants: dict[str, QueueApp]) -> None:
    url = str(client.make_url("/"))
    async with QueueClient(url, B.app_id, app_key=B.app_key) as queue:
        uid = await queue.enqueue("hello", {"name": "ada"})
        assert (await queue.get_task_info(uid)).function == "hello"
        with pytest.raises(ForbiddenError, match="delay needs the master key"):
            await queue.enqueue("hello", delay=1_000)
        await queue.enqueue("hello")
        with pytest.raises(RemoteQuotaExceededError):
            await queue.enqueue("hello")
