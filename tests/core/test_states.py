"""Every (state, trigger) pair of the task state machine, legal or not."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from transitions import MachineError

from cloudqueue.engine.core.errors import InvalidTransitionError
from cloudqueue.engine.core.states import TASK_MACHINE, TaskState, Trigger, can_fire, fire

S, T = TaskState, Trigger

LEGAL = {
    (S.QUEUED, T.START): S.RUNNING,
    (S.QUEUED, T.CANCEL): S.CANCELLED,
    (S.RUNNING, T.SUCCEED): S.SUCCESS,
    (S.RUNNING, T.RETRY_LATER): S.RETRY_WAIT,
    (S.RUNNING, T.GIVE_UP): S.FAILED,
    (S.RUNNING, T.REQUEUE): S.QUEUED,
    (S.RETRY_WAIT, T.WAKE): S.QUEUED,
    (S.RETRY_WAIT, T.CANCEL): S.CANCELLED,
    (S.FAILED, T.RETRY): S.QUEUED,
    (S.CANCELLED, T.RETRY): S.QUEUED,
}
ALL_PAIRS = list(itertools.product(TaskState, Trigger))


@dataclass
class _Task:
    unique_id: str
    state: TaskState


@pytest.mark.parametrize(("state", "trigger"), ALL_PAIRS, ids=lambda v: v.value)
def test_every_pair_moves_as_the_table_says_or_raises_and_keeps_state(
    state: TaskState, trigger: Trigger
) -> None:
    task = _Task("t1", state)
    expected = LEGAL.get((state, trigger))
    if expected is None:
        with pytest.raises(InvalidTransitionError) as info:
            fire(task, trigger)
        assert task.state is state
        assert info.value.state == state.value and info.value.trigger == trigger.value
        assert not can_fire(state, trigger)
    else:
        assert fire(task, trigger) is expected
        assert task.state is expected


@pytest.mark.parametrize(("state", "trigger"), ALL_PAIRS, ids=lambda v: v.value)
def test_compiled_table_agrees_with_the_shared_machine(state: TaskState, trigger: Trigger) -> None:
    via_machine = _Task("t1", state)
    try:
        TASK_MACHINE.events[trigger.value].trigger(via_machine)
        machine_dest: TaskState | None = via_machine.state
    except MachineError:
        machine_dest = None
    compiled = _Task("t1", state)
    try:
        compiled_dest: TaskState | None = fire(compiled, trigger)
    except InvalidTransitionError:
        compiled_dest = None
    assert compiled_dest == machine_dest


@pytest.mark.parametrize(
    ("state", "status"),
    [(S.QUEUED, "queued"), (S.RUNNING, "queued"), (S.RETRY_WAIT, "queued"),
     (S.SUCCESS, "success"), (S.FAILED, "failed"), (S.CANCELLED, "failed")],
)
def test_wire_status_is_queued_for_every_unfinished_state(state: TaskState, status: str) -> None:
    assert state.wire_status == status
    assert state.is_final == (status != "queued")


def test_error_message_says_what_cannot_be_done() -> None:
    with pytest.raises(InvalidTransitionError, match="Task 'job-1' is running: cannot cancel it"):
        fire(_Task("job-1", S.RUNNING), T.CANCEL)
