"""The REST API over real loopback sockets: auth forms, status codes, isolation, outcomes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import Engine, FakeClock, TaskInfo
from cloudqueue.adapters.auth import AppKeys, sign
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.adapters.http_api.stream import READ_TOKEN_TTL_MS
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker
from cloudqueue.engine.core.task import iso_ms
from cloudqueue.testing import settle
from tests.adapters.function_host import FunctionHost, error, hang, ok
from tests.waiting import turns, until

A = AppKeys("appA", "appA-key-0123456789", "appA-master-0123456789", "appA-hook")
B = AppKeys("appB", "appB-key-0123456789", "appB-master-0123456789")
URL = "/1.1/engine/cloud-queue/tasks"
T0 = 1_700_000_000_000

Client = TestClient[web.Request, web.Application]


def master(keys: AppKeys = A) -> dict[str, str]:
    return {"X-LC-Id": keys.app_id, "X-LC-Sign": sign(keys.master_key, int(time.time() * 1000),
                                                        master=True),
            "Content-Type": "application/json;charset=UTF-8"}


def app_role(keys: AppKeys = A) -> dict[str, str]:
    return {"X-LC-Id": keys.app_id, "X-LC-Sign": sign(keys.app_key, int(time.time() * 1000))}


class Queue:
    def __init__(self, client: Client, tenants: dict[str, QueueApp], host: FunctionHost,
                 clock: FakeClock, invokers: dict[str, HttpInvoker]) -> None:
        self.client, self.tenants, self.host, self.clock = client, tenants, host, clock
        self.invokers = invokers

    async def enqueue(self, body: dict[str, Any], keys: AppKeys = A) -> str:
        response = await self.client.post(URL, json=body, headers=master(keys))
        assert response.status == 200, await response.text()
        unique_id: str = (await response.json())["uniqueId"]
        return unique_id

    async def info(self, uid: str, keys: AppKeys = A) -> dict[str, Any]:
        response = await self.client.get(f"{URL}/{uid}", headers=app_role(keys))
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result

    async def wait(self, uid: str, keys: AppKeys = A) -> TaskInfo:
        return await self.tenants[keys.app_id].engine.wait(uid, timeout=10_000)


@pytest.fixture
async def queue(tmp_path: Path) -> Any:
    host = FunctionHost(A.app_id, A.master_key, A.hook_key)
    host_server = TestServer(host.app, host="127.0.0.1")
    await host_server.start_server()
    base = str(host_server.make_url("")).rstrip("/")
    clock = FakeClock(T0)  # the queues' time: it moves only when a test moves it
    invokers = {k.app_id: HttpInvoker(base, k, probe_min_ms=50, clock=clock) for k in (A, B)}
    tenants = {
        k.app_id: QueueApp(k, Engine(data_dir=tmp_path / k.app_id, concurrency=2, clock=clock,
                                     invoker=invokers[k.app_id]))
        for k in (A, B)
    }
    client = TestClient(TestServer(create_app(tenants, max_body_bytes=64 * 1024),
                                   host="127.0.0.1"))
    await client.start_server()
    yield Queue(client, tenants, host, clock, invokers)
    await client.close()
    await host_server.close()


# ---------------------------------------------------------------------------- auth


def now_ms() -> int:
    return int(time.time() * 1000)


GOOD_MASTER_FORMS: list[dict[str, str]] = [
    {"X-LC-Id": A.app_id, "X-LC-Sign": sign(A.master_key, 1795337732903, master=True)},
    {"X-LC-Id": A.app_id, "X-LC-Sign": sign(A.master_key, 1, master=True).upper().replace(
        "MASTER", "master")},
    {"X-LC-Id": A.app_id, "X-LC-Key": f"{A.master_key},master"},
    {"X-AVOSCloud-Application-Id": A.app_id,
     "X-AVOSCloud-Request-Sign": sign(A.master_key, 5, master=True)},
    {"X-Uluru-Application-Id": A.app_id, "X-AVOSCloud-Master-Key": A.master_key},
]
APP_FORMS: list[dict[str, str]] = [
    {"X-LC-Id": A.app_id, "X-LC-Sign": sign(A.app_key, 7)},
    {"X-LC-Id": A.app_id, "X-LC-Key": A.app_key},
    {"X-AVOSCloud-Application-Id": A.app_id, "X-AVOSCloud-Application-Key": A.app_key},
    {"X-LC-Id": A.app_id, "X-LC-Key": A.master_key},  # bare master key: authenticated, not master
]
BAD_FORMS: list[dict[str, str]] = [
    {},
    {"X-LC-Id": A.app_id},
    {"X-LC-Id": A.app_id, "X-LC-Hook-Key": A.hook_key or ""},
    {"X-LC-Id": A.app_id, "X-LC-Sign": sign(A.app_key, 7, master=True)},
    {"X-LC-Id": A.app_id, "X-LC-Sign": "0" * 32 + ",7,master"},
    {"X-LC-Id": A.app_id, "X-LC-Key": f"{A.app_key},master"},
    {"X-LC-Id": "nobody", "X-LC-Key": f"{A.master_key},master"},
    {"X-LC-Id": B.app_id, "X-LC-Key": f"{A.master_key},master"},
    {"X-LC-Id": A.app_id, "X-LC-Sign": "garbage"},
]


@pytest.mark.parametrize("headers", GOOD_MASTER_FORMS)
async def test_every_master_credential_form_may_enqueue(queue: Queue,
                                                        headers: dict[str, str]) -> None:
    response = await queue.client.post(URL, json={"function": "f", "delay": 60_000},
                                       headers=headers)
    assert response.status == 200
    assert len((await response.json())["uniqueId"]) == 36


@pytest.mark.parametrize("headers", APP_FORMS)
async def test_app_credentials_read_but_may_not_enqueue(queue: Queue,
                                                        headers: dict[str, str]) -> None:
    response = await queue.client.post(URL, json={"function": "f"}, headers=headers)
    assert response.status == 403
    body = await response.json()
    assert body["code"] == 119 and "master key" in body["error"]
    uid = await queue.enqueue({"function": "f", "delay": 60_000})
    assert (await queue.client.get(f"{URL}/{uid}", headers=headers)).status == 200


@pytest.mark.parametrize("headers", BAD_FORMS)
async def test_bad_credentials_get_401_before_the_body_is_read(queue: Queue,
                                                               headers: dict[str, str]) -> None:
    response = await queue.client.post(URL, data=b"{not json", headers=headers)
    assert response.status == 401
    assert await response.json() == {"code": 401, "error": "Unauthorized."}
    assert len(queue.tenants["appA"].engine.core) == 0
    got = await queue.client.get(f"{URL}/anything", headers=headers)
    assert got.status == 401


async def test_keys_never_appear_in_answers(queue: Queue) -> None:
    for headers in [*BAD_FORMS, *APP_FORMS]:
        text = await (await queue.client.post(URL, json={}, headers=headers)).text()
        assert A.master_key not in text and A.app_key not in text


# ---------------------------------------------------------------------------- bodies and codes


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (b"{oops", 400, 107, "Malformed json object"),
        (b"[1, 2]", 400, 107, "A json dictionary is expected"),
        (b"\xff\xfe", 400, 107, "Malformed json object"),
        (b"[" * 50_000, 400, 107, "nested too deeply"),
        (b'{"function": ""}', 400, 1, "function must be a non-empty string"),
        (b'{"function": "f", "attempts": "2"}', 400, 1, "attempts must be a whole number"),
        (b'{"function": "f", "uniqueId": "' + b"x" * 33 + b'"}', 400, 1,
         "uniqueId must be 1 to 32 characters"),
        (b'{"function": "f", "deliveryMode": "maybe"}', 400, 1, "deliveryMode must be"),
        (b'{"function": "f", "timeout": 99999999}', 400, 1, "over this queue's maximum"),
        (b'{"function": "f", "params": ' + b"[" * 500 + b"]" * 500 + b"}", 400, 1,
         "nest deeper than 64 levels"),
        (b'{"function": "f", "backoff": -1}', 400, 1, "backoff must be >= 0 ms"),
    ],
    ids=["syntax", "array", "not-utf8", "deep-json", "no-function", "attempts-type",
         "long-id", "delivery-mode", "timeout-max", "deep-params", "negative-backoff"],
)
async def test_bad_bodies_get_a_leancloud_error_and_create_nothing(
        queue: Queue, body: bytes, status: int, code: int, message: str) -> None:
    response = await queue.client.post(URL, data=body, headers=master())
    assert response.status == status
    assert response.content_type == "application/json"
    payload = await response.json()
    assert payload["code"] == code and message in payload["error"]
    assert len(queue.tenants["appA"].engine.core) == 0


async def test_body_over_the_size_limit_gets_413(queue: Queue) -> None:
    body = {"function": "f", "params": {"blob": "x" * 70_000}}
    response = await queue.client.post(URL, json=body, headers=master())
    assert response.status == 413
    assert (await response.json())["code"] == 413


async def test_sdk_body_with_prod_and_unknown_fields_is_accepted(queue: Queue) -> None:
    body = {"function": "f", "params": {"k": 1}, "uniqueId": "rlqc5p6yig-fail", "attempts": 2,
            "backoff": 1000, "prod": 0, "notify": True, "delay": 60_000}
    assert await queue.enqueue(body) == "rlqc5p6yig-fail"


async def test_duplicate_unique_id_gets_409_with_code_409(queue: Queue) -> None:
    await queue.enqueue({"function": "f", "uniqueId": "dup-1", "delay": 60_000})
    response = await queue.client.post(URL, json={"function": "f", "uniqueId": "dup-1"},
                                       headers=master())
    assert response.status == 409
    body = await response.json()
    assert body["code"] == 409 and "dup-1" in body["error"]


async def test_unknown_task_gets_404(queue: Queue) -> None:
    response = await queue.client.get(f"{URL}/never-was", headers=app_role())
    assert response.status == 404
    assert await response.json() == {"code": 404, "error": "Task 'never-was' not found"}


async def test_percent_encoded_unique_id_is_decoded(queue: Queue) -> None:
    uid = await queue.enqueue({"function": "f", "uniqueId": "a:b~c", "delay": 60_000})
    response = await queue.client.get(f"{URL}/a%3Ab%7Ec", headers=app_role())
    assert response.status == 200 and (await response.json())["uniqueId"] == uid


async def test_another_apps_task_reads_as_absent(queue: Queue) -> None:
    uid = await queue.enqueue({"function": "f", "delay": 60_000, "uniqueId": "mine"})
    response = await queue.client.get(f"{URL}/{uid}", headers=app_role(B))
    assert response.status == 404
    assert await queue.enqueue({"function": "f", "delay": 60_000, "uniqueId": "mine"}, B) == "mine"


# ---------------------------------------------------------------------------- running functions


async def test_success_keeps_the_hosts_whole_body_as_result(queue: Queue) -> None:
    @queue.host.define("add")
    async def add(params: Any, request: web.Request) -> web.Response:
        return ok(params["a"] + params["b"])

    uid = await queue.enqueue({"function": "add", "params": {"a": 2, "b": 3}})
    await queue.wait(uid)
    info = await queue.info(uid)
    assert (info["status"], info["statusCode"], info["result"]) == ("success", 200,
                                                                  {"result": 5})
    (name, params, headers), = queue.host.calls
    assert (name, params) == ("add", {"a": 2, "b": 3})
    assert headers["X-LC-Key"] == f"{A.master_key},master"
    assert headers["X-LC-Hook-Key"] == A.hook_key and "X-LC-Session" not in headers
    assert headers["Content-Type"].startswith("application/json")


async def test_internal_function_is_callable_by_the_queue(queue: Queue) -> None:
    @queue.host.define("secret", internal=True)
    async def secret(params: Any, request: web.Request) -> web.Response:
        return ok("inside")

    uid = await queue.enqueue({"function": "secret"})
    assert (await queue.wait(uid)).result == {"result": "inside"}


async def test_error_answer_retries_with_status_code_error_and_retry_at(queue: Queue) -> None:
    @queue.host.define("fail")
    async def fail(params: Any, request: web.Request) -> web.Response:
        return error(f"boom (attempt {request.headers['X-CloudQueue-Attempt']})")

    uid = await queue.enqueue({"function": "fail", "attempts": 2, "backoff": 300})
    engine = queue.tenants[A.app_id].engine
    for attempt in (1, 2):  # each failure at the clock's time then, the retry 300 ms after it
        retry_at = T0 + 300 * attempt
        await until(lambda at=retry_at: engine.core.task_info(uid, 0).retry_at_ms == at,  # type: ignore[misc]
                    f"attempt {attempt}'s failure")
        info = await queue.info(uid)
        assert (info["status"], info["statusCode"], info["error"], info["retryAt"]) == (
            "queued", 500, f"boom (attempt {attempt})", iso_ms(retry_at))
        queue.clock.advance(299)
        await settle(engine)
        assert len(queue.host.calls) == attempt
        queue.clock.advance(1)
    final = await queue.wait(uid)
    assert (final.status, final.error, final.attempt) == ("failed", "boom (attempt 3)", 3)


async def test_an_exponential_backoff_shows_each_growing_wait_in_retry_at(queue: Queue) -> None:
    @queue.host.define("fail")
    async def fail(params: Any, request: web.Request) -> web.Response:
        return error("boom")

    uid = await queue.enqueue({"function": "fail", "attempts": 3, "backoff": 1_000,
                               "backoffType": "exponential", "backoffMax": 3_000})
    engine = queue.tenants[A.app_id].engine
    failed_at = T0
    for attempt, most in ((1, 1_000), (2, 2_000), (3, 3_000)):
        await until(lambda n=attempt: len(queue.host.calls) == n  # type: ignore[misc]
                    and engine.core.task_info(uid, 0).retry_at_ms is not None,
                    f"attempt {attempt}'s failure")
        info = await queue.info(uid)
        retry_at = engine.core.task_info(uid, 0).retry_at_ms
        assert retry_at is not None and info["retryAt"] == iso_ms(retry_at)
        assert most // 2 < retry_at - failed_at <= most  # doubling, capped, less a jitter
        queue.clock.advance(retry_at - failed_at)
        failed_at = retry_at
    assert (await queue.wait(uid)).status == "failed"


@pytest.mark.parametrize(("mode", "runs", "status"),
                         [("atLeastOnce", 2, "failed"), ("atMostOnce", 1, "failed")])
async def test_timeout_is_decided_by_delivery_mode(queue: Queue, mode: str, runs: int,
                                                   status: str) -> None:
    queue.host.define("slow")(hang)
    uid = await queue.enqueue({"function": "slow", "timeout": 200, "attempts": 1,
                               "backoff": 10, "deliveryMode": mode})
    for run in range(1, runs + 1):
        await until(lambda n=run: len(queue.host.calls) == n, f"run {run} reaching the host")  # type: ignore[misc]
        queue.clock.advance(200)  # the run's timeout
        if run < runs:
            await settle(queue.tenants[A.app_id].engine)
            queue.clock.advance(10)  # the backoff
    info = await queue.wait(uid)
    assert (info.status, info.error) == (status, "cloud function timed out after 200 ms")
    assert len(queue.host.calls) == runs and info.status_code is None


async def test_unknown_function_fails_with_the_hosts_404(queue: Queue) -> None:
    uid = await queue.enqueue({"function": "nope", "attempts": 0})
    info = await queue.wait(uid)
    assert (info.status, info.status_code, info.error) == ("failed", 404,
                                                           "No such cloud function 'nope'")


async def test_gateway_error_without_leanengine_body_is_an_unknown_outcome(queue: Queue) -> None:
    """A 502/503 from a gateway comes after the request went out: the function may have run.
    It charges an attempt (retried under atLeastOnce while attempts remain), never a free
    retry."""
    answers = [web.Response(status=502, text="<html>bad gateway</html>"),
               web.Response(status=503, text="no healthy upstream")]

    @queue.host.define("flaky_gateway")
    async def flaky_gateway(params: Any, request: web.Request) -> web.Response:
        return answers.pop(0) if answers else ok("through")

    invoker = queue.invokers[A.app_id]
    uid = await queue.enqueue({"function": "flaky_gateway", "attempts": 0})
    info = await queue.wait(uid)
    assert (info.status, info.attempt) == ("failed", 1)
    # a gateway saying the host is down pauses dispatch; the probe comes 50 ms later, then 100
    for probe_ms in (50, 100):
        await until(lambda: not invoker.available, "dispatch paused")
        await turns()  # the probe starts its wait
        queue.clock.advance(probe_ms - 1)
        await turns()
        assert not invoker.available
        queue.clock.advance(1)
        await until(lambda: invoker.available, "the probe's answer")
        if probe_ms == 50:
            uid = await queue.enqueue({"function": "flaky_gateway", "attempts": 2,
                                       "backoff": 0})
    info = await queue.wait(uid)
    assert (info.status, info.attempt, info.result) == ("success", 2, {"result": "through"})


async def test_leanengine_503_timeout_body_is_a_failed_run(queue: Queue) -> None:
    @queue.host.define("host_timeout")
    async def host_timeout(params: Any, request: web.Request) -> web.Response:
        return error("The request timed out on the server.", status=503, code=124)

    uid = await queue.enqueue({"function": "host_timeout", "attempts": 0})
    info = await queue.wait(uid)
    assert (info.status, info.status_code) == ("failed", 503)


# ---------------------------------------------------------------------------- extensions


async def test_list_by_state_and_cancel(queue: Queue) -> None:
    waiting = await queue.enqueue({"function": "f", "delay": 60_000})
    response = await queue.client.get(f"{URL}?state=queued&limit=10", headers=master())
    listed = await response.json()
    assert listed["count"] == 1 and listed["results"][0]["uniqueId"] == waiting
    cancelled = await queue.client.post(f"{URL}/{waiting}/cancel", headers=master())
    assert (await cancelled.json())["state"] == "cancelled"
    again = await queue.client.post(f"{URL}/{waiting}/cancel", headers=master())
    assert again.status == 409
    assert (await queue.client.get(f"{URL}?state=bogus", headers=master())).status == 400
    assert (await queue.client.get(URL, headers=app_role())).status == 403


async def test_health_endpoints(queue: Queue) -> None:
    assert (await queue.client.get("/__health/live")).status == 200
    assert await (await queue.client.get("/__health/ready")).json() == {"status": "ready"}


async def test_readiness_shows_each_adaptive_apps_host_limit(tmp_path: Path) -> None:
    engine = Engine(data_dir=tmp_path / "a", concurrency=8, clock=FakeClock(T0),
                    host_concurrency="adaptive")

    @engine.define
    async def work(params: Any, ctx: Any) -> Any:
        return None

    tenants = {A.app_id: QueueApp(A, engine),
               B.app_id: QueueApp(B, Engine(data_dir=tmp_path / "b", clock=FakeClock(T0)))}
    async with TestClient(TestServer(create_app(tenants), host="127.0.0.1")) as client:
        shown = {"limit": 1, "ceiling": 8, "runCap": 1, "latencyMs": None, "baselineMs": None,
                 "hostErrors": 0, "backoffs": 0}
        assert await (await client.get("/__health/ready")).json() == {
            "status": "ready", "hostConcurrency": {A.app_id: shown}}  # only the adaptive app
        for uid in [await engine.enqueue("work") for _ in range(4)]:
            await engine.wait(uid, timeout=10_000)
        ready = await (await client.get("/__health/ready")).json()
        assert ready["hostConcurrency"][A.app_id] == {**shown, "limit": 2, "runCap": 2,
                                                      "latencyMs": 0.0, "baselineMs": 0.0}


Probe = Callable[[], Awaitable[None]]


async def test_host_down_charges_no_attempt_and_all_tasks_run_when_it_returns(
        tmp_path: Path, unused_tcp_port: int) -> None:
    host = FunctionHost(A.app_id, A.master_key)

    @host.define("work")
    async def work(params: Any, request: web.Request) -> web.Response:
        return ok(params["i"])

    clock = FakeClock(T0)
    invoker = HttpInvoker(f"http://127.0.0.1:{unused_tcp_port}", A, probe_min_ms=20,
                          probe_max_ms=100, clock=clock)
    engine = Engine(data_dir=tmp_path / "q", concurrency=3, invoker=invoker, clock=clock)

    async def probe_planned(wait_ms: int) -> int:
        at = clock.now_ms() + wait_ms
        await until(lambda: clock.next_deadline_ms() == at, f"a probe planned in {wait_ms} ms")
        return at

    async with engine:
        ids = [await engine.enqueue("work", {"i": i}, attempts=0) for i in range(6)]
        at = await probe_planned(20)
        for wait_ms in (40, 80, 100, 100):  # refused, probed, refused again: doubling to the cap
            clock.set(at)
            at = await probe_planned(wait_ms)
        assert not invoker.available
        assert {(await engine.get_task_info(u)).attempt for u in ids} == {0}
        server = TestServer(host.app, host="127.0.0.1", port=unused_tcp_port)
        await server.start_server()
        try:
            clock.set(at)
            infos = [await engine.wait(u, timeout=10_000) for u in ids]
        finally:
            await server.close()
    assert [(i.status, i.attempt, i.return_value) for i in infos] == [
        ("success", 1, n) for n in range(6)]
    assert len(host.calls) == 6


async def test_openapi_document_is_served_and_covers_every_route(queue: Queue) -> None:
    response = await queue.client.get("/1.1/engine/cloud-queue/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    documented = set((await response.json())["paths"])
    routed = {info.get("path") or info.get("formatter")
              for info in (r.get_info() for r in queue.client.app.router.resources())}
    assert {p.replace("{uniqueId}", "{unique_id}") for p in documented} == routed


async def test_over_a_quota_answers_429_with_retry_after(tmp_path: Path) -> None:
    from cloudqueue.engine.core.quotas import Quotas

    tenants = {A.app_id: QueueApp(A, Engine(data_dir=tmp_path / "q",
                                            quotas=Quotas(per_day=2, rate_per_s=1000)))}
    async with TestClient(TestServer(create_app(tenants), host="127.0.0.1")) as client:
        for _ in range(2):
            ok_response = await client.post(URL, json={"function": "f", "delay": 60_000},
                                             headers=master())
            assert ok_response.status == 200
        response = await client.post(URL, json={"function": "f"}, headers=master())
        assert response.status == 429
        body = await response.json()
        assert (body["code"], body["quota"]) == (429, "daily")
        assert 1 <= int(response.headers["Retry-After"]) <= 86_400


async def test_wrong_method_says_which_are_allowed(queue: Queue) -> None:
    response = await queue.client.put(URL, headers=master())
    assert response.status == 405 and "POST" in response.headers["Allow"]
    assert (await response.json())["code"] == 405


@pytest.mark.parametrize("field", ["uniqueId", "function"])
def test_the_documents_id_pattern_is_exactly_what_the_server_accepts(field: str) -> None:
    import json
    import re

    from cloudqueue.adapters.http_api.app import OPENAPI_PATH
    from cloudqueue.engine.core.errors import ValidationError
    from cloudqueue.engine.core.options import check_unique_id

    schema = json.loads(OPENAPI_PATH.read_text())["components"]["schemas"]["EnqueueRequest"]
    pattern = re.compile(schema["properties"][field]["pattern"])
    for code in [*range(0, 128), 0xE9, 0x4E2D]:
        candidate = f"a{chr(code)}b"
        try:
            check_unique_id(candidate)
            accepted = True
        except ValidationError:
            accepted = False
        assert bool(pattern.match(candidate)) == accepted, repr(candidate)


async def test_a_plain_function_continues_through_its_params_and_return_value(
        queue: Queue) -> None:
    @queue.host.define("install")
    async def install(params: Any, request: web.Request) -> web.Response:
        step = params.get("__cloudqueue", {}).get("checkpoint", {"files": 0})
        files = step["files"] + 10
        if files < 50:
            return ok({"__cloudqueue": {"continue": {"files": files}}})
        return ok({"installed": files, "template": params["template"]})

    uid = await queue.enqueue({"function": "install", "params": {"template": "blog"},
                               "attempts": 0})
    info = await queue.wait(uid)
    assert (info.status, info.attempt, info.slices) == ("success", 1, 4)
    assert info.result == {"result": {"installed": 50, "template": "blog"}}
    slices = [headers["X-CloudQueue-Slice"] for _, _, headers in queue.host.calls]
    assert slices == ["0", "1", "2", "3", "4"]
    assert queue.host.calls[2][1] == {"template": "blog",
                                      "__cloudqueue": {"checkpoint": {"files": 20}, "slice": 2}}


async def test_a_function_host_reports_progress_with_its_runs_token(queue: Queue) -> None:
    import aiohttp

    progress_url = str(queue.client.make_url(URL))
    answers: list[tuple[int, dict[str, Any]]] = []

    async def post(uid: str, token: str, body: dict[str, Any]) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{progress_url}/{uid}/progress", json=body,
                                    headers={"X-LC-Id": A.app_id,
                                             "X-CloudQueue-Run-Token": token}) as response:
                answers.append((response.status, await response.json()))

    tokens: list[str] = []
    late = asyncio.Event()

    @queue.host.define("work")
    async def work(params: Any, request: web.Request) -> web.Response:
        uid, token = request.headers["X-CloudQueue-Unique-Id"], request.headers[
            "X-CloudQueue-Run-Token"]
        tokens.append(token)
        if len(tokens) == 1:
            await late.wait()  # run 1 times out meanwhile; its token goes stale
            return ok("late")
        await post(uid, tokens[0], {"percent": 1})                # stale run: refused
        await post(uid, token, {"percent": 60, "message": "half"})  # this run: accepted
        await post(uid, token.split(".")[0] + ".forged", {"percent": 70})
        await post(uid, "\u00b2." + token.split(".")[1], {"percent": 70})  # not a run number
        await post(uid, token, {"percent": 200})
        return ok("done")

    uid = await queue.enqueue({"function": "work", "timeout": 200, "attempts": 1,
                               "backoff": 10})
    try:
        await until(lambda: len(tokens) == 1, "run 1 reaching the host")
        queue.clock.advance(200)  # run 1's timeout
        await settle(queue.tenants[A.app_id].engine)
        queue.clock.advance(10)  # the backoff
        info = await queue.wait(uid)
    finally:
        late.set()
    assert info.status == "success"
    assert [status for status, _ in answers] == [409, 200, 401, 401, 400]
    assert "not running any more" in answers[0][1]["error"]
    assert (await queue.info(uid))["progress"]["message"] == "half"


async def read_sse(response: Any) -> list[tuple[str, dict[str, Any]]]:
    import json

    messages, event = [], None
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            messages.append((event or "", json.loads(line[len("data: "):])))
    return messages


async def test_task_events_stream_over_sse_with_headers_or_a_read_token(queue: Queue) -> None:
    gate = asyncio.Event()

    @queue.host.define("slowly")
    async def slowly(params: Any, request: web.Request) -> web.Response:
        await gate.wait()
        return ok("done")

    uid = await queue.enqueue({"function": "slowly"})
    minted = await (await queue.client.get(f"{URL}/{uid}/read-token", headers=app_role())).json()
    with_headers = await queue.client.get(f"{URL}/{uid}/events", headers=app_role())
    with_token = await queue.client.get(
        f"{URL}/{uid}/events", params={"app": A.app_id, "token": minted["readToken"]})
    assert with_headers.headers["Content-Type"] == "text/event-stream"
    assert with_token.headers["Access-Control-Allow-Origin"] == "*"  # an EventSource elsewhere
    firsts = [await stream.content.readuntil(b"\n\n") for stream in (with_headers, with_token)]
    assert all(first.startswith(b"event: state\n") for first in firsts)  # both are subscribed
    gate.set()
    by_headers = [("state", {}), *await read_sse(with_headers)]
    by_token = [("state", {}), *await read_sse(with_token)]
    assert [e for e, _ in by_headers] == [e for e, _ in by_token]
    assert by_headers[0][0] == "state" and by_headers[-1][0] == "finished"
    assert by_headers[-1][1]["task"]["result"] == {"result": "done"}
    forged = await queue.client.get(f"{URL}/{uid}/events",
                                    params={"app": A.app_id, "token": "9999999999999.00"})
    assert forged.status == 401
    other = await queue.client.get(f"{URL}/{uid}-other/events", headers=app_role())
    assert other.status == 404
    wrong_task = await queue.client.get(f"{URL}/x/events",
                                        params={"app": A.app_id, "token": minted["readToken"]})
    assert wrong_task.status == 401


async def test_a_read_token_expires_a_day_after_it_was_minted_on_the_queues_clock(
        queue: Queue) -> None:
    uid = await queue.enqueue({"function": "f", "delay": 2 * READ_TOKEN_TTL_MS})
    minted = await (await queue.client.get(f"{URL}/{uid}/read-token", headers=app_role())).json()
    assert minted["expiresAt"] == iso_ms(T0 + READ_TOKEN_TTL_MS)
    by_token = {"app": A.app_id, "token": minted["readToken"]}
    queue.clock.advance(READ_TOKEN_TTL_MS)
    last_moment = await queue.client.get(f"{URL}/{uid}/events", params=by_token)
    assert last_moment.status == 200
    last_moment.close()
    queue.clock.advance(1)
    assert (await queue.client.get(f"{URL}/{uid}/events", params=by_token)).status == 401
