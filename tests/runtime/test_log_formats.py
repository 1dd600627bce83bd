"""Data written by earlier versions (log format 2, snapshot format 2) still loads and the queue
writes on in the current formats; format 1 refuses, saying what to do; a format this version
does not know refuses to start, saying so."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgpack
import pytest

import cloudqueue.engine.runtime.snapshot as snapshot_module
from cloudqueue import Engine, FakeClock, LogError, TaskState
from cloudqueue.engine.core.batch_codec import LOG_FORMAT, segment_marker
from cloudqueue.engine.core.codec import encode_record
from cloudqueue.engine.core.errors import LogFormatRetiredError, UnknownTaskError
from cloudqueue.engine.core.framing import encode_frame, scan
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.task import Task
from cloudqueue.engine.core.task_rows import ROW_VERSION
from cloudqueue.engine.runtime.log_file import LogCorruptError, list_segments, segment_name
from cloudqueue.engine.runtime.snapshot import (
    SNAPSHOT_FORMAT,
    list_snapshots,
    read_snapshot,
    snapshot_name,
)

T0 = 1_700_000_000_000
FORMAT_2 = Path(__file__).parents[1] / "data" / "logs" / "queue-format2"
# the golden ``queue`` directory opened and compacted by the last version that wrote snapshot
# format 3 (every task a row in "tasks" chunks; format 4 keeps the finished ones apart, packed)
SNAPSHOT_3 = Path(__file__).parents[1] / "data" / "logs" / "queue-snapshot3"


async def test_a_format_2_log_loads_and_later_batches_go_on_in_a_headed_segment(
        tmp_path: Path) -> None:
    directory = tmp_path / "data"
    shutil.copytree(FORMAT_2, directory)
    last_number, last_old = list_segments(directory)[-1]
    clock = FakeClock(T0 + 10)
    async with Engine(data_dir=directory, clock=clock) as queue:
        assert (await queue.get_task_info("ok-0")).state is TaskState.SUCCESS  # the snapshot
        assert (await queue.get_task_info("later-0")).state is TaskState.CANCELLED  # the log
        last_seq = queue.core.last_seq
        new = await queue.enqueue("f", {"i": 3}, delay=3_600_000)
    # the old segment is sealed as it was; the queue goes on in a new one, with a header
    assert segment_marker(scan(last_old.read_bytes()).payloads[-1]) == (
        "sealed", last_number + 1, last_seq)
    new_payloads = scan((directory / segment_name(last_number + 1)).read_bytes()).payloads
    assert segment_marker(new_payloads[0]) == ("segment", last_number + 1, last_seq)
    last = msgpack.unpackb(new_payloads[-1])
    assert isinstance(last, list) and last[0] == LOG_FORMAT  # appended in the current format
    async with Engine(data_dir=directory, clock=clock) as queue:
        assert (await queue.get_task_info(new)).state is TaskState.QUEUED
        assert (await queue.get_task_info("ok-0")).state is TaskState.SUCCESS
        assert queue.core.last_seq == last_seq + 1


@pytest.mark.parametrize("source", [FORMAT_2, SNAPSHOT_3], ids=["format-2", "format-3"])
async def test_an_older_snapshot_loads_and_the_next_is_written_in_format_4(
        tmp_path: Path, source: Path) -> None:
    directory = tmp_path / "data"
    shutil.copytree(source, directory)
    (old,) = list_snapshots(directory)
    assert read_snapshot(old[1]).seq == old[0]
    async with Engine(data_dir=directory, clock=FakeClock(T0 + 10)) as queue:
        before = {t.unique_id: t.info() for t in queue.core.tasks()}
        await queue.compact()
    (_, path), = list_snapshots(directory)
    payloads = scan(path.read_bytes()).payloads
    assert msgpack.unpackb(payloads[0])["v"] == SNAPSHOT_FORMAT == 4
    tasks_chunk, kept_chunk = msgpack.unpackb(payloads[1]), msgpack.unpackb(payloads[2])
    assert tasks_chunk[:2] == [4, "tasks"] and tasks_chunk[3] == ROW_VERSION
    assert kept_chunk[:2] == [4, "kept"]  # the finished tasks, each row packed on its own
    contents = read_snapshot(path)
    states = {t.unique_id: t.state for t in contents.tasks}
    assert states["ok-0"] is TaskState.SUCCESS and states["later-0"] is TaskState.CANCELLED
    assert states["later-1"] is TaskState.QUEUED
    assert [s.spec.name for s in contents.schedules] == ["nightly"]
    async with Engine(data_dir=directory, clock=FakeClock(T0 + 10)) as queue:
        assert {t.unique_id: t.info() for t in queue.core.tasks()} == before


async def test_a_snapshot_with_task_rows_of_a_later_version_refuses_to_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = Task("a", "f", {}, TaskOptions(), T0, 1, T0)
    (tmp_path / snapshot_name(1)).write_bytes(snapshot_module.encode_snapshot(1, [task]))
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:
        assert (await queue.get_task_info("a")).state is TaskState.QUEUED
    later = tmp_path / "later"
    later.mkdir()
    monkeypatch.setattr(snapshot_module, "ROW_VERSION", ROW_VERSION + 1)  # more task columns
    (later / snapshot_name(1)).write_bytes(snapshot_module.encode_snapshot(1, [task]))
    with pytest.raises(LogCorruptError, match=f"schema version {ROW_VERSION + 1}"):
        async with Engine(data_dir=later):
            pass


@pytest.mark.parametrize(("version", "refusal", "words"), [
    (1, LogFormatRetiredError,
     f"{snapshot_name(1)} in .* is in log format 1 \\(written by cloudqueue 0.1\\)"),
    (99, LogCorruptError, "schema version 99"),
], ids=["format-1", "unknown"])
async def test_a_snapshot_of_a_format_this_version_does_not_read_refuses_to_start(
        tmp_path: Path, version: int, refusal: type[Exception], words: str) -> None:
    header = {"v": version, "k": "snap", "seq": 1, "n": 0, "counters": {}}
    footer = {"v": version, "k": "end", "n": 0}
    (tmp_path / snapshot_name(1)).write_bytes(
        encode_frame(encode_record(header)) + encode_frame(encode_record(footer)))
    with pytest.raises(refusal, match=words):
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
