"""Frames for the append-only log: every torn write and every flipped bit is detected.

Theory of operation
===================

The log stores msgpack records. msgpack alone cannot be trusted after a crash: a flipped
bit decodes into a different value without any error, and a write cut short by a dying
process or machine leaves a partial record. So each record is wrapped in a frame (LevelDB's
record format, without its 32 KiB blocks)::

    crc32 (u32 LE) | length (u32 LE) | type (u8) | payload (length bytes)

* ``crc32`` is ``zlib.crc32(type_byte + payload)``. It does not cover the length field; a
  damaged length is still caught because the CRC is then computed over the wrong bytes.
* ``length`` counts payload bytes only. It must be in ``1..cap`` (cap defaults to
  ``MAX_RECORD_BYTES``, 16 MiB). Records are never empty, so a run of zero bytes (the
  zero-filled tail some filesystems leave after a crash) can never decode as a frame, and
  the cap is checked before anything is sliced, so a garbage length cannot make us
  allocate gigabytes.
* ``type`` is 1 (``FRAME_TYPE_FULL``) for now; the byte is reserved so a later version can
  split records across frames or add kinds without changing the layout.

Worked example: the payload ``b"hi"`` becomes these 11 bytes::

    76 8b c9 67 | 02 00 00 00 | 01 | 68 69
    crc32       | length = 2  | FULL | "h" "i"

    where 0x67c98b76 == zlib.crc32(b"\\x01hi")

Reading (``scan``) walks frames from the start and stops at the first bad frame: short
header, zero length, length over the cap, payload cut short by the end of the data, CRC
mismatch, or unknown type byte. What that bad frame
means depends on what follows it:

* Nothing decodable follows: the writer died mid-write. The tail is ``TORN``; the caller
  truncates the log to ``good_end`` before appending again.
* Some complete valid frame (sane length, known type, matching CRC) starts at any offset
  after the bad frame's first byte: the damage is in the middle of the log, truncating
  would throw away committed records, so ``CorruptRecordError`` is raised instead.

Finding "any valid frame after" is one forward pass, linear in the bytes searched: a
regex (running in C) proposes only offsets whose type byte is known and whose length is
within the cap, and each proposal's CRC is derived from running prefix CRCs rather than by
re-reading its payload, so overlapping proposals (a payload of repeated ``00 01`` bytes
makes every other offset a plausible 65537-byte frame) cost a few microseconds each, not
a pass over their payload each.

Two deliberate choices:

* A frame whose CRC matches but whose type byte is unknown was written whole, most likely
  by a newer version; it is never a torn write, so it always raises ``CorruptRecordError``
  rather than being offered for truncation.
* A torn last frame whose own payload happens to contain a complete, valid encoded frame
  is reported as corrupt, not torn: from the bytes alone it looks exactly like a damaged
  length field followed by real frames, and refusing to open is safer than silently
  dropping records.
"""

from __future__ import annotations

import enum
import functools
import heapq
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from cloudqueue.engine.core.crc_window import crc_shift, multiply, shift_tables
from cloudqueue.engine.core.errors import CorruptionKind
from cloudqueue.engine.core.errors import CorruptRecordError as CorruptRecordError  # re-export

__all__ = [
    "FRAME_TYPE_FULL",
    "HEADER_SIZE",
    "KNOWN_FRAME_TYPES",
    "MAX_RECORD_BYTES",
    "CorruptRecordError",
    "CorruptionKind",
    "Salvage",
    "ScanResult",
    "TailState",
    "encode_frame",
    "salvage",
    "scan",
]

HEADER_SIZE: Final[int] = 9
MAX_RECORD_BYTES: Final[int] = 16 * 1024 * 1024
FRAME_TYPE_FULL: Final[int] = 1
KNOWN_FRAME_TYPES: Final[frozenset[int]] = frozenset({FRAME_TYPE_FULL})

_HEADER: Final = struct.Struct("<IIB")
_TYPE_OFFSET: Final = 8  # crc and length precede the type byte; the CRC starts here
_U32_MAX: Final = 0xFFFF_FFFF
# Seeding the CRC with the type byte lets encode_frame checksum type + payload without
# first concatenating them.
_CRC_SEED: Final = {t: zlib.crc32(bytes([t])) for t in KNOWN_FRAME_TYPES}
_TABLE_AFTER: Final = 150  # shifts by one length before a table for it pays (_Resync._shift)

Buffer = bytes | bytearray | memoryview


class TailState(enum.Enum):
    CLEAN = "clean"
    TORN = "torn"


@dataclass(frozen=True)
class ScanResult:
    payloads: list[bytes]
    offsets: list[int]
    good_end: int
    tail: TailState
    dropped_bytes: int
    reason: str | None


def encode_frame(payload: bytes, frame_type: int = FRAME_TYPE_FULL) -> bytes:
    """Wrap one record. Refuses anything ``scan`` would reject, so writers fail loudly."""
    if frame_type not in KNOWN_FRAME_TYPES:
        raise ValueError(f"unknown frame type {frame_type}")
    if not 1 <= len(payload) <= MAX_RECORD_BYTES:
        raise ValueError(f"payload length {len(payload)} outside 1..{MAX_RECORD_BYTES}")
    crc = zlib.crc32(payload, _CRC_SEED[frame_type])
    return _HEADER.pack(crc, len(payload), frame_type) + payload


class _Kind(enum.Enum):
    INCOMPLETE = enum.auto()  # more bytes could still make it good
    DAMAGED = enum.auto()  # bad whatever follows
    UNSUPPORTED = enum.auto()  # intact, but of a type this version cannot read


class _Bad(enum.Enum):
    """Why a frame is not good.

    Members are constants so that rejecting a frame allocates nothing; the details
    (length, type) are re-read from the header only when a reason is wanted.
    """

    SHORT_HEADER = (_Kind.INCOMPLETE, "short header", CorruptionKind.SHORT_HEADER)
    ZERO_LENGTH = (_Kind.DAMAGED, "zero length", CorruptionKind.ZERO_LENGTH)
    OVER_CAP = (_Kind.DAMAGED, "length {length} over cap {cap}", CorruptionKind.OVER_CAP)
    CUT_SHORT = (_Kind.INCOMPLETE, "payload cut short", CorruptionKind.CUT_SHORT)
    CRC_MISMATCH = (_Kind.DAMAGED, "crc mismatch", CorruptionKind.CRC_MISMATCH)
    UNKNOWN_TYPE = (_Kind.UNSUPPORTED, "unknown frame type {frame_type} with valid crc",
                    CorruptionKind.UNKNOWN_FRAME_TYPE)

    def __init__(self, kind: _Kind, template: str, fault: CorruptionKind) -> None:
        self.kind = kind
        self.template = template
        self.fault = fault  # the public name of this fault (CorruptRecordError.reason_kind)


# The rules for a good frame live in these two functions; the frame walk (_check_frame)
# and the resync search (_Resync) both use them, so they cannot drift apart.


def _length_fault(length: int, cap: int) -> _Bad | None:
    if length == 0:
        return _Bad.ZERO_LENGTH
    if length > cap:
        return _Bad.OVER_CAP
    return None


def _content_fault(actual_crc: int, claimed_crc: int, frame_type: int) -> _Bad | None:
    if actual_crc != claimed_crc:
        return _Bad.CRC_MISMATCH
    if frame_type not in KNOWN_FRAME_TYPES:
        return _Bad.UNKNOWN_TYPE
    return None


def _check_frame(view: memoryview, pos: int, cap: int) -> int | _Bad:
    """Judge the frame at ``view[pos]``: its end offset if good, else why it is not."""
    if len(view) - pos < HEADER_SIZE:
        return _Bad.SHORT_HEADER
    claimed_crc, length, frame_type = _HEADER.unpack_from(view, pos)
    fault = _length_fault(length, cap)
    if fault is not None:
        return fault
    end: int = pos + HEADER_SIZE + length
    if end > len(view):
        return _Bad.CUT_SHORT
    actual_crc = zlib.crc32(view[pos + _TYPE_OFFSET : end])
    return _content_fault(actual_crc, claimed_crc, frame_type) or end


def _describe(view: memoryview, pos: int, bad: _Bad, cap: int, offset: int) -> str:
    length = frame_type = 0
    if bad is not _Bad.SHORT_HEADER:
        _, length, frame_type = _HEADER.unpack_from(view, pos)
    what = bad.template.format(length=length, cap=cap, frame_type=frame_type)
    return f"{what} at offset {offset}"


def _candidate_starts(view: memoryview, first: int, cap: int) -> Iterator[int]:
    """Offsets >= ``first`` where a frame could start, in increasing order.

    A prefilter only: it lets through some frames that the rules reject (length 0),
    never the reverse, so it decides speed, not verdicts.
    """
    for match in _candidate_pattern(cap).finditer(view, first + _TYPE_OFFSET):
        yield match.start() - _TYPE_OFFSET


@functools.lru_cache(maxsize=8)
def _candidate_pattern(cap: int) -> re.Pattern[bytes]:
    """Match a known type byte whose preceding 4 bytes, a little-endian length, are <= cap.

    Searching for the type byte first lets the regex engine skip ahead in C; the length
    lookbehind then rejects, still in C, the long runs of one byte value (a payload of
    0x01 bytes, say) that would otherwise make every offset a candidate.
    """
    types = b"[" + b"".join(_byte_class_item(t) for t in sorted(KNOWN_FRAME_TYPES)) + b"]"
    limit = cap.to_bytes(4, "little")
    # x <= cap iff, at the most significant byte k where x and cap differ, x's byte is
    # smaller (or they never differ): one alternative per k, written low byte first.
    alternatives = [b"[\\x00-" + _byte_class_item(limit[0]) + b"]" + re.escape(limit[1:])]
    for k in range(1, 4):
        if limit[k] > 0:
            smaller = b"[\\x00-" + _byte_class_item(limit[k] - 1) + b"]"
            alternatives.append(b"." * k + smaller + re.escape(limit[k + 1 :]))
    length = b"(?:" + b"|".join(alternatives) + b")"
    return re.compile(types + b"(?<=" + length + types + b")", re.DOTALL)


def _byte_class_item(value: int) -> bytes:
    return b"\\x%02x" % value


class _Resync:
    """Decides "does any valid frame start at or after ``first``?" in one forward pass.

    A candidate's CRC is never computed by re-reading its window: a running prefix CRC
    is kept, and crc32(window) = prefix(end) ^ crc_shift(prefix(start), len(window))
    (``engine.core.crc_window``). So the cost is linear in the bytes however many candidate
    windows overlap (a payload of repeated b"\\x00\\x01" makes every other offset a
    plausible 65537-byte frame).
    """

    def __init__(self, view: memoryview, first: int, cap: int) -> None:
        self._view = view
        self._first = first
        self._cap = cap
        self._cursor = first  # _prefix_crc is crc32(view[first:_cursor])
        self._prefix_crc = 0
        # Candidates whose window has not ended yet, soonest end first: (window end,
        # window start, prefix CRC at window start, claimed crc, frame type). The
        # window is the type byte and payload, what the CRC covers.
        self._open: list[tuple[int, int, int, int, int]] = []
        self._lengths_seen: dict[int, int] = {}

    def found(self) -> bool:
        """True if a valid frame starts at or after ``first``."""
        for start in _candidate_starts(self._view, self._first, self._cap):
            if self._close_windows(start + _TYPE_OFFSET):
                return True
            self._open_window(start)
        return self._close_windows(len(self._view))

    def _open_window(self, start: int) -> None:
        claimed_crc, length, frame_type = _HEADER.unpack_from(self._view, start)
        if _length_fault(length, self._cap) is not None:
            return
        window = start + _TYPE_OFFSET
        self._roll(window)
        entry = (window + 1 + length, window, self._prefix_crc, claimed_crc, frame_type)
        heapq.heappush(self._open, entry)

    def _close_windows(self, limit: int) -> bool:
        while self._open and self._open[0][0] <= limit:
            end, window, window_prefix, claimed_crc, frame_type = heapq.heappop(self._open)
            self._roll(end)
            actual_crc = self._prefix_crc ^ self._shift(window_prefix, end - window)
            if _content_fault(actual_crc, claimed_crc, frame_type) is None:
                return True
        return False

    def _shift(self, crc: int, length: int) -> int:
        # Periodic data (an array of 0, 1, 0, 1 ...) repeats one window length many
        # times. A table for a length costs about as much as 150 shifts to build and
        # makes each later shift one step, so build it once a length has paid for it:
        # never more than twice the cost of the better choice in hindsight.
        seen = self._lengths_seen.get(length, 0) + 1
        self._lengths_seen[length] = seen
        if seen > _TABLE_AFTER:
            return multiply(shift_tables(length), crc)
        return crc_shift(crc, length)

    def _roll(self, to: int) -> None:
        if to > self._cursor:
            self._prefix_crc = zlib.crc32(self._view[self._cursor : to], self._prefix_crc)
            self._cursor = to


def _checked_cap(max_record_bytes: int) -> int:
    if not 1 <= max_record_bytes <= _U32_MAX:
        raise ValueError(f"max_record_bytes {max_record_bytes} outside 1..{_U32_MAX}")
    return max_record_bytes


def _checked_start(start_offset: int) -> int:
    if start_offset < 0:
        raise ValueError(f"start_offset {start_offset} is negative")
    return start_offset


def scan(
    data: Buffer, *, start_offset: int = 0, max_record_bytes: int = MAX_RECORD_BYTES
) -> ScanResult:
    """Decode every good frame of ``data`` and judge its tail.

    ``start_offset`` is the file offset of ``data[0]``; all offsets reported (frame
    offsets, ``good_end``, reasons, errors) are shifted by it.
    Raises ``CorruptRecordError`` for mid-log damage.
    """
    cap = _checked_cap(max_record_bytes)
    base = _checked_start(start_offset)
    payloads: list[bytes] = []
    offsets: list[int] = []
    with memoryview(data) as raw, raw.cast("B") as view:
        pos, size = 0, len(view)
        while pos < size:
            judged = _check_frame(view, pos, cap)
            if isinstance(judged, _Bad):
                reason = _judge_tail(view, pos, judged, base, cap)
                return ScanResult(payloads, offsets, base + pos, TailState.TORN, size - pos, reason)
            offsets.append(base + pos)
            payloads.append(bytes(view[pos + HEADER_SIZE : judged]))
            pos = judged
    return ScanResult(payloads, offsets, base + size, TailState.CLEAN, 0, None)


@dataclass(frozen=True)
class Salvage:
    payloads: list[bytes]
    offsets: list[int]
    skipped: list[tuple[int, int]]  # (offset, length) of every damaged region passed over


def salvage(data: Buffer, *, max_record_bytes: int = MAX_RECORD_BYTES) -> Salvage:
    """Every valid frame of ``data``, passing over damaged regions (for repair, not replay:
    a frame found after damage is only as trustworthy as its CRC)."""
    cap = _checked_cap(max_record_bytes)
    payloads: list[bytes] = []
    offsets: list[int] = []
    skipped: list[tuple[int, int]] = []
    with memoryview(data) as raw, raw.cast("B") as view:
        pos, size = 0, len(view)
        while pos < size:
            judged = _check_frame(view, pos, cap)
            if isinstance(judged, _Bad):
                start = pos
                pos += 1
                while pos < size and isinstance(_check_frame(view, pos, cap), _Bad):
                    pos += 1
                skipped.append((start, pos - start))
                continue
            offsets.append(pos)
            payloads.append(bytes(view[pos + HEADER_SIZE : judged]))
            pos = judged
    return Salvage(payloads, offsets, skipped)


def _judge_tail(view: memoryview, pos: int, bad: _Bad, base: int, cap: int) -> str:
    """Return why the tail starting with the bad frame at ``pos`` is torn, or raise."""
    reason = _describe(view, pos, bad, cap, base + pos)
    if bad.kind is _Kind.UNSUPPORTED or _Resync(view, pos + 1, cap).found():
        raise CorruptRecordError(base + pos, reason, bad.fault)
    return reason
