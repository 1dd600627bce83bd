"""Engine.enqueue_many: one call, one group commit, all or nothing, uniqueIds in order."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from cloudqueue import (
    DiskFullError,
    DuplicateTaskError,
    Engine,
    FakeClock,
    RunContext,
    TaskState,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.events import TaskPurged, TaskSubmitted
from cloudqueue.engine.core.quotas import QuotaExceededError, Quotas
from cloudqueue.engine.runtime.log_file import read_log
from cloudqueue.testing import settle
from tests.runtime.test_log_store import CountingOps
from tests.waiting import until

T0 = 1_700_000_000_000
DAY = 86_400_000


def items(n: int, **options: Any) -> list[dict[str, Any]]:
    return [{"function": "f", "params": {"i": i}, **options} for i in range(n)]


async def test_returns_the_ids_in_order_after_one_write_and_one_fsync(tmp_path: Path) -> None:
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops, clock=FakeClock(T0)) as queue:
        writes, syncs = ops.writes, ops.syncs
        ids = await queue.enqueue_many([*items(3, delay=DAY),
                                        {"function": "g", "unique_id": "mine", "attempts": 4,
                                         "delay": DAY}])
        assert (ops.writes - writes, ops.syncs - syncs) == (1, 1)
        assert ids[3] == "mine" and len(set(ids)) == 4
        infos = [await queue.get_task_info(uid) for uid in ids]
    assert [info.function for info in infos] == ["f", "f", "f", "g"]
    assert infos[3].max_runs == 5
    events, _ = read_log(tmp_path)
    assert [e.unique_id for e in events] == ids
    assert [e.params for e in events if isinstance(e, TaskSubmitted)] == [
        {"i": 0}, {"i": 1}, {"i": 2}, {}]


async def test_an_empty_batch_writes_nothing(tmp_path: Path) -> None:
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops) as queue:
        writes = ops.writes
        assert await queue.enqueue_many([]) == []
        assert ops.writes == writes


@pytest.mark.parametrize(("bad", "match"), [
    ({"function": "f", "delay": -1}, "item 2: delay must be >= 0 ms"),
    ({"function": "a/b"}, "item 2: function may not contain '/'"),
    ({"params": {"i": 1}}, "item 2: function must be a non-empty string"),
    ({"function": "f", "params": {"x": float("nan")}}, "item 2: params must be JSON"),
    ({"function": "f", "colour": "red"}, "item 2: unknown option 'colour'"),
    ({"function": "f", "unique_id": "a b"}, "item 2: unique_id may not contain ' '"),
    (["f", {}], "item 2: must be a mapping"),
])
async def test_one_invalid_item_refuses_the_whole_batch(tmp_path: Path, bad: Any,
                                                        match: str) -> None:
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops) as queue:
        writes = ops.writes
        with pytest.raises(ValidationError, match=match) as caught:
            await queue.enqueue_many([*items(2, unique_id=None), bad, *items(2)])
        assert caught.value.index == 2
        assert len(queue.core) == 0 and ops.writes == writes
    assert read_log(tmp_path)[0] == []


async def test_a_unique_id_given_twice_in_the_batch_refuses_it(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        batch = [{"function": "f", "unique_id": u} for u in ("a", "b", "c", "b")]
        with pytest.raises(DuplicateTaskError, match="item 3: uniqueId 'b' is also given to "
                                                     "item 1 of this batch") as caught:
            await queue.enqueue_many(batch)
        assert caught.value.index == 3 and caught.value.unique_id == "b"
        assert caught.value.http_status == 409
        assert len(queue.core) == 0
    assert read_log(tmp_path)[0] == []


async def test_a_unique_id_held_by_a_task_refuses_the_batch(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        await queue.enqueue("f", delay=DAY, unique_id="held")
        with pytest.raises(DuplicateTaskError, match="item 1: A task with uniqueId 'held' "
                                                     "already exists") as caught:
            await queue.enqueue_many([{"function": "f", "unique_id": "new"},
                                      {"function": "f", "unique_id": "held"}])
        assert caught.value.index == 1
        with pytest.raises(UnknownTaskError):
            await queue.get_task_info("new")
        assert len(queue.core) == 1
    assert [e.unique_id for e in read_log(tmp_path)[0]] == ["held"]


async def test_a_unique_id_whose_keep_result_ran_out_is_free_again(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        old = await queue.enqueue("f", delay=DAY, unique_id="again", keep_result=1_000)
        await queue.cancel(old)
        clock.advance(1_000)  # expired; the purge may not have been logged yet
        (uid,) = await queue.enqueue_many([{"function": "g", "unique_id": "again",
                                             "delay": DAY}])
        assert (await queue.get_task_info(uid)).function == "g"
    events, _ = read_log(tmp_path)
    assert [type(e) for e in events][-2:] == [TaskPurged, TaskSubmitted]


async def test_a_batch_over_a_quota_is_refused_whole(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path, quotas=Quotas(held=5)) as queue:
        await queue.enqueue_many(items(3, delay=DAY))
        with pytest.raises(QuotaExceededError, match="a batch of 3 would exceed it"):
            await queue.enqueue_many(items(3, delay=DAY))
        assert len(queue.core) == 3
        await queue.enqueue_many(items(2, delay=DAY))
        assert len(queue.core) == 5


async def test_a_batch_survives_a_restart(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        ids = await queue.enqueue_many(items(10_000, delay=DAY, attempts=2))
    async with Engine(data_dir=tmp_path) as queue:
        assert queue.recovery is not None and queue.recovery.records == 10_000
        infos = [await queue.get_task_info(uid) for uid in ids]
    assert all(info.state is TaskState.QUEUED and info.max_runs == 3 for info in infos)
    assert [e.params["i"] for e in read_log(tmp_path)[0]  # type: ignore[union-attr]
            ] == list(range(10_000))


async def test_a_full_disk_rolls_the_whole_batch_back(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000_000)
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops, clock=clock) as queue:
        kept = await queue.enqueue("f", delay=DAY)
        ops.fail_write = errno.ENOSPC
        batch: list[dict[str, Any]] = [{"function": "f", "unique_id": f"lost-{i}", "delay": DAY}
                                       for i in range(50)]
        with pytest.raises(DiskFullError, match="not stored"):
            await queue.enqueue_many(batch)
        for item in batch:
            with pytest.raises(UnknownTaskError):
                await queue.get_task_info(item["unique_id"])
        assert len(queue.core) == 1
        ops.fail_write = None  # space freed
        clock.advance(49)
        await settle(queue)
        assert not queue.store.accepting
        clock.advance(1)  # the log tries the disk again 50 ms after it was full
        await until(lambda: queue.store.accepting, "the retry")
        again = await queue.enqueue_many(batch)  # the ids were never taken
    assert again == [item["unique_id"] for item in batch]
    async with Engine(data_dir=tmp_path) as queue:
        assert len(queue.core) == 51
    assert [e.unique_id for e in read_log(tmp_path)[0]] == [kept, *again]


async def noop(params: Any, ctx: RunContext) -> int:
    return int(params["i"])


async def test_batched_tasks_run_like_any_other(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path, concurrency=8) as queue:
        queue.define(noop)
        ids = await queue.enqueue_many([{"function": "noop", "params": {"i": i}}
                                        for i in range(50)])
        infos = [await queue.wait(uid, timeout=10_000) for uid in ids]
    assert [info.return_value for info in infos] == list(range(50))
