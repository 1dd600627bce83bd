"""Every error the queue raises on purpose, for the core, the runtime, the adapters and the
client alike.

Each knows its HTTP status and LeanCloud error ``code``, so one piece of middleware turns any of
them into a ``{"code": ..., "error": ...}`` body. Expected outcomes of a run (a function failed,
timed out) are *events*, not exceptions; an exception escaping the core is a bug.

Errors carry structure: their facts are attributes, and ``body()`` puts them beside the message
with a ``type`` naming the error, so a client rebuilds the typed error without reading prose::

    {"code": 409, "error": "Task 'a' is running: cannot cancel it",
     "type": "invalid_transition", "uniqueId": "a", "state": "running", "trigger": "cancel"}

``code`` and ``error`` are LeanCloud's and never change; the rest are extensions a LeanCloud SDK
ignores. Some bodies stay exactly LeanCloud's (401 ``Unauthorized.``, 404 ``Task '<id>' not
found``) and a client maps them by ``code`` alone; a 400 keeps LeanCloud's ``code`` and message
and adds ``"type": "validation"`` and the ``field`` (and ``index``) it refuses.
"""

from __future__ import annotations

import enum
import shlex
from typing import Any, ClassVar, Final, Protocol

#: the record schema this version reads (``engine.core.codec.SCHEMA_VERSION``)
RECORD_SCHEMA_VERSION: Final = 1


class EngineError(Exception):
    """Base of every error the queue raises on purpose. Never raised itself.

    ``error_type`` (the body's ``type``) names the class on the wire; None keeps LeanCloud's
    exact body. ``details()`` is the machine-readable rest of the body (wire spelling).
    """

    http_status: ClassVar[int] = 500
    code: ClassVar[int] = 1
    error_type: ClassVar[str | None] = None

    def details(self) -> dict[str, Any]:
        """This error's fields, as the body's extension keys (absent values left out)."""
        return {}

    def body(self) -> dict[str, Any]:
        """The LeanCloud error body for this error: ``code``, ``error``, then ``type`` and the
        ``details()``."""
        body: dict[str, Any] = {"code": self.code, "error": str(self)}
        if self.error_type is not None:
            body["type"] = self.error_type
        body.update({k: v for k, v in self.details().items() if v is not None})
        return body


class ValidationError(EngineError, ValueError):
    """An enqueue request or option that cannot be accepted as given.

    ``field`` names the offending option in the caller's spelling where known.
    """

    http_status = 400
    code = 1
    error_type = "validation"

    def __init__(self, message: str, field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.index = index  # which item of an ``enqueue_many`` batch, if it was one

    def at_item(self, index: int) -> ValidationError:
        """The same refusal, naming item ``index`` of a batch."""
        return ValidationError(f"item {index}: {self}", self.field, index)

    def details(self) -> dict[str, Any]:
        return {"field": self.field, "index": self.index}

class DuplicateTaskError(EngineError):
    """The uniqueId is still held by a task (queued, running, waiting, or finished within
    its keepResult window)."""

    http_status = 409
    code = 409
    error_type = "duplicate_task"

    def __init__(self, unique_id: str, status: str, state: str, *, index: int | None = None,
                 message: str | None = None) -> None:
        text = message or (
            f"A task with uniqueId '{unique_id}' already exists (status {status}, state {state}); "
            "a uniqueId is held until keepResult ms after its task finishes")
        super().__init__(text if index is None else f"item {index}: {text}")
        self.unique_id = unique_id
        self.status = status
        self.state = state
        self.index = index  # which item of an ``enqueue_many`` batch, if it was one

    @classmethod
    def within_batch(cls, unique_id: str, index: int, first: int) -> DuplicateTaskError:
        """Two items of one ``enqueue_many`` batch name the same uniqueId."""
        return cls(unique_id, "queued", "queued", index=index,
                   message=f"uniqueId '{unique_id}' is also given to item {first} of this batch")

    def details(self) -> dict[str, Any]:
        return {"uniqueId": self.unique_id, "status": self.status, "state": self.state,
                "index": self.index}


class UnknownTaskError(EngineError):
    """No task with this uniqueId: it never existed or its keepResult window has passed.

    Its body is exactly LeanCloud's ``{"code": 404, "error": "Task '<id>' not found"}`` (the id
    is the one in the request's path)."""

    http_status = 404
    code = 404
    error_type = None

    def __init__(self, unique_id: str) -> None:
        super().__init__(f"Task '{unique_id}' not found")
        self.unique_id = unique_id


class UnknownScheduleError(EngineError):
    http_status = 404
    code = 404
    error_type = "unknown_schedule"

    def __init__(self, name: str) -> None:
        super().__init__(f"Schedule '{name}' not found")
        self.name = name

    def details(self) -> dict[str, Any]:
        return {"schedule": self.name}


class StaleRunError(EngineError):
    """A report from a run that is no longer the task's current one (it timed out, or the task
    moved on): refused, so an old run cannot overwrite the new one's progress."""

    http_status = 409
    code = 409
    error_type = "stale_run"

    def __init__(self, unique_id: str, run_seq: int) -> None:
        super().__init__(f"run {run_seq} of task '{unique_id}' is not running any more")
        self.unique_id = unique_id
        self.run_seq = run_seq

    def details(self) -> dict[str, Any]:
        return {"uniqueId": self.unique_id, "runSeq": self.run_seq}


class InvalidTransitionError(EngineError):
    """A trigger that the task's current state does not allow (e.g. cancelling a running task)."""

    http_status = 409
    code = 409
    error_type = "invalid_transition"

    def __init__(self, task_id: str, state: str, trigger: str) -> None:
        super().__init__(f"Task '{task_id}' is {state}: cannot {trigger.replace('_', ' ')} it")
        self.task_id = task_id
        self.state = state
        self.trigger = trigger

    def details(self) -> dict[str, Any]:
        return {"uniqueId": self.task_id, "state": self.state, "trigger": self.trigger}


class UnauthorizedError(EngineError):
    """Missing or wrong credentials: LeanCloud's ``{"code":401,"error":"Unauthorized."}``
    exactly (nothing more is said to a caller without credentials)."""

    http_status = 401
    code = 401
    error_type = None

    def __init__(self) -> None:
        super().__init__("Unauthorized.")


class ForbiddenError(EngineError):
    """Valid credentials whose role may not do this (app key where the master key is needed)."""

    http_status = 403
    code = 119
    error_type = "forbidden"


class ConfigError(EngineError, ValueError):
    """A configuration value that cannot be used."""

    http_status = 500
    code = 1
    error_type = "config"


class EngineClosedError(EngineError):
    """The engine is shutting down or stopped and takes no more work."""

    http_status = 503
    code = 503
    error_type = "engine_closed"


class QuotaExceededError(EngineError):
    """An enqueue over one of the app's quotas: nothing was created. HTTP 429 + Retry-After.

    ``quota`` is ``rate``, ``daily`` or ``held``; ``retry_after_ms`` when to try again."""

    http_status = 429
    code = 429
    error_type = "quota_exceeded"

    def __init__(self, quota: str, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.quota = quota
        self.retry_after_ms = retry_after_ms

    def details(self) -> dict[str, Any]:
        return {"quota": self.quota, "retryAfterMs": self.retry_after_ms}


# ---------------------------------------------------------------------------- a remote queue


class RemoteQuotaExceededError(QuotaExceededError):
    """``QueueClient``: a server refused an enqueue over a quota (429); nothing was created.
    ``retry_after_s`` from ``Retry-After`` or ``retryAfterMs`` (None: neither given;
    ``retry_after_ms`` the same, or 0), ``server_code`` the body's ``code``, ``quota`` if said."""

    error_type = "remote_quota_exceeded"

    def __init__(self, message: str, retry_after_s: float | None = None,
                 server_code: int | None = None, quota: str | None = None) -> None:
        retry_after_ms = round(retry_after_s * 1000) if retry_after_s is not None else 0
        super().__init__(quota or "unknown", message, retry_after_ms)
        self.retry_after_s = retry_after_s
        self.server_code = server_code
        self.quota: str | None = quota  # type: ignore[assignment]

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.server_code or self.code, "error": str(self)}
        if self.quota is not None:
            body["quota"] = self.quota
        return body


class QueueUnavailableError(EngineError):
    """``QueueClient``: the queue could not be reached (refused, DNS, reset, no answer in time,
    a gateway's 502/503/504). ``url``: the URL (no credentials). ``outcome_unknown``: it may
    have arrived (an enqueue may exist: retry with the same ``unique_id``)."""

    http_status = 503
    code = 503
    error_type = "queue_unavailable"

    def __init__(self, message: str, url: str, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.url = url
        self.outcome_unknown = outcome_unknown


class UnexpectedResponseError(EngineError):
    """``QueueClient``: an answer outside the protocol (an unmapped status, not JSON, a
    malformed TaskInfo). ``status`` (0: in a 200 answer), ``server_code`` the body's ``code``."""

    http_status = 502
    code = 502
    error_type = "unexpected_response"

    def __init__(self, message: str, status: int = 0, server_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.server_code = server_code


# ---------------------------------------------------------------------------- the durable log


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


#: every error type a body may name, by its ``type``
ERROR_TYPES: dict[str, type[EngineError]] = {
    cls.error_type: cls for cls in (
        ValidationError, DuplicateTaskError, UnknownScheduleError, StaleRunError,
        InvalidTransitionError, ForbiddenError, ConfigError, EngineClosedError,
        QuotaExceededError, LogError, LogPoisonedError, DiskFullError, OutcomeUnknownError,
        UnknownRecordKindError, CorruptRecordError, LogNeedsRepairError, LogCorruptError,
        LogInconsistentError, LogGapError, LogFormatRetiredError, LogLockedError,
        RemoteQuotaExceededError, QueueUnavailableError, UnexpectedResponseError)
    if cls.error_type is not None
}
