"""The Python function host over real loopback sockets: leanengine's auth table and answer shapes,
progress reports, and the whole loop with a real queue calling it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import Continue, Engine
from cloudqueue.adapters.auth import AppKeys, sign
from cloudqueue.adapters.function_host import Call, CloudError, FunctionHost, ProgressError
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker

K = AppKeys("hostApp", "host-app-key-0123", "host-master-0123", "host-hook-0123")
NO_HOOK = AppKeys("hostApp", "host-app-key-0123", "host-master-0123")
FN = "/1.1/functions"

Client = TestClient[web.Request, web.Application]


def make_host(keys: AppKeys = K, queue_url: str | None = None) -> FunctionHost:
    host = FunctionHost(keys, queue_url)

    @host.define()
    async def echo(params: Any, call: Call) -> Any:
        return {"params": params, "master": call.master, "slice": call.slice,
                "checkpoint": call.checkpoint, "uniqueId": call.unique_id,
                "attempt": call.attempt}

    @host.define("secret", internal=True)
    async def secret(params: Any, call: Call) -> Any:
        return "classified"

    @host.define
    async def nothing(params: Any, call: Call) -> None:
        return None

    @host.define()
    async def refuse(params: Any, call: Call) -> Any:
        raise CloudError("not today", status=403, code=142)

    @host.define()
    async def refuse_default(params: Any, call: Call) -> Any:
        raise CloudError("nope")

    @host.define()
    async def crash(params: Any, call: Call) -> Any:
        raise RuntimeError("boom")

    @host.define()
    async def unserialisable(params: Any, call: Call) -> Any:
        return {"when": object()}

    return host


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with TestClient(TestServer(make_host().app, host="127.0.0.1")) as c:
        yield c


async def post(client: Client, path: str, headers: dict[str, str], body: Any = None,
               data: bytes | None = None) -> tuple[int, Any]:
    response = await client.post(path, json=body if data is None else None, data=data,
                                 headers=headers)
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    return response.status, await response.json()


MASTER = {"X-LC-Id": K.app_id, "X-LC-Key": f"{K.master_key},master"}
UNAUTHORIZED = (401, {"code": 401, "error": "Unauthorized."})

# (headers, role the host sees: "master", "app" or None for 401)
AUTH_TABLE: list[tuple[dict[str, str], str | None]] = [
    ({"X-LC-Id": K.app_id, "X-LC-Key": K.app_key}, "app"),
    (MASTER, "master"),
    ({"X-LC-Id": K.app_id, "X-LC-Key": K.master_key}, "app"),  # bare master: not master
    ({"X-LC-Id": K.app_id, "X-LC-Sign": sign(K.app_key, 1795337732903)}, "app"),
    ({"X-LC-Id": K.app_id, "X-LC-Sign": sign(K.master_key, 5, master=True).upper()
      .replace("MASTER", "master")}, "master"),
    ({"X-AVOSCloud-Application-Id": K.app_id, "X-AVOSCloud-Master-Key": K.master_key}, "master"),
    ({"X-LC-Id": "someoneElse", "X-LC-Key": f"{K.master_key},master"}, None),
    ({"X-LC-Key": f"{K.master_key},master"}, None),
    ({"X-LC-Id": K.app_id}, None),
    ({"X-LC-Id": K.app_id, "X-LC-Hook-Key": K.hook_key or ""}, None),  # hook key alone: no
    ({"X-LC-Id": K.app_id, "X-LC-Key": "wrong"}, None),
    ({"X-LC-Id": K.app_id, "X-LC-Key": f"{K.app_key},master"}, None),
    ({"X-LC-Id": K.app_id, "X-LC-Sign": sign(K.app_key, 5, master=True)}, None),
    ({"X-LC-Id": K.app_id, "X-LC-Sign": "garbage"}, None),
]


@pytest.mark.parametrize(("headers", "role"), AUTH_TABLE)
async def test_credentials_are_checked_like_leanengine(client: Client, headers: dict[str, str],
                                                       role: str | None) -> None:
    status, body = await post(client, f"{FN}/echo", headers, {"a": 1})
    if role is None:
        assert (status, body) == UNAUTHORIZED
        status, body = await post(client, f"{FN}/no-such-function", headers, {})
        assert (status, body) == UNAUTHORIZED  # credentials first: names are not probed
    else:
        assert status == 200, body
        assert body["result"]["params"] == {"a": 1}
        assert body["result"]["master"] is (role == "master")


INTERNAL_TABLE: list[tuple[dict[str, str], bool]] = [
    (MASTER, True),
    ({"X-LC-Id": K.app_id, "X-LC-Sign": sign(K.master_key, 9, master=True)}, True),
    ({"X-LC-Id": K.app_id, "X-LC-Key": K.app_key, "X-LC-Hook-Key": K.hook_key or ""}, True),
    ({"X-LC-Id": K.app_id, "X-LC-Key": K.app_key}, False),
    ({"X-LC-Id": K.app_id, "X-LC-Key": K.master_key}, False),  # bare master is not master
    ({"X-LC-Id": K.app_id, "X-LC-Key": K.app_key, "X-LC-Hook-Key": "wrong"}, False),
]


@pytest.mark.parametrize(("headers", "allowed"), INTERNAL_TABLE)
async def test_internal_functions_need_master_or_the_hook_key(
        client: Client, headers: dict[str, str], allowed: bool) -> None:
    status, body = await post(client, f"{FN}/secret", headers, {})
    if allowed:
        assert (status, body) == (200, {"result": "classified"})
    else:
        assert (status, body) == (401, {"code": 401,
                                        "error": "Internal cloud function, request from "
                                                 "127.0.0.1"})


async def test_without_a_hook_key_internal_functions_still_need_master() -> None:
    """leanengine lets anyone authenticated in when no hook key is configured; we do not."""
    async with TestClient(TestServer(make_host(NO_HOOK).app, host="127.0.0.1")) as c:
        app_role = {"X-LC-Id": K.app_id, "X-LC-Key": K.app_key}
        assert (await post(c, f"{FN}/secret", app_role, {}))[0] == 401
        assert (await post(c, f"{FN}/secret", MASTER, {}))[0] == 200


async def test_answer_shapes(client: Client) -> None:
    assert await post(client, f"{FN}/nothing", MASTER, {}) == (200, {})
    assert await post(client, f"{FN}/refuse", MASTER, {}) == (403, {"code": 142,
                                                                    "error": "not today"})
    assert await post(client, f"{FN}/refuse_default", MASTER, {}) == (400, {"code": 1,
                                                                            "error": "nope"})
    assert await post(client, f"{FN}/crash", MASTER, {}) == (500, {"code": 1, "error": "boom"})
    status, body = await post(client, f"{FN}/unserialisable", MASTER, {})
    assert status == 500 and body["code"] == 1
    assert await post(client, f"{FN}/missing", MASTER, {}) == (
        404, {"code": 1, "error": "No such cloud function 'missing'"})
    assert await post(client, f"{FN}/", MASTER, {}) == (
        404, {"code": 1, "error": "No function name or class name: /1.1/functions/"})
    # the legacy prefix works too, and arrays are params
    status, body = await post(client, "/1/functions/echo", MASTER, [1, 2])
    assert (status, body["result"]["params"]) == (200, [1, 2])


@pytest.mark.parametrize("data", [b"42", b'"text"', b"null", b"{not json", b"true"])
async def test_a_body_that_is_not_a_json_object_or_array_is_refused(client: Client,
                                                                    data: bytes) -> None:
    headers = {**MASTER, "Content-Type": "application/json"}
    status, body = await post(client, f"{FN}/echo", headers, data=data)
    assert status == 400 and body["code"] == 1 and isinstance(body["error"], str)


async def test_an_empty_body_is_empty_params(client: Client) -> None:
    status, body = await post(client, f"{FN}/echo", MASTER, data=b"")
    assert (status, body["result"]["params"]) == (200, {})


async def test_the_queue_marker_becomes_call_fields(client: Client) -> None:
    headers = {**MASTER, "X-CloudQueue-Unique-Id": "u1", "X-CloudQueue-Attempt": "2",
               "X-CloudQueue-Slice": "3"}
    status, body = await post(client, f"{FN}/echo", headers,
                              {"x": 1, "__cloudqueue": {"checkpoint": {"step": 3}, "slice": 3}})
    assert status == 200
    assert body["result"] == {"params": {"x": 1}, "master": True, "slice": 3,
                              "checkpoint": {"step": 3}, "uniqueId": "u1", "attempt": 2}


async def test_ping_and_metadatas(client: Client) -> None:
    response = await client.get("/__engine/1/ping")
    body = await response.json()
    assert response.status == 200 and body["version"] == "cloudqueue"
    assert body["runtime"].startswith("python-3.")
    assert (await post(client, f"{FN}/_ops/metadatas", MASTER))[1]["result"] == sorted(
        ["echo", "secret", "nothing", "refuse", "refuse_default", "crash", "unserialisable"])
    app_role = {"X-LC-Id": K.app_id, "X-LC-Key": K.app_key}
    assert await post(client, f"{FN}/_ops/metadatas", app_role) == UNAUTHORIZED


def test_define_refuses_a_second_definition_and_bad_names() -> None:
    host = make_host()
    with pytest.raises(ValueError, match="already defined"):
        host.define("echo")(lambda p, c: asyncio.sleep(0))
    with pytest.raises(ValueError, match="without '/'"):
        host.define("a/b")(lambda p, c: asyncio.sleep(0))


def test_continue_with_is_the_continuation_marker() -> None:
    assert Call.continue_with({"step": 2}) == {"__cloudqueue": {"continue": {"step": 2}}}


async def test_returning_continue_answers_the_continuation_marker_too() -> None:
    host = FunctionHost(K)

    @host.define()
    async def step(params: Any, call: Call) -> Any:
        return Continue({"step": 2})  # as an in-process function would

    async with TestClient(TestServer(host.app, host="127.0.0.1")) as c:
        assert await post(c, f"{FN}/step", MASTER, {}) == (
            200, {"result": {"__cloudqueue": {"continue": {"step": 2}}}})


# ---------------------------------------------------------------------------- progress


async def test_progress_posts_to_the_queue_and_reports_refusals() -> None:
    seen: list[tuple[str, dict[str, str], Any]] = []
    answers = [(200, {"ok": True}),
               (409, {"code": 409, "error": "run 1 of task 'u1' is not running any more"}),
               (401, {"code": 401, "error": "Unauthorized."})]

    async def fake_progress(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers), await request.json()))
        status, body = answers[len(seen) - 1]
        return web.json_response(body, status=status)

    fake_queue = web.Application()
    fake_queue.router.add_post("/1.1/engine/cloud-queue/tasks/{uid}/progress", fake_progress)
    outcomes: list[Any] = []
    async with TestServer(fake_queue, host="127.0.0.1") as queue_server:
        host = FunctionHost(K, str(queue_server.make_url("/")))

        @host.define()
        async def work(params: Any, call: Call) -> Any:
            await call.progress(40, message="importing", detail={"of": 10})
            for _ in range(2):
                try:
                    await call.progress(done=5, total=10)
                except ProgressError as exc:
                    outcomes.append((exc.status, str(exc)))
            return "ok"

        async with TestClient(TestServer(host.app, host="127.0.0.1")) as c:
            headers = {**MASTER, "X-CloudQueue-Unique-Id": "u1",
                       "X-CloudQueue-Run-Token": "1.tok"}
            assert await post(c, f"{FN}/work", headers, {}) == (200, {"result": "ok"})
            session = host._session
            assert session is not None and not session.closed
        assert session.closed and host._session is None  # closed with the app
    assert [path for path, _, _ in seen] == ["/1.1/engine/cloud-queue/tasks/u1/progress"] * 3
    assert all(h["X-LC-Id"] == K.app_id and h["X-CloudQueue-Run-Token"] == "1.tok"
               for _, h, _ in seen)
    assert [body for _, _, body in seen] == [
        {"percent": 40, "message": "importing", "detail": {"of": 10}},
        {"done": 5, "total": 10}, {"done": 5, "total": 10}]
    assert outcomes[0][0] == 409 and "no longer current" in outcomes[0][1]
    assert outcomes[1][0] == 401 and "token" in outcomes[1][1]


async def test_progress_is_a_no_op_without_a_queue(caplog: pytest.LogCaptureFixture) -> None:
    for host, headers in [
        (FunctionHost(K), {**MASTER, "X-CloudQueue-Unique-Id": "u", "X-CloudQueue-Run-Token": "1"}),
        (FunctionHost(K, "http://127.0.0.1:9"), MASTER),  # not from the queue: no token
    ]:
        @host.define()
        async def work(params: Any, call: Call) -> Any:
            await call.progress(10)
            await call.progress(20)
            return "ok"

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cloudqueue.function_host"):
            async with TestClient(TestServer(host.app, host="127.0.0.1")) as c:
                assert await post(c, f"{FN}/work", headers, {}) == (200, {"result": "ok"})
        assert len([r for r in caplog.records if "progress report dropped" in r.message]) == 1
        assert host._session is None


# ---------------------------------------------------------------------------- the whole loop


@contextlib.asynccontextmanager
async def queue_calling(host: FunctionHost, data_dir: Path, port: int | None = None
                        ) -> AsyncIterator[tuple[Engine, Client]]:
    """A real queue (its REST API on ``port``, or any free port) whose engine calls ``host``."""
    async with TestServer(host.app, host="127.0.0.1") as host_server:
        host_url = str(host_server.make_url("")).rstrip("/")
        engine = Engine(data_dir=data_dir, invoker=HttpInvoker(host_url, K))
        server = TestServer(create_app({K.app_id: QueueApp(K, engine)}), host="127.0.0.1",
                            port=port)
        async with TestClient(server) as queue:
            yield engine, queue


async def test_a_real_queue_runs_a_python_function_with_progress_and_continuation(
        tmp_path: Path, unused_tcp_port: int) -> None:
    queue_url = f"http://127.0.0.1:{unused_tcp_port}"
    host = FunctionHost(K, queue_url)
    calls: list[tuple[int, int | None, Any, Any]] = []
    halfway, resume = asyncio.Event(), asyncio.Event()

    @host.define("install", internal=True)
    async def install(params: Any, call: Call) -> Any:
        calls.append((call.slice, call.attempt, call.checkpoint, params))
        step = call.checkpoint["step"] if call.checkpoint else 0
        total = (call.checkpoint or {}).get("files", 0) + params["files_per_step"]
        await call.progress((step + 1) * 20, done=step + 1, total=5, message=f"step {step}")
        if step == 2:
            halfway.set()
            await resume.wait()
        if step < 4:
            return call.continue_with({"step": step + 1, "files": total})
        return {"installed": params["template"], "files": total}

    async with queue_calling(host, tmp_path / "queue", unused_tcp_port) as (engine, queue):
        try:
            master = {"X-LC-Id": K.app_id,
                      "X-LC-Sign": sign(K.master_key, int(time.time() * 1000), master=True)}
            response = await queue.post("/1.1/engine/cloud-queue/tasks", headers=master, json={
                "function": "install", "params": {"template": "blog", "files_per_step": 10},
                "attempts": 1, "timeout": 10_000})
            assert response.status == 200, await response.text()
            uid = (await response.json())["uniqueId"]

            await asyncio.wait_for(halfway.wait(), 10)
            response = await queue.get(f"/1.1/engine/cloud-queue/tasks/{uid}", headers=master)
            running = await response.json()
            assert running["state"] == "running"
            assert running["progress"]["percent"] == 60 and running["progress"]["done"] == 3
            assert running["progress"]["message"] == "step 2"
            resume.set()

            await engine.wait(uid, timeout=10_000)
            response = await queue.get(f"/1.1/engine/cloud-queue/tasks/{uid}", headers=master)
            info = await response.json()
        finally:
            resume.set()  # a failed check must not leave the host's call waiting

    assert info["status"] == "success", info
    assert info["result"] == {"result": {"installed": "blog", "files": 50}}
    assert info["statusCode"] == 200
    assert (info["attempt"], info["slices"]) == (1, 4)
    assert info["progress"]["percent"] == 100
    assert (info["progress"]["done"], info["progress"]["total"]) == (5, 5)
    assert [m["message"] for m in info["progress"]["messages"]][-1] == "step 4"
    assert [(s, a) for s, a, _, _ in calls] == [(i, 1) for i in range(5)]
    assert [c for _, _, c, _ in calls] == [None] + [{"step": i, "files": 10 * i}
                                                    for i in range(1, 5)]
    assert all(p == {"template": "blog", "files_per_step": 10} for *_, p in calls)


async def test_array_params_get_their_checkpoint_from_the_queue(
        tmp_path: Path, unused_tcp_port: int) -> None:
    """Params that are not a JSON object cannot carry ``__cloudqueue``: the host fetches the
    checkpoint with the run's token, and the function sees its array params untouched."""
    queue_url = f"http://127.0.0.1:{unused_tcp_port}"
    host = FunctionHost(K, queue_url)
    calls: list[tuple[int, Any, Any]] = []

    @host.define("sum_files")
    async def sum_files(params: Any, call: Call) -> Any:
        calls.append((call.slice, call.checkpoint, params))
        done = call.checkpoint or {"next": 0, "sum": 0}
        if done["next"] < len(params):
            return call.continue_with({"next": done["next"] + 1,
                                       "sum": done["sum"] + params[done["next"]]})
        return done["sum"]

    async with queue_calling(host, tmp_path / "queue", unused_tcp_port) as (engine, _):
        uid = await engine.enqueue("sum_files", [3, 5, 7], attempts=0, timeout=10_000)
        info = await engine.wait(uid, timeout=10_000)
    assert info.to_wire()["status"] == "success", info
    assert info.to_wire()["result"] == {"result": 15}
    assert [s for s, _, _ in calls] == [0, 1, 2, 3]
    assert [c for _, c, _ in calls] == [None, {"next": 1, "sum": 3}, {"next": 2, "sum": 8},
                                        {"next": 3, "sum": 15}]
    assert all(p == [3, 5, 7] for *_, p in calls)


async def test_the_checkpoint_endpoint_answers_only_the_current_run(tmp_path: Path) -> None:
    release = asyncio.Event()
    tokens: list[tuple[str, str]] = []
    host = FunctionHost(K)

    @host.define("slow")
    async def slow(params: Any, call: Call) -> Any:
        tokens.append((call.run_token or "", call.unique_id or ""))
        if call.slice == 0:
            return call.continue_with({"page": 7})
        await release.wait()
        return "done"

    async with queue_calling(host, tmp_path / "queue") as (engine, queue):
        uid = await engine.enqueue("slow", {"x": 1}, attempts=0, timeout=10_000)
        for _ in range(200):  # the second slice is running once it has shown its token
            if len(tokens) == 2:
                break
            await asyncio.sleep(0.01)
        path = f"/1.1/engine/cloud-queue/tasks/{uid}/checkpoint"
        (first, _), (current, _) = tokens

        async def get(token: str, app_id: str = K.app_id) -> tuple[int, Any]:
            response = await queue.get(path, headers={"X-LC-Id": app_id,
                                                      "X-CloudQueue-Run-Token": token})
            return response.status, await response.json()

        assert await get(current) == (200, {"checkpoint": {"page": 7}, "slice": 1})
        status, body = await get(first)
        assert status == 409 and "not running any more" in body["error"]
        assert (await get(current + "x"))[0] == 401
        assert (await get(current, "otherApp"))[0] == 401
        assert (await get(""))[0] == 401
        release.set()
        assert (await engine.wait(uid, timeout=10_000)).to_wire()["status"] == "success"


async def test_array_params_past_the_first_slice_need_a_queue_url() -> None:
    host = make_host()
    async with TestClient(TestServer(host.app, host="127.0.0.1")) as c:
        headers = {**MASTER, "X-CloudQueue-Unique-Id": "u1", "X-CloudQueue-Slice": "2",
                   "X-CloudQueue-Run-Token": "1.tok"}
        status, body = await post(c, f"{FN}/echo", headers, [1, 2])
        assert status == 500 and "no queue_url" in body["error"]
        # the first slice has no checkpoint to fetch; object params carry their own
        status, body = await post(c, f"{FN}/echo", {**headers, "X-CloudQueue-Slice": "0"},
                                  [1, 2])
        assert status == 200 and body["result"]["checkpoint"] is None


async def test_a_hook_key_that_is_not_utf8_is_refused_not_a_crash() -> None:
    from tests.adapters.hostile import exchange, request

    server = TestServer(make_host(K).app, host="127.0.0.1")
    async with server:
        assert server.port is not None  # bound by the start
        headers = (f"X-LC-Id: {K.app_id}\r\nX-LC-Key: {K.app_key}\r\n".encode()
                   + b"X-LC-Hook-Key: \xff\xfe\x80\r\nContent-Type: application/json\r\n")
        answer = await exchange(server.port, request("POST", f"{FN}/secret", headers=headers,
                                                     body=b"{}"))
    assert answer.status == 401 and answer.body["code"] == 401
