"""The task state machine, declared once with ``transitions`` and compiled for the hot path.

States and triggers::

    queued ──start──> running ──succeed──> success
      ^  │              │ ├────retry_later──> retry_wait ──wake──> queued
      │  │              │ ├────give_up──────> failed
      │  │              │ └────requeue──────> queued   (host unavailable, lost run under
      │  │              │                               atLeastOnce, continuation: no attempt spent)
      │  └──cancel──> cancelled <──cancel── retry_wait
      └──retry── failed, cancelled   (an operator's retry: fresh runs, the same uniqueId)

``TASK_MACHINE`` is the single shared ``transitions.Machine`` (never one per task). A transition
through it costs tens of microseconds, which at three transitions per task would cap the queue
near 10k tasks/s, so ``fire()`` uses ``_COMPILED``, a dict derived from the machine's own events
at import time; ``tests/core/test_states.py`` proves both agree on every (state, trigger) pair.
Policy (*whether* to retry) lives in ``engine.core.engine``; this table only says which moves are
legal.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from transitions import Machine

from cloudqueue.engine.core.errors import InvalidTransitionError


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def wire_status(self) -> str:
        """LeanCloud's three-valued ``status``: every non-final state reads ``queued``."""
        if self is TaskState.SUCCESS:
            return "success"
        if self in _FINAL:
            return "failed"
        return "queued"


_FINAL = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELLED})


class Trigger(StrEnum):
    START = "start"
    SUCCEED = "succeed"
    RETRY_LATER = "retry_later"
    GIVE_UP = "give_up"
    REQUEUE = "requeue"
    WAKE = "wake"
    CANCEL = "cancel"
    RETRY = "retry"  # an operator queues a failed or cancelled task again


TRANSITIONS: tuple[dict[str, object], ...] = (
    {"trigger": Trigger.START, "source": TaskState.QUEUED, "dest": TaskState.RUNNING},
    {"trigger": Trigger.SUCCEED, "source": TaskState.RUNNING, "dest": TaskState.SUCCESS},
    {"trigger": Trigger.RETRY_LATER, "source": TaskState.RUNNING, "dest": TaskState.RETRY_WAIT},
    {"trigger": Trigger.GIVE_UP, "source": TaskState.RUNNING, "dest": TaskState.FAILED},
    {"trigger": Trigger.REQUEUE, "source": TaskState.RUNNING, "dest": TaskState.QUEUED},
    {"trigger": Trigger.WAKE, "source": TaskState.RETRY_WAIT, "dest": TaskState.QUEUED},
    {"trigger": Trigger.CANCEL, "source": [TaskState.QUEUED, TaskState.RETRY_WAIT],
     "dest": TaskState.CANCELLED},
    {"trigger": Trigger.RETRY, "source": [TaskState.FAILED, TaskState.CANCELLED],
     "dest": TaskState.QUEUED},
)

TASK_MACHINE = Machine(
    model=None,
    states=TaskState,
    transitions=[{**t, "trigger": str(t["trigger"].value)} for t in TRANSITIONS],  # type: ignore[attr-defined]
    initial=TaskState.QUEUED,
    auto_transitions=False,
)


class HasState(Protocol):
    unique_id: str
    state: TaskState


def _compile(machine: Machine) -> dict[tuple[TaskState, Trigger], TaskState]:
    table: dict[tuple[TaskState, Trigger], TaskState] = {}
    for trigger in Trigger:
        event = machine.events[trigger.value]
        for source_name, transitions in event.transitions.items():
            for transition in transitions:
                table[(TaskState[source_name], trigger)] = TaskState[str(transition.dest)]
    return table


_COMPILED = _compile(TASK_MACHINE)


def fire(task: HasState, trigger: Trigger) -> TaskState:
    """Move ``task`` by ``trigger``; raise ``InvalidTransitionError`` (state unchanged) if
    illegal."""
    dest = _COMPILED.get((task.state, trigger))
    if dest is None:
        raise InvalidTransitionError(task.unique_id, task.state.value, trigger.value)
    task.state = dest
    return dest


def can_fire(state: TaskState, trigger: Trigger) -> bool:
    return (state, trigger) in _COMPILED
