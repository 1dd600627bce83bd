"""The durable log's options, typed: what ``Engine(data_dir=...)`` opens its ``LogStore`` with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloudqueue.engine.runtime.clock import Clock
from cloudqueue.engine.runtime.log_file import DEFAULT_SEGMENT_BYTES, FileOps, FsyncPolicy
from cloudqueue.engine.runtime.log_store import LogStore
from cloudqueue.engine.runtime.store import StoreOpener


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How the log in a data directory is written.

    Attributes:
        fsync: ``always`` (fsync before acknowledging), ``interval[:MS]`` or ``never``.
        segment_bytes: the log rotates to a new segment past this size.
        compact_bytes: snapshot and drop old segments once this much log was written since the
            last snapshot (None: 4 segments).
        file_ops: the file layer under the log (tests inject faults through it).
    """

    fsync: str = "always"
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    compact_bytes: int | None = None
    file_ops: FileOps | None = None

    def opener(self, directory: Path, clock: Clock) -> StoreOpener:
        """The ``StoreOpener`` of a ``LogStore`` in ``directory`` with these options, its waits
        (the interval fsync, the disk-full backoff) on ``clock``."""
        return LogStore.opener(directory, policy=FsyncPolicy.parse(self.fsync),
                               segment_bytes=self.segment_bytes, ops=self.file_ops,
                               compact_bytes=self.compact_bytes or 4 * self.segment_bytes,
                               clock=clock)
