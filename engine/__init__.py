"""cloudqueue: a durable task queue for cloud functions.

The public API, for a Python service embedding the queue::

    from engine import Engine
"""

from engine.core.errors import (
    ConfigError,
    DiskFullError,
    DuplicateTaskError,
    EngineClosedError,
    EngineError,
    InvalidTransitionError,
    LogError,
    LogPoisonedError,
    UnknownTaskError,
    ValidationError,
)
from engine.core.options import DeliveryMode, TaskOptions
from engine.core.states import TaskState
from engine.core.task import TaskInfo
from engine.embedded import Engine
from engine.runtime.clock import Clock, FakeClock, SystemClock
from engine.runtime.functions import Continue, RunContext

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
    "InvalidTransitionError",
    "LogError",
    "LogPoisonedError",
    "RunContext",
    "SystemClock",
    "TaskInfo",
    "TaskOptions",
    "TaskState",
    "UnknownTaskError",
    "ValidationError",
]
