"""GET /metrics: what it counts, exactly (a known sequence on a FakeClock, the answer read with
``prometheus_client``'s own parser), who may read it (loopback open, any other address the
operator token only), and ``metrics = false``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from cloudqueue import Engine, FakeClock, Run, TaskState
from cloudqueue.adapters.auth import AppKeys, sign
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.adapters.http_api.metrics import is_loopback
from cloudqueue.adapters.http_api.tenants import APPS
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker
from cloudqueue.config import AppConfig, ServeConfig, load_config
from cloudqueue.engine.core.quotas import Quotas
from cloudqueue.engine.runtime.log_store import LogStore
from cloudqueue.server import build_app
from cloudqueue.testing import settle
from tests.waiting import until

A = AppKeys("appA", "appA-key-0123456789", "appA-master-0123456789")
B = AppKeys("appB", "appB-key-0123456789", "appB-master-0123456789")
TOKEN = "operator-token-0123456789abcdef"
URL = "/1.1/engine/cloud-queue/tasks"
T0 = 1_700_000_000_000
Client = TestClient[web.Request, web.Application]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def master(keys: AppKeys = A) -> dict[str, str]:
    return {"X-LC-Id": keys.app_id,
            "X-LC-Sign": sign(keys.master_key, int(time.time() * 1000), master=True)}


async def scrape(client: Client, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of the answer, by name and labels, as Prometheus's parser reads them."""
    response = await client.get("/metrics", headers=headers or {})
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def series(samples: Samples, name: str, app: str = "appA") -> dict[tuple[tuple[str, str], ...],
                                                                  float]:
    """``name``'s samples of ``app``, by their other labels."""
    return {tuple(kv for kv in labels if kv[0] != "app"): v
            for (found, labels), v in samples.items()
            if found == name and ("app", app) in labels}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Client, Engine, FakeClock]]:
    clock = FakeClock(T0)
    engine = Engine(data_dir=tmp_path / "a", concurrency=1, quotas=Quotas(held=3), clock=clock)

    @engine.define
    async def slow(params: Any, run: Run) -> Any:
        await clock.sleep(params["ms"])
        return params["ms"]

    @engine.define
    async def boom(params: Any, run: Run) -> Any:
        raise RuntimeError("it broke")

    other = Engine(clock=clock)  # in memory: no log metrics
    app = create_app({A.app_id: QueueApp(A, engine), B.app_id: QueueApp(B, other)},
                     listen_host="127.0.0.1")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, engine, clock


async def test_a_known_sequence_reads_back_exactly(
        served: tuple[Client, Engine, FakeClock]) -> None:
    client, engine, clock = served

    async def enqueue(body: dict[str, Any], keys: AppKeys = A) -> int:
        response = await client.post(URL, json=body, headers=master(keys))
        return response.status

    async def advance(ms: int) -> None:
        clock.advance(ms)
        await settle(engine)

    # T0: two slow tasks and one that fails (one retry, a second later); the held quota is 3
    assert await enqueue({"function": "slow", "params": {"ms": 200}, "uniqueId": "s1"}) == 200
    assert await enqueue({"function": "slow", "params": {"ms": 300}, "uniqueId": "s2"}) == 200
    assert await enqueue({"function": "boom", "attempts": 1, "backoff": 1000,
                          "uniqueId": "b1"}) == 200
    assert await enqueue({"function": "slow", "params": {"ms": 1}}) == 429  # held: 3
    assert await enqueue({"function": "later", "delay": 60_000}, B) == 200
    await settle(engine)  # s1 runs from T0; s2 and b1 wait
    await advance(200)  # s1 succeeded (ran 0.2 s); s2 started (waited 0.2 s)
    await advance(100)
    samples = await scrape(client)
    assert series(samples, "cloudqueue_tasks") == {
        (("state", "queued"),): 1, (("state", "running"),): 1, (("state", "retry_wait"),): 0,
        (("state", "success"),): 1, (("state", "failed"),): 0, (("state", "cancelled"),): 0}
    # b1 has been ready since T0 (s2, enqueued before it, was ready as long but has started)
    assert value(samples, "cloudqueue_oldest_ready_task_age_seconds", app="appA") == 0.3
    assert series(samples, "cloudqueue_tasks", "appB")[(("state", "queued"),)] == 1
    assert value(samples, "cloudqueue_oldest_ready_task_age_seconds", app="appB") == 0  # delayed

    await advance(200)  # +500: s2 succeeded (0.3 s); b1 started (waited 0.5 s) and failed
    await advance(1000)  # +1500: b1's retry woke, started at once and failed for good
    response = await client.post(URL, json={"function": "slow", "params": {"ms": 1},
                                            "delay": 60_000, "uniqueId": "d1"},
                                 headers=master())
    assert response.status == 200
    assert (await client.post(f"{URL}/d1/cancel", headers=master())).status == 200
    await settle(engine)
    samples = await scrape(client)

    assert series(samples, "cloudqueue_tasks_enqueued_total") == {
        (("function", "slow"),): 3, (("function", "boom"),): 1}
    assert series(samples, "cloudqueue_tasks_finished_total") == {
        (("function", "slow"), ("status", "success")): 2,
        (("function", "boom"), ("status", "failed")): 1,
        (("function", "slow"), ("status", "cancelled")): 1}
    assert series(samples, "cloudqueue_runs_total") == {
        (("function", "slow"), ("outcome", "success")): 2,
        (("function", "boom"), ("outcome", "error")): 2}
    assert series(samples, "cloudqueue_quota_rejections_total") == {
        (("quota", "held"),): 1, (("quota", "rate"),): 0, (("quota", "daily"),): 0}
    assert series(samples, "cloudqueue_tasks") == {
        (("state", "queued"),): 0, (("state", "running"),): 0, (("state", "retry_wait"),): 0,
        (("state", "success"),): 2, (("state", "failed"),): 1, (("state", "cancelled"),): 1}
    assert value(samples, "cloudqueue_oldest_ready_task_age_seconds", app="appA") == 0

    # queue waits: s1 0, s2 0.2, b1 0.5, b1's retry 0 (ready when it woke)
    wait = series(samples, "cloudqueue_queue_wait_seconds_bucket")
    assert [wait[(("le", le),)] for le in ("0.005", "0.1", "0.5", "+Inf")] == [2, 2, 4, 4]
    assert value(samples, "cloudqueue_queue_wait_seconds_count", app="appA") == 4
    assert value(samples, "cloudqueue_queue_wait_seconds_sum", app="appA") == pytest.approx(0.7)
    # runs: slow 0.2 and 0.3 s, boom 0 and 0
    assert value(samples, "cloudqueue_run_duration_seconds_count", app="appA",
                 function="slow") == 2
    assert value(samples, "cloudqueue_run_duration_seconds_sum", app="appA",
                 function="slow") == pytest.approx(0.5)
    assert value(samples, "cloudqueue_run_duration_seconds_bucket", app="appA",
                 function="slow", le="0.25") == 1
    assert value(samples, "cloudqueue_run_duration_seconds_bucket", app="appA",
                 function="boom", le="0.005") == 2
    # four enqueue calls acknowledged (the refused one is not); the fake clock stood still
    assert value(samples, "cloudqueue_enqueue_ack_seconds_count", app="appA") == 4
    assert value(samples, "cloudqueue_enqueue_ack_seconds_sum", app="appA") == 0
    assert value(samples, "cloudqueue_enqueue_ack_seconds_count", app="appB") == 1

    store = engine.store
    assert isinstance(store, LogStore)
    assert value(samples, "cloudqueue_log_fsync_seconds_count", app="appA") == store.syncs > 0
    assert value(samples, "cloudqueue_log_records_total", app="appA") == store.records
    assert value(samples, "cloudqueue_log_batches_total", app="appA") == store.batches
    assert value(samples, "cloudqueue_log_bytes", app="appA") == store.bytes_since_snapshot > 0
    assert series(samples, "cloudqueue_log_records_total", "appB") == {}  # in memory
    assert series(samples, "cloudqueue_run_limit") == {(("limit", "concurrency"),): 1,
                                                       (("limit", "current"),): 1}
    assert value(samples, "cloudqueue_app_ready", app="appA") == 1
    assert series(samples, "cloudqueue_host_up") == {}  # no function host
    assert value(samples, "process_cpu_seconds_total") is not None  # the library's own
    assert any(name == "python_gc_collections_total" for name, _ in samples)
    # no sample is labelled with anything but a closed set
    assert {key for _, labels in samples for key, _ in labels} <= {
        "app", "function", "status", "outcome", "state", "quota", "limit", "le", "generation",
        "implementation", "major", "minor", "patchlevel", "version"}


async def test_the_oldest_ready_task_is_the_one_ready_longest_not_the_next_to_run() -> None:
    clock = FakeClock(T0)
    async with Engine(concurrency=1, clock=clock) as engine:
        @engine.define
        async def hold(params: Any, run: Run) -> None:
            await clock.sleep(10_000)

        await engine.enqueue("hold")
        await settle(engine)  # it holds the one slot from now on
        await engine.enqueue("hold", priority=5, unique_id="x")  # ready at T0
        clock.advance(100)
        await engine.enqueue("hold", priority=1, unique_id="y")  # next to run, ready at +100
        await engine.enqueue("hold", priority=9, delay=50, unique_id="z")  # ready at +150
        clock.advance(200)
        await settle(engine)
        assert engine.metrics is not None
        assert engine.metrics.oldest_ready_age_ms(clock.now_ms()) == 300  # x's
        await engine.cancel("x")
        assert engine.metrics.oldest_ready_age_ms(clock.now_ms()) == 200  # y's
        await engine.cancel("y")
        await settle(engine)
        assert engine.metrics.oldest_ready_age_ms(clock.now_ms()) == 150  # z's: since +150


async def test_functions_past_the_fiftieth_count_as_other() -> None:
    async with Engine() as engine:
        for n in range(55):
            await engine.enqueue(f"fn{n:02d}", delay=60_000)
        await engine.enqueue("fn00", delay=60_000)
        await engine.enqueue("fn54", delay=60_000)
        assert engine.metrics is not None
        enqueued = engine.metrics.enqueued
        assert len(enqueued) == 51
        assert (enqueued["fn00"], enqueued["fn49"], enqueued["other"]) == (2, 1, 6)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("/run/cloudqueue.sock", True),
    ("unix:/run/cloudqueue.sock", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.7", False),
    ("192.168.1.20", False), ("queue.example.com", False), (None, False),
])
def test_which_listen_addresses_are_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


Serve = Callable[..., Awaitable[Client]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """``cloudqueue serve``'s application for a ServeConfig, on 127.0.0.1 whatever the config's
    host says (the credential rule follows the configured address)."""
    clients: list[Client] = []

    async def start(**settings: Any) -> Client:
        config = ServeConfig(data_dir=tmp_path / f"data{len(clients)}",
                             apps=(AppConfig(A),), **settings)
        client = TestClient(TestServer(build_app(config), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def test_metrics_are_open_while_the_server_listens_on_loopback(serve: Serve) -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        client = await serve(host=host)
        samples = await scrape(client)
        assert value(samples, "cloudqueue_app_ready", app="appA") == 1


async def test_on_another_address_metrics_need_the_operator_token(serve: Serve) -> None:
    client = await serve(host="0.0.0.0", admin_token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer not-the-token-at-all"},
                    {"Authorization": f"Basic {TOKEN}"}, master()):
        response = await client.get("/metrics", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json()) == {
            "code": 401, "error": "GET /metrics needs Authorization: Bearer <admin_token> "
                                  "while the server listens on 0.0.0.0 (not loopback)"}
    samples = await scrape(client, {"Authorization": f"Bearer {TOKEN}"})
    assert value(samples, "cloudqueue_app_ready", app="appA") == 1


async def test_on_another_address_without_an_admin_token_metrics_say_to_set_one(
        serve: Serve) -> None:
    client = await serve(host="0.0.0.0")
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 401
    error = (await response.json())["error"]
    assert "this server has none: set admin_token in its configuration" in error
    assert "CLOUDQUEUE_ADMIN_TOKEN" in error


async def test_metrics_false_leaves_out_the_endpoint_and_the_counting(tmp_path: Path,
                                                                      serve: Serve) -> None:
    path = tmp_path / "serve.toml"
    path.write_text('metrics = false\n[[apps]]\napp_id = "appA"\napp_key = "k"\n'
                    'master_key = "m"\n')
    assert load_config(path).metrics is False
    client = await serve(metrics=False)
    assert (await client.get("/metrics")).status == 404
    assert client.app is not None
    assert [queue_app.engine.metrics for queue_app in client.app[APPS].values()] == [None]
    async with Engine(metrics=False) as engine:
        await engine.enqueue("f", delay=60_000)
        assert engine.metrics is None
        assert engine.core.tasks_by_state()[TaskState.QUEUED] == 1  # the core counts states anyway


async def test_an_unreachable_host_reads_as_down_and_its_runs_as_requeued(
        tmp_path: Path, unused_tcp_port: int) -> None:
    clock = FakeClock(T0)
    invoker = HttpInvoker(f"http://127.0.0.1:{unused_tcp_port}", A, probe_min_ms=60_000,
                          clock=clock)
    engine = Engine(data_dir=tmp_path / "q", concurrency=8, host_concurrency="adaptive",
                    invoker=invoker, clock=clock)
    app = create_app({A.app_id: QueueApp(A, engine)}, listen_host="::1")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.post(URL, json={"function": "work", "uniqueId": "w"},
                                     headers=master())
        assert response.status == 200
        await until(lambda: not invoker.available, "the host found unreachable")
        await settle(engine)
        samples = await scrape(client)
    assert value(samples, "cloudqueue_host_up", app="appA") == 0
    assert series(samples, "cloudqueue_runs_total") == {
        (("function", "work"), ("outcome", "requeued")): 1}
    assert series(samples, "cloudqueue_tasks")[(("state", "queued"),)] == 1
    assert series(samples, "cloudqueue_run_limit") == {
        (("limit", "concurrency"),): 8, (("limit", "current"),): 1, (("limit", "host"),): 1}


async def test_counters_start_at_zero_after_a_restart_while_the_gauges_hold_the_log(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with Engine(data_dir=tmp_path / "q", clock=clock) as engine:
        for n in range(3):
            await engine.enqueue("later", delay=60_000, unique_id=f"t{n}")
        await engine.cancel("t0")
        assert engine.metrics is not None
        assert dict(engine.metrics.enqueued) == {"later": 3}
    async with Engine(data_dir=tmp_path / "q", clock=clock) as engine:
        assert engine.metrics is not None
        assert (dict(engine.metrics.enqueued), dict(engine.metrics.finished)) == ({}, {})
        by_state = engine.core.tasks_by_state()
        assert (by_state[TaskState.QUEUED], by_state[TaskState.CANCELLED]) == (2, 1)
