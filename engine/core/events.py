"""Events: past-tense facts about tasks, exactly what the log stores.

The core turns every accepted request and every run outcome into one of these, applies it to its
state with ``EngineCore.apply`` and asks the runtime to append it. Replay after a restart is a fold
of the same ``apply`` over the stored events, so what is decided live and what is rebuilt cannot
differ. Every event carries ``seq`` (engine-wide, strictly increasing) and ``t_ms`` (when it
happened); the decisions that follow from an event (retry or give up, when to retry, when to
purge) are computed from these fields only, never from a clock.

Each class is declared to the log with ``@logged`` (``engine.core.registry``): its record kind
number and name, how its fields are stored, and the live update it causes. Adding an event is
that one class here; the log's codec, the watchers, the sample events the tests round-trip and
the core's table of appliers (``dispatch_table``) all follow from it, and the tests fail until
the sample and the applier exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from cloudqueue.engine.core.codec import MESSAGES, OPTIONS, SCHEDULE, enum_value
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.registry import EventType, checked_table, logged, registered
from cloudqueue.engine.core.schedules import ScheduleSpec
from cloudqueue.engine.core.value import value


class FailureKind(StrEnum):
    """How sure we are that a failed run did not do its work."""

    ERROR = "error"      # the function answered with an error: retried under both delivery modes
    UNKNOWN = "unknown"  # no answer in time, or the connection broke after sending:
    #                      deliveryMode decides
    LOST = "lost"        # the queue restarted while the run was in flight (atMostOnce only)
    DEADLINE = "deadline"  # a continued task's overall deadline passed: final
    TIMEOUT = "timeout"  # no answer within the run's timeout: an unknown outcome like UNKNOWN
    #                      (deliveryMode decides). Logs written before it hold timeouts as
    #                      UNKNOWN (history.failure_outcome still tells them)


@logged(0, "sub", live="queued", optional=2, options=OPTIONS)
@value
class TaskSubmitted:
    seq: int
    t_ms: int
    unique_id: str
    function: str
    params: Any
    options: TaskOptions
    priority: int | float
    schedule: str | None = None  # a schedule's firing: which schedule, and which slot
    slot_ms: int | None = None


@logged(1, "start", live="running")
@value
class RunStarted:
    """A run began. Its ``seq`` identifies the run; outcomes name it as ``run_seq``."""

    seq: int
    t_ms: int
    unique_id: str
    attempt: int


@logged(2, "ok")
@value
class RunSucceeded:
    seq: int
    t_ms: int
    unique_id: str
    run_seq: int
    result: Any
    status_code: int | None = None


@logged(3, "fail", live="retry", optional=1, kind=enum_value(FailureKind))
@value
class RunFailed:
    """A run failed. ``traceback``: an in-process function's, when it raised (at most
    ``history.MAX_TRACEBACK_CHARS``); left out of the record when None, so a record without one
    is written as before it existed."""

    seq: int
    t_ms: int
    unique_id: str
    run_seq: int
    error: str
    kind: FailureKind = FailureKind.ERROR
    status_code: int | None = None
    traceback: str | None = None


@logged(4, "requeue", live="queued")
@value
class RunRequeued:
    """A run that did no countable work: the host was unreachable, or the queue restarted while
    an atLeastOnce run was in flight. No attempt is spent; the task waits its turn again."""

    seq: int
    t_ms: int
    unique_id: str
    run_seq: int
    reason: str


@logged(7, "prog", live="progress", messages=MESSAGES)
@value
class ProgressReported:
    """A running task's progress: the latest report merged over earlier ones, and the last few
    messages (``[[t_ms, message], ...]``). Logged at most once per window per task."""

    seq: int
    t_ms: int
    unique_id: str
    run_seq: int
    progress: dict[str, Any]
    messages: tuple[tuple[int, str], ...]


@logged(6, "cont", live="continued")
@value
class RunContinued:
    """A run ended with "not finished: continue from this checkpoint". The task runs again as
    the same attempt, with the checkpoint, without spending a retry."""

    seq: int
    t_ms: int
    unique_id: str
    run_seq: int
    checkpoint: Any


@logged(13, "wake")
@value
class TaskWoken:
    """A retry's backoff passed (``retryAt``): the task is queued again, waiting for a slot.
    (Logs written before this record existed hold none: there a run's start implies it.)"""

    seq: int
    t_ms: int
    unique_id: str


@logged(5, "cancel")
@value
class TaskCancelled:
    seq: int
    t_ms: int
    unique_id: str


@logged(8, "purge")
@value
class TaskPurged:
    """keepResult ran out: the task and its result are gone and the uniqueId is free again."""

    seq: int
    t_ms: int
    unique_id: str


@logged(9, "sset", spec=SCHEDULE)
@value
class ScheduleSet:
    """A schedule was created or replaced (a replacement keeps its last fired slot)."""

    seq: int
    t_ms: int
    spec: ScheduleSpec

    @property
    def unique_id(self) -> str:
        return self.spec.name


@logged(10, "spause")
@value
class SchedulePaused:
    seq: int
    t_ms: int
    name: str
    paused: bool

    @property
    def unique_id(self) -> str:
        return self.name


@logged(11, "sdel")
@value
class ScheduleDeleted:
    seq: int
    t_ms: int
    name: str

    @property
    def unique_id(self) -> str:
        return self.name


@logged(12, "sskip")
@value
class ScheduleSkipped:
    """Slots an atMostOnce schedule missed while the queue was down: not fired, by design."""

    seq: int
    t_ms: int
    name: str
    skipped: int
    last_slot_ms: int

    @property
    def unique_id(self) -> str:
        return self.name


# ---------------------------------------------------------------------- operator actions
#
# An operator action (docs/operating.md, "Operator actions") is logged as one ``ActionTaken``
# (who, what, on which task or filter, how many) followed, in the same batch, by the facts it
# causes: ``TaskRetried``, ``TaskRunNow``, ``TaskCancelled``, ``TaskPurged`` (one per task) or
# ``DispatchPaused``. The core's audit list is the fold of the ``ActionTaken`` records.


@logged(14, "retry", live="queued")
@value
class TaskRetried:
    """A failed or cancelled task queued again by an operator: fresh runs (attempt 0), the same
    uniqueId, params and options, ready at once (its delay does not hold again)."""

    seq: int
    t_ms: int
    unique_id: str


@logged(15, "runnow", live="queued")
@value
class TaskRunNow:
    """An operator made a delayed task, or one waiting for its retry, ready at once."""

    seq: int
    t_ms: int
    unique_id: str


@logged(16, "dpause")
@value
class DispatchPaused:
    """The app's dispatch was paused (no new runs start; enqueues are still accepted) or
    resumed."""

    seq: int
    t_ms: int
    paused: bool

    @property
    def unique_id(self) -> str:
        return ""  # the app's, no task's


@logged(17, "action")
@value
class ActionTaken:
    """Who did what: an operator action, the head of the facts it causes (logged after it, in
    the same batch). ``by`` is the credential (``master``, ``operator``, ``embedded``), ``via``
    what the caller says it is (``cli``, ``dashboard``; None: unsaid). ``target`` names the task
    (an action on one task) or is None; ``filter`` is a bulk action's filter (wire names,
    times in epoch ms), ``count`` how many tasks it changed."""

    seq: int
    t_ms: int
    action: str
    by: str
    via: str | None
    target: str | None
    filter: dict[str, Any] | None
    count: int

    @property
    def unique_id(self) -> str:
        return ""  # the head of an action: the facts after it name the tasks


# every registered event (mypy's view of the registry; a test holds the two equal)
Event = (TaskSubmitted | RunStarted | RunSucceeded | RunFailed | RunRequeued | TaskCancelled
         | TaskPurged | ProgressReported | RunContinued | ScheduleSet | SchedulePaused
         | ScheduleDeleted | ScheduleSkipped | TaskWoken | TaskRetried | TaskRunNow
         | DispatchPaused | ActionTaken)


EVENT_TYPES: tuple[EventType, ...] = registered()
"""Every event the log stores, by record kind."""

_H = TypeVar("_H")


def dispatch_table(handlers: Mapping[type[Any], _H]) -> dict[type[Any], _H]:
    """``handlers`` (one per event class: the core's appliers) as a dict, checked against
    ``EVENT_TYPES``. Raises ``TypeError`` naming an event without a handler, or a handler for
    a class that is not a registered event."""
    return checked_table(EVENT_TYPES, handlers)
