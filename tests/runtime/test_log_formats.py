"""Data written by earlier versions (log and snapshot format 1) still loads; a format this version
does not know refuses to start, saying so."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from cloudqueue import Engine, FakeClock, LogError, TaskState
from cloudqueue.engine.core.batch_codec import LOG_FORMAT, segment_marker
from cloudqueue.engine.core.codec import batch_marker, encode_event, encode_record, task_to_record
from cloudqueue.engine.core.errors import UnknownTaskError
from cloudqueue.engine.core.events import Event, RunStarted, TaskCancelled, TaskSubmitted
from cloudqueue.engine.core.framing import encode_frame, scan
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.task import Task
from cloudqueue.engine.runtime.log_file import LogCorruptError, segment_name
from cloudqueue.engine.runtime.snapshot import encode_snapshot_records, snapshot_name

T0 = 1_700_000_000_000
OPTS = TaskOptions(delay_ms=3_600_000)


def format_1_log(events: list[Event]) -> bytes:
    """What LogStore wrote before format 2: each batch a marker frame, then a frame per event."""
    log = b""
    for event in events:
        log += encode_frame(batch_marker(len(log)))
        log += encode_frame(encode_event(event))
    return log


async def test_a_format_1_log_loads_and_later_batches_go_on_in_a_headed_segment(
        tmp_path: Path) -> None:
    old: list[Event] = [TaskSubmitted(1, T0, "a", "f", {"i": 1}, OPTS, T0),
                        TaskSubmitted(2, T0, "b", "f", {"i": 2}, OPTS, T0),
                        TaskCancelled(3, T0 + 1, "b")]
    (tmp_path / segment_name(1)).write_bytes(format_1_log(old))
    clock = FakeClock(T0 + 10)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        assert (await queue.get_task_info("a")).state is TaskState.QUEUED
        assert (await queue.get_task_info("b")).state is TaskState.CANCELLED
        new = await queue.enqueue("f", {"i": 3}, delay=3_600_000)
    # the old segment is sealed as it was; the queue goes on in a new one, with a header
    old_payloads = scan((tmp_path / segment_name(1)).read_bytes()).payloads
    assert segment_marker(old_payloads[-1]) == ("sealed", 2, 3)
    new_payloads = scan((tmp_path / segment_name(2)).read_bytes()).payloads
    assert segment_marker(new_payloads[0]) == ("segment", 2, 3)
    last = msgpack.unpackb(new_payloads[-1])
    assert isinstance(last, list) and last[0] == LOG_FORMAT  # appended in the current format
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        assert queue.recovery is not None and queue.recovery.records == 4
        assert (await queue.get_task_info(new)).state is TaskState.QUEUED
        assert (await queue.get_task_info("a")).state is TaskState.QUEUED
        assert queue.core.last_seq == 4


async def test_a_format_1_snapshot_loads(tmp_path: Path) -> None:
    running = Task("r", "f", {}, OPTS, T0, 1, T0)
    queued = Task("q", "f", {"x": [1]}, OPTS, T0, 2, T0)
    running.state, running.attempt, running.run_seq, running.started_ms = (
        TaskState.RUNNING, 1, 3, T0)
    records = [task_to_record(running), task_to_record(queued)]
    (tmp_path / snapshot_name(3)).write_bytes(
        encode_snapshot_records(3, records, {"quota_day": 1, "quota_day_count": 2}))
    (tmp_path / segment_name(2)).write_bytes(
        format_1_log([RunStarted(4, T0 + 1, "q", 1)]))
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0 + 5)) as queue:
        # read at once, before the driver's first turn (no function "f" may run): the run in
        # flight at the crash (r, in the snapshot) and the one started after it (q, in the
        # log) are both requeued (atLeastOnce)
        assert queue.recovery is not None and queue.recovery.snapshot_tasks == 2
        assert queue.core.task_info("r", T0 + 5).state is TaskState.QUEUED
        assert queue.core.task_info("q", T0 + 5).state is TaskState.QUEUED
        assert queue.core.last_seq >= 4


async def test_a_snapshot_of_an_unknown_format_refuses_to_start(tmp_path: Path) -> None:
    header = {"v": 99, "k": "snap", "seq": 1, "n": 0, "counters": {}}
    footer = {"v": 99, "k": "end", "n": 0}
    (tmp_path / snapshot_name(1)).write_bytes(
        encode_frame(encode_record(header)) + encode_frame(encode_record(footer)))
    with pytest.raises(LogCorruptError, match="schema version 99"):
        async with Engine(data_dir=tmp_path):
            pass


async def test_a_log_batch_of_an_unknown_format_refuses_to_start(tmp_path: Path) -> None:
    batch = msgpack.packb([LOG_FORMAT + 1, 0, [[0, 1, T0, "a"]]])
    (tmp_path / segment_name(1)).write_bytes(encode_frame(batch))
    with pytest.raises(LogError, match=f"schema version {LOG_FORMAT + 1}"):
        async with Engine(data_dir=tmp_path):
            pass


async def test_a_split_batch_cut_before_its_last_frame_is_dropped_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between the frames of a big ``enqueue_many`` batch (never acknowledged) must not
    bring back part of it — and the frames it left must not be read as the start of a later
    batch once the queue writes on after them."""
    import cloudqueue.engine.core.batch_codec as batch_codec

    monkeypatch.setattr(batch_codec, "MAX_FRAME_RECORDS", 4)
    clock = FakeClock(T0)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        kept = await queue.enqueue("f", {"i": 0}, delay=3_600_000)
        batch = await queue.enqueue_many([{"function": "f", "params": {"i": i},
                                           "delay": 3_600_000} for i in range(10)])
    segment = tmp_path / segment_name(1)
    data = segment.read_bytes()
    frames = scan(data)
    split = [msgpack.unpackb(p) for p in frames.payloads][-3:]
    assert [len(f) for f in split] == [5, 5, 4]  # "more follow" on all but the last frame
    segment.write_bytes(data[:frames.offsets[-1]])  # the last frame never reached the disk

    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        assert queue.recovery is not None and queue.recovery.dropped_unfinished == 8
        assert (await queue.get_task_info(kept)).state is TaskState.QUEUED
        for unique_id in batch:
            with pytest.raises(UnknownTaskError):
                await queue.get_task_info(unique_id)
        later = await queue.enqueue("f", {"i": 99}, delay=3_600_000)
    assert list((tmp_path / "torn").iterdir())  # the cut frames are kept aside

    async with Engine(data_dir=tmp_path, clock=clock) as queue:  # and the log reads on cleanly
        assert queue.recovery is not None and queue.recovery.dropped_unfinished == 0
        assert (await queue.get_task_info(later)).state is TaskState.QUEUED
        assert len(queue.core.tasks()) == 2
