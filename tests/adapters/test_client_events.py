"""QueueClient.events / read_token against the real REST server on 127.0.0.1 (and a tiny fake
server for SSE framing the real one does not use): order, progress, the final result, typed
errors, and an early exit that releases the server's subscription."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cloudqueue import Engine, RunContext, TaskState
from cloudqueue.adapters.client import QueueClient, QueueUnavailableError
from cloudqueue.engine.core.errors import UnauthorizedError, UnknownTaskError
from cloudqueue.engine.core.task import TaskInfo
from tests.adapters.serving import A, serving

TASKS = "/1.1/engine/cloud-queue/tasks"


@dataclass
class Server:
    url: str
    engine: Engine
    go: asyncio.Event = field(default_factory=asyncio.Event)  # first progress, then wait
    finish: asyncio.Event = field(default_factory=asyncio.Event)  # last progress, then return

    def subscribers(self, uid: str) -> int:
        return len(self.engine.watchers._subscribers.get(uid, ()))

    async def until_unsubscribed(self, uid: str) -> None:
        deadline = time.monotonic() + 5
        while self.subscribers(uid):
            assert time.monotonic() < deadline, f"the server still streams {uid}"
            await asyncio.sleep(0.01)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    engine = Engine(data_dir=tmp_path / A.app_id, concurrency=2, max_timeout_ms=60_000)
    srv = Server("", engine)

    @engine.define
    async def work(params: Any, ctx: RunContext) -> Any:
        await srv.go.wait()
        await ctx.progress(50, message="half way")
        await srv.finish.wait()
        await ctx.progress(100, message="done")
        return "done"

    async with serving(engine) as url:
        srv.url = url
        yield srv
        srv.go.set()
        srv.finish.set()


@pytest.fixture
async def queue(server: Server) -> AsyncIterator[QueueClient]:
    async with QueueClient(server.url, A.app_id, master_key=A.master_key) as client:
        yield client


async def test_events_yield_state_first_progress_and_finished_last_with_the_result(
        server: Server, queue: QueueClient) -> None:
    uid = await queue.enqueue("work", unique_id="ev-1")
    seen: list[tuple[str, TaskInfo]] = []
    async with asyncio.timeout(5):
        async for kind, info in queue.watch(uid):
            seen.append((kind, info))
            if kind == "state":
                server.go.set()  # subscribed: now the function may report
            elif kind == "progress":
                server.finish.set()
    kinds = [kind for kind, _ in seen]
    assert kinds[0] == "state" and kinds[-1] == "finished" and kinds.count("finished") == 1
    assert "progress" in kinds
    assert set(kinds) <= {"state", "queued", "running", "progress", "finished"}
    assert all(info.unique_id == uid for _, info in seen)
    assert all(not info.state.is_final for _, info in seen[:-1])
    final = seen[-1][1]
    assert final.state is TaskState.SUCCESS
    assert final.result == {"result": "done"} and final.return_value == "done"
    assert final.finished_ms == (await server.engine.get_task_info(uid)).finished_ms
    assert server.subscribers(uid) == 0


async def test_events_of_a_finished_task_yield_its_state_and_end(
        server: Server, queue: QueueClient) -> None:
    server.go.set()
    server.finish.set()
    uid = await queue.enqueue("work")
    await queue.wait(uid, timeout=5000, poll_ms=10)
    seen = [(kind, info) async for kind, info in queue.watch(uid)]
    assert [kind for kind, _ in seen] == ["state"]
    assert seen[0][1].state is TaskState.SUCCESS and seen[0][1].return_value == "done"


async def test_events_and_read_token_map_errors_before_streaming(
        server: Server, queue: QueueClient) -> None:
    with pytest.raises(UnknownTaskError) as unknown:
        async for _ in queue.watch("no-such-task"):
            pytest.fail("an unknown task yields nothing")
    assert unknown.value.unique_id == "no-such-task"
    with pytest.raises(UnknownTaskError):
        await queue.read_token("no-such-task")
    uid = await queue.enqueue("work")
    async with QueueClient(server.url, A.app_id, app_key="wrong-key") as bad:
        with pytest.raises(UnauthorizedError):
            await anext(bad.watch(uid))
        with pytest.raises(UnauthorizedError):
            await bad.read_token(uid)


async def test_read_token_opens_the_stream_without_keys_and_app_key_clients_stream_too(
        server: Server, queue: QueueClient) -> None:
    uid = await queue.enqueue("work")
    token = await queue.read_token(uid)
    assert isinstance(token, str) and token
    async with aiohttp.ClientSession() as http, http.get(
            f"{server.url}{TASKS}/{uid}/events", params={"app": A.app_id, "token": token}) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        assert (await r.content.readline()).startswith(b"event: state")
    async with QueueClient(server.url, A.app_id, app_key=A.app_key) as reader:
        assert await reader.read_token(uid)
        async with contextlib.aclosing(reader.watch(uid)) as updates:
            kind, info = await anext(updates)
    assert (kind, info.unique_id) == ("state", uid)


async def test_breaking_out_early_releases_the_servers_subscription(
        server: Server, queue: QueueClient) -> None:
    uid = await queue.enqueue("work", unique_id="ev-break")
    async with asyncio.timeout(5):
        async for kind, _ in queue.watch(uid):
            assert kind == "state"
            assert server.subscribers(uid) == 1
            break
        # the next update finds the connection closed: the server drops the subscriber
        await asyncio.sleep(0.05)
        server.go.set()
        await server.until_unsubscribed(uid)

        # the same with an explicit aclose, and the task still runs to the end
        updates = queue.watch(uid)
        assert (await anext(updates))[0] == "state"
        assert server.subscribers(uid) == 1
        await updates.aclose()
        server.finish.set()
        await server.until_unsubscribed(uid)
        assert (await queue.wait(uid, timeout=5000, poll_ms=10)).return_value == "done"


# ---------------------------------------------------------------------------- SSE framing


def wire(uid: str, state: str, **extra: Any) -> dict[str, Any]:
    status = {"success": "success", "failed": "failed"}.get(state, "queued")
    return {"uniqueId": uid, "status": status, "state": state, "function": "f",
            "createdAt": "2024-01-01T00:00:00.000Z", **extra}


@pytest.fixture
def fake_stream(fake: Any) -> Callable[[list[bytes]], Awaitable[str]]:
    """A fake server writing ``chunks`` as an event stream, a little apart."""
    async def start(chunks: list[bytes]) -> str:
        async def handler(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for chunk in chunks:
                await response.write(chunk)
                await asyncio.sleep(0.005)
            await response.write_eof()
            return response

        url: str = await fake(handler)
        return url

    return start


async def test_sse_parsing_follows_the_spec(fake_stream: Any) -> None:
    running = json.dumps({"type": "running", "task": wire("t", "running")}, indent=1)
    done = json.dumps({"type": "finished", "task": wire("t", "success", result={"result": 7})})
    body = ("\ufeff: keep-alive\r\n\r\n"  # a BOM, a comment, CRLF line ends
            "event: state\r\ndata:" + json.dumps({"type": "state", "task": wire("t", "queued")})
            + "\r\nid: 1\r\nretry: 10\r\n\r\n"  # no space after the colon; id, retry
            + "event: running\n"  # data over several lines, joined with newlines
            + "".join(f"data: {line}\n" for line in running.split("\n")) + "\n"
            + ": keep-alive\n\n"
            + "event: ignored\n\n"  # no data: never dispatched
            + f"data: {done}\r\r"  # no event field: the data's own type; CR line ends
            ).encode()
    url = await fake_stream([body[i:i + 7] for i in range(0, len(body), 7)])  # lines split anywhere
    async with QueueClient(url, "app", app_key="k") as client:
        seen = [(kind, info.state, info.result) async for kind, info in client.watch("t")]
    assert [(k, s) for k, s, _ in seen] == [("state", TaskState.QUEUED),
                                            ("running", TaskState.RUNNING),
                                            ("finished", TaskState.SUCCESS)]
    assert seen[-1][2] == {"result": 7}


async def test_a_stream_that_ends_before_finished_is_an_error(fake_stream: Any) -> None:
    state = json.dumps({"type": "state", "task": wire("t", "running")})
    url = await fake_stream([f"event: state\ndata: {state}\n\n".encode()])
    async with QueueClient(url, "app", app_key="k") as client:
        updates = client.watch("t")
        assert (await anext(updates))[0] == "state"
        with pytest.raises(QueueUnavailableError, match="ended before the task finished"):
            await anext(updates)
