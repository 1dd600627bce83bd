"""Commands: what the core asks the runtime to do. The runtime executes them in order."""

from __future__ import annotations

from typing import Any

from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.task import Task, TaskInfo
from cloudqueue.engine.core.value import value


@value
class Append:
    """Write these events to the log (in order)."""

    events: tuple[Event, ...]


@value
class Invoke:
    """Start a run once every event up to ``durable_seq`` is durable.

    For atMostOnce that is the run's own ``RunStarted`` (so a crash can never run it twice); for
    atLeastOnce the task's ``TaskSubmitted`` (a task nobody was told about never runs).
    """

    unique_id: str
    run_seq: int
    attempt: int
    function: str
    params: Any
    timeout_ms: int
    deadline_ms: int
    durable_seq: int
    checkpoint: Any = None  # from the previous slice of a continued task
    slice: int = 0  # how many slices ran before this one


@value
class CancelRun:
    """Stop waiting for a run (it timed out); its outcome, if it ever comes, is ignored."""

    unique_id: str
    run_seq: int


@value
class TaskFinished:
    """A task reached a final state (success, failed, cancelled): wake anyone waiting on it.

    Carries the task itself, so a waiter reads it even after ``keepResult: 0`` purged it in the
    same tick. Its ``info`` is built only when someone asks (most finished tasks have no
    waiter): a final task's fields never change again (a new submission of its uniqueId makes a
    new ``Task``), so it is the snapshot of the moment it finished."""

    task: Task

    @property
    def info(self) -> TaskInfo:
        return self.task.info()


Command = Append | Invoke | CancelRun | TaskFinished
