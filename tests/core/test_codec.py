"""Log records: every event kind round-trips; unknown kinds and versions refuse to load."""

from __future__ import annotations

import msgpack
import pytest

from engine.core.codec import (
    SCHEMA_VERSION,
    UnknownRecordKindError,
    decode_event,
    encode_event,
    to_record,
)
from engine.core.events import (
    Event,
    FailureKind,
    RunFailed,
    RunRequeued,
    RunStarted,
    RunSucceeded,
    TaskCancelled,
    TaskPurged,
    TaskSubmitted,
)
from engine.core.options import DeliveryMode, TaskOptions

T = 1_700_000_000_000
EVENTS: list[Event] = [
    TaskSubmitted(1, T, "a", "f", {"x": [1, 2.5, None, "s"]}, TaskOptions(), T),
    TaskSubmitted(2, T, "b", "g", [1, 2], TaskOptions(
        attempts=3, backoff_ms=5, delay_ms=6, delivery_mode=DeliveryMode.AT_MOST_ONCE,
        keep_result_ms=7, priority=1.5, timeout_ms=8), 1.5),
    RunStarted(3, T + 1, "a", 1),
    RunSucceeded(4, T + 2, "a", 3, {"result": {"ok": True}}, 200),
    RunSucceeded(5, T + 2, "a", 3, {"result": None}, None),
    RunFailed(6, T + 3, "b", 3, "boom", FailureKind.UNKNOWN, None),
    RunFailed(7, T + 3, "b", 3, "boom", FailureKind.ERROR, 500),
    RunRequeued(8, T + 4, "b", 3, "connection refused"),
    TaskCancelled(9, T + 5, "c"),
    TaskPurged(10, T + 6, "a"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{type(e).__name__}-{e.seq}")
def test_every_event_kind_round_trips(event: Event) -> None:
    assert decode_event(encode_event(event)) == event


def test_records_carry_version_kind_seq_and_time() -> None:
    record = to_record(EVENTS[0])
    assert (record["v"], record["k"], record["seq"], record["t"]) == (SCHEMA_VERSION, "sub", 1, T)


def test_default_options_are_stored_as_an_empty_dict() -> None:
    assert to_record(EVENTS[0])["o"] == {}
    assert to_record(EVENTS[1])["o"]["delivery_mode"] == "atMostOnce"


@pytest.mark.parametrize(
    "record",
    [{"v": SCHEMA_VERSION, "k": "teleport", "seq": 1, "t": T, "id": "a"},
     {"v": SCHEMA_VERSION + 1, "k": "start", "seq": 1, "t": T, "id": "a", "a": 1},
     {"v": SCHEMA_VERSION, "k": "start", "seq": 1, "t": T, "id": "a"},
     [1, 2, 3]],
    ids=["unknown-kind", "newer-version", "missing-field", "not-a-map"],
)
def test_records_this_version_cannot_read_refuse_to_load(record: object) -> None:
    with pytest.raises(UnknownRecordKindError):
        decode_event(msgpack.packb(record, use_bin_type=True))


def test_garbage_bytes_refuse_to_load() -> None:
    with pytest.raises(UnknownRecordKindError):
        decode_event(b"\xc1\xff\x00")
