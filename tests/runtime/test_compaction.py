"""Compaction: a snapshot of live state replaces old segments, crash-safe at every step."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from cloudqueue import Engine, FakeClock, LogError, LogPoisonedError, RunContext, TaskInfo
from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.runtime.log_file import FileOps, LogCorruptError, list_segments
from cloudqueue.engine.runtime.log_store import LogStore
from cloudqueue.engine.runtime.rebuild import rebuild
from cloudqueue.engine.runtime.snapshot import encode_snapshot, list_snapshots
from cloudqueue.testing import settle

T0 = 1_700_000_000_000


async def fail(params: Any, ctx: RunContext) -> None:
    raise RuntimeError("always fails")


async def ok(params: Any, ctx: RunContext) -> str:
    return "fine"


async def populate(directory: Path, clock: FakeClock) -> list[str]:
    """A log holding a task in every state, over several segments."""
    queue = Engine(data_dir=directory, clock=clock, segment_bytes=2_000, compact_bytes=10**9,
                   concurrency=4)
    queue.define("fail")(fail)
    queue.define("ok")(ok)
    await queue.start()
    ids = [
        await queue.enqueue("ok", {"n": 1}, keep_result=600_000),                # success
        await queue.enqueue("fail", attempts=0, keep_result=600_000),            # failed
        await queue.enqueue("fail", attempts=3, backoff=50_000),                 # retry_wait
        await queue.enqueue("ok", delay=90_000, priority=3),                     # delayed
        await queue.enqueue("ok", delay=90_000, unique_id="cancel-me"),         # cancelled
    ]
    await queue.cancel("cancel-me")
    for i in range(30):
        ids.append(await queue.enqueue("ok", {"filler": "x" * 40, "i": i}, delay=95_000))
    await settle(queue)
    await queue.close()
    return ids


async def infos(directory: Path, clock: FakeClock, ids: list[str]) -> list[TaskInfo]:
    queue = Engine(data_dir=directory, clock=clock, compact_bytes=10**9)
    await queue.start()
    try:
        return [await queue.get_task_info(uid) for uid in ids]
    finally:
        await queue.close(grace_ms=0)


async def test_compaction_keeps_every_task_and_drops_segments(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    ids = await populate(tmp_path, clock)
    before = await infos(tmp_path, clock, ids)
    assert len(list_segments(tmp_path)) > 2
    async with Engine(data_dir=tmp_path, clock=clock, compact_bytes=10**9) as queue:
        removed = await queue.compact()
    assert removed >= 2 and len(list_snapshots(tmp_path)) == 1
    after = await infos(tmp_path, clock, ids)
    assert after == before
    assert {i.state.value for i in after} >= {"success", "failed", "retry_wait", "queued",
                                               "cancelled"}


async def test_events_after_the_snapshot_are_replayed_on_top(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        first = await queue.enqueue("f", delay=60_000)
        await queue.compact()
        second = await queue.enqueue("f", delay=60_000)
        await queue.cancel(first)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        assert (await queue.get_task_info(first)).state.value == "cancelled"
        assert (await queue.get_task_info(second)).state.value == "queued"
        assert queue.recovery is not None and queue.recovery.snapshot_tasks == 1


async def test_automatic_compaction_keeps_the_log_bounded(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with Engine(data_dir=tmp_path, clock=clock, segment_bytes=1_000,
                      compact_bytes=3_000) as queue:
        queue.define("ok")(ok)
        for i in range(150):
            uid = await queue.enqueue("ok", {"i": i}, keep_result=0)
            await queue.wait(uid, timeout=5000)
        await settle(queue)
        segments = len(list_segments(tmp_path))
    assert segments <= 6
    assert list_snapshots(tmp_path)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        assert len(queue.core) == 0


class SimulatedCrash(Exception):
    pass


class CrashOps(FileOps):
    """Dies at the Nth file operation, and every operation after it."""

    def __init__(self, crash_at: int) -> None:
        self.calls = 0
        self.crash_at = crash_at

    def _tick(self) -> None:
        self.calls += 1
        if self.calls >= self.crash_at:
            raise SimulatedCrash(self.calls)

    def write(self, fd: int, data: bytes) -> None:
        self._tick()
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._tick()
        super().fsync(fd)

    def write_file(self, path: Path, data: bytes) -> None:
        self._tick()
        super().write_file(path, data)

    def replace(self, src: Path, dst: Path) -> None:
        self._tick()
        super().replace(src, dst)

    def unlink(self, path: Path) -> None:
        self._tick()
        super().unlink(path)

    def fsync_dir(self, path: Path) -> None:
        self._tick()
        super().fsync_dir(path)


async def compact_offline(directory: Path, ops: FileOps) -> None:
    """What `cloudqueue log compact` does: replay, snapshot, compact; no runs, no recovery."""
    store, loaded = LogStore.open(directory, ops=ops, compact_bytes=None)
    core = rebuild(EngineCore(start_ms=T0), loaded.events, snapshot_seq=loaded.snapshot_seq,
                   snapshot_tasks=loaded.snapshot_tasks,
                   snapshot_schedules=loaded.snapshot_schedules, counters=loaded.counters)
    store.start()
    try:
        await store.compact(core.last_seq, encode_snapshot(
            core.last_seq, core.tasks(), core.counters(), core.schedules()))
    finally:
        await store.close()


async def test_a_crash_at_any_step_of_compaction_recovers_the_same_state(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    pristine = tmp_path / "pristine"
    ids = await populate(pristine, clock)
    expected = await infos(pristine, clock, ids)
    counting = CrashOps(crash_at=10**9)
    await compact_offline(_copy(pristine, tmp_path / "count"), counting)
    assert counting.calls >= 6
    for crash_at in range(1, counting.calls + 1):
        directory = _copy(pristine, tmp_path / f"crash-{crash_at}")
        with pytest.raises((SimulatedCrash, LogPoisonedError)) as died:
            await compact_offline(directory, CrashOps(crash_at))
        assert isinstance(died.value, SimulatedCrash) or isinstance(died.value.__cause__,
                                                                    SimulatedCrash)
        assert await infos(directory, clock, ids) == expected, f"crash at op {crash_at}"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("LOCK"))
    return dst


async def test_a_damaged_snapshot_refuses_to_start(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        await queue.enqueue("f", delay=60_000)
        await queue.compact()
    ((_, path),) = list_snapshots(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorruptError, match="snapshot-"):
        await Engine(data_dir=tmp_path).start()


async def test_a_leftover_tmp_snapshot_is_ignored_and_removed(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        uid = await queue.enqueue("f", delay=60_000)
    stray = tmp_path / "snapshot-00000000000000000099.snap.tmp"
    stray.write_bytes(b"half a snapshot")
    async with Engine(data_dir=tmp_path) as queue:
        assert (await queue.get_task_info(uid)).state.value == "queued"
    assert not stray.exists()


async def test_a_queue_restarted_often_still_compacts(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    for _ in range(6):  # each life writes less than compact_bytes; together they write more
        async with Engine(data_dir=tmp_path, clock=clock, compact_bytes=4_000) as queue:
            for _ in range(8):
                await queue.enqueue("f", {"pad": "x" * 40}, delay=60_000)
            await settle(queue)
    assert list_snapshots(tmp_path)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        assert len(queue.core) == 48


async def test_tasks_with_results_near_the_cap_still_compact(tmp_path: Path) -> None:
    """Five tasks with 3.5 MiB results made one snapshot frame over the 16 MiB a frame holds:
    compaction failed with a ValueError every time, and the log grew without bound."""
    big = "x" * (3_500 * 1024)
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0), concurrency=5) as queue:
        async def big_result(params: Any, ctx: RunContext) -> str:
            return big

        queue.define("big")(big_result)

        ids = [await queue.enqueue("big", keep_result=3_600_000) for _ in range(5)]
        for unique_id in ids:
            await queue.wait(unique_id, timeout=10_000)
        assert await queue.compact() >= 1
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:
        for unique_id in ids:
            assert (await queue.get_task_info(unique_id)).return_value == big


async def test_compaction_walks_no_live_task_in_the_queues_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a row for every task on the event loop (and encoding them in a thread that
    fought the loop for the GIL) stopped the queue for seconds with a few hundred thousand
    tasks held. The snapshot is folded from the files by a child process instead, and is what
    a restart would make of them."""
    def on_the_loop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the compaction walked the live tasks in the queue's process")

    clock = FakeClock(T0)
    async with Engine(data_dir=tmp_path, clock=clock, segment_bytes=2_000,
                      compact_bytes=10**9) as queue:
        queue.define("ok")(ok)
        done = [await queue.enqueue("ok", {"i": i}) for i in range(20)]
        for unique_id in done:
            await queue.wait(unique_id, timeout=5000)
        held = [await queue.enqueue("f", {"i": i}, delay=60_000) for i in range(200)]
        await queue.set_schedule("nightly", "f", cron="0 0 3 * * ?")
        before = {t.unique_id: t.info() for t in queue.core.tasks()}
        monkeypatch.setattr(EngineCore, "tasks", on_the_loop)
        assert await queue.compact() >= 1
        monkeypatch.undo()
        later = await queue.enqueue("f", delay=60_000)
    [(seq, _)] = list_snapshots(tmp_path)
    assert seq < queue.core.last_seq
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        assert {t.unique_id: t.info() for t in queue.core.tasks() if t.unique_id != later} \
            == before
        assert set(held) <= {t.unique_id for t in queue.core.tasks()}
        assert [s.spec.name for s in await queue.list_schedules()] == ["nightly"]


async def test_a_compactor_that_fails_leaves_the_log_as_it_was(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path, segment_bytes=2_000, compact_bytes=10**9) as queue:
        ids = [await queue.enqueue("f", {"i": i}, delay=60_000) for i in range(50)]
        segment = list_segments(tmp_path)[0][1]
        data = bytearray(segment.read_bytes())
        data[-3] ^= 0xFF  # the sealed segment is damaged under the queue's feet
        segment.write_bytes(bytes(data))
        with pytest.raises(LogError, match="could not fold the log"):
            await queue.compact()
        assert queue.store.accepting  # the queue goes on
        ids.append(await queue.enqueue("f", delay=60_000))
    assert not list_snapshots(tmp_path)
