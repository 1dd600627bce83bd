"""cloudqueue: a durable task queue for cloud functions.

The public API. In-process, the queue is an ``Engine``; against a remote queue (``cloudqueue
serve``, or LeanCloud), a ``QueueClient``; both take the same options and answer the same
``TaskInfo`` and typed errors::

    from cloudqueue import Engine, QueueClient, Continue, RunContext

The implementation lives in ``cloudqueue.engine`` (the pure core and its runtime) and
``cloudqueue.adapters`` (HTTP in and out); the entry points (``cloudqueue`` command, server
assembly, log tool) in this package's own modules.
"""

from cloudqueue.adapters.client import (
    QueueClient,
    QueueUnavailableError,
    UnexpectedResponseError,
)
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
    QuotaExceededError,
    UnauthorizedError,
    UnknownScheduleError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.options import DeliveryMode, TaskOptions
from cloudqueue.engine.core.schedules import ScheduleInfo
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import TaskInfo
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.clock import Clock, FakeClock, SystemClock
from cloudqueue.engine.runtime.functions import Continue, RunContext

__all__ = [
    "Clock",
    "ConfigError",
    "Continue",
    "DeliveryMode",
    "DiskFullError",
    "DuplicateTaskError",
    "Engine",
    "EngineClosedError",
    "EngineError",
    "FakeClock",
    "ForbiddenError",
    "InvalidTransitionError",
    "LogError",
    "LogPoisonedError",
    "OutcomeUnknownError",
    "QueueClient",
    "QueueUnavailableError",
    "QuotaExceededError",
    "RunContext",
    "ScheduleInfo",
    "SystemClock",
    "TaskInfo",
    "TaskOptions",
    "TaskState",
    "UnauthorizedError",
    "UnexpectedResponseError",
    "UnknownScheduleError",
    "UnknownTaskError",
    "ValidationError",
]
