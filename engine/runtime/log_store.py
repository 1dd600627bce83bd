"""LogStore: the durable ``Store`` (see ``log_file`` for the theory of operation)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudqueue.engine.core.batch_codec import encode_batch
from cloudqueue.engine.core.errors import (
    DiskFullError,
    LogError,
    LogPoisonedError,
)
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.runtime.clock import Clock, SystemClock, wait_for
from cloudqueue.engine.runtime.io_thread import TrackedIo
from cloudqueue.engine.runtime.log_dir import (
    LoadedLog,
    fold_elsewhere,
    load_log,
    lock_directory,
    mark_format,
)
from cloudqueue.engine.runtime.log_file import (
    DEFAULT_SEGMENT_BYTES,
    FileOps,
    FsyncPolicy,
    OnDiskFull,
    headed_from,
)
from cloudqueue.engine.runtime.log_sync import DiskFullBackoff, DurableWaiters, IntervalSync
from cloudqueue.engine.runtime.log_writer import SegmentWriter, SyncFailed, unknown_outcome
from cloudqueue.engine.runtime.metrics import Histogram
from cloudqueue.engine.runtime.snapshot import remove_covered, write_snapshot
from cloudqueue.engine.runtime.store import Store, StoredState, StoreHooks, StoreOpener

log = logging.getLogger("cloudqueue.log")


class LogStore:
    """Append-only, group-committed, segmented log in ``directory``.

    Use ``LogStore.open(directory)``, which also returns the events already in the log.
    """

    CLOSE_WAIT_S = 30.0  # how long close waits for pending writes (a full disk may never clear)

    def __init__(self, directory: Path, *, last_seq: int = 0, policy: FsyncPolicy | None = None,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, ops: FileOps | None = None,
                 on_disk_full: OnDiskFull | None = None, lock_fd: int | None = None,
                 compact_bytes: int | None = None,
                 on_compact_due: Callable[[], None] | None = None,
                 snapshot_seq: int = 0, headed: bool = True,
                 clock: Clock | None = None) -> None:
        self.directory = directory
        self.policy = policy or FsyncPolicy()
        self.on_disk_full = on_disk_full
        self._ops = ops or FileOps()
        self._lock_fd = lock_fd
        self.clock = clock or SystemClock()
        self._schedule = IntervalSync(self.policy, self.clock)
        self._backoff = DiskFullBackoff(self.clock)
        self._file = SegmentWriter(directory, self._ops, last_seq=last_seq,
                                   segment_bytes=segment_bytes, schedule=self._schedule)
        segments = self._file.found
        self._durable_seq = last_seq
        self._pending: list[Event] = []
        self._appended_seq = last_seq
        self._kick = asyncio.Event()
        self._waiters = DurableWaiters()
        self._failure: LogError | None = None
        self._full = False
        self._flusher: asyncio.Task[None] | None = None
        self._io = TrackedIo()  # the segment's IO in order, a snapshot's beside it
        self._rotation: tuple[int, asyncio.Future[int]] | None = None
        self._compacting = False
        self.compact_bytes = compact_bytes
        self.on_compact_due = on_compact_due
        # Log written since the last snapshot survives restarts, or a queue restarted more often
        # than every compact_bytes would never compact and its replay would grow forever.
        self.bytes_since_snapshot = sum(p.stat().st_size for _, p in segments)
        self.snapshot_seq = snapshot_seq
        self.batches = 0
        self.records = 0
        if segments and not headed:  # a log from before segment headers: go on in a new one
            self._file.rotate()
        if headed_from(directory) is None:
            mark_format(directory, self._file.segment_no, self._ops)

    @classmethod
    def opener(cls, directory: Path | str, **options: Any) -> StoreOpener:
        """The ``StoreOpener`` an engine starts with: ``open`` with the engine's hooks."""
        def open_with(hooks: StoreHooks) -> tuple[Store, StoredState]:
            return cls.open(directory, on_disk_full=hooks.on_disk_full,
                            on_compact_due=hooks.on_compact_due, **options)
        return open_with

    @classmethod
    def open(cls, directory: Path | str, **options: Any) -> tuple[LogStore, LoadedLog]:
        """Lock ``directory``, load its snapshot and log (cutting a torn tail), and open it for
        appending."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = lock_directory(path)
        try:
            loaded = load_log(path, options.get("ops"))
            store = cls(path, last_seq=loaded.last_seq, lock_fd=lock_fd,
                        snapshot_seq=loaded.snapshot_seq,
                        headed=loaded.report.last_segment_headed, **options)
        except BaseException:
            os.close(lock_fd)
            raise
        return store, loaded

    # ------------------------------------------------------------------ Store protocol

    @property
    def durable_seq(self) -> int:
        return self._durable_seq

    @property
    def accepting(self) -> bool:
        return self._failure is None and not self._full

    @property
    def failure(self) -> LogError | None:
        if self._failure is not None:
            return self._failure
        if self._full:
            return DiskFullError("the disk is full: nothing new is accepted until space is freed")
        return None

    @property
    def segment_bytes(self) -> int:
        return self._file.segment_bytes

    @property
    def syncs(self) -> int:
        """fsyncs of the log's segments since it was opened."""
        return self._file.syncs

    @property
    def fsync_seconds(self) -> Histogram:
        """How long each of those fsyncs took (for the metrics)."""
        return self._file.fsync_seconds

    @property
    def busy(self) -> bool:
        """Writing, syncing or compacting right now (for tests that wait for quiet)."""
        return (bool(self._pending) or self._rotation is not None or self._compacting
                or self._io.busy)

    @property
    def holds_lease(self) -> bool:
        return True  # the directory's lock is held for as long as the store is open

    def start(self) -> None:
        self._io.start(f"cloudqueue-log:{self.directory.name}")
        self._flusher = asyncio.create_task(self._flush_forever(), name="cloudqueue-log")
        self._flusher.add_done_callback(self._flusher_ended)

    def _flusher_ended(self, flusher: asyncio.Task[None]) -> None:
        """Whatever ended the flusher, no enqueue may go on waiting for it."""
        if self._failure is not None:
            return
        if flusher.cancelled():  # close(): whatever still waits was never written
            self._fail(LogError("the log was closed before this was written"))
        else:
            self._poison(flusher.exception() or LogError("the log writer stopped"))

    def append(self, events: Sequence[Event]) -> None:
        if self._failure is not None:
            raise self._failure
        if events:
            self._pending.extend(events)
            self._appended_seq = events[-1].seq
            self._kick.set()

    async def wait_durable(self, seq: int) -> None:
        if seq in self._waiters.rejected:
            raise DiskFullError("the disk is full: this was not stored")
        if seq <= self._durable_seq:
            return
        if self._failure is not None:
            raise self._waiters.unknown.get(seq) or self._failure
        if seq > self._appended_seq:
            raise LogError(f"seq {seq} was never appended to the log")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(seq, future)
        await future

    async def close(self) -> None:
        """Write what is pending (unless the store has failed), sync, and release the lock."""
        if self._appended_seq > self._durable_seq and self._failure is None:
            with contextlib.suppress(LogError, TimeoutError):
                await wait_for(self.clock, self.wait_durable(self._appended_seq),
                               self.CLOSE_WAIT_S * 1000)
        healthy = self._failure is None
        if self._flusher is not None:
            self._flusher.cancel()  # fails whatever still waits: it was never written
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self._io.drain()
        if healthy and self._file.unsynced:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._ops.fsync, self._file.fd)
        self._io.stop()
        self._file.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ the flusher

    async def _flush_forever(self) -> None:
        try:
            await self._flush_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug below us: fail closed rather than leave waiters hanging
            self._poison(exc)

    async def _flush_loop(self) -> None:
        while self._failure is None:
            await self._kick.wait()
            self._kick.clear()
            if self._rotation is not None:
                await self._rotate_at_boundary()
            if not self._pending:
                # After a full disk with nothing left to retry, the next write is the probe.
                self._full = False
                if self._file.unsynced and self._schedule.due():
                    await self._sync_now()
                continue
            batch, self._pending = self._pending, []
            await self._write_batch(batch)
            if self._failure is not None:
                return

    async def _write_batch(self, batch: list[Event]) -> bool:
        """Write and (per policy) sync ``batch``; True once it is on disk.

        Every failure is decided here: a full disk on the write is survivable (nothing of the
        batch is in the file); an fsync that failed after the write leaves the batch's fate
        unknown and poisons the store; anything else (an OSError, a record the encoder cannot
        hold, a bug) poisons it too, so no caller is ever left waiting on a writer that is gone.
        """
        try:
            data = encode_batch(batch, self._file.synced_size, self._file.size)
            await self._io.in_order(self._file.write, data, batch[-1].seq)
        except SyncFailed as exc:
            self._sync_failed(batch, exc)
            return False
        except OSError as exc:
            if exc.errno == errno.ENOSPC and self._failure is None:
                await self._disk_full(batch)
            else:
                self._poison(exc)
            return False
        except Exception as exc:
            self._poison(exc)
            return False
        self.bytes_since_snapshot += len(data)
        self._written(batch)
        error, self._file.rotate_error = self._file.rotate_error, None
        if error is not None:  # the batch is on disk and acknowledged; nothing more will be
            self._poison(error)
            return False
        return True

    async def _rotate_at_boundary(self) -> None:
        """Write every pending event up to the requested seq, then start a new segment, so the
        segments before it hold exactly the events a snapshot at that seq covers."""
        assert self._rotation is not None
        seq, future = self._rotation
        self._rotation = None
        head = [e for e in self._pending if e.seq <= seq]
        self._pending = [e for e in self._pending if e.seq > seq]
        if head and not await self._write_batch(head):
            future.set_exception(self.failure or LogError("the log could not be written"))
            return
        before = self._file.segment_no
        try:
            error = await self._io.in_order(self._file.try_rotate)
        except Exception as exc:
            error = exc
        if error is not None:
            self._poison(error)
            future.set_exception(self.failure or LogError(str(error)))
        elif self._file.segment_no == before:  # the disk was full: no snapshot this time
            future.set_exception(DiskFullError("the disk is full: the log was not compacted"))
        else:
            future.set_result(before)
        if self._pending:
            self._kick.set()

    def _written(self, batch: list[Event]) -> None:
        self._full = False
        self._backoff.reset()
        self.batches += 1
        self.records += len(batch)
        self._durable_seq = batch[-1].seq
        self._waiters.release_upto(self._durable_seq)
        self._compact_if_due()
        if self._file.unsynced and self._schedule.interval:
            self._schedule.kick_when_due(self._kick.set)

    async def _sync_now(self) -> None:
        try:
            await self._io.in_order(self._file.sync)
        except Exception as exc:  # acknowledged already (interval policy): nobody is waiting
            self._poison(exc)

    # ------------------------------------------------------------------ compaction

    async def compact(self, seq: int,
                      snapshot: bytes | Callable[[], bytes] | None = None) -> int:
        """Make the state at ``seq`` the base of the log and drop the segments it covers.
        Returns how many segments were removed.

        The state is folded from the files themselves, in a process of its own
        (``compactor``), once the log has rotated at ``seq``: nothing of it is built on the
        event loop. (``snapshot``, for tools and tests: the state's bytes, or a function that
        encodes them in a worker thread.) Crash-safe at every step; see
        ``engine.runtime.snapshot``.
        """
        if self._failure is not None:
            raise self._failure
        if self._compacting:
            raise LogError("a compaction is already running")
        self._compacting = True
        try:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._rotation = (seq, future)
            self._kick.set()
            if self._failure is not None or self._flusher is None or self._flusher.done():
                raise self._failure or LogError("the log is not running")
            last_segment = await future
            self.bytes_since_snapshot = 0
            if snapshot is None:
                snapshot = await fold_elsewhere(self.directory, seq, last_segment)
            elif callable(snapshot):
                snapshot = await self._io.beside(snapshot)
            await self._io.beside(write_snapshot, self.directory, seq, snapshot, self._ops)
            self.snapshot_seq = seq
            removed = await self._io.beside(remove_covered, self.directory, last_segment, seq,
                                            self._ops)
        finally:
            self._compacting = False
        self._compact_if_due()  # the log written meanwhile may be due already
        return removed

    def _compact_if_due(self) -> None:
        if (self.compact_bytes is not None and self.on_compact_due is not None
                and not self._compacting and self._failure is None
                and self.bytes_since_snapshot >= self.compact_bytes):
            self.on_compact_due()

    async def _disk_full(self, batch: list[Event]) -> None:
        """The write of ``batch`` found the disk full (nothing of it is in the file). The
        ``on_disk_full`` callback decides over the batch *and* everything queued behind it (a
        run-started record of a task whose submission is rolled back must go with it, or it
        would be written once space returns and trip every later replay)."""
        self._full = True
        queued = batch + self._pending
        kept = self.on_disk_full(queued) if self.on_disk_full is not None else queued
        kept_seqs = {event.seq for event in kept}
        error = DiskFullError("the disk is full: the task was not stored (nothing was "
                              "acknowledged); free space and enqueue again")
        for event in queued:
            if event.seq not in kept_seqs:
                self._waiters.reject(event.seq, error)
        self._pending = kept
        log.error("disk full writing %s: %d event(s) rolled back, %d kept for retry",
                  self.directory, len(queued) - len(kept), len(kept))
        await self._backoff.wait()
        self._kick.set()

    def _sync_failed(self, batch: list[Event], exc: SyncFailed) -> None:
        """The batch was written but its fsync failed. Its callers are told "outcome unknown"
        (after a restart the batch may or may not be there; retrying with the same uniqueId is
        safe either way); everything after it is "not stored" (it was never written)."""
        reason = exc.__cause__ if exc.__cause__ is not None else exc
        for event in batch:
            self._waiters.unknown_outcome(event.seq, unknown_outcome(event, reason))
        if isinstance(reason, Exception):
            self._poison(reason)

    def _poison(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        reason = getattr(exc, "strerror", None) or exc
        error = LogPoisonedError(f"the log could not be written ({reason}); nothing more is "
                                 "acknowledged; restart the queue to recover")
        error.__cause__ = exc
        self._fail(error)
        log.error("log poisoned: %s", error, exc_info=not isinstance(exc, OSError | LogError))

    def _fail(self, error: LogError) -> None:
        """Fail closed: nothing more is written, and every waiter (and a compaction waiting for
        its boundary) gets ``error`` now."""
        self._failure = error
        self._file.failed = True
        self._pending.clear()
        if self._rotation is not None:
            _, rotation = self._rotation
            self._rotation = None
            if not rotation.done():
                rotation.set_exception(error)
        self._waiters.fail_all(error)
        self._kick.set()
