"""The durable log: segments of framed msgpack records, group commit, recovery on open.

Theory of operation
-------------------
A data directory holds numbered segments ``wal-0000000001.log``, ``wal-0000000002.log`` … Each is
a run of frames (``engine.core.framing``). In format 3 (written now) a frame holds one written
batch of records (``engine.core.batch_codec``); every segment opens with a header (its number,
the seq of the last record before it) and, once a successor exists, ends with a seal naming it.
Format-2 and format-1 segments are still read (a log from before headers is sealed and continued
in a headed segment; the ``FORMAT`` file names the first headed segment).

Writing (``LogStore``): ``append(events)`` only queues the events and wakes the flusher, so it
never blocks the driver. The flusher takes *everything* pending, encodes it, and does one write and
one fsync on the log's own IO thread (``io_thread``); events appended meanwhile form the next batch
by themselves (group commit, LevelDB's leader/follower without a timer). When the batch is on
disk ``durable_seq`` moves to its last seq and every ``wait_durable(seq)`` at or below it
returns. A segment that grows past ``segment_bytes`` is synced; the next one is created whole
(header written to a temporary name, synced, renamed, directory synced), then the old one sealed.

Faults (every failure in the write path fails closed: no caller is left waiting):
* A write error (EIO …) *poisons* the store: the partial batch is cut away, the batch and
  everything after it fail with ``LogPoisonedError`` ("not stored") and nothing more is
  acknowledged. Memory may now be ahead of disk; a restart replays what is on disk.
* An fsync error after a successful write also poisons the store, but the batch's bytes are in
  the file and may or may not reach the disk (fsyncgate): its callers get
  ``OutcomeUnknownError`` ("retry with the same uniqueId"; dedup makes that safe) and the fsync
  is never retried and trusted.
* ENOSPC on the write is survivable. The partial batch is truncated away; the ``on_disk_full``
  callback removes from the batch and from everything queued behind it (and from the engine)
  every task whose submission was in it, with every later record about it (none of them ran: a
  run waits for its submission to be durable); those callers get ``DiskFullError``; the rest
  (facts about runs that happened) is kept and retried with capped backoff until space is freed.
  While the store is full, ``accepting`` is False and new work is refused up front.
* Anything else that breaks the writer (a record the encoder cannot hold, a bug) poisons it too.

Recovery (``read_log``): segments are scanned in order. A bad frame with nothing valid after it in
the last segment is a torn tail, and so is one followed only by the rest of its own never-synced
batch: the cut bytes are saved under ``torn/`` and the segment is truncated to its last good
frame. Damage followed by later batches (under any fsync policy), a torn segment that is not the
last (except in its seal), or a seq that does not increase refuses to open (``LogCorruptError``,
naming the segment and offset); a missing or emptied segment or snapshot refuses to open
(``LogGapError``, naming what is missing) — both until ``cloudqueue log repair`` is run.

Example: three enqueues that arrive while an fsync is in flight are written by the *next* single
write + fsync, and all three ``wait_durable`` calls return together.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cloudqueue.engine.core.batch_codec import (
    SEGMENT_HEADER,
    SEGMENT_SEAL,
    decode_log_frame,
    frame_info,
    segment_marker,
)

# The log's errors live with all the others in engine.core.errors; they are re-exported here
# for the modules and tests that import them from the log.
from cloudqueue.engine.core.errors import CorruptionKind as CorruptionKind
from cloudqueue.engine.core.errors import CorruptRecordError, EngineError
from cloudqueue.engine.core.errors import LogCorruptError as LogCorruptError
from cloudqueue.engine.core.errors import LogError as LogError
from cloudqueue.engine.core.errors import LogGapError as LogGapError
from cloudqueue.engine.core.errors import LogInconsistentError as LogInconsistentError
from cloudqueue.engine.core.errors import LogLockedError as LogLockedError
from cloudqueue.engine.core.errors import LogNeedsRepairError as LogNeedsRepairError
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.framing import ScanResult, TailState, salvage, scan

log = logging.getLogger("cloudqueue.log")

SEGMENT_PREFIX = "wal-"
SEGMENT_SUFFIX = ".log"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


def apply_logged(apply: Callable[[Event], object], events: Iterable[Event]) -> None:
    """Fold logged ``events`` into a core with ``apply``, as every start and ``log verify`` do;
    a record that does not apply is reported as ``LogInconsistentError``, not a ``KeyError``."""
    for event in events:
        try:
            apply(event)
        except (KeyError, LookupError, ValueError, TypeError, EngineError) as exc:
            raise LogInconsistentError(event.seq, type(event).__name__,
                                       str(exc) or type(exc).__name__) from exc


class FileOps:
    """The file layer, injectable so tests can make writes and fsyncs fail."""

    def open_append(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write_file(self, path: Path, data: bytes) -> None:
        """Create ``path`` with ``data`` and fsync it."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.write(fd, data)
            self.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class FsyncPolicy:
    """``always``: fsync before acknowledging (the default; an acknowledged task survives power
    loss). ``interval``: acknowledge after the write, fsync at most ``interval_ms`` later (a process
    crash loses nothing; power loss may lose the last ``interval_ms``). ``never``: the OS decides
    (for throwaway queues: power loss may lose anything not yet written back)."""

    mode: str = "always"
    interval_ms: int = 100

    @classmethod
    def parse(cls, text: str) -> FsyncPolicy:
        """``always`` | ``never`` | ``interval`` | ``interval:MS``."""
        mode, _, arg = text.partition(":")
        if mode in ("always", "never") and not arg:
            return cls(mode)
        if mode == "interval":
            interval = int(arg) if arg else 100
            if interval < 1:
                raise ValueError("fsync interval must be >= 1 ms")
            return cls("interval", interval)
        raise ValueError(f"fsync policy must be always, never or interval[:MS], got {text!r}")


@dataclass
class RecoveryReport:
    segments: int = 0
    records: int = 0
    bytes_read: int = 0
    torn_segment: str | None = None
    torn_offset: int | None = None
    dropped_bytes: int = 0
    torn_reason: str | None = None
    saved_to: str | None = None
    seconds: float = 0.0
    snapshot_seq: int = 0
    snapshot_tasks: int = 0
    apply_seconds: float = 0.0  # rebuilding the engine's state from what was read
    dropped_unfinished: int = 0  # records of a split batch whose last frame was never written
    last_segment_headed: bool = False  # the last segment opens with a header (not a legacy one)

    def summary(self) -> str:
        text = f"replayed {self.records} records from {self.segments} segment(s)"
        if self.snapshot_seq:
            text = (f"loaded {self.snapshot_tasks} tasks from the snapshot at seq "
                    f"{self.snapshot_seq}; " + text)
        text += f" in {self.seconds:.3f} s"
        if self.apply_seconds:
            text += f" (+ {self.apply_seconds:.3f} s rebuilding state)"
        if self.torn_segment is not None:
            text += (f"; torn tail in {self.torn_segment} at offset {self.torn_offset}: "
                     f"dropped {self.dropped_bytes} bytes ({self.torn_reason}), "
                     f"kept in {self.saved_to}")
        return text


def segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:010d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
        number = path.name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def read_log(directory: Path, *, repair_tail: bool = True,
             snapshot_seq: int = 0) -> tuple[list[Event], RecoveryReport]:
    """Every event in the log, in order, after cutting a torn tail (saved under ``torn/``).
    ``snapshot_seq``: the seq of the snapshot the log continues (0: none).

    Raises:
        LogCorruptError: damage before the tail, or seqs out of order.
        LogGapError: a segment, or the snapshot, is missing or was emptied.
        UnknownRecordKindError: a record this version cannot read.
    """
    try:
        return _read_log(directory, repair_tail, snapshot_seq)
    except LogNeedsRepairError as exc:
        raise exc.in_directory(directory) from exc.__cause__


def _read_log(directory: Path, repair_tail: bool,
              snapshot_seq: int) -> tuple[list[Event], RecoveryReport]:
    started = time.perf_counter()
    report = RecoveryReport()
    frames = BatchReader()
    segments = list_segments(directory)
    torn: list[SegmentRead] = []
    read: SegmentRead | None = None
    walk = SegmentWalk(segments, snapshot_seq, headed_from(directory), frames)
    for read in walk:
        report.segments += 1
        report.bytes_read += len(read.data)
        if read.scanned.tail is TailState.TORN:
            torn.append(read)
    report.last_segment_headed = walk.chain.last_headed
    for cut in torn if repair_tail else ():  # cut once the whole chain holds
        _cut_torn_tail(directory, cut.path, cut.data, cut.scanned.good_end, cut.scanned.reason,
                       report)
    if frames.pending and read is not None:
        _drop_unfinished_batch(directory, segments, frames.pending_at, read.data,
                               len(frames.pending), repair_tail, report)
    report.records = len(frames.events)
    report.seconds = time.perf_counter() - started
    return frames.events, report


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
            decoded, more = decode_log_frame(payload)
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
        # written before format 3: only the synced marks of its batches can tell
        return all(info is None or info.synced <= damaged_at for info in after)
    if any(info is None or info.batch_start is None for info in after):
        return False  # a seal, a header or an older record: written after the damaged bytes
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


def _drop_unfinished_batch(directory: Path, segments: list[tuple[int, Path]],
                           at: tuple[int, int], data: bytes, records: int, repair_tail: bool,
                           report: RecoveryReport) -> None:
    """The log ends inside a batch split over frames: its last frame was never written, so it
    was never acknowledged. Its frames are cut like a torn tail (kept under ``torn/``), so that
    later batches are never read as its continuation."""
    index, offset = at
    path = segments[index][1]
    if index != len(segments) - 1:
        raise LogCorruptError(path.name, offset, "a batch split over frames is unfinished but "
                                                 "later segments exist")
    report.dropped_unfinished = records
    if repair_tail:
        _cut_torn_tail(directory, path, data, offset,
                       f"a batch of {records} records whose last frame was never written "
                       "(never acknowledged)", report)


def _cut_torn_tail(directory: Path, path: Path, data: bytes, good_end: int, reason: str | None,
                   report: RecoveryReport) -> None:
    torn_dir = directory / "torn"
    torn_dir.mkdir(exist_ok=True)
    side = torn_dir / f"{path.name}.{good_end}.{int(time.time())}.bin"
    side.write_bytes(data[good_end:])
    with open(side, "rb+") as f:
        os.fsync(f.fileno())
    with open(path, "rb+") as f:
        f.truncate(good_end)
        os.fsync(f.fileno())
    report.torn_segment = path.name
    report.torn_offset = good_end
    report.dropped_bytes = len(data) - good_end
    report.torn_reason = reason
    report.saved_to = str(side.relative_to(directory))
    log.warning("torn log tail cut: %s", report.summary())


OnDiskFull = Callable[[list[Event]], list[Event]]
