"""Log format 3: batches of array records round-trip and say where they stand; segment markers;
format 2 still reads, format 1 refuses with what to do, the unknown refuses. Snapshot rows:
every task state round-trips, and a row of an earlier row version reads with defaults."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from cloudqueue.engine.core.batch_codec import (
    LOG_FORMAT,
    MAX_FRAME_RECORDS,
    FrameInfo,
    decode_log_payload,
    encode_batch,
    encode_segment_header,
    encode_segment_seal,
    frame_info,
    segment_marker,
)
from cloudqueue.engine.core.codec import UnknownRecordKindError
from cloudqueue.engine.core.errors import LogFormatRetiredError
from cloudqueue.engine.core.events import Event, TaskSubmitted
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.core.history import RunOutcome, RunRecord
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import ABSENT, Task
from cloudqueue.engine.core.task_rows import (
    ROW_VERSION,
    TASK_COLUMNS,
    Column,
    RowLayout,
    task_from_row,
    task_to_row,
)
from cloudqueue.engine.core.value import value
from tests.core.sample_events import EVENTS, T


def payloads(data: bytes) -> list[bytes]:
    result = scan(data)
    assert result.good_end == len(data)
    return result.payloads


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{type(e).__name__}-{e.seq}")
def test_every_event_kind_round_trips(event: Event) -> None:
    (payload,) = payloads(encode_batch([event], 0, 0))
    assert decode_log_payload(payload) == [event]


def test_a_batch_is_one_frame_carrying_what_was_synced_before_it_and_where_it_starts() -> None:
    (payload,) = payloads(encode_batch(EVENTS, 4096, 5000))
    assert decode_log_payload(payload) == EVENTS
    assert frame_info(payload) == FrameInfo(4096, 5000, False)
    unpacked = msgpack.unpackb(payload)
    assert unpacked[:2] == [LOG_FORMAT, 4096] and unpacked[3] == 5000 and len(unpacked) == 4


def test_format_2_batches_still_decode() -> None:
    (written,) = payloads(encode_batch(EVENTS, 0, 0))
    records = msgpack.unpackb(written)[2]  # format 2 held the same records
    payload = msgpack.packb([2, 64, records], use_bin_type=True)
    assert decode_log_payload(payload) == EVENTS
    assert frame_info(payload) == FrameInfo(64, None, False)
    more = msgpack.packb([2, 64, records, 1], use_bin_type=True)
    assert frame_info(more) == FrameInfo(64, None, True)


def test_segment_markers_say_their_numbers_and_seqs_and_hold_no_records() -> None:
    (header,) = payloads(encode_segment_header(7, 1234))
    (seal,) = payloads(encode_segment_seal(8, 1300))
    assert segment_marker(header) == ("segment", 7, 1234)
    assert segment_marker(seal) == ("sealed", 8, 1300)
    assert decode_log_payload(header) == [] and decode_log_payload(seal) == []
    assert frame_info(header) is None and frame_info(seal) is None
    (batch,) = payloads(encode_batch(EVENTS, 0, 0))
    assert segment_marker(batch) is None


def test_a_large_batch_is_split_over_frames_that_each_carry_the_marker() -> None:
    events = [TaskSubmitted(i, T, f"t{i}", "f", {"i": i}, TaskOptions(), T)
              for i in range(1, 2 * MAX_FRAME_RECORDS + 2)]
    found = payloads(encode_batch(events, 77, 99))
    assert len(found) == 3
    assert [e for p in found for e in decode_log_payload(p)] == events
    assert [frame_info(p) for p in found] == [FrameInfo(77, 99, True), FrameInfo(77, 99, True),
                                              FrameInfo(77, 99, False)]


def test_big_params_split_a_batch_by_bytes() -> None:
    events = [TaskSubmitted(i, T, f"t{i}", "f", {"blob": "x" * 300_000}, TaskOptions(), T)
              for i in range(1, 9)]
    found = payloads(encode_batch(events, 0, 0))
    assert 2 <= len(found) <= 4
    assert [e for p in found for e in decode_log_payload(p)] == events


@pytest.mark.parametrize("record", [
    {"v": 1, "k": "batch", "synced": 0},
    {"v": 1, "k": "sub", "seq": 1, "t": T, "id": "a", "fn": "f", "p": {}, "o": {}, "pri": T},
], ids=["batch-marker", "record"])
def test_a_format_1_payload_refuses_saying_the_format_is_retired(record: Any) -> None:
    payload = msgpack.packb(record, use_bin_type=True)
    with pytest.raises(LogFormatRetiredError, match="log format 1 .*cloudqueue 0.1"):
        decode_log_payload(payload)
    assert frame_info(payload) is None


def test_a_map_that_is_neither_a_marker_nor_format_1_is_unknown() -> None:
    with pytest.raises(UnknownRecordKindError):
        decode_log_payload(msgpack.packb({"k": "teleport"}, use_bin_type=True))


@pytest.mark.parametrize("batch", [
    [LOG_FORMAT + 1, 0, [], 0],                   # a newer format
    [LOG_FORMAT, 0],                              # no records
    [LOG_FORMAT, 0, []],                          # format 3 without its batch start
    [LOG_FORMAT, 0, [], "0"],                     # a batch start that is not an integer
    [LOG_FORMAT, 0, [], 0, 2],                    # a "more" flag that is not 1
    [LOG_FORMAT, 0, [[99, 1, T, "a"]], 0],        # an unknown kind
    [LOG_FORMAT, 0, [[True, 1, T, "a"]], 0],      # a kind that is not an integer
    [LOG_FORMAT, 0, [[1, 1, T, "a"]], 0],         # a record missing a field
    [LOG_FORMAT, 0, [[3, 1, T, "a", 1, "e", "nope", None]], 0],  # a bad failure kind
], ids=["newer-format", "no-records", "no-start", "str-start", "bad-more", "unknown-kind",
        "bool-kind", "missing-field", "bad-enum"])
def test_batches_this_version_cannot_read_refuse_to_load(batch: Any) -> None:
    with pytest.raises(UnknownRecordKindError):
        decode_log_payload(msgpack.packb(batch, use_bin_type=True))


def _task(**changes: Any) -> Task:
    task = Task("u", "f", {"a": [1]}, TaskOptions(attempts=4, delay_ms=9), 7, 3, T)
    for name, changed in changes.items():
        setattr(task, name, changed)
    return task


@pytest.mark.parametrize("task", [
    _task(),
    _task(state=TaskState.RUNNING, attempt=1, run_seq=9, started_ms=T + 1),
    _task(state=TaskState.SUCCESS, result=None, finished_ms=T + 2, status_code=200),
    _task(state=TaskState.SUCCESS, result={"result": [1]}, finished_ms=T + 2),
    _task(state=TaskState.RETRY_WAIT, error="boom", retry_at_ms=T + 5, attempt=2),
    _task(schedule="nightly", progress={"percent": 5}, progress_ms=T, messages=((T, "hi"),)),
    _task(checkpoint={"at": 3}, slices=2),
    _task(state=TaskState.RETRY_WAIT, error="KeyError: 'x'", retry_at_ms=T + 9, attempt=2,
          runs=(RunRecord(1, 0, T, T + 4, RunOutcome.UNAVAILABLE, None, "refused"),
                RunRecord(1, 0, T + 4, T + 8, RunOutcome.FAILED, None, "KeyError: 'x'",
                          "Traceback\n"))),
], ids=["queued", "running", "null-result", "result", "retry", "progress", "continued",
        "runs"])
def test_every_task_state_round_trips_as_a_snapshot_row(task: Task) -> None:
    back = task_from_row(msgpack.unpackb(msgpack.packb(task_to_row(task)), raw=False))
    fields = [f for f in Task.__slots__ if f not in ("timer", "timer_token")]
    assert {f: getattr(back, f) for f in fields} == {f: getattr(task, f) for f in fields}
    assert (back.result is ABSENT) == (task.result is ABSENT)


@pytest.mark.parametrize("row", [[], ["u"] * 19, 5, [*task_to_row(_task()), None]])
def test_a_bad_snapshot_row_refuses_to_load(row: Any) -> None:
    with pytest.raises(UnknownRecordKindError):
        task_from_row(row)


@pytest.mark.parametrize("version", [0, ROW_VERSION + 1, "1", None])
def test_a_row_of_a_version_this_one_does_not_know_refuses_to_load(version: Any) -> None:
    with pytest.raises(UnknownRecordKindError, match="task row"):
        task_from_row(task_to_row(_task()), version)


def test_the_row_of_version_1_keeps_its_column_order() -> None:
    assert [c.name for c in TASK_COLUMNS if c.since == 1] == [
        "unique_id", "function", "params", "options", "priority", "seq", "created_ms", "state",
        "attempt", "run_seq", "started_ms", "finished_ms", "status_code", "error",
        "retry_at_ms", "schedule", "result", "progress", "continuation"]


@value
class Parcel:
    """A record that gained fields over time, as a task does."""

    name: str
    weight: int
    tags: tuple[str, ...] = ()
    insured: bool = False


V1 = (Column("name"), Column("weight"))
V2 = (*V1, Column("tags", since=2, default=[], store=list, load=tuple))
V3 = (*V2, Column("insured", since=3, default=False))


def test_a_row_written_with_fewer_columns_reads_with_the_added_columns_defaults() -> None:
    old = RowLayout(Parcel, V1).to_row(Parcel("p", 3, ("x",), True))  # an older version wrote it
    assert old == ["p", 3]
    layout = RowLayout(Parcel, V3)
    assert layout.version == 3
    assert layout.from_row(msgpack.unpackb(msgpack.packb(old)), 1) == Parcel("p", 3)
    middle = RowLayout(Parcel, V2).to_row(Parcel("p", 3, ("x", "y")))
    assert layout.from_row(middle, 2) == Parcel("p", 3, ("x", "y"), False)
    assert layout.from_row(layout.to_row(Parcel("q", 1, (), True)), 3) == Parcel("q", 1, (), True)


def test_a_row_that_does_not_match_its_version_or_is_newer_refuses() -> None:
    layout = RowLayout(Parcel, V2)
    with pytest.raises(UnknownRecordKindError):
        layout.from_row(["p", 3, []], 1)  # version 1 rows have two columns
    with pytest.raises(UnknownRecordKindError):
        layout.from_row(["p", 3, [], True], 3)  # a later version than this layout knows


@pytest.mark.parametrize("columns", [
    (Column("weight"), Column("name")),                   # required fields out of order
    (*V1, Column("insured", since=3), Column("tags", since=2)),  # an added column not at the end
    (Column("name", since=2), Column("weight", since=2)),  # no version 1
], ids=["required-order", "added-in-the-middle", "no-version-1"])
def test_a_layout_that_would_misread_old_rows_is_refused(columns: tuple[Column, ...]) -> None:
    with pytest.raises(TypeError, match="add columns only at its end"):
        RowLayout(Parcel, columns)
