"""Log format 3: batches of array records round-trip and say where they stand; segment markers;
formats 2 and 1 still read; the unknown refuses."""

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
    from_array,
    payload_synced,
    segment_marker,
    to_array,
)
from cloudqueue.engine.core.codec import UnknownRecordKindError, batch_marker, encode_event
from cloudqueue.engine.core.events import Event, TaskSubmitted
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import ABSENT, Task
from cloudqueue.engine.core.task_rows import task_from_array, task_to_array
from tests.core.sample_events import EVENTS, T


def payloads(data: bytes) -> list[bytes]:
    result = scan(data)
    assert result.good_end == len(data)
    return result.payloads


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{type(e).__name__}-{e.seq}")
def test_every_event_kind_round_trips(event: Event) -> None:
    assert from_array(to_array(event)) == event
    (payload,) = payloads(encode_batch([event], 0, 0))
    assert decode_log_payload(payload) == [event]


def test_a_batch_is_one_frame_carrying_what_was_synced_before_it_and_where_it_starts() -> None:
    (payload,) = payloads(encode_batch(EVENTS, 4096, 5000))
    assert decode_log_payload(payload) == EVENTS
    assert payload_synced(payload) == 4096
    assert frame_info(payload) == FrameInfo(4096, 5000, False)
    unpacked = msgpack.unpackb(payload)
    assert unpacked[:2] == [LOG_FORMAT, 4096] and unpacked[3] == 5000 and len(unpacked) == 4


def test_format_2_batches_still_decode() -> None:
    records = [to_array(e) for e in EVENTS]
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


def test_format_1_payloads_still_decode() -> None:
    assert decode_log_payload(encode_event(EVENTS[0])) == [EVENTS[0]]
    assert decode_log_payload(batch_marker(123)) == []
    assert payload_synced(batch_marker(123)) == 123
    assert payload_synced(encode_event(EVENTS[0])) is None


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
    for name, value in changes.items():
        setattr(task, name, value)
    return task


@pytest.mark.parametrize("task", [
    _task(),
    _task(state=TaskState.RUNNING, attempt=1, run_seq=9, started_ms=T + 1),
    _task(state=TaskState.SUCCESS, result=None, finished_ms=T + 2, status_code=200),
    _task(state=TaskState.SUCCESS, result={"result": [1]}, finished_ms=T + 2),
    _task(state=TaskState.RETRY_WAIT, error="boom", retry_at_ms=T + 5, attempt=2),
    _task(schedule="nightly", progress={"percent": 5}, progress_ms=T, messages=((T, "hi"),)),
    _task(checkpoint={"at": 3}, slices=2),
], ids=["queued", "running", "null-result", "result", "retry", "progress", "continued"])
def test_every_task_state_round_trips_as_a_snapshot_row(task: Task) -> None:
    back = task_from_array(msgpack.unpackb(msgpack.packb(task_to_array(task)), raw=False))
    fields = [f for f in Task.__slots__ if f not in ("timer", "timer_token",
                                                     "progress_logged_ms")]
    assert {f: getattr(back, f) for f in fields} == {f: getattr(task, f) for f in fields}
    assert (back.result is ABSENT) == (task.result is ABSENT)


@pytest.mark.parametrize("row", [[], ["u"] * 19, 5])
def test_a_bad_snapshot_row_refuses_to_load(row: Any) -> None:
    with pytest.raises(UnknownRecordKindError):
        task_from_array(row)
