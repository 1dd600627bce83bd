"""The log's errors: a store that failed or is full, an outcome it cannot vouch for, and a data
directory that needs repair (import them from ``cloudqueue.engine.core.errors``)."""

from __future__ import annotations

import enum
import shlex
from typing import Any, Protocol

from cloudqueue.engine.core.errors.queue import EngineError


class LogError(EngineError):
    """Base of the durable log's errors."""

    http_status = 503
    code = 503
    error_type = "log"


class LogPoisonedError(LogError):
    """A write or fsync failed: nothing more is acknowledged until a restart replays the log.

    The original ``OSError`` is the ``__cause__``.
    """

    error_type = "log_poisoned"


class DiskFullError(LogError):
    """The disk is full (ENOSPC): nothing was acknowledged; writing resumes once space is freed."""

    http_status = 507
    code = 507
    error_type = "disk_full"


class OutcomeUnknownError(LogError):
    """The records were written but their fsync failed: whether they are on disk is unknown
    (after a failed fsync the kernel may have dropped the pages, or may still write them). The
    caller must not take it as "not stored": retrying with the same uniqueId is safe (a task
    that did survive answers 409)."""

    error_type = "outcome_unknown"

    def __init__(self, message: str, unique_id: str | None = None) -> None:
        super().__init__(message)
        self.unique_id = unique_id

    def details(self) -> dict[str, Any]:
        return {"uniqueId": self.unique_id}


class DatabaseUnavailableError(LogError):
    """A shared store's database did not answer (gone, unreachable, timed out): nothing new is
    acknowledged until it does; the store recovers by itself once it answers."""

    error_type = "database_unavailable"


class FencedError(LogError):
    """Another node took over this app's dispatch (a newer lease epoch): this node writes nothing
    more for it."""

    error_type = "fenced"


class DatabaseRefusedError(LogError):
    """An engine cannot use its database (unreachable, refused, its tables of another version, or
    its app kept by another node)."""

    error_type = "database_refused"


class UnknownRecordKindError(LogError):
    """A record this version cannot read (written by a newer version, or damaged in a way the
    checksum could not see). The queue refuses to start rather than misread it.

    ``kind`` and ``version`` are what the record said (anything: it was not understood)."""

    error_type = "unknown_record_kind"

    def __init__(self, kind: object, version: object) -> None:
        super().__init__(f"unknown log record kind {kind!r} (schema version {version!r}); "
                         "this version reads log formats 2 and 3 and snapshot formats 2 and 3")
        self.kind = kind
        self.version = version

    def details(self) -> dict[str, Any]:
        return {"recordKind": _json_scalar(self.kind), "schemaVersion": _json_scalar(self.version)}


def _json_scalar(value: object) -> str | int | None:
    if value is None or isinstance(value, str) or (isinstance(value, int)
                                                   and not isinstance(value, bool)):
        return value
    return repr(value)


class CorruptionKind(enum.StrEnum):
    """What is wrong where a log or snapshot is damaged (``reason_kind`` of
    ``CorruptRecordError`` and ``LogCorruptError``; the body's ``reasonKind``).

    The first six are a bad frame's faults. Only ``UNKNOWN_FRAME_TYPE`` is never a torn write:
    that frame was written whole (its CRC matches), most likely by a newer version.
    """

    SHORT_HEADER = "short_header"            # fewer bytes left than a frame header
    ZERO_LENGTH = "zero_length"
    OVER_CAP = "over_cap"                    # a length over the record cap
    CUT_SHORT = "cut_short"                  # the payload runs past the end of the data
    CRC_MISMATCH = "crc_mismatch"
    UNKNOWN_FRAME_TYPE = "unknown_frame_type"
    TORN_BEFORE_LAST = "torn_before_last"    # a segment ends torn but later segments exist
    SEQ_ORDER = "seq_order"                  # a record's seq does not follow the one before
    UNFINISHED_BATCH = "unfinished_batch"    # a split batch is unfinished before later data
    INCOMPLETE = "incomplete"                # a snapshot without its footer

    @property
    def may_be_torn(self) -> bool:
        """Whether a frame bad in this way can be the torn end of an interrupted write."""
        return self is not CorruptionKind.UNKNOWN_FRAME_TYPE


class CorruptRecordError(EngineError):
    """Damage in the middle of the log: a bad frame with a valid frame somewhere after it.

    Also raised for an intact (CRC-valid) frame of an unknown type, which is never torn
    (``reason_kind`` is then ``UNKNOWN_FRAME_TYPE``). ``reason`` is the fault in words.
    """

    http_status = 503
    code = 503
    error_type = "corrupt_record"

    def __init__(self, offset: int, reason: str, reason_kind: CorruptionKind) -> None:
        # All values go to Exception so the error survives pickling (e.g. to a worker).
        super().__init__(offset, reason, reason_kind)
        self.offset = offset
        self.reason = reason
        self.reason_kind = CorruptionKind(reason_kind)

    def __str__(self) -> str:
        return (
            f"corrupt record at offset {self.offset}: {self.reason}, "
            "and a valid frame follows it (mid-log damage, not a torn tail)"
        )

    def details(self) -> dict[str, Any]:
        return {"offset": self.offset, "reasonKind": self.reason_kind.value}


class _PathLike(Protocol):
    def __fspath__(self) -> str: ...


class LogNeedsRepairError(LogError):
    """The log cannot be started on as it is; the message ends with the repair command for the
    directory (``in_directory`` names it once the reader knows it)."""

    error_type = "log_needs_repair"

    def __init__(self, problem: str, advice: str = "run {command} (it keeps a backup)") -> None:
        self.problem = problem
        self.advice = advice
        self.directory: _PathLike | None = None
        super().__init__(self._message())

    def _message(self) -> str:
        where = shlex.quote(str(self.directory)) if self.directory is not None else "DATA_DIR"
        return f"{self.problem}; " + self.advice.format(
            command=f"`cloudqueue log repair {where}`")

    def in_directory(self, directory: _PathLike) -> LogNeedsRepairError:
        self.directory = directory
        self.args = (self._message(),)
        return self

    def details(self) -> dict[str, Any]:
        return {"directory": None if self.directory is None else str(self.directory)}


class LogCorruptError(LogNeedsRepairError):
    """Damage in the middle of the log: the queue refuses to start until it is repaired.

    ``reason`` is the damage in words, ``reason_kind`` the same as a ``CorruptionKind`` (None
    when the raiser did not say)."""

    error_type = "log_corrupt"

    def __init__(self, segment: str, offset: int, reason: str,
                 reason_kind: CorruptionKind | None = None) -> None:
        super().__init__(f"log segment {segment} is damaged at offset {offset}: {reason}")
        self.segment = segment
        self.offset = offset
        self.reason = reason
        self.reason_kind = reason_kind

    def details(self) -> dict[str, Any]:
        return {**super().details(), "segment": self.segment, "offset": self.offset,
                "reasonKind": None if self.reason_kind is None else self.reason_kind.value}


class LogInconsistentError(LogNeedsRepairError):
    """A record that does not follow from the records before it (it names a task the log does
    not hold, say): the queue refuses to start until the log is repaired."""

    error_type = "log_inconsistent"

    def __init__(self, seq: int, kind: str, reason: str) -> None:
        super().__init__(f"log record seq {seq} ({kind}) does not follow from the records "
                         f"before it: {reason}")
        self.seq = seq
        self.kind = kind
        self.reason = reason

    def details(self) -> dict[str, Any]:
        return {**super().details(), "seq": self.seq, "recordKind": self.kind}


class LogGapError(LogNeedsRepairError):
    """Records are missing between pieces of the log (a segment or the snapshot was deleted or
    emptied): the queue refuses to start rather than run without acknowledged tasks."""

    error_type = "log_gap"

    def __init__(self, what: str) -> None:
        super().__init__(f"acknowledged records are missing: {what}",
                         "put the missing file back if you have it; otherwise {command} starts "
                         "from what is left (it names what it gives up and keeps a backup)")
        self.what = what


class LogFormatRetiredError(LogError):
    """The data directory holds log format 1, written by cloudqueue 0.1, which this version no
    longer reads. ``file`` names the segment or snapshot, ``directory`` the data directory (each
    None until the reader knows it: ``located`` fills them in)."""

    error_type = "log_format_retired"

    def __init__(self, file: str | None = None, directory: _PathLike | None = None) -> None:
        where = shlex.quote(str(directory)) if directory is not None else "the data directory"
        super().__init__(
            f"{file or 'a log file'} in {where} is in log format 1 (written by cloudqueue 0.1), "
            "which this version no longer reads: drain the queue with cloudqueue 0.1, or move "
            "the directory aside and start with an empty one")
        self.file = file
        self.directory = directory

    def located(self, *, file: str | None = None,
                directory: _PathLike | None = None) -> LogFormatRetiredError:
        """The same error, naming ``file`` and ``directory`` where it did not yet."""
        return LogFormatRetiredError(self.file or file, self.directory or directory)

    def details(self) -> dict[str, Any]:
        return {"file": self.file,
                "directory": None if self.directory is None else str(self.directory)}


class LogLockedError(LogError):
    """Another process holds the data directory."""

    error_type = "log_locked"

    def __init__(self, directory: _PathLike) -> None:
        super().__init__(f"{directory} is in use by another cloudqueue process")
        self.directory = directory

    def details(self) -> dict[str, Any]:
        return {"directory": str(self.directory)}
