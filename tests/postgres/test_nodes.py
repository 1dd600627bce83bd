"""Two ``cloudqueue serve`` nodes on one database, in this process: either node answers every
request of the app (the one that does not dispatch it forwards), an event stream included; a
node stopping cleanly hands the app over at once (not after its lease), to the node that kept a
standby of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from cloudqueue.adapters.auth import AppKeys
from cloudqueue.config import AppConfig, ServeConfig
from cloudqueue.server import running

KEYS = AppKeys("appA", "appA-key-0123456789", "appA-master-0123456789")
MASTER = {"X-LC-Id": "appA", "X-LC-Key": f"{KEYS.master_key},master"}
BASE = "/1.1/engine/cloud-queue"


def config(url: str, lease_ms: int) -> ServeConfig:
    return ServeConfig(port=0, store=url, lease_ms=lease_ms, gc_freeze_ms=0,
                       shutdown_grace_ms=2_000,
                       apps=(AppConfig(KEYS, functions=("tests.postgres.node_functions",)),))


@contextlib.asynccontextmanager
async def node(url: str, lease_ms: int = 4_000) -> AsyncIterator[str]:
    async with running(config(url, lease_ms)) as server:
        yield f"http://127.0.0.1:{server.port}"


async def owner_and_other(session: aiohttp.ClientSession, one: str, two: str
                          ) -> tuple[str, str]:
    async with session.get(f"{one}/__health/ready") as answer:
        body = await answer.json()
    owner_id = body["dispatching"]["appA"]
    return (one, two) if owner_id == body["node"] else (two, one)


async def enqueue(session: aiohttp.ClientSession, at: str, body: dict[str, Any]) -> str:
    async with session.post(f"{at}{BASE}/tasks", json=body, headers=MASTER) as answer:
        assert answer.status == 200, await answer.text()
        found: str = (await answer.json())["uniqueId"]
        return found


async def info(session: aiohttp.ClientSession, at: str, unique_id: str) -> dict[str, Any]:
    async with session.get(f"{at}{BASE}/tasks/{unique_id}", headers=MASTER) as answer:
        assert answer.status == 200, await answer.text()
        found: dict[str, Any] = await answer.json()
        return found


async def test_either_node_answers_every_request_of_the_app(pg_url: str) -> None:
    async with node(pg_url) as one, node(pg_url) as two, aiohttp.ClientSession() as session:
        owner, other = await owner_and_other(session, one, two)
        uid = await enqueue(session, other, {"function": "steps", "params": {"n": 3},
                                             "uniqueId": "stepper"})
        # the task's events, read through the node that does not run it
        seen = []
        async with session.get(f"{other}{BASE}/tasks/{uid}/events", headers=MASTER) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            async for line in stream.content:
                if line.startswith(b"data:"):
                    message = json.loads(line[5:])
                    seen.append(message["type"])
                    if message["type"] == "finished":
                        assert message["task"]["state"] == "success"
                        break
        assert "progress" in seen and seen[-1] == "finished"
        for at in (owner, other):
            done = await info(session, at, uid)
            assert done["state"] == "success" and done["result"] == {"result": {"steps": 3}}
            async with session.get(f"{at}{BASE}/tasks?limit=5", headers=MASTER) as answer:
                listed = await answer.json()
            assert [t["uniqueId"] for t in listed["results"]] == [uid]
        # refusals come back as the owner gave them: a duplicate uniqueId is 409 on either node
        body = {"function": "echo", "params": {}, "uniqueId": uid}
        for at in (owner, other):
            async with session.post(f"{at}{BASE}/tasks", json=body, headers=MASTER) as answer:
                assert answer.status == 409
                assert (await answer.json())["code"] == 409
        # bad credentials are refused on either node too (by the owner, which checks them)
        wrong = {**MASTER, "X-LC-Key": "wrong,master"}
        async with session.get(f"{other}{BASE}/tasks/{uid}", headers=wrong) as answer:
            assert answer.status == 401


async def test_a_node_stopping_cleanly_hands_its_app_over_at_once(pg_url: str) -> None:
    # a lease of a minute: were the app not handed over, the survivor would wait a minute
    async with contextlib.AsyncExitStack() as stack, aiohttp.ClientSession() as session:
        first = await stack.enter_async_context(node(pg_url, lease_ms=60_000))
        uid = await enqueue(session, first, {"function": "echo", "params": {"x": 1},
                                             "delay": 1_000})
        second_ctx = node(pg_url, lease_ms=60_000)
        second = await second_ctx.__aenter__()
        try:
            owner, _ = await owner_and_other(session, first, second)
            survivor = second if owner == first else first
            if owner == first:
                await stack.aclose()  # stop the first node: its app moves to the second
            else:  # the second took the app from the first at once when it joined: stop it
                await second_ctx.__aexit__(None, None, None)
            done = await info(session, survivor, uid)
            assert done["uniqueId"] == uid
            async with session.get(f"{survivor}/__health/ready") as answer:
                ready = await answer.json()
            assert ready["dispatching"]["appA"] == ready["node"]
        finally:
            if owner == first:
                await second_ctx.__aexit__(None, None, None)


async def test_nodes_share_the_apps_and_each_answers_for_all(pg_url: str) -> None:
    keys = [AppKeys(f"app{i}", f"app{i}-key-0123456789", f"app{i}-master-0123456789")
            for i in range(20)]
    many = ServeConfig(port=0, store=pg_url, gc_freeze_ms=0, shutdown_grace_ms=2_000,
                       apps=tuple(AppConfig(k, functions=("tests.postgres.node_functions",))
                                  for k in keys))
    async with running(many) as one, running(many) as two, aiohttp.ClientSession() as session:
        urls = [f"http://127.0.0.1:{one.port}", f"http://127.0.0.1:{two.port}"]
        # the first node took every app; the second, joining, is handed its share
        shares: dict[str, int] = {}
        for _ in range(200):
            async with session.get(f"{urls[0]}/__health/ready") as answer:
                ready = await answer.json()
            owners = list(ready["dispatching"].values())
            shares = {node: owners.count(node) for node in set(owners)}
            if len(shares) == 2 and None not in shares:
                break
            await asyncio.sleep(0.05)  # (polling the servers: their turns run on real time)
        # 20 apps over two nodes by rendezvous hashing: both take some (one taking all: 2^-19)
        assert len(shares) == 2 and sum(shares.values()) == 20 and min(shares.values()) >= 1
        for i, k in enumerate(keys[:6]):  # each node answers for apps it does not dispatch
            headers = {"X-LC-Id": k.app_id, "X-LC-Key": f"{k.master_key},master"}
            async with session.post(f"{urls[i % 2]}{BASE}/tasks", headers=headers,
                                    json={"function": "echo", "params": {"i": i}}) as answer:
                assert answer.status == 200, await answer.text()


async def test_the_next_node_keeps_a_standby_and_takes_the_app_over_from_it(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloudqueue.cluster")
    async with contextlib.AsyncExitStack() as stack, aiohttp.ClientSession() as session:
        one = await stack.enter_async_context(node(pg_url))
        two_ctx = node(pg_url)
        two = await two_ctx.__aenter__()
        try:
            owner, other = await owner_and_other(session, one, two)
            uid = await enqueue(session, owner, {"function": "echo", "params": {"x": 1},
                                                 "delay": 500})
            ready: dict[str, Any] = {}
            for _ in range(200):  # the other node reads the app and says it is ready
                async with session.get(f"{other}/__health/ready") as answer:
                    ready = await answer.json()
                if ready["standbyOf"] == ["appA"]:
                    break
                await asyncio.sleep(0.05)  # (polling the servers: their turns run on real time)
            assert ready["standbyOf"] == ["appA"]
            later = await enqueue(session, other, {"function": "echo", "params": {"x": 2}})
            if owner == one:
                await stack.aclose()  # a clean stop: the app moves to the other node at once
            else:
                await two_ctx.__aexit__(None, None, None)
            for _ in range(200):  # it takes the app at its next turn
                async with session.get(f"{other}/__health/ready") as answer:
                    ready = await answer.json()
                if ready["dispatching"]["appA"] == ready["node"]:
                    break
                await asyncio.sleep(0.05)
            assert ready["dispatching"]["appA"] == ready["node"] and ready["standbyOf"] == []
            assert "app appA: opened from this node's standby of it" in caplog.text
            for unique_id in (uid, later):  # what the owner wrote last came along
                assert (await info(session, other, unique_id))["uniqueId"] == unique_id
        finally:
            if owner == one:
                await two_ctx.__aexit__(None, None, None)
