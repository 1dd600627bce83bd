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

Reading (``scan`` for a buffer, ``FrameDecoder`` for chunks) walks frames from the start
and stops at the first bad frame: short header, zero length, length over the cap, payload
cut short by the end of the data, CRC mismatch, or unknown type byte. What that bad frame
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

from cloudqueue.engine.core.errors import CorruptionKind
from cloudqueue.engine.core.errors import CorruptRecordError as CorruptRecordError  # re-export

__all__ = [
    "FRAME_TYPE_FULL",
    "HEADER_SIZE",
    "KNOWN_FRAME_TYPES",
    "MAX_RECORD_BYTES",
    "CorruptRecordError",
    "CorruptionKind",
    "FrameDecoder",
    "Salvage",
    "ScanResult",
    "TailState",
    "TailVerdict",
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

Buffer = bytes | bytearray | memoryview


class TailState(enum.Enum):
    CLEAN = "clean"
    TORN = "torn"


@dataclass(frozen=True)
class TailVerdict:
    """How a log ends, without the payloads (what ``FrameDecoder.finish`` returns)."""

    frames: int
    good_end: int
    tail: TailState
    dropped_bytes: int
    reason: str | None


@dataclass(frozen=True)
class ScanResult:
    payloads: list[bytes]
    offsets: list[int]
    good_end: int
    tail: TailState
    dropped_bytes: int
    reason: str | None

    @property
    def verdict(self) -> TailVerdict:
        return TailVerdict(
            len(self.payloads), self.good_end, self.tail, self.dropped_bytes, self.reason
        )


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


def _bytes_needed(view: memoryview, pos: int, bad: _Bad) -> int:
    """How many bytes from ``pos`` an INCOMPLETE frame needs before it can be judged."""
    if bad is _Bad.SHORT_HEADER:
        return HEADER_SIZE
    length: int = _HEADER.unpack_from(view, pos)[1]
    return HEADER_SIZE + length


def _describe(view: memoryview, pos: int, bad: _Bad, cap: int, offset: int) -> str:
    length = frame_type = 0
    if bad is not _Bad.SHORT_HEADER:
        _, length, frame_type = _HEADER.unpack_from(view, pos)
    what = bad.template.format(length=length, cap=cap, frame_type=frame_type)
    return f"{what} at offset {offset}"


# CRC arithmetic, so the resync search can get any window's CRC from two prefix CRCs:
# crc32(a + b) == _crc_shift(crc32(a), len(b)) ^ crc32(b)   (zlib's crc32_combine).
# Values are polynomials over GF(2) in zlib's bit-reversed order: bit 31 is x^0.

_CRC_POLY: Final = 0xEDB88320
_TABLE_AFTER: Final = 150
_Tables = tuple[list[int], list[int], list[int], list[int]]


def _times_x(value: int) -> int:
    return (value >> 1) ^ _CRC_POLY if value & 1 else value >> 1


def _multiplier(factor: int) -> _Tables:
    """Byte-indexed tables that multiply any value by ``factor`` modulo the polynomial."""
    columns = [0] * 32  # columns[bit] = factor * (the one-bit value 1 << bit)
    value = factor
    for bit in range(31, -1, -1):
        columns[bit] = value
        value = _times_x(value)
    tables = []
    for byte in range(4):
        table = [0] * 256
        for index in range(1, 256):
            low = index & -index
            table[index] = table[index ^ low] ^ columns[8 * byte + low.bit_length() - 1]
        tables.append(table)
    return tables[0], tables[1], tables[2], tables[3]


def _multiply(tables: _Tables, value: int) -> int:
    low, mid_low, mid_high, high = tables
    return (
        low[value & 0xFF]
        ^ mid_low[(value >> 8) & 0xFF]
        ^ mid_high[(value >> 16) & 0xFF]
        ^ high[value >> 24]
    )


@functools.cache
def _x_to_the_2_to_the(k: int) -> tuple[int, _Tables]:
    """x^(2^k) modulo the polynomial, with its multiplication tables (built on demand)."""
    if k == 0:
        factor = 1 << 30  # x^1
    else:
        previous, tables = _x_to_the_2_to_the(k - 1)
        factor = _multiply(tables, previous)
    return factor, _multiplier(factor)


def _crc_shift(crc: int, length: int) -> int:
    """``crc`` multiplied by x^(8 * length): what appending ``length`` bytes does to it."""
    k = 3  # a byte is 2^3 bits
    while length:
        if length & 1:
            crc = _multiply(_x_to_the_2_to_the(k)[1], crc)
        length >>= 1
        k += 1
    return crc


@functools.lru_cache(maxsize=64)
def _shift_tables(length: int) -> _Tables:
    """Tables that do ``_crc_shift(crc, length)`` in one step, for lengths seen often."""
    return _multiplier(_crc_shift(1 << 31, length))  # 1 << 31 is x^0


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
    """Decides "does any valid frame start after the bad one?" in one forward pass.

    A candidate's CRC is never computed by re-reading its window: a running prefix CRC
    is kept, and crc32(window) = prefix(end) ^ _crc_shift(prefix(start), len(window)).
    So the cost is linear in the bytes however many candidate windows overlap (a payload
    of repeated b"\\x00\\x01" makes every other offset a plausible 65537-byte frame), and
    no byte is needed twice: a caller feeding a stream keeps only the last 8.
    """

    def __init__(self, first: int, cap: int) -> None:
        self._cap = cap
        self._cursor = first  # _prefix_crc is crc32(stream[first:_cursor])
        self._prefix_crc = 0
        self._type_from = first + _TYPE_OFFSET  # first type byte not yet examined
        # Candidates whose window has not ended yet, soonest end first: (window end,
        # window start, prefix CRC at window start, claimed crc, frame type). The
        # window is the type byte and payload, what the CRC covers.
        self._open: list[tuple[int, int, int, int, int]] = []
        self._lengths_seen: dict[int, int] = {}

    @property
    def needed_from(self) -> int:
        """Stream offset of the first byte ``advance`` will read again."""
        return min(self._cursor, self._type_from - _TYPE_OFFSET)

    def advance(self, view: memoryview, view_start: int) -> bool:
        """Read the stream up to the end of ``view``; True once a valid frame is found.

        ``view`` holds the stream from offset ``view_start <= needed_from``.
        """
        first = self._type_from - _TYPE_OFFSET - view_start
        for start in _candidate_starts(view, first, self._cap):
            if self._close_windows(view, view_start, view_start + start + _TYPE_OFFSET):
                return True
            self._open_window(view, view_start, start)
        end = view_start + len(view)
        self._type_from = max(self._type_from, end)
        if self._close_windows(view, view_start, end):
            return True
        self._roll(view, view_start, end)
        return False

    def _open_window(self, view: memoryview, view_start: int, start: int) -> None:
        claimed_crc, length, frame_type = _HEADER.unpack_from(view, start)
        if _length_fault(length, self._cap) is not None:
            return
        window = view_start + start + _TYPE_OFFSET
        self._roll(view, view_start, window)
        entry = (window + 1 + length, window, self._prefix_crc, claimed_crc, frame_type)
        heapq.heappush(self._open, entry)

    def _close_windows(self, view: memoryview, view_start: int, limit: int) -> bool:
        while self._open and self._open[0][0] <= limit:
            end, window, window_prefix, claimed_crc, frame_type = heapq.heappop(self._open)
            self._roll(view, view_start, end)
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
            return _multiply(_shift_tables(length), crc)
        return _crc_shift(crc, length)

    def _roll(self, view: memoryview, view_start: int, to: int) -> None:
        if to > self._cursor:
            chunk = view[self._cursor - view_start : to - view_start]
            self._prefix_crc = zlib.crc32(chunk, self._prefix_crc)
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
    if bad.kind is _Kind.UNSUPPORTED or _Resync(pos + 1, cap).advance(view, 0):
        raise CorruptRecordError(base + pos, reason, bad.fault)
    return reason


class FrameDecoder:
    """Incremental ``scan`` for reading a big log in chunks.

    ``feed`` returns the payloads of frames completed by the chunk; ``finish`` judges the
    tail with exactly scan's rules (same frame checks, same resync search) and returns its
    verdict. Mid-log damage raises ``CorruptRecordError`` as soon as a valid frame after
    the damage is seen: from ``feed`` if that call decoded no payloads, otherwise from
    the next ``feed`` or ``finish``, so no good payload is lost. Memory stays at about
    one chunk plus one frame, also while searching a long damaged tail.
    """

    def __init__(self, max_record_bytes: int = MAX_RECORD_BYTES, *, start_offset: int = 0) -> None:
        self._cap = _checked_cap(max_record_bytes)
        # Before a bad frame: undecoded bytes from a frame boundary. After: the bytes the
        # resync search still needs.
        self._buf = bytearray()
        self._base = _checked_start(start_offset)  # stream offset of _buf[0]
        self._fed_end = self._base  # stream offset just past the last byte fed
        self._need = HEADER_SIZE  # don't re-judge until _buf holds this many bytes
        self._frames = 0
        self._bad: CorruptRecordError | None = None  # the first bad frame, if any
        self._resync: _Resync | None = None
        self._error: CorruptRecordError | None = None  # raised by every later call
        self._verdict: TailVerdict | None = None

    def feed(self, chunk: Buffer) -> list[bytes]:
        self._check_usable()
        with memoryview(chunk) as raw:
            self._fed_end += raw.nbytes
        self._buf += chunk
        if self._bad is not None:
            self._search_tail()
            self._check_usable()
            return []
        if len(self._buf) < self._need:
            return []
        payloads = self._decode_buffer(at_eof=False)
        if not payloads:
            self._check_usable()
        return payloads

    def finish(self) -> TailVerdict:
        if self._verdict is not None:
            return self._verdict
        self._check_usable()
        if self._bad is None and self._buf:
            # feed decodes eagerly, so what is left is one unfinished frame.
            self._decode_buffer(at_eof=True)
            self._check_usable()
        if self._bad is None:
            verdict = TailVerdict(self._frames, self._fed_end, TailState.CLEAN, 0, None)
        else:
            bad_at, reason = self._bad.offset, self._bad.reason
            dropped = self._fed_end - bad_at
            verdict = TailVerdict(self._frames, bad_at, TailState.TORN, dropped, reason)
        self._verdict = verdict
        return verdict

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._verdict is not None:
            raise RuntimeError("FrameDecoder.feed called after finish")

    def _decode_buffer(self, *, at_eof: bool) -> list[bytes]:
        payloads: list[bytes] = []
        pos = 0
        bad: _Bad | None = None
        reason = ""
        with memoryview(self._buf) as view:
            while True:
                judged = _check_frame(view, pos, self._cap)
                if isinstance(judged, int):
                    payloads.append(bytes(view[pos + HEADER_SIZE : judged]))
                    pos = judged
                    continue
                if judged.kind is _Kind.INCOMPLETE and not at_eof:
                    self._need = _bytes_needed(view, pos, judged)
                elif pos < len(view):
                    bad = judged
                    reason = _describe(view, pos, bad, self._cap, self._base + pos)
                break
        self._frames += len(payloads)
        del self._buf[:pos]
        self._base += pos
        if bad is not None:
            self._enter_bad_tail(bad, reason)
        return payloads

    def _enter_bad_tail(self, bad: _Bad, reason: str) -> None:
        # The buffer now starts at the bad frame; the search starts one byte later.
        self._bad = CorruptRecordError(self._base, reason, bad.fault)
        if bad.kind is _Kind.UNSUPPORTED:
            self._error = self._bad
            return
        self._resync = _Resync(self._base + 1, self._cap)
        del self._buf[:1]
        self._base += 1
        self._search_tail()

    def _search_tail(self) -> None:
        if self._resync is None:
            return
        with memoryview(self._buf) as view:
            found = self._resync.advance(view, self._base)
        if found:
            self._error = self._bad
            return
        done = self._resync.needed_from - self._base
        del self._buf[:done]
        self._base += done
