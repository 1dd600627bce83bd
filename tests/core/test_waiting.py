"""Why a task waits: each reason, in the order the rules check them, from the task and the
app's facts alone (pure)."""

from __future__ import annotations

from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import Task
from cloudqueue.engine.core.waiting import AppFacts, why_waiting

T0 = 1_700_000_000_000
FREE = AppFacts(paused=False, host_up=True, running=0, run_limit=4)


def task(state: TaskState = TaskState.QUEUED, delay_ms: int = 0, **fields: object) -> Task:
    found = Task("t", "resize", {}, TaskOptions(delay_ms=delay_ms, attempts=2), T0, 1, T0,
                 state=state)
    for name, value in fields.items():
        setattr(found, name, value)
    return found


def reason(found: Task, facts: AppFacts = FREE, now_ms: int = T0) -> tuple[str, int | None]:
    waiting = why_waiting(found, now_ms, facts)
    assert waiting is not None
    return waiting.reason, waiting.until_ms


def test_each_reason_in_its_order() -> None:
    paused = AppFacts(paused=True, host_up=False, running=4, run_limit=4)
    assert reason(task(delay_ms=5_000), paused) == ("delay", T0 + 5_000)
    assert reason(task(delay_ms=5_000), FREE, now_ms=T0 + 5_000) == ("ready", None)
    assert reason(task(delay_ms=5_000, run_now_ms=T0 + 1), paused) == ("paused", None)
    assert reason(task(TaskState.RETRY_WAIT, attempt=1, retry_at_ms=T0 + 9_000), paused) == (
        "backoff", T0 + 9_000)
    assert reason(task(), paused) == ("paused", None)
    assert reason(task(), AppFacts(paused=False, host_up=False, running=4, run_limit=4)) == (
        "host_down", None)
    limited = AppFacts(paused=False, host_up=None, running=1, run_limit=4, function_running=1,
                       function_limit=1)
    assert reason(task(), limited) == ("function_concurrency", None)
    assert reason(task(), AppFacts(paused=False, host_up=None, running=4, run_limit=4)) == (
        "concurrency", None)
    assert reason(task(), FREE) == ("ready", None)


def test_a_task_running_or_finished_does_not_wait() -> None:
    for state in (TaskState.RUNNING, TaskState.SUCCESS, TaskState.FAILED,
                  TaskState.CANCELLED):
        assert why_waiting(task(state), T0, FREE) is None


def test_the_backoff_message_counts_the_runs() -> None:
    waiting = why_waiting(task(TaskState.RETRY_WAIT, attempt=2, retry_at_ms=T0), T0, FREE)
    assert waiting is not None
    assert waiting.to_wire() == {"reason": "backoff", "until": "2023-11-14T22:13:20.000Z",
                                 "message": "run 2 of 3 failed; the next run waits for its "
                                            "backoff"}
