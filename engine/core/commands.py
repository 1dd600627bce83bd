"""Commands: what the core asks the runtime to do. The runtime executes them in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.core.events import Event
from engine.core.task import TaskInfo


@dataclass(frozen=True, slots=True)
class Append:
    """Write these events to the log (in order)."""

    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class CancelRun:
    """Stop waiting for a run (it timed out); its outcome, if it ever comes, is ignored."""

    unique_id: str
    run_seq: int


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """A task reached a final state (success, failed, cancelled): wake anyone waiting on it.

    Carries the snapshot taken at that moment: with ``keepResult: 0`` the task is purged in the
    same tick, before a waiter could look it up."""

    info: TaskInfo


Command = Append | Invoke | CancelRun | TaskFinished
