"""Stored values: options keep only what differs from the defaults, schedules round-trip, and
bytes that are not msgpack refuse to load."""

from __future__ import annotations

import msgpack
import pytest

from cloudqueue.engine.core.codec import (
    MESSAGES,
    OPTIONS,
    FieldCodec,
    UnknownRecordKindError,
    decode_record,
    enum_value,
    options_from_dict,
    options_to_dict,
    schedule_from_dict,
    schedule_from_record,
    schedule_to_dict,
    schedule_to_record,
)
from cloudqueue.engine.core.events import FailureKind
from cloudqueue.engine.core.options import BackoffType, DeliveryMode, TaskOptions
from cloudqueue.engine.core.schedules import Schedule, ScheduleSpec

T = 1_700_000_000_000
SPEC = ScheduleSpec("s", "f", {"p": 1}, "0 * * * * ?", None, "UTC", TaskOptions(attempts=2), False)


def test_default_options_are_stored_as_an_empty_dict() -> None:
    assert options_to_dict(TaskOptions()) == {}
    stored = options_to_dict(TaskOptions(attempts=3, delivery_mode=DeliveryMode.AT_MOST_ONCE))
    assert stored == {"attempts": 3, "delivery_mode": "atMostOnce"}
    assert options_from_dict(msgpack.unpackb(msgpack.packb(stored))) == TaskOptions(
        attempts=3, delivery_mode=DeliveryMode.AT_MOST_ONCE)


def test_an_exponential_backoff_is_stored_and_read_back() -> None:
    options = TaskOptions(backoff_type=BackoffType.EXPONENTIAL, backoff_max_ms=9_000)
    stored = options_to_dict(options)
    assert stored == {"backoff_type": "exponential", "backoff_max_ms": 9_000}
    assert options_from_dict(msgpack.unpackb(msgpack.packb(stored))) == options


def test_schedules_round_trip_alone_and_with_their_state() -> None:
    assert schedule_from_dict(schedule_to_dict(SPEC)) == SPEC
    schedule = Schedule(SPEC, T, T + 60_000)
    back = schedule_from_record(msgpack.unpackb(msgpack.packb(schedule_to_record(schedule))))
    assert (back.spec, back.created_ms, back.last_slot_ms) == (SPEC, T, T + 60_000)


def test_a_schedule_record_missing_a_field_refuses_to_load() -> None:
    record = schedule_to_record(Schedule(SPEC, T, None))
    del record["c"]
    with pytest.raises(UnknownRecordKindError):
        schedule_from_record(record)


@pytest.mark.parametrize(("codec", "value", "stored"), [
    (OPTIONS, TaskOptions(delay_ms=5), {"delay_ms": 5}),
    (MESSAGES, ((T, "a"), (T + 1, "b")), [[T, "a"], [T + 1, "b"]]),
    (enum_value(FailureKind), FailureKind.LOST, "lost"),
], ids=["options", "messages", "enum"])
def test_field_codecs_store_what_they_say_and_read_it_back(
        codec: FieldCodec, value: object, stored: object) -> None:
    assert codec.encode(value) == stored
    assert codec.decode(msgpack.unpackb(msgpack.packb(stored))) == value


def test_garbage_bytes_refuse_to_load() -> None:
    with pytest.raises(UnknownRecordKindError):
        decode_record(b"\xc1\xff\x00")
