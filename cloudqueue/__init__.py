"""cloudqueue: a durable task queue for cloud functions.

The public API. In-process, the queue is an ``Engine``; against a remote queue (``cloudqueue
serve``, or LeanCloud), a ``QueueClient``. Both implement the ``Queue`` protocol: the same
methods, options and units (every duration in milliseconds), the same ``TaskInfo`` and
``ScheduleInfo``, the same typed errors. A function gets a ``Run`` (in-process a
``RunContext``; behind the function host a ``Call``)::

    from cloudqueue import Engine, QueueClient, Queue, Continue, Run

Tests of code that uses an ``Engine`` use ``cloudqueue.testing.settle``.

The implementation lives in ``cloudqueue.engine`` (the pure core and its runtime) and
``cloudqueue.adapters`` (HTTP in and out); the entry points (``cloudqueue`` command, server
assembly, log tool) in this package's own modules.
"""

from cloudqueue.adapters.client import QueueClient
from cloudqueue.engine.config import EngineConfig
from cloudqueue.engine.core.actions import Actor, AuditEntry, BulkResult, DispatchState
from cloudqueue.engine.core.errors import (
    ConfigError,
    DiskFullError,
    DuplicateTaskError,
    EngineClosedError,
    EngineError,
    ForbiddenError,
    InvalidTransitionError,
    LogError,
    LogPoisonedError,
    OutcomeUnknownError,
    QueueUnavailableError,
    QuotaExceededError,
    RemoteQuotaExceededError,
    UnauthorizedError,
    UnexpectedResponseError,
    UnknownScheduleError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.history import RunOutcome, RunRecord
from cloudqueue.engine.core.options import DeliveryMode, TaskOptions
from cloudqueue.engine.core.schedules import ScheduleInfo
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import TaskInfo
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.queue import Queue, TaskPage
from cloudqueue.engine.runtime.clock import Clock, FakeClock, SystemClock
from cloudqueue.engine.runtime.defined import define
from cloudqueue.engine.runtime.functions import Continue, Run, RunContext
from cloudqueue.engine.runtime.log_options import LogOptions

__all__ = [
    "Actor",
    "AuditEntry",
    "BulkResult",
    "Clock",
    "ConfigError",
    "Continue",
    "DeliveryMode",
    "DiskFullError",
    "DispatchState",
    "DuplicateTaskError",
    "Engine",
    "EngineClosedError",
    "EngineConfig",
    "EngineError",
    "FakeClock",
    "ForbiddenError",
    "InvalidTransitionError",
    "LogError",
    "LogOptions",
    "LogPoisonedError",
    "OutcomeUnknownError",
    "Queue",
    "QueueClient",
    "QueueUnavailableError",
    "QuotaExceededError",
    "RemoteQuotaExceededError",
    "Run",
    "RunContext",
    "RunOutcome",
    "RunRecord",
    "ScheduleInfo",
    "SystemClock",
    "TaskInfo",
    "TaskOptions",
    "TaskPage",
    "TaskState",
    "UnauthorizedError",
    "UnexpectedResponseError",
    "UnknownScheduleError",
    "UnknownTaskError",
    "ValidationError",
    "define",
]
