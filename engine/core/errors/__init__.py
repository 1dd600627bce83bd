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

Every error class is importable from here; they are defined in ``queue.py`` (requests, tasks,
credentials, quotas, a client's view of a remote queue, an app moving between nodes) and
``log.py`` (the durable log, and a store in a shared database).
"""

from __future__ import annotations

from typing import Final

from cloudqueue.engine.core.errors.log import (
    CorruptionKind,
    CorruptRecordError,
    DatabaseRefusedError,
    DatabaseUnavailableError,
    DiskFullError,
    FencedError,
    LogCorruptError,
    LogError,
    LogFormatRetiredError,
    LogGapError,
    LogInconsistentError,
    LogLockedError,
    LogNeedsRepairError,
    LogPoisonedError,
    OutcomeUnknownError,
    UnknownRecordKindError,
)
from cloudqueue.engine.core.errors.queue import (
    AppMovingError,
    ConfigError,
    DuplicateTaskError,
    EngineClosedError,
    EngineError,
    ForbiddenError,
    InvalidTransitionError,
    QueueUnavailableError,
    QuotaExceededError,
    RemoteQuotaExceededError,
    StaleRunError,
    UnauthorizedError,
    UnexpectedResponseError,
    UnknownScheduleError,
    UnknownTaskError,
    ValidationError,
)

#: the record schema this version reads (``engine.core.codec.SCHEMA_VERSION``)
RECORD_SCHEMA_VERSION: Final = 1

#: every error type a body may name, by its ``type``
ERROR_TYPES: dict[str, type[EngineError]] = {
    cls.error_type: cls for cls in (
        ValidationError, DuplicateTaskError, UnknownScheduleError, StaleRunError,
        InvalidTransitionError, ForbiddenError, ConfigError, EngineClosedError,
        QuotaExceededError, LogError, LogPoisonedError, DiskFullError, OutcomeUnknownError,
        UnknownRecordKindError, CorruptRecordError, LogNeedsRepairError, LogCorruptError,
        LogInconsistentError, LogGapError, LogFormatRetiredError, LogLockedError,
        RemoteQuotaExceededError, QueueUnavailableError, UnexpectedResponseError,
        DatabaseUnavailableError, FencedError, DatabaseRefusedError, AppMovingError)
    if cls.error_type is not None
}

__all__ = [
    "AppMovingError",
    "ConfigError",
    "DatabaseRefusedError",
    "DatabaseUnavailableError",
    "FencedError",
    "CorruptRecordError",
    "CorruptionKind",
    "DiskFullError",
    "DuplicateTaskError",
    "ERROR_TYPES",
    "EngineClosedError",
    "EngineError",
    "ForbiddenError",
    "InvalidTransitionError",
    "LogCorruptError",
    "LogError",
    "LogFormatRetiredError",
    "LogGapError",
    "LogInconsistentError",
    "LogLockedError",
    "LogNeedsRepairError",
    "LogPoisonedError",
    "OutcomeUnknownError",
    "QueueUnavailableError",
    "QuotaExceededError",
    "RECORD_SCHEMA_VERSION",
    "RemoteQuotaExceededError",
    "StaleRunError",
    "UnauthorizedError",
    "UnexpectedResponseError",
    "UnknownRecordKindError",
    "UnknownScheduleError",
    "UnknownTaskError",
    "ValidationError",
]
