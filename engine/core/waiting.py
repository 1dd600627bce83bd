"""Why a task that has not finished is not running: the answer task detail and the dashboard
show (``waiting``). Pure: the task, the time and the facts of the app in, one ``Waiting`` out.

The reasons, in the order they are checked (the first that holds is the one shown):

* ``delay``: its ``delay`` has not passed (``until``: when it has).
* ``backoff``: it failed and waits for its retry (``until``: ``retryAt``).
* ``paused``: an operator paused the app's dispatch.
* ``host_down``: the function host does not answer; runs start again once it does.
* ``function_concurrency``: its function runs as many tasks as its own limit allows.
* ``concurrency``: the app runs as many tasks as its run limit allows (``concurrency``, or
  less while adaptive concurrency holds runs back).
* ``ready``: nothing holds it; it starts when the dispatcher reaches it (tasks of higher
  priority, or enqueued before it, go first).

Quotas are not among them: a quota refuses an enqueue, so no task the queue holds waits for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudqueue.engine.core.options import TaskOptions, options_to_wire
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import Task, TaskInfo, iso_ms, json_safe


@dataclass(frozen=True, slots=True)
class Waiting:
    reason: str
    message: str
    until_ms: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"reason": self.reason, "message": self.message}
        if self.until_ms is not None:
            wire["until"] = iso_ms(self.until_ms)
        return wire


@dataclass(frozen=True, slots=True)
class AppFacts:
    """What the app is doing that can hold a ready task back."""

    paused: bool
    host_up: bool | None  # None: no function host
    running: int  # runs in flight of the task's group
    run_limit: int  # the runs its group may have in flight now
    function_running: int = 0
    function_limit: int | None = None  # the task's function's own limit, if it has one


def delayed_until(task: Task, now_ms: int) -> int | None:
    """When a queued task's ``delay`` ends, if it still holds the task at ``now_ms`` (it never
    ran, no operator made it ready); else None."""
    until = task.created_ms + task.options.delay_ms
    if (task.state is TaskState.QUEUED and task.options.delay_ms > 0 and task.started_ms is None
            and task.run_now_ms is None and now_ms < until):
        return until
    return None


def why_waiting(task: Task, now_ms: int, facts: AppFacts) -> Waiting | None:
    """Why ``task`` waits (see the module docstring); None for a task running or finished."""
    if task.state is TaskState.RETRY_WAIT:
        until = task.retry_at_ms
        return Waiting("backoff", f"run {task.attempt} of {task.options.max_runs} failed; the "
                       "next run waits for its backoff", until)
    if task.state is not TaskState.QUEUED:
        return None
    until = delayed_until(task, now_ms)
    if until is not None:
        return Waiting("delay", "it was enqueued with a delay", until)
    if facts.paused:
        return Waiting("paused", "the app's dispatch is paused: no run starts until an operator "
                       "resumes it")
    if facts.host_up is False:
        return Waiting("host_down", "the function host does not answer; runs start again once "
                       "it does")
    if facts.function_limit is not None and facts.function_running >= facts.function_limit:
        return Waiting("function_concurrency", f"{task.function} already runs "
                       f"{facts.function_running} tasks, its own limit")
    if facts.running >= facts.run_limit:
        return Waiting("concurrency", f"the app already runs {facts.running} tasks, its run "
                       f"limit now")
    return Waiting("ready", "ready: it starts when the dispatcher reaches it (higher priority "
                   "and earlier tasks go first)")


@dataclass(frozen=True, slots=True)
class TaskDetail:
    """What an operator looks at: the task's info, its params and options, and why it waits
    (None: running or finished)."""

    info: TaskInfo
    params: Any
    options: TaskOptions
    waiting: Waiting | None

    def to_wire(self) -> dict[str, Any]:
        """Task info with ``params``, ``options`` (as an enqueue names them) and ``waiting``."""
        wire = self.info.to_wire()
        wire["params"] = json_safe(self.params)
        wire["options"] = options_to_wire(self.options)
        if self.waiting is not None:
            wire["waiting"] = self.waiting.to_wire()
        return wire
