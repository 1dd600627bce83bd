"""SegmentWriter: the log's current segment and the IO done to it on the log's IO thread.

A write, the fsync the policy asks for, and rotation to a new segment; ``LogStore`` (the
flusher on the event loop) decides what a failure means. A write that fails leaves nothing of
the batch in the file (a partial write is cut away). An fsync that fails raises ``SyncFailed``:
the bytes are in the file and may or may not reach the disk, so it is never retried and trusted
(PostgreSQL's fsyncgate).
"""

from __future__ import annotations

import contextlib
import errno
import logging
from pathlib import Path

from cloudqueue.engine.core.batch_codec import encode_segment_seal
from cloudqueue.engine.core.errors import LogError, OutcomeUnknownError
from cloudqueue.engine.core.events import Event, TaskSubmitted
from cloudqueue.engine.runtime.log_dir import create_segment
from cloudqueue.engine.runtime.log_file import (
    SEGMENT_PREFIX,
    SEGMENT_SUFFIX,
    FileOps,
    list_segments,
    segment_name,
)
from cloudqueue.engine.runtime.log_sync import IntervalSync
from cloudqueue.engine.runtime.metrics import FSYNC_BUCKETS, Histogram

log = logging.getLogger("cloudqueue.log")


class SyncFailed(Exception):
    """Raised in the IO thread when the write went through but the fsync after it failed: the
    bytes are in the file, whether they reach the disk is unknown (the original ``OSError`` is
    the ``__cause__``)."""


def unknown_outcome(event: Event, reason: BaseException) -> OutcomeUnknownError:
    """What the caller of ``event`` hears when its batch was written but the fsync failed:
    after a restart it may or may not be there; retrying with the same uniqueId is safe."""
    unique_id = event.unique_id if isinstance(event, TaskSubmitted) else None
    error = OutcomeUnknownError(
        f"the log's fsync failed ({getattr(reason, 'strerror', None) or reason}) after "
        "this was written: it may or may not have been stored; retry with the same "
        "uniqueId once the queue is back (a stored task answers 409)", unique_id)
    error.__cause__ = reason
    return error


class SegmentWriter:
    """The open segment of ``directory``: its file, its size and how much of it is synced."""

    def __init__(self, directory: Path, ops: FileOps, *, last_seq: int, segment_bytes: int,
                 schedule: IntervalSync) -> None:
        self.directory = directory
        self.ops = ops
        self.segment_bytes = segment_bytes
        self.schedule = schedule
        self.file_last_seq = last_seq  # the last record in the files (segment headers say it)
        for leftover in directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}.tmp"):
            ops.unlink(leftover)  # a segment whose creation a crash cut short
        self.found = list_segments(directory)  # the segments there before this writer
        self.segment_no = self.found[-1][0] if self.found else 1
        if not self.found:
            self.create_segment(self.segment_no)
        path = directory / segment_name(self.segment_no)
        self.size = path.stat().st_size
        self.fd = ops.open_append(path)
        # What recovery read may still sit only in the page cache (a process crash keeps it
        # there): sync it once, so every batch marker written from now on tells the truth.
        ops.fsync(self.fd)
        self.synced_size = self.size
        self.failed = False  # after a failed fsync nothing is synced and trusted
        self.syncs = 0
        self.fsync_seconds = Histogram(FSYNC_BUCKETS)  # each sync's fsync, on the log's clock
        self.rotate_error: Exception | None = None  # set in the IO thread, read after it

    @property
    def unsynced(self) -> bool:
        """Bytes written to the current segment that no fsync has covered yet."""
        return self.size != self.synced_size

    def write(self, data: bytes, last_seq: int) -> None:
        """In the IO thread: one write, the fsync the policy asks for, rotation."""
        size_before = self.size
        try:
            self.ops.write(self.fd, data)
        except OSError as exc:
            try:
                self.ops.truncate(self.fd, size_before)  # drop the partial batch
            except OSError as cut:
                raise OSError(cut.errno, f"{exc.strerror}; cutting the partial write back "
                                         f"failed too ({cut.strerror})") from exc
            raise
        self.size += len(data)
        self.file_last_seq = last_seq
        rotate = self.size >= self.segment_bytes
        try:
            if rotate or self.schedule.policy.mode == "always" or self.schedule.due():
                self.sync()
        except OSError as exc:
            raise SyncFailed(exc.strerror or str(exc)) from exc
        if rotate:  # the batch is durable now, whatever happens to the rotation
            self.rotate_error = self.try_rotate()

    def sync(self) -> None:
        if self.failed:
            raise LogError("the log failed; not syncing")
        clock = self.schedule.clock
        started = clock.monotonic_ms()
        self.ops.fsync(self.fd)
        self.fsync_seconds.observe((clock.monotonic_ms() - started) / 1000)
        self.synced_size = self.size
        self.syncs += 1
        self.schedule.synced()

    def try_rotate(self) -> Exception | None:
        """In the IO thread: rotate, or say why the store must stop. A full disk while the new
        segment is being created is no reason: writing goes on in this segment (it grows past
        ``segment_bytes``) and the next batch tries again."""
        try:
            self.rotate()
        except OSError as exc:
            created = (self.directory / segment_name(self.segment_no + 1)).exists()
            if exc.errno == errno.ENOSPC and not created:
                with contextlib.suppress(OSError):
                    self.ops.unlink(self.directory / (segment_name(self.segment_no + 1)
                                                      + ".tmp"))
                log.warning("disk full creating segment %d of %s: writing on in segment %d",
                            self.segment_no + 1, self.directory, self.segment_no)
                return None
            return exc
        return None

    def rotate(self) -> None:
        """In the IO thread: the old segment is synced, the new one is created whole (its
        header synced and its name in the directory synced), and only then is the old one
        sealed, naming it. So a seal always has its successor, and a segment before the last
        can end torn only in its seal (the successor's header then says nothing is missing)."""
        if self.unsynced:
            self.sync()
        number = self.segment_no + 1
        header = self.create_segment(number)
        self.ops.write(self.fd, encode_segment_seal(number, self.file_last_seq))
        self.ops.fsync(self.fd)
        self.ops.close(self.fd)
        self.segment_no = number
        self.fd = self.ops.open_append(self.directory / segment_name(number))
        self.size = self.synced_size = len(header)

    def create_segment(self, number: int) -> bytes:
        return create_segment(self.directory, number, self.file_last_seq, self.ops)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.ops.close(self.fd)
