"""Reading a log's segments: their names, the chain they make, the batches across their frames,
and the judgement of a damaged segment (a torn tail or corruption). ``engine.runtime.log_file``
reads the log through ``SegmentWalk``; so do ``cloudqueue log inspect|verify`` and the
compactor, so they all judge a log alike.

Segment names are ``wal-0000000001.log``, ``wal-0000000002.log`` ... Every segment written in
format 3 opens with a header (its number, the seq of the last record before it) and, once a
successor exists, ends with a seal naming it (``engine.core.batch_codec``); the ``FORMAT`` file
names the first segment with a header, so that in a log begun in format 2 (segments without
headers) a headed segment that lost its header is still noticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cloudqueue.engine.core.batch_codec import (
    SEGMENT_HEADER,
    SEGMENT_SEAL,
    decode_log_frame,
    frame_info,
    segment_marker,
)
from cloudqueue.engine.core.errors import (
    CorruptRecordError,
    LogCorruptError,
    LogFormatRetiredError,
    LogGapError,
)
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.framing import ScanResult, TailState, salvage, scan

SEGMENT_PREFIX = "wal-"
SEGMENT_SUFFIX = ".log"


def segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:010d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
        number = path.name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


@dataclass
class SegmentRead:
    """One segment as ``SegmentWalk`` read it: its bytes, their scan, and where its events
    begin in the reader's ``events``."""

    path: Path
    data: bytes
    scanned: ScanResult
    first_event: int


class SegmentWalk:
    """Each segment in order: read, scanned (``scan_segment``), checked against the chain
    (``SegmentChain``) and taken into ``reader``; once the last is read, the chain's end is
    checked too. A start (``read_log``) and ``log inspect|verify`` read the log through this,
    so they judge it alike. Raises what those raise."""

    def __init__(self, segments: list[tuple[int, Path]], snapshot_seq: int,
                 headed: int | None, reader: BatchReader) -> None:
        self.segments = segments
        self.chain = SegmentChain(snapshot_seq, headed_from=headed)
        self.reader = reader
        self.current: Path | None = None  # the segment being read (for messages about it)

    def __iter__(self) -> Iterator[SegmentRead]:
        reader, chain = self.reader, self.chain
        for index, (number, path) in enumerate(self.segments):
            self.current = path
            data = path.read_bytes()
            scanned = scan_segment(path.name, data)
            chain.enter(number, path.name, scanned, reader.last_seq)
            first = len(reader.events)
            reader.take(index, path.name, scanned)
            chain.leave(scanned, reader.last_seq)
            yield SegmentRead(path, data, scanned, first)
        chain.finish()


FORMAT_MARK = "FORMAT"
_MARK_WORDS = "cloudqueue log: every segment from number {} on opens with a header\n"


def format_mark_text(first_headed: int) -> bytes:
    return _MARK_WORDS.format(first_headed).encode()


def headed_from(directory: Path) -> int | None:
    """The number of the first segment written with a header (every later one has one too, so
    one without it was emptied or replaced), or None in a log from before segment headers."""
    try:
        text = (directory / FORMAT_MARK).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return 1  # the mark is there but unreadable: check every segment
    found = re.search(r"from number (\d+) on", text)
    return int(found.group(1)) if found else 1


class SegmentChain:
    """Checks that the snapshot and the segments join up with nothing missing.

    Every segment written by this version opens with a header naming its number and the seq
    of the last record written before it, and a segment that was followed by a new one ends
    with a seal naming it (the new segment is created, synced and named first). So: numbers
    run on without a hole; a header's seq is the last seq read before it (or covered by the
    snapshot); a seal's successor exists; and a segment without a header was emptied. Logs
    from before headers (no format mark in the directory) are checked as far as they can be.
    """

    def __init__(self, snapshot_seq: int, *, headed_from: int | None) -> None:
        self.snapshot_seq = snapshot_seq
        self.headed_from = headed_from
        self.previous: tuple[int, str] | None = None  # (number, name) of the last segment
        self.sealed: int | None = None  # the successor the last segment's seal names
        self.torn: ScanResult | None = None  # the last segment read ended torn
        self.last_headed = False

    def enter(self, number: int, name: str, result: ScanResult, last_seq: int) -> None:
        marker = segment_marker(result.payloads[0]) if result.payloads else None
        header = marker if marker is not None and marker[0] == SEGMENT_HEADER else None
        self._check_previous_tail(name, header, last_seq)
        if self.previous is not None and number != self.previous[0] + 1:
            raise LogGapError(f"segment {segment_name(self.previous[0] + 1)} is missing "
                              f"(the segments jump from {self.previous[1]} to {name})")
        if header is None:
            if self.sealed is not None or (self.headed_from is not None
                                           and number >= self.headed_from):
                raise LogGapError(f"{name} has no segment header: it was emptied or replaced")
        else:
            self._check_header(name, number, header, last_seq)
        self.previous = (number, name)
        self.last_headed = header is not None

    def _check_previous_tail(self, name: str, header: tuple[str, int, int] | None,
                             last_seq: int) -> None:
        """A segment before the last may end torn only where its seal was being written: the
        next segment's header then says every record up to it is here."""
        torn, self.torn = self.torn, None
        if torn is None or self.previous is None:
            return
        if header is None or header[2] != last_seq:
            raise LogCorruptError(self.previous[1], torn.good_end,
                                  f"segment ends torn but later segments exist ({torn.reason})")

    def _check_header(self, name: str, number: int, header: tuple[str, int, int],
                      last_seq: int) -> None:
        _, said_number, prev_seq = header
        if said_number != number:
            raise LogGapError(f"{name} says it is segment {said_number}: it was renamed or "
                              "copied in from elsewhere")
        # at or below the snapshot's seq, everything before the segment is covered by it
        if prev_seq != last_seq and prev_seq > self.snapshot_seq:
            if self.previous is None:
                covered = (f"the snapshot covers only up to seq {self.snapshot_seq}"
                           if self.snapshot_seq else "there is no snapshot (was it deleted?)")
                raise LogGapError(f"{name} continues from seq {prev_seq}, but {covered} and "
                                  "no earlier segment holds the records before it")
            raise LogGapError(f"{name} continues from seq {prev_seq}, but the segments before "
                              f"it end at seq {last_seq}")

    def leave(self, result: ScanResult, last_seq: int) -> None:
        marker = segment_marker(result.payloads[-1]) if result.payloads else None
        self.sealed = marker[1] if marker is not None and marker[0] == SEGMENT_SEAL else None
        if result.tail is TailState.TORN:
            self.torn = result

    def finish(self) -> None:
        if self.sealed is not None:
            raise LogGapError(f"segment {segment_name(self.sealed)} is missing (the last "
                              f"segment, {self.previous[1] if self.previous else '?'}, says "
                              "it was followed by it)")
        if self.headed_from is not None and self.previous is None:
            raise LogGapError("every log segment was deleted (the directory had them: it "
                              f"carries the {FORMAT_MARK} mark)" +
                              (f"; the snapshot at seq {self.snapshot_seq} is all that is left"
                               if self.snapshot_seq else ""))


class BatchReader:
    """The events of the frames read so far, in order; a batch split over frames joins
    ``events`` only once its last frame is read (until then it is ``pending``)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.pending: list[Event] = []
        self.pending_at = (0, 0)  # (segment index, offset) of the pending batch's first frame
        self.last_seq = 0

    def take(self, index: int, name: str, result: ScanResult) -> None:
        for offset, payload in zip(result.offsets, result.payloads, strict=True):
            try:
                decoded, more = decode_log_frame(payload)
            except LogFormatRetiredError as exc:
                raise exc.located(file=name) from None
            for event in decoded:
                if event.seq <= self.last_seq:
                    raise LogCorruptError(name, offset, f"record seq {event.seq} does not "
                                                        f"follow {self.last_seq}")
                self.last_seq = event.seq
            if more and not self.pending:
                self.pending_at = (index, offset)
            self.pending += decoded
            if not more:
                self.events += self.pending
                self.pending = []


def scan_segment(name: str, data: bytes) -> ScanResult:
    """Frames of one segment, telling a torn tail from corruption.

    Damage with nothing valid after it is a torn tail. Damage followed by valid frames is a
    torn tail only if those frames are the rest of the *one* batch the damage is in, a batch
    written by one write and never synced (the kernel may write its pages back in any order
    before a power cut): every one names the same batch start at or before the damage, none
    says bytes from there on were synced, and only the last may end its batch. Anything else
    (a later batch, a segment seal, a frame saying the damaged bytes had been synced) means
    data that was already there was damaged: corruption, whatever the fsync policy.

    Raises:
        LogCorruptError: corruption, or an intact frame of an unknown type.
    """
    try:
        return scan(data)
    except CorruptRecordError as exc:
        if not exc.reason_kind.may_be_torn:  # written whole: never the end of a torn write
            raise LogCorruptError(name, exc.offset, exc.reason, exc.reason_kind) from None
        head = scan(memoryview(data)[: exc.offset])
        if not _torn_batch(data, head, exc.offset):
            raise LogCorruptError(name, exc.offset, f"{exc.reason}, and intact records of a "
                                  "later write follow it", exc.reason_kind) from None
        return ScanResult(head.payloads, head.offsets, exc.offset, TailState.TORN,
                          len(data) - exc.offset,
                          f"{exc.reason}; nothing after it was ever synced")


def _torn_batch(data: bytes, head: ScanResult, damaged_at: int) -> bool:
    """Whether every valid frame after ``damaged_at`` belongs to the batch the damage is in
    (see ``scan_segment``)."""
    payloads = salvage(memoryview(data)[damaged_at + 1:]).payloads
    if not payloads:
        return True
    after = [frame_info(p) for p in payloads]
    if not any(info is not None and info.batch_start is not None for info in after) and \
            not any(segment_marker(p) for p in payloads):
        # written in format 2: only the synced marks of its batches can tell
        return all(info is None or info.synced <= damaged_at for info in after)
    if any(info is None or info.batch_start is None for info in after):
        return False  # a seal, a header or a format-2 batch: written after the damaged bytes
    infos = [info for info in after if info is not None]
    starts = {info.batch_start for info in infos}
    start = starts.pop()
    if starts or start is None or start > damaged_at:
        return False
    if any(info.synced > start for info in infos):
        return False  # it says the damaged bytes had been synced
    if any(not info.more for info in infos[:-1]):
        return False  # a batch ended and another began after the damage
    # the frames before the damage from the batch's start on are its earlier frames
    before = [frame_info(p) for o, p in zip(head.offsets, head.payloads, strict=True)
              if o >= start]
    return all(info is not None and info.batch_start == start and info.more for info in before)
