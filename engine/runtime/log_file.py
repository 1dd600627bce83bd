"""The durable log: segments of framed msgpack records, group commit, recovery on open.

Theory of operation
-------------------
A data directory holds numbered segments ``wal-0000000001.log``, ``wal-0000000002.log`` … Each is
a run of frames (``engine.core.framing``). In format 3 (written now) a frame holds one written
batch of records (``engine.core.batch_codec``); every segment opens with a header (its number,
the seq of the last record before it) and, once a successor exists, ends with a seal naming it.
Format-2 segments are still read (a log from before headers is sealed and continued in a headed
segment; the ``FORMAT`` file names the first headed segment). Reading segments, checking their
chain and judging a damaged one is ``engine.runtime.segments``.

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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# The log's errors live with all the others in engine.core.errors; they are re-exported here
# for the modules and tests that import them from the log.
from cloudqueue.engine.core.errors import CorruptionKind as CorruptionKind
from cloudqueue.engine.core.errors import EngineError, LogFormatRetiredError
from cloudqueue.engine.core.errors import LogCorruptError as LogCorruptError
from cloudqueue.engine.core.errors import LogError as LogError
from cloudqueue.engine.core.errors import LogGapError as LogGapError
from cloudqueue.engine.core.errors import LogInconsistentError as LogInconsistentError
from cloudqueue.engine.core.errors import LogLockedError as LogLockedError
from cloudqueue.engine.core.errors import LogNeedsRepairError as LogNeedsRepairError
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.framing import TailState

# Reading segments lives in ``segments``; its names are re-exported for the log's importers.
from cloudqueue.engine.runtime.segments import FORMAT_MARK as FORMAT_MARK
from cloudqueue.engine.runtime.segments import SEGMENT_PREFIX as SEGMENT_PREFIX
from cloudqueue.engine.runtime.segments import SEGMENT_SUFFIX as SEGMENT_SUFFIX
from cloudqueue.engine.runtime.segments import BatchReader as BatchReader
from cloudqueue.engine.runtime.segments import SegmentRead as SegmentRead
from cloudqueue.engine.runtime.segments import SegmentWalk as SegmentWalk
from cloudqueue.engine.runtime.segments import format_mark_text as format_mark_text
from cloudqueue.engine.runtime.segments import headed_from as headed_from
from cloudqueue.engine.runtime.segments import list_segments as list_segments
from cloudqueue.engine.runtime.segments import scan_segment as scan_segment
from cloudqueue.engine.runtime.segments import segment_name as segment_name

log = logging.getLogger("cloudqueue.log")

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


def read_log(directory: Path, *, repair_tail: bool = True,
             snapshot_seq: int = 0) -> tuple[list[Event], RecoveryReport]:
    """Every event in the log, in order, after cutting a torn tail (saved under ``torn/``).
    ``snapshot_seq``: the seq of the snapshot the log continues (0: none).

    Raises:
        LogCorruptError: damage before the tail, or seqs out of order.
        LogGapError: a segment, or the snapshot, is missing or was emptied.
        UnknownRecordKindError: a record this version cannot read.
        LogFormatRetiredError: a segment in log format 1.
    """
    try:
        return _read_log(directory, repair_tail, snapshot_seq)
    except LogNeedsRepairError as exc:
        raise exc.in_directory(directory) from exc.__cause__
    except LogFormatRetiredError as exc:
        raise exc.located(directory=directory) from None


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
