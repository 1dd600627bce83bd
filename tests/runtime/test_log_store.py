"""The durable log under the Engine: ack after fsync, group commit, faults, restart, damage."""

from __future__ import annotations

import asyncio
import errno
import io
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest

from cloudqueue import (
    DiskFullError,
    DuplicateTaskError,
    Engine,
    FakeClock,
    LogPoisonedError,
    RunContext,
    TaskState,
    UnknownTaskError,
)
from cloudqueue.engine.core.batch_codec import encode_batch, encode_segment_header
from cloudqueue.engine.core.errors import OutcomeUnknownError
from cloudqueue.engine.core.events import RunStarted, TaskSubmitted
from cloudqueue.engine.core.framing import encode_frame, scan
from cloudqueue.engine.core.options import DeliveryMode, TaskOptions
from cloudqueue.engine.runtime.log_file import (
    FileOps,
    FsyncPolicy,
    LogCorruptError,
    LogLockedError,
    list_segments,
    read_log,
    segment_name,
)
from cloudqueue.engine.runtime.log_store import LogStore
from cloudqueue.testing import settle
from tests.waiting import turns, until

T0 = 1_700_000_000_000


class CountingOps(FileOps):
    """The real file layer, counting syncs, with switchable faults."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.syncs = 0
        self.writes = 0
        self.fail_fsync: int | None = None   # errno to raise from the next fsync
        self.fail_write: int | None = None   # errno to raise from every write while set
        self.full_writes = 0  # how many of the next writes find the disk full
        self.full_at: list[int] = []  # when (on ``clock``) a write found the disk full
        self.clock = clock
        self.gate: threading.Event | None = None  # fsync waits for it when set
        self.at_gate = False  # an fsync has reached the gate

    def write(self, fd: int, data: bytes) -> None:
        fail = self.fail_write
        if self.full_writes:
            self.full_writes -= 1
            fail = errno.ENOSPC
        if fail is not None:
            if fail == errno.ENOSPC and self.clock is not None:
                self.full_at.append(self.clock.now_ms())
            super().write(fd, data[: len(data) // 2])  # a partial write, as a full disk leaves
            raise OSError(fail, "injected")
        self.writes += 1
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.gate is not None:
            self.at_gate = True
            self.gate.wait(5)
        if self.fail_fsync is not None:
            code, self.fail_fsync = self.fail_fsync, None
            raise OSError(code, "injected fsync failure")
        self.syncs += 1
        super().fsync(fd)


def write_log(directory: Path, events: list[Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    header = encode_segment_header(1, 0)  # a first segment holding one batch, as written
    (directory / segment_name(1)).write_bytes(
        header + encode_batch(events, len(header), len(header)))


async def noop(params: Any, ctx: RunContext) -> str:
    return "done"


# ---------------------------------------------------------------------------- acknowledgement


async def test_enqueue_returns_only_after_fsync(tmp_path: Path) -> None:
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops) as queue:
        ops.gate = threading.Event()
        pending = asyncio.ensure_future(queue.enqueue("f", delay=10_000, unique_id="u1"))
        await until(lambda: ops.at_gate, "the enqueue's fsync")
        await turns()
        assert not pending.done()
        ops.gate.set()
        assert await asyncio.wait_for(pending, 5) == "u1"
        ops.gate = None
    events, _ = read_log(tmp_path)
    assert [e.unique_id for e in events if isinstance(e, TaskSubmitted)] == ["u1"]


async def test_concurrent_enqueues_share_fsyncs(tmp_path: Path) -> None:
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops) as queue:
        before = ops.syncs
        ids = await asyncio.gather(*(queue.enqueue("f", delay=60_000) for _ in range(200)))
        syncs = ops.syncs - before
    assert len(set(ids)) == 200
    assert 1 <= syncs < 100  # group commit: many records per fsync
    events, _ = read_log(tmp_path)
    assert len(events) == 200


async def test_acknowledged_tasks_survive_a_restart(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        ids = [await queue.enqueue("f", {"i": i}, delay=60_000, priority=i) for i in range(20)]
    async with Engine(data_dir=tmp_path) as queue:
        infos = [await queue.get_task_info(uid) for uid in ids]
    assert all(info.state is TaskState.QUEUED for info in infos)
    assert queue.recovery is not None and queue.recovery.records == 20


async def test_results_and_timers_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        queue.define("noop")(noop)
        done = await queue.enqueue("noop", keep_result=60_000)
        await queue.wait(done, timeout=5000)
        delayed = await queue.enqueue("noop", delay=5_000)
    clock.advance(4_999)
    queue = Engine(data_dir=tmp_path, clock=clock)
    queue.define("noop")(noop)
    await queue.start()
    assert (await queue.get_task_info(done)).return_value == "done"
    await settle(queue)
    assert (await queue.get_task_info(delayed)).state is TaskState.QUEUED
    clock.advance(1)
    assert (await queue.wait(delayed, timeout=5000)).status == "success"
    clock.advance(60_000)
    await settle(queue)
    with pytest.raises(UnknownTaskError):
        await queue.get_task_info(done)
    await queue.close()


# ---------------------------------------------------------------------------- crash recovery


def crashed_mid_run(directory: Path, mode: DeliveryMode) -> None:
    """A log as a crash leaves it: the task was submitted and its run started, no outcome."""
    write_log(directory, [
        TaskSubmitted(1, T0, "t", "noop", {}, TaskOptions(attempts=0, delivery_mode=mode), T0),
        RunStarted(2, T0 + 1, "t", 1),
    ])


async def test_at_least_once_run_lost_in_a_crash_runs_again_uncharged(tmp_path: Path) -> None:
    crashed_mid_run(tmp_path, DeliveryMode.AT_LEAST_ONCE)
    clock = FakeClock(T0 + 100)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        queue.define("noop")(noop)
        info = await queue.wait("t", timeout=5000)
    assert (info.status, info.attempt, info.return_value) == ("success", 1, "done")


async def test_at_most_once_run_lost_in_a_crash_fails_and_never_runs(tmp_path: Path) -> None:
    crashed_mid_run(tmp_path, DeliveryMode.AT_MOST_ONCE)
    ran = False

    async def spy(params: Any, ctx: RunContext) -> None:
        nonlocal ran
        ran = True

    clock = FakeClock(T0 + 100)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        queue.define("noop")(spy)
        await settle(queue)
        info = await queue.get_task_info("t")
    assert not ran
    assert info.status == "failed" and "lost when the queue restarted" in (info.error or "")


async def test_recovery_decision_is_logged_so_a_second_replay_agrees(tmp_path: Path) -> None:
    crashed_mid_run(tmp_path, DeliveryMode.AT_MOST_ONCE)
    clock = FakeClock(T0 + 100)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        first = await queue.get_task_info("t")
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        second = await queue.get_task_info("t")
    assert first == second
    events, _ = read_log(tmp_path)
    assert [type(e).__name__ for e in events] == ["TaskSubmitted", "RunStarted", "RunFailed"]


# ---------------------------------------------------------------------------- damage


async def test_torn_tail_is_cut_and_kept_aside(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        kept = await queue.enqueue("f", delay=60_000)
    segment = tmp_path / segment_name(1)
    good = segment.read_bytes()
    torn = encode_frame(b"\x81\xa1k\xa3sub" * 10)[:-7]
    segment.write_bytes(good + torn)
    async with Engine(data_dir=tmp_path) as queue:
        assert (await queue.get_task_info(kept)).state is TaskState.QUEUED
        report = queue.recovery
    assert report is not None
    assert (report.torn_offset, report.dropped_bytes) == (len(good), len(torn))
    assert report.saved_to is not None and (tmp_path / report.saved_to).read_bytes() == torn
    assert segment.stat().st_size >= len(good)  # cut back, then appended to


async def test_damage_in_the_middle_refuses_to_start_naming_segment_and_offset(
        tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path) as queue:
        for _ in range(5):
            await queue.enqueue("f", delay=60_000)
    segment = tmp_path / segment_name(1)
    data = bytearray(segment.read_bytes())
    second_event = scan(bytes(data)).offsets[3]  # marker, event, marker, event: the 2nd event
    data[second_event + 12] ^= 0x40
    segment.write_bytes(bytes(data))
    with pytest.raises(LogCorruptError) as info:
        await Engine(data_dir=tmp_path).start()
    assert info.value.segment == segment_name(1) and info.value.offset == second_event
    assert "cloudqueue log repair" in str(info.value)


async def test_log_rotates_into_segments_and_replays_them_all(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path, segment_bytes=1_000, compact_bytes=10**9) as queue:
        ids = [await queue.enqueue("f", delay=60_000) for _ in range(40)]
    assert len(list_segments(tmp_path)) > 3
    async with Engine(data_dir=tmp_path, segment_bytes=1_000, compact_bytes=10**9) as queue:
        assert len(queue.core) == 40
        assert {(await queue.get_task_info(uid)).state for uid in ids} == {TaskState.QUEUED}


async def test_a_second_engine_cannot_open_the_same_directory(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path):
        with pytest.raises(LogLockedError, match="in use by another cloudqueue process"):
            await Engine(data_dir=tmp_path).start()


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
async def test_failed_fsync_answers_outcome_unknown_and_fails_closed(tmp_path: Path,
                                                                     code: int) -> None:
    """After a failed fsync the written bytes may or may not reach the disk (fsyncgate): the
    caller is told "outcome unknown" with the id to retry under, never "not stored" (ENOSPC
    from fsync is no full disk: the bytes are already in the file), and nothing more is
    acknowledged."""
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops) as queue:
        before = await queue.enqueue("f", delay=60_000)
        ops.fail_fsync = code
        with pytest.raises(OutcomeUnknownError, match="retry with the same uniqueId") as info:
            await queue.enqueue("f", delay=60_000, unique_id="maybe")
        assert info.value.body()["uniqueId"] == "maybe" and info.value.http_status == 503
        with pytest.raises(LogPoisonedError, match="nothing more is acknowledged"):
            await queue.enqueue("f", delay=60_000, unique_id="never")
        assert not queue.store.accepting and queue.store.failure is not None
        syncs = ops.syncs
        assert (await queue.get_task_info(before)).state is TaskState.QUEUED  # reads still work
    assert ops.syncs == syncs  # the failed fsync was not retried and trusted, not even at close
    async with Engine(data_dir=tmp_path) as queue:
        assert (await queue.get_task_info(before)).state is TaskState.QUEUED
        with pytest.raises(UnknownTaskError):
            await queue.get_task_info("never")  # told "not stored": it never comes back
        # the bytes of "maybe" were in the page cache and so survived: a retry under the same
        # id is safe, it answers "already there" instead of running the task twice
        with pytest.raises(DuplicateTaskError):
            await queue.enqueue("f", delay=60_000, unique_id="maybe")


async def test_any_exception_in_the_write_path_fails_closed(tmp_path: Path) -> None:
    """Not only OSError: whatever breaks the writer (here the encoder meeting a value it cannot
    hold, which the edges now refuse) poisons the store, answers every waiter at once, and
    readiness reports it."""
    async with Engine(data_dir=tmp_path) as queue:
        kept = await queue.enqueue("f", delay=60_000)
        unstorable = TaskSubmitted(queue.core.last_seq + 1, T0, "bad", "f", {"n": 1 << 70},
                                   TaskOptions(), T0)
        queue.core.last_seq += 1
        queue.store.append([unstorable])
        with pytest.raises(LogPoisonedError, match="nothing more is acknowledged"):
            await asyncio.wait_for(queue.store.wait_durable(unstorable.seq), 5)
        with pytest.raises(LogPoisonedError):
            await asyncio.wait_for(queue.enqueue("f", delay=60_000), 5)
        assert queue.store.failure is not None
    async with Engine(data_dir=tmp_path) as queue:
        assert [t.unique_id for t in queue.core.tasks()] == [kept]


async def test_full_disk_refuses_new_tasks_loses_nothing_and_resumes(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops, clock=clock) as queue:
        kept = await queue.enqueue("f", delay=60_000)
        ops.fail_write = errno.ENOSPC
        with pytest.raises(DiskFullError, match="not stored"):
            await queue.enqueue("f", delay=60_000, unique_id="lost")
        with pytest.raises(UnknownTaskError):
            await queue.get_task_info("lost")  # rolled back, not half-created
        with pytest.raises(DiskFullError):
            await queue.enqueue("f", delay=60_000, unique_id="refused")
        ops.fail_write = None  # space freed; the log tries again 50 ms after the failure
        clock.advance(49)
        await settle(queue)
        assert not queue.store.accepting
        clock.advance(1)
        await until(lambda: queue.store.accepting, "the retry")
        after = await queue.enqueue("f", delay=60_000, unique_id="lost")
    events, _ = read_log(tmp_path)
    assert [e.unique_id for e in events] == [kept, after]


def test_fsync_policy_parses_its_three_modes() -> None:
    assert FsyncPolicy.parse("always") == FsyncPolicy("always")
    assert FsyncPolicy.parse("never") == FsyncPolicy("never")
    assert FsyncPolicy.parse("interval:250") == FsyncPolicy("interval", 250)
    with pytest.raises(ValueError, match="always, never or interval"):
        FsyncPolicy.parse("sometimes")


async def test_interval_policy_acknowledges_before_syncing_and_syncs_soon(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops, fsync="interval:50", clock=clock) as queue:
        syncs = ops.syncs  # the one sync of what recovery read
        await queue.enqueue("f", delay=60_000)
        await queue.enqueue("f", delay=60_000)
        assert ops.syncs == syncs  # acknowledged, not synced
        clock.advance(49)
        await settle(queue)
        assert ops.syncs == syncs
        clock.advance(1)  # 50 ms after the last sync: both writes synced at once
        await settle(queue)
        assert ops.syncs == syncs + 1
        clock.advance(1_000)
        await settle(queue)
        assert ops.syncs == syncs + 1  # nothing more to sync
        await queue.enqueue("f", delay=60_000)  # the interval has passed: synced at once
        assert ops.syncs == syncs + 2


async def test_run_outcome_during_a_full_disk_is_written_once_space_returns(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    ops = CountingOps(clock)
    started, release = asyncio.Event(), asyncio.Event()

    async def gated(params: Any, ctx: RunContext) -> str:
        started.set()
        await release.wait()
        return "ok"

    async with Engine(data_dir=tmp_path, file_ops=ops, clock=clock) as queue:
        queue.define("gated")(gated)
        uid = await queue.enqueue("gated")
        await started.wait()
        ops.full_writes = 4  # the success is kept in memory, retried with backoff
        release.set()
        for retry_at in (50, 150, 350, 750):  # 50 ms after the failure, doubling
            await until(lambda at=retry_at: clock.next_deadline_ms() == T0 + at,  # type: ignore[misc]
                        f"a retry planned at +{retry_at} ms")
            assert not queue.store.accepting
            clock.set(T0 + retry_at)
        info = await queue.wait(uid, timeout=5_000)
        assert queue.store.accepting
    assert ops.full_at == [T0, T0 + 50, T0 + 150, T0 + 350]
    assert info.return_value == "ok"
    events, _ = read_log(tmp_path)
    assert [type(e).__name__ for e in events] == ["TaskSubmitted", "RunStarted", "RunSucceeded"]


async def test_daily_quota_count_survives_restart_and_compaction(tmp_path: Path) -> None:
    from cloudqueue.engine.core.quotas import QuotaExceededError, Quotas

    clock = FakeClock(T0)
    quotas = Quotas(per_day=2)
    async with Engine(data_dir=tmp_path, clock=clock, quotas=quotas) as queue:
        await queue.enqueue("f", delay=60_000)
        gone = await queue.enqueue("f", delay=60_000, keep_result=0)
        await queue.cancel(gone)  # finished and purged: the day's count must not forget it
        await settle(queue)
        assert len(queue.core) == 1
    for compact in (False, True):
        async with Engine(data_dir=tmp_path, clock=clock, quotas=quotas) as queue:
            with pytest.raises(QuotaExceededError, match="enqueued 2 tasks today"):
                await queue.enqueue("f")
            if compact:
                await queue.compact()
    async with Engine(data_dir=tmp_path, clock=clock, quotas=quotas) as queue:
        with pytest.raises(QuotaExceededError):
            await queue.enqueue("f")


async def test_never_policy_leaves_syncing_to_the_os(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    ops = CountingOps()
    async with Engine(data_dir=tmp_path, file_ops=ops, fsync="never", clock=clock) as queue:
        after_open = ops.syncs
        for _ in range(3):
            await queue.enqueue("f", delay=60_000)
        clock.advance(1_000)  # ten times the interval policy's default
        await settle(queue)
        assert ops.syncs == after_open


class WriteGateOps(CountingOps):
    """Writes wait for ``write_gate`` when it is set (so events pile up behind a write)."""

    write_gate: threading.Event | None = None

    def write(self, fd: int, data: bytes) -> None:
        if self.write_gate is not None:
            self.write_gate.wait(5)
        super().write(fd, data)


@pytest.mark.parametrize("mode", [DeliveryMode.AT_MOST_ONCE, DeliveryMode.AT_LEAST_ONCE])
async def test_a_refused_submission_leaves_no_record_behind_it(tmp_path: Path,
                                                               mode: DeliveryMode) -> None:
    """The run-started record of a task whose submission the full disk refused was queued
    behind it; it must go with the submission, not be written once space returns (the next
    start then failed on a KeyError while `log verify` said clean)."""
    from cloudqueue.log_tool import CLEAN, describe

    clock = FakeClock(T0)
    ops = WriteGateOps()
    async with Engine(data_dir=tmp_path, file_ops=ops, clock=clock) as queue:
        queue.define("f")(noop)
        ops.write_gate = threading.Event()
        pending = asyncio.ensure_future(queue.enqueue("f", unique_id="refused",
                                                     delivery_mode=mode.value))
        def state() -> TaskState | None:
            return next((t.state for t in queue.core.tasks() if t.unique_id == "refused"), None)

        # the run starts in memory while its submission is being written
        await until(lambda: state() is TaskState.RUNNING, "the run's start")
        ops.fail_write = errno.ENOSPC
        ops.write_gate.set()
        with pytest.raises(DiskFullError, match="not stored"):
            await pending
        ops.fail_write = None
        clock.advance(50)  # the log tries the disk again 50 ms after it was full
        await until(lambda: queue.store.accepting, "the retry")
        kept = await queue.enqueue("f", unique_id="kept", delay=60_000)
        await settle(queue)
    out = io.StringIO()
    assert describe(tmp_path, out, verbose=False) == CLEAN, out.getvalue()
    async with Engine(data_dir=tmp_path) as queue:
        assert [t.unique_id for t in queue.core.tasks()] == [kept]
    events, _ = read_log(tmp_path)
    assert {e.unique_id for e in events} == {kept}


async def test_a_record_that_does_not_follow_refuses_to_start_and_verify_says_so(
        tmp_path: Path) -> None:
    from cloudqueue.engine.runtime.log_file import LogInconsistentError
    from cloudqueue.log_tool import DAMAGED, describe

    write_log(tmp_path, [TaskSubmitted(1, T0, "a", "f", {}, TaskOptions(), T0),
                         RunStarted(2, T0 + 1, "ghost", 1)])
    with pytest.raises(LogInconsistentError, match=r"seq 2 \(RunStarted\).*log repair"):
        await Engine(data_dir=tmp_path).start()
    out = io.StringIO()
    assert describe(tmp_path, out, verbose=False) == DAMAGED
    assert "seq 2 (RunStarted) does not follow" in out.getvalue()
    with pytest.raises(LogInconsistentError):  # not LogLockedError: the refusal let go
        await Engine(data_dir=tmp_path).start()


class RotationFaultOps(CountingOps):
    """Creating a new segment fails with ``fail_create`` (errno) while it is set; the directory
    fsync fails with ``fail_dir_sync`` once."""

    fail_create: int | None = None
    fail_dir_sync: int | None = None

    def write_file(self, path: Path, data: bytes) -> None:
        if self.fail_create is not None and path.name.startswith("wal-"):
            raise OSError(self.fail_create, "injected")
        super().write_file(path, data)

    def fsync_dir(self, path: Path) -> None:
        if self.fail_dir_sync is not None:
            code, self.fail_dir_sync = self.fail_dir_sync, None
            raise OSError(code, "injected")
        super().fsync_dir(path)


async def test_a_full_disk_at_rotation_keeps_writing_in_the_current_segment(
        tmp_path: Path) -> None:
    from cloudqueue.log_tool import CLEAN, describe

    ops = RotationFaultOps()
    async with Engine(data_dir=tmp_path, file_ops=ops, segment_bytes=600) as queue:
        ops.fail_create = errno.ENOSPC
        ids = [await queue.enqueue("f", {"pad": "x" * 100}, delay=60_000) for _ in range(12)]
        assert queue.store.accepting and len(list_segments(tmp_path)) == 1
        ops.fail_create = None  # space again: the next batch rotates
        ids.append(await queue.enqueue("f", {"pad": "x" * 100}, delay=60_000))
        assert len(list_segments(tmp_path)) == 2
    assert not list(tmp_path.glob("*.tmp"))
    assert describe(tmp_path, io.StringIO(), verbose=False) == CLEAN
    async with Engine(data_dir=tmp_path) as queue:
        assert {t.unique_id for t in queue.core.tasks()} == set(ids)


async def test_a_rotation_that_fails_after_the_batch_is_durable_acknowledges_it_then_stops(
        tmp_path: Path) -> None:
    ops = RotationFaultOps()
    async with Engine(data_dir=tmp_path, file_ops=ops, segment_bytes=600) as queue:
        ops.fail_dir_sync = errno.EIO
        acked = [await queue.enqueue("f", {"pad": "x" * 100}, delay=60_000) for _ in range(3)]
        while queue.store.accepting:
            acked.append(await queue.enqueue("f", {"pad": "x" * 100}, delay=60_000))
        with pytest.raises(LogPoisonedError):
            await queue.enqueue("f", delay=60_000)
    async with Engine(data_dir=tmp_path) as queue:
        assert {t.unique_id for t in queue.core.tasks()} == set(acked)


class SnapshotFullOps(CountingOps):
    def write_file(self, path: Path, data: bytes) -> None:
        if path.name.startswith("snapshot-"):
            path.write_bytes(data[: len(data) // 2])  # a partial snapshot, as a full disk leaves
            raise OSError(errno.ENOSPC, "injected")
        super().write_file(path, data)


async def test_a_snapshot_the_disk_has_no_room_for_leaves_the_log_as_it_was(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ops = SnapshotFullOps()
    async with Engine(data_dir=tmp_path, file_ops=ops, segment_bytes=500,
                      compact_bytes=1_000) as queue:
        ids = [await queue.enqueue("f", {"pad": "x" * 100}, delay=60_000) for _ in range(20)]
        await settle(queue)
        assert queue.store.accepting
        ids.append(await queue.enqueue("f", delay=60_000))
    assert "compaction failed writing the snapshot" in caplog.text
    async with Engine(data_dir=tmp_path) as queue:
        assert {t.unique_id for t in queue.core.tasks()} == set(ids)
    assert not list(tmp_path.glob("snapshot-*"))  # the partial one was cleared away on open


async def test_close_gives_up_on_a_disk_that_stays_full_after_close_wait_s(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    ops = CountingOps(clock)
    store, _ = LogStore.open(tmp_path, ops=ops, clock=clock)
    store.start()
    ops.fail_write = errno.ENOSPC
    store.append([TaskSubmitted(1, T0, "t", "f", {}, TaskOptions(), T0)])
    closing = asyncio.ensure_future(store.close())
    limit = T0 + int(LogStore.CLOSE_WAIT_S * 1000)
    # tried at once, then 50, 100, 200, 400, 800, 1600 ms after each failure, then every 2 s
    tried_at = [T0]
    for wait in itertools.chain([50, 100, 200, 400, 800, 1600], itertools.repeat(2000)):
        tried = len(tried_at)
        await until(lambda n=tried: len(ops.full_at) == n, "a write to the full disk")  # type: ignore[misc]
        due = min(tried_at[-1] + wait, limit)
        await until(lambda at=due: clock.next_deadline_ms() == at, "the next wait")  # type: ignore[misc]
        clock.set(due)
        if due == limit:
            break
        tried_at.append(due)
    await closing
    assert ops.full_at == tried_at and tried_at[-1] == T0 + 29_150
    assert store.failure is not None and "closed before this was written" in str(store.failure)
