"""Values the log cannot hold are refused where they enter, naming the field, and nothing
reaches the log writer: an integer beyond 64 bits once killed the writer and hung every later
enqueue of its app. Every entry point: the embedded API (params, priority, enqueue_many), a
schedule (interval, params), a progress report, and the REST API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import Engine, RunContext, ValidationError
from cloudqueue.adapters.auth import AppKeys, sign
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.engine.core.options import MAX_STORABLE_INT, MIN_STORABLE_INT
from cloudqueue.engine.core.progress import parse_progress
from cloudqueue.engine.runtime.log_file import read_log

HUGE = 1 << 64  # one past what msgpack stores
VALUES: list[Any] = [HUGE, -(1 << 63) - 1, 10 ** 40]


async def _still_writes(queue: Engine, data: Path) -> None:
    """The writer is alive: a valid enqueue is acknowledged and on disk."""
    uid = await queue.enqueue("f", {"n": MAX_STORABLE_INT, "m": MIN_STORABLE_INT}, delay=60_000)
    events, _ = read_log(data)
    assert uid in {e.unique_id for e in events}
    assert queue.store.failure is None


@pytest.mark.parametrize("value", VALUES)
async def test_embedded_enqueue_refuses_params_and_priority_beyond_64_bits(
        tmp_path: Path, value: int) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        with pytest.raises(ValidationError, match="beyond the 64-bit range") as info:
            await queue.enqueue("f", {"deep": [{"n": value}]})
        assert info.value.field == "params"
        with pytest.raises(ValidationError, match="beyond the 64-bit range") as info:
            await queue.enqueue("f", {}, priority=value)
        assert info.value.field == "priority"
        with pytest.raises(ValidationError, match="item 1.*beyond the 64-bit range"):
            await queue.enqueue_many([{"function": "f"}, {"function": "f", "params": [value]}])
        await _still_writes(queue, tmp_path)
        assert len(queue.core) == 1  # enqueue_many is all or nothing


async def test_schedules_refuse_an_interval_or_params_beyond_what_the_log_holds(
        tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        with pytest.raises(ValidationError, match="interval must be at most"):
            await queue.set_schedule("s", "f", interval=HUGE)
        with pytest.raises(ValidationError, match="beyond the 64-bit range"):
            await queue.set_schedule("s", "f", {"n": HUGE}, interval=60_000)
        assert await queue.list_schedules() == []
        await _still_writes(queue, tmp_path)


def test_progress_refuses_counts_beyond_64_bits_and_says_so_without_printing_them() -> None:
    with pytest.raises(ValidationError, match="beyond the 64-bit range") as info:
        parse_progress(done=1, total=HUGE)
    assert info.value.field == "total"
    with pytest.raises(ValidationError, match="detail holds the integer"):
        parse_progress(detail={"n": HUGE})
    with pytest.raises(ValidationError, match="of about 5001 digits"):
        parse_progress(done=10 ** 5000)  # the message never prints 5,000 digits (or fails to)


async def test_in_process_progress_beyond_64_bits_fails_the_call_not_the_log(
        tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        async def report(params: Any, ctx: RunContext) -> str:
            try:
                await ctx.progress(done=HUGE, total=HUGE)  # refused before anything is reported
            except ValidationError as exc:
                return f"refused: {exc.field}"
            return "accepted"

        queue.define("report")(report)

        info = await queue.wait(await queue.enqueue("report"), timeout=10_000)
        assert info.return_value == "refused: done"
        await _still_writes(queue, tmp_path)


async def test_rest_enqueue_answers_400_naming_the_field(tmp_path: Path) -> None:
    keys = AppKeys("app", "app-key-0123456789", "app-master-0123456789")
    tenants = {keys.app_id: QueueApp(keys, Engine(data_dir=tmp_path))}
    headers = {"X-LC-Id": keys.app_id, "Content-Type": "application/json",
               "X-LC-Sign": sign(keys.master_key, int(time.time() * 1000), master=True)}
    url = "/1.1/engine/cloud-queue/tasks"
    client: TestClient[web.Request, web.Application]
    async with TestClient(TestServer(create_app(tenants), host="127.0.0.1")) as client:
        for body in (f'{{"function": "f", "params": {{"n": {HUGE}}}}}',
                     f'{{"function": "f", "priority": {HUGE}}}'):
            response = await client.post(url, data=body, headers=headers)
            answer = await response.json()
            assert response.status == 400, answer
            assert answer["code"] == 1 and "beyond the 64-bit range" in answer["error"]
        response = await client.post(url, json={"function": "f", "delay": 60_000},
                                     headers=headers)
        assert response.status == 200
        ready = await client.get("/__health/ready")
        assert ready.status == 200


async def test_params_a_log_record_cannot_hold_are_refused_at_intake(tmp_path: Path) -> None:
    """A lone surrogate (JSON can carry one, UTF-8 cannot) or params over the size a record
    holds once killed the writer like a huge integer did."""
    async with Engine(data_dir=tmp_path) as queue:
        with pytest.raises(ValidationError, match="not valid Unicode"):
            await queue.enqueue("f", {"name": "caf\udce9"})
        with pytest.raises(ValidationError, match="bytes packed, over the"):
            await queue.enqueue("f", {"blob": ["x" * 1_000_000] * 20})
        with pytest.raises(ValidationError, match="not valid Unicode"):
            await queue.set_schedule("s", "f", ["\ud800"], interval=60_000)
        await _still_writes(queue, tmp_path)
