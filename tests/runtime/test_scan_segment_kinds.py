"""scan_segment tells a torn tail from corruption by the damage's kind, never by its words."""

from __future__ import annotations

import struct
import zlib

import pytest

from cloudqueue.engine.core import framing
from cloudqueue.engine.core.batch_codec import encode_batch, encode_segment_header
from cloudqueue.engine.core.errors import CorruptionKind, CorruptRecordError, LogCorruptError
from cloudqueue.engine.core.events import TaskSubmitted
from cloudqueue.engine.core.framing import ScanResult, TailState, encode_frame
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.runtime import segments
from cloudqueue.engine.runtime.log_file import scan_segment

T0 = 1_700_000_000_000


def _segment() -> tuple[bytes, int, int]:
    """A header and two batches, each synced before the next: (bytes, start of each batch)."""
    data = encode_segment_header(1, 0)
    first = len(data)
    data += encode_batch([TaskSubmitted(1, T0, "a", "f", {}, TaskOptions(), T0)], first, first)
    second = len(data)
    data += encode_batch([TaskSubmitted(2, T0, "b", "f", {}, TaskOptions(), T0)], second, second)
    return data, first, second


def _flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x01
    return bytes(damaged)


def test_damage_followed_by_a_later_write_is_corruption_of_its_kind() -> None:
    data, first, _ = _segment()
    with pytest.raises(LogCorruptError) as caught:
        scan_segment("wal-1.log", _flip(data, first + 12))
    assert (caught.value.offset, caught.value.reason_kind) == (first,
                                                               CorruptionKind.CRC_MISMATCH)
    assert caught.value.body()["reasonKind"] == "crc_mismatch"


def test_damage_in_the_last_batch_is_a_torn_tail() -> None:
    data, _, second = _segment()
    result = scan_segment("wal-1.log", _flip(data, second + 12))
    assert (result.tail, result.good_end) == (TailState.TORN, second)


def test_an_intact_frame_of_an_unknown_type_is_corruption_even_at_the_end() -> None:
    data, _, _ = _segment()
    payload = b"from the future"
    future = struct.pack("<IIB", zlib.crc32(b"\x07" + payload), len(payload), 7) + payload
    with pytest.raises(LogCorruptError) as caught:
        scan_segment("wal-1.log", data + future + encode_frame(b"x"))
    assert caught.value.reason_kind is CorruptionKind.UNKNOWN_FRAME_TYPE


@pytest.mark.parametrize(("words", "kind", "corrupt"), [
    ("crc mismatch at offset 5", CorruptionKind.UNKNOWN_FRAME_TYPE, True),
    ("unknown frame type 7 with valid crc at offset 5", CorruptionKind.CRC_MISMATCH, False),
])
def test_the_kind_decides_not_the_words(monkeypatch: pytest.MonkeyPatch, words: str,
                                        kind: CorruptionKind, corrupt: bool) -> None:
    data, _, _ = _segment()
    real_scan = framing.scan

    def scan(buffer: bytes | memoryview) -> ScanResult:
        if len(buffer) == len(data):
            raise CorruptRecordError(len(data) - 1, words, kind)
        return real_scan(buffer)

    monkeypatch.setattr(segments, "scan", scan)
    if corrupt:
        with pytest.raises(LogCorruptError) as caught:
            scan_segment("wal-1.log", data)
        assert caught.value.reason_kind is kind
    else:  # nothing valid after the last byte: a torn tail whatever the words say
        result = scan_segment("wal-1.log", data)
        assert (result.tail, result.good_end) == (TailState.TORN, len(data) - 1)
