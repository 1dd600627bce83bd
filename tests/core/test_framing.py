"""Tests for engine.core.framing: torn tails are dropped, mid-log damage is refused."""

from __future__ import annotations

import pickle
import random
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudqueue.engine.core import crc_window, framing
from cloudqueue.engine.core.framing import (
    FRAME_TYPE_FULL,
    HEADER_SIZE,
    MAX_RECORD_BYTES,
    CorruptionKind,
    CorruptRecordError,
    ScanResult,
    TailState,
    encode_frame,
    scan,
)

# Five frames of different sizes; offsets 0, 12, 41, 51, 115, end 150.
PAYLOADS = [b"abc", b"twenty-bytes-payload", b"x", b"m" * 55, b"last frame, 26 bytes long!"]
FRAMES = [encode_frame(p) for p in PAYLOADS]
LOG = b"".join(FRAMES)
STARTS = [0, 12, 41, 51, 115]
END = 150


def frame_with_type(payload: bytes, frame_type: int) -> bytes:
    """A frame with a correct CRC but any type byte, which encode_frame refuses to make."""
    crc = zlib.crc32(bytes([frame_type]) + payload)
    return struct.pack("<IIB", crc, len(payload), frame_type) + payload


def flip_bit(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


# --- the format ---------------------------------------------------------------------------


def test_constants_match_the_documented_format() -> None:
    assert HEADER_SIZE == 9
    assert MAX_RECORD_BYTES == 16 * 1024 * 1024
    assert FRAME_TYPE_FULL == 1


def test_encode_frame_produces_the_documented_byte_layout() -> None:
    assert encode_frame(b"hi") == bytes.fromhex("768bc967 02000000 01 6869")


def test_test_log_has_the_expected_offsets() -> None:
    assert [len(f) for f in FRAMES] == [12, 29, 10, 64, 35]
    assert [sum(len(f) for f in FRAMES[:i]) for i in range(5)] == STARTS
    assert len(LOG) == END


@pytest.mark.parametrize(
    ("payload", "frame_type"),
    [(b"", FRAME_TYPE_FULL), (b"x", 0), (b"x", 2), (b"x", 255)],
)
def test_encode_frame_refuses_what_scan_would_reject(payload: bytes, frame_type: int) -> None:
    with pytest.raises(ValueError):
        encode_frame(payload, frame_type)


def test_encode_frame_refuses_payload_over_max_record_bytes() -> None:
    encode_frame(bytes(MAX_RECORD_BYTES))
    with pytest.raises(ValueError, match="outside 1..16777216"):
        encode_frame(bytes(MAX_RECORD_BYTES + 1))


# --- clean logs ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 100, 65_536, 1024 * 1024])
def test_round_trip_of_a_single_payload(size: int) -> None:
    payload = random.Random(size).randbytes(size)
    frame = encode_frame(payload)
    assert len(frame) == HEADER_SIZE + size
    assert scan(frame) == ScanResult([payload], [0], HEADER_SIZE + size, TailState.CLEAN, 0, None)


def test_empty_input_is_a_clean_empty_log() -> None:
    assert scan(b"") == ScanResult([], [], 0, TailState.CLEAN, 0, None)


def test_many_frames_round_trip_with_exact_offsets() -> None:
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randint(1, 300)) for _ in range(2000)]
    data = b"".join(encode_frame(p) for p in payloads)
    result = scan(data)
    expected_offsets = []
    offset = 0
    for p in payloads:
        expected_offsets.append(offset)
        offset += HEADER_SIZE + len(p)
    assert result.payloads == payloads
    assert result.offsets == expected_offsets
    assert (result.good_end, result.tail, result.dropped_bytes) == (len(data), TailState.CLEAN, 0)


def test_scan_accepts_bytearray_and_memoryview() -> None:
    assert scan(bytearray(LOG)).payloads == PAYLOADS
    assert scan(memoryview(LOG)[12:]).payloads == PAYLOADS[1:]


def test_start_offset_shifts_frame_offsets_good_end_and_reason() -> None:
    result = scan(LOG[:-1], start_offset=1000)
    assert result.offsets == [1000 + s for s in STARTS[:4]]
    assert result.good_end == 1115
    assert result.dropped_bytes == 34
    assert result.reason == "payload cut short at offset 1115"


def test_start_offset_shifts_corrupt_record_error_offset() -> None:
    damaged = flip_bit(LOG, 8 * (STARTS[1] + 20))
    with pytest.raises(CorruptRecordError) as scanned:
        scan(damaged, start_offset=4096)
    assert (scanned.value.offset, scanned.value.reason) == (4108, "crc mismatch at offset 4108")


@pytest.mark.parametrize(("kwargs"), [{"max_record_bytes": 0}, {"max_record_bytes": 2**32}])
def test_cap_outside_u32_range_is_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        scan(LOG, **kwargs)


def test_negative_start_offset_is_refused() -> None:
    with pytest.raises(ValueError):
        scan(LOG, start_offset=-1)


# --- torn tails ---------------------------------------------------------------------------


@pytest.mark.parametrize("cut", range(STARTS[3], END + 1))
def test_every_truncation_offset_of_last_frame_keeps_the_longest_valid_prefix(cut: int) -> None:
    complete = sum(
        1 for start, frame in zip(STARTS, FRAMES, strict=True) if start + len(frame) <= cut
    )
    good_end = STARTS[complete] if complete < len(STARTS) else END
    result = scan(LOG[:cut])
    assert result.payloads == PAYLOADS[:complete]
    assert result.offsets == STARTS[:complete]
    assert result.good_end == good_end
    assert result.dropped_bytes == cut - good_end
    if cut == good_end:
        assert (result.tail, result.reason) == (TailState.CLEAN, None)
    else:
        assert result.tail is TailState.TORN
        short = cut - good_end < HEADER_SIZE
        what = "short header" if short else "payload cut short"
        assert result.reason == f"{what} at offset {good_end}"


def test_every_single_bit_flip_in_final_frame_is_detected() -> None:
    last = STARTS[4]
    for bit in range(8 * last, 8 * END):
        damaged = flip_bit(LOG, bit)
        result = scan(damaged)
        assert result.payloads == PAYLOADS[:4], bit
        assert (result.good_end, result.tail, result.dropped_bytes) == (last, TailState.TORN, 35)
        assert result.reason is not None and result.reason.endswith(f"at offset {last}")


def test_zero_filled_tail_is_torn_and_keeps_the_good_prefix() -> None:
    result = scan(LOG + bytes(4096))
    assert result.payloads == PAYLOADS
    assert result.good_end == END
    assert (result.tail, result.dropped_bytes) == (TailState.TORN, 4096)
    assert result.reason == "zero length at offset 150"


def test_zero_bytes_shorter_than_a_header_are_a_short_header() -> None:
    result = scan(LOG + bytes(5))
    assert (result.good_end, result.dropped_bytes, result.reason) == (
        END,
        5,
        "short header at offset 150",
    )


def test_zero_filled_hole_inside_the_last_frame_is_torn() -> None:
    # Some filesystems extend the file size before the data lands: right length, zeros.
    hole = LOG[: STARTS[4] + HEADER_SIZE] + bytes(26)
    result = scan(hole)
    assert result.payloads == PAYLOADS[:4]
    assert result.reason == "crc mismatch at offset 115"


def test_one_mebibyte_garbage_tail_is_torn_and_judged_quickly() -> None:
    garbage = random.Random(2024).randbytes(1024 * 1024)
    began = time.perf_counter()
    result = scan(LOG + garbage)
    elapsed = time.perf_counter() - began
    assert result.payloads == PAYLOADS
    assert (result.good_end, result.tail, result.dropped_bytes) == (
        END,
        TailState.TORN,
        1024 * 1024,
    )
    assert elapsed < 1.0


def test_tail_made_entirely_of_type_bytes_is_torn() -> None:
    # The worst case for the resync search: every offset is a candidate frame start.
    result = scan(LOG + b"\x01" * 65_536)
    assert result.payloads == PAYLOADS
    assert result.reason == f"length {0x01010101} over cap {MAX_RECORD_BYTES} at offset 150"


def test_length_over_cap_is_rejected_without_allocation() -> None:
    four_gib_header = struct.pack("<IIB", 0, 0xFFFF_FFFF, FRAME_TYPE_FULL)
    buffer = four_gib_header + bytes(11)
    assert len(buffer) == 20
    tracemalloc.start()
    began = time.perf_counter()
    try:
        result = scan(buffer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - began < 0.5
    assert peak < 64 * 1024
    assert result.reason == "length 4294967295 over cap 16777216 at offset 0"
    assert (result.tail, result.good_end, result.dropped_bytes) == (TailState.TORN, 0, 20)


def test_length_within_cap_but_past_the_data_is_not_allocated_either() -> None:
    header = struct.pack("<IIB", 0, MAX_RECORD_BYTES, FRAME_TYPE_FULL)
    tracemalloc.start()
    try:
        result = scan(header + bytes(11))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert result.reason == "payload cut short at offset 0"


def test_per_decoder_cap_rejects_a_last_frame_above_it() -> None:
    result = scan(LOG[: STARTS[4]], max_record_bytes=54)
    assert result.payloads == PAYLOADS[:3]
    assert (result.tail, result.good_end, result.dropped_bytes) == (TailState.TORN, 51, 64)
    assert result.reason == "length 55 over cap 54 at offset 51"


def test_per_decoder_cap_below_a_middle_frame_is_mid_log_damage() -> None:
    with pytest.raises(CorruptRecordError, match="length 55 over cap 54 at offset 51"):
        scan(LOG, max_record_bytes=54)


def test_zero_length_frame_is_never_a_record() -> None:
    empty = struct.pack("<IIB", zlib.crc32(b"\x01"), 0, FRAME_TYPE_FULL)
    result = scan(LOG + empty)
    assert (result.payloads, result.reason) == (PAYLOADS, "zero length at offset 150")


# --- mid-log damage -----------------------------------------------------------------------


def test_bit_flip_in_middle_frame_followed_by_good_frames_raises_with_exact_offset() -> None:
    middle = STARTS[1]
    for bit in range(8 * middle, 8 * STARTS[2]):
        damaged = flip_bit(LOG, bit)
        with pytest.raises(CorruptRecordError) as scanned:
            scan(damaged)
        assert scanned.value.offset == middle, bit
        assert scanned.value.reason.endswith("at offset 12")


def test_corrupt_record_error_names_offset_and_reason_and_pickles() -> None:
    with pytest.raises(CorruptRecordError) as caught:
        scan(flip_bit(LOG, 8 * STARTS[2] + 3))
    err = caught.value
    assert (err.offset, err.reason) == (41, "crc mismatch at offset 41")
    assert "offset 41" in str(err) and "crc mismatch" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.offset, copy.reason, str(copy)) == (err.offset, err.reason, str(err))


def _zero_length(log: bytes) -> bytes:
    return log[: STARTS[2]] + bytes(4096) + log[STARTS[2] :]


def _over_cap(log: bytes) -> bytes:
    return log[: STARTS[1] + 4] + struct.pack("<I", 0xFFFF_0000) + log[STARTS[1] + 8 :]


@pytest.mark.parametrize(("damage", "kind"), [
    (lambda log: flip_bit(log, 8 * STARTS[2] + 3), CorruptionKind.CRC_MISMATCH),
    (_zero_length, CorruptionKind.ZERO_LENGTH),
    (_over_cap, CorruptionKind.OVER_CAP),
    (lambda log: log + frame_with_type(b"future", 2), CorruptionKind.UNKNOWN_FRAME_TYPE),
    (lambda log: log + encode_frame(b"header:" + encode_frame(b"inner") + b":trailer")[:-3],
     CorruptionKind.CUT_SHORT),
], ids=["crc", "zero length", "over cap", "unknown type", "cut short"])
def test_corrupt_record_error_says_what_kind_of_damage_it_is(
        damage: Callable[[bytes], bytes], kind: CorruptionKind) -> None:
    data = damage(LOG)
    with pytest.raises(CorruptRecordError) as scanned:
        scan(data)
    assert scanned.value.reason_kind is kind
    assert scanned.value.body()["reasonKind"] == kind.value
    copy = pickle.loads(pickle.dumps(scanned.value))
    assert (copy.reason_kind, str(copy)) == (kind, str(scanned.value))


def test_garbage_between_good_frames_is_mid_log_damage() -> None:
    data = LOG + random.Random(5).randbytes(3000) + FRAMES[0]
    with pytest.raises(CorruptRecordError) as caught:
        scan(data)
    assert caught.value.offset == END


def test_zeroed_block_between_good_frames_is_mid_log_damage() -> None:
    data = LOG[: STARTS[2]] + bytes(4096) + LOG[STARTS[2] :]
    with pytest.raises(CorruptRecordError, match="zero length at offset 41"):
        scan(data)


@pytest.mark.parametrize(
    ("data", "offset"),
    [(LOG + frame_with_type(b"future", 2), END), (frame_with_type(b"future", 2) + LOG, 0)],
    ids=["at the end", "at the start"],
)
def test_intact_frame_of_unknown_type_is_never_offered_for_truncation(
    data: bytes, offset: int
) -> None:
    # Its CRC matches, so it was written whole (by a newer version?), not torn.
    with pytest.raises(CorruptRecordError) as caught:
        scan(data)
    assert caught.value.offset == offset
    assert caught.value.reason == f"unknown frame type 2 with valid crc at offset {offset}"


def test_torn_frame_whose_payload_embeds_a_valid_frame_is_reported_corrupt() -> None:
    # Indistinguishable from a damaged length field followed by real frames: fail closed.
    outer = encode_frame(b"header:" + encode_frame(b"inner") + b":trailer")
    cut = LOG + outer[:-3]
    with pytest.raises(CorruptRecordError, match="payload cut short at offset 150"):
        scan(cut)


# --- the resync search ---------------------------------------------------------------


@pytest.mark.parametrize("cap", [1, 2, 255, 256, 257, 65_535, 65_536, 65_537])
def test_resync_finds_a_frame_exactly_at_the_cap_and_not_one_byte_over(cap: int) -> None:
    damaged_then = LOG[:-1] + b"\xee"  # the last frame's CRC fails
    at_cap = encode_frame(bytes(range(256)) * (cap // 256) + bytes(cap % 256))
    with pytest.raises(CorruptRecordError, match="crc mismatch at offset 115"):
        scan(damaged_then + at_cap, max_record_bytes=max(cap, 55))
    over_cap = encode_frame(bytes(cap + 1))
    if cap >= 55:  # with a smaller cap the good frames above it are over cap themselves
        result = scan(damaged_then + over_cap, max_record_bytes=cap)
        assert (result.good_end, result.tail) == (115, TailState.TORN)


@pytest.mark.parametrize(
    "cap", [1, 255, 256, 65_536, 0x00FF_00FF, 2**24 - 1, 2**24, 0x0102_0304, 2**32 - 1]
)
def test_candidate_prefilter_admits_every_length_up_to_the_cap_and_nothing_over(cap: int) -> None:
    # The prefilter may only ever be looser than the rules: a valid frame it skipped would
    # turn mid-log damage into a silent truncation.
    pattern = framing._candidate_pattern(cap)
    rng = random.Random(cap)
    lengths = [0, 1, cap - 1, cap, cap + 1, 255, 256, 65_536, 2**24, 2**32 - 1]
    lengths += [rng.getrandbits(rng.randint(1, 32)) for _ in range(3000)]
    lengths += [cap ^ (1 << rng.randrange(32)) for _ in range(500)]
    for length in (n for n in lengths if 0 <= n < 2**32):
        for frame_type in (0, FRAME_TYPE_FULL, 2, 255):
            header = b"\xaa" * 8 + struct.pack("<IB", length, frame_type)
            admitted = pattern.match(header, 12) is not None
            assert admitted == (frame_type == FRAME_TYPE_FULL and length <= cap), length


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600))
def test_crc_of_a_window_follows_from_prefix_crcs(prefix: bytes, window: bytes) -> None:
    whole = zlib.crc32(prefix + window)
    assert crc_window.crc_shift(zlib.crc32(prefix), len(window)) ^ zlib.crc32(window) == whole


@pytest.mark.parametrize(
    ("period", "repeats"),
    [
        # A msgpack array of alternating 0 and 1 is 00 01 00 01 ...: every other offset
        # claims a 65537-byte frame.
        (b"\x00\x01", 33_000),
        # Every fifth offset claims a 5-byte payload: many short windows to close.
        (b"\x05\x00\x00\x00\x01", 8_000),
    ],
)
def test_periodic_tail_with_overlapping_plausible_frames_is_torn(
    period: bytes, repeats: int
) -> None:
    tail = period * repeats
    result = scan(LOG + tail)
    assert (result.payloads, result.tail, result.dropped_bytes) == (
        PAYLOADS,
        TailState.TORN,
        len(tail),
    )


def test_valid_frame_after_many_overlapping_plausible_frames_is_found() -> None:
    data = LOG + b"\x00\x01" * 33_000 + FRAMES[0]
    reason = "length 16777472 over cap 16777216 at offset 150"
    with pytest.raises(CorruptRecordError, match=reason):
        scan(data)


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=60), max_size=8),
    cut_back=st.integers(min_value=0, max_value=80),
)
def test_any_truncated_log_yields_its_complete_frames(payloads: list[bytes], cut_back: int) -> None:
    data = b"".join(encode_frame(p) for p in payloads)
    cut = data[: max(0, len(data) - cut_back)]
    result = scan(cut)
    ends = [0]
    for p in payloads:
        ends.append(ends[-1] + HEADER_SIZE + len(p))
    complete = max(i for i, end in enumerate(ends) if end <= len(cut))
    assert result.payloads == payloads[:complete]
    assert result.good_end == ends[complete]
    assert result.tail is (TailState.CLEAN if len(cut) == ends[complete] else TailState.TORN)


def test_salvage_keeps_every_valid_frame_around_damage() -> None:
    from cloudqueue.engine.core.framing import salvage

    frames = [encode_frame(bytes([i]) * (10 + i)) for i in range(6)]
    data = bytearray(b"".join(frames))
    second = len(frames[0])
    data[second + 12] ^= 0xFF  # damage inside frame 1
    data += b"\x00" * 7  # and a torn tail
    result = salvage(bytes(data))
    assert result.payloads == [bytes([i]) * (10 + i) for i in (0, 2, 3, 4, 5)]
    assert result.skipped == [(second, len(frames[1])), (len(b"".join(frames)), 7)]
