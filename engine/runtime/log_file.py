"""The durable log: segments of framed msgpack records, group commit, recovery on open.

Theory of operation
-------------------
A data directory holds numbered segments ``wal-0000000001.log``, ``wal-0000000002.log`` … Each is
a run of frames (``engine.core.framing``). In format 2 (written now) a frame holds one written
batch of records (``engine.core.batch_codec``); format-1 segments (a frame per record, and a
marker frame opening each batch: ``engine.core.codec``) are still read.

Writing (``LogStore``): ``append(events)`` only queues the events and wakes the flusher, so it
never blocks the driver. The flusher takes *everything* pending, encodes it, and does one write and
one fsync on the log's own IO thread (``io_thread``); events appended meanwhile form the next batch
by themselves (group commit, LevelDB's leader/follower without a timer). When the batch is on
disk ``durable_seq`` moves to its last seq and every ``wait_durable(seq)`` at or below it
returns. A segment that grows past ``segment_bytes`` is synced and closed and the next one begins.

Faults:
* A write or fsync error (EIO …) *poisons* the store: the batch and everything after it fail with
  ``LogPoisonedError`` and nothing more is acknowledged (fail closed). Memory may now be ahead of
  disk; a restart replays what is on disk.
* ENOSPC is survivable. The partial batch is truncated away; the ``on_disk_full`` callback removes
  from the batch (and from the engine) every task whose submission was in it (none of them can have
  run: a run waits for its submission to be durable) and those callers get ``DiskFullError``; the
  rest of the batch (facts about runs that happened) is kept and retried with capped backoff until
  space is freed. While the store is full, ``accepting`` is False and new work is refused up front.

Recovery (``read_log``): segments are scanned in order. A bad frame with nothing valid after it in
the last segment is a torn tail: the cut bytes are saved under ``torn/`` and the segment is
truncated to its last good frame. Damage followed by valid frames, a torn segment that is not the
last, or a seq that does not increase refuses to open (``LogCorruptError``, naming the segment and
offset) until ``cloudqueue log repair`` is run.

Example: three enqueues that arrive while an fsync is in flight are written by the *next* single
write + fsync, and all three ``wait_durable`` calls return together.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.core.batch_codec import decode_log_frame, payload_synced
from engine.core.errors import EngineError, LogError
from engine.core.events import Event
from engine.core.framing import CorruptRecordError, ScanResult, TailState, salvage, scan

log = logging.getLogger("cloudqueue.log")

SEGMENT_PREFIX = "wal-"
SEGMENT_SUFFIX = ".log"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


class LogCorruptError(LogError):
    """Damage in the middle of the log: the queue refuses to start until it is repaired."""

    def __init__(self, segment: str, offset: int, reason: str) -> None:
        super().__init__(f"log segment {segment} is damaged at offset {offset}: {reason}; "
                         "run `cloudqueue log repair DATA_DIR` (it keeps a backup)")
        self.segment = segment
        self.offset = offset
        self.reason = reason


class LogInconsistentError(LogError):
    """A record that does not follow from the records before it (it names a task the log does
    not hold, say): the queue refuses to start until the log is repaired."""

    def __init__(self, seq: int, kind: str, reason: str) -> None:
        super().__init__(f"log record seq {seq} ({kind}) does not follow from the records "
                         f"before it: {reason}; run `cloudqueue log repair DATA_DIR` (it keeps "
                         "a backup)")
        self.seq = seq
        self.kind = kind
        self.reason = reason


def apply_logged(apply: Callable[[Event], object], events: Iterable[Event]) -> None:
    """Fold logged ``events`` into a core with ``apply``, as every start and ``log verify`` do;
    a record that does not apply is reported as ``LogInconsistentError``, not a ``KeyError``."""
    for event in events:
        try:
            apply(event)
        except (KeyError, LookupError, ValueError, TypeError, EngineError) as exc:
            raise LogInconsistentError(event.seq, type(event).__name__,
                                       str(exc) or type(exc).__name__) from exc


class LogLockedError(LogError):
    def __init__(self, directory: Path) -> None:
        super().__init__(f"{directory} is in use by another cloudqueue process")


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


def read_log(directory: Path, *, repair_tail: bool = True) -> tuple[list[Event], RecoveryReport]:
    """Every event in the log, in order, after cutting a torn tail (saved under ``torn/``).

    Raises:
        LogCorruptError: damage before the tail, or seqs out of order.
        UnknownRecordKindError: a record this version cannot read.
    """
    started = time.perf_counter()
    report = RecoveryReport()
    frames = BatchReader()
    last_data = b""
    segments = list_segments(directory)
    for index, (_, path) in enumerate(segments):
        data = last_data = path.read_bytes()
        report.segments += 1
        report.bytes_read += len(data)
        result = scan_segment(path.name, data)
        if result.tail is TailState.TORN:
            if index != len(segments) - 1:
                raise LogCorruptError(path.name, result.good_end,
                                      f"segment ends torn but later segments exist "
                                      f"({result.reason})")
            if repair_tail:
                _cut_torn_tail(directory, path, data, result.good_end, result.reason, report)
        frames.take(index, path.name, result)
    if frames.pending:
        _drop_unfinished_batch(directory, segments, frames.pending_at, last_data,
                               len(frames.pending), repair_tail, report)
    report.records = len(frames.events)
    report.seconds = time.perf_counter() - started
    return frames.events, report


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
    """Frames of one segment, with damage judged by what was synced.

    A bad frame followed by valid ones is corruption only if a later batch marker says bytes
    beyond it had been fsynced; otherwise the damage lies in a batch that was never synced (the
    kernel may write its pages back in any order before a power cut) and it is a torn tail.

    Raises:
        LogCorruptError: damage to synced data, or an intact frame of an unknown type.
    """
    try:
        return scan(data)
    except CorruptRecordError as exc:
        if "unknown frame type" in exc.reason or _synced_beyond(data, exc.offset):
            raise LogCorruptError(name, exc.offset, exc.reason) from None
        head = scan(memoryview(data)[: exc.offset])
        return ScanResult(head.payloads, head.offsets, exc.offset, TailState.TORN,
                          len(data) - exc.offset,
                          f"{exc.reason}; no byte after it was ever synced")


def _synced_beyond(data: bytes, offset: int) -> bool:
    after = salvage(memoryview(data)[offset + 1:])
    return any((synced := payload_synced(p)) is not None and synced > offset
               for p in after.payloads)


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
