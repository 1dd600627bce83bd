"""Log records: every event kind round-trips; unknown kinds and versions refuse to load."""

from __future__ import annotations

import msgpack
import pytest

from cloudqueue.engine.core.codec import (
    SCHEMA_VERSION,
    UnknownRecordKindError,
    decode_event,
    encode_event,
    to_record,
)
from cloudqueue.engine.core.events import Event
from tests.core.sample_events import EVENTS, T


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
