"""What an engine counts for its metrics (``GET /metrics``; every metric in docs/metrics.md):
plain integers and fixed-bucket histograms, kept as the engine works and read when asked.

The cost on the hot path
------------------------
Nothing here calls a metrics library per event. The driver hands each batch of events it carries
out to :meth:`EngineMetrics.events` (per event: one dict lookup by its type, then an integer
incremented, or a bucket found by bisection) and each finished task to :meth:`task_finished`;
``Engine`` times each acknowledgement (two clock readings). What the engine keeps anyway is read
only when metrics are collected: tasks by state (``EngineCore.tasks_by_state``, counted as
events are applied), the ready queues' heads (the backlog's age), the run limits, the log's
counters. ``prometheus_client`` turns them into its families at scrape time
(``adapters/http_api/metrics.py``). ``EngineConfig(metrics=False)`` leaves all of it out.

Times come from the engine's clock: an acknowledgement on ``monotonic_ms`` (sub-millisecond),
a task's wait and a run's duration from its events' times (``now_ms``: whole milliseconds), so a
test on a ``FakeClock`` sees exact values.

The function label
------------------
Counts by function are labelled with the function's name for the first ``FUNCTION_LABELS``
(50) names an engine sees, and ``"other"`` for every name after those, so a caller inventing
names cannot grow the metrics without bound. (A function named ``other`` shares its series.)
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.core.events import (
    RunContinued,
    RunFailed,
    RunRequeued,
    RunStarted,
    RunSucceeded,
    TaskCancelled,
    TaskPurged,
    TaskRetried,
    TaskRunNow,
    TaskSubmitted,
    TaskWoken,
)
from cloudqueue.engine.core.task import Task

FUNCTION_LABELS = 50
OTHER = "other"

# Upper bounds of the histograms' buckets, in seconds.
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                      3600.0)
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
               600.0)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 1.0)


class Histogram:
    """Observations counted in fixed buckets (upper bounds, inclusive, in seconds) and summed.

    Written by one thread (the event loop, or the log's IO thread for fsyncs); a reader in
    another may see an observation's count before its sum, never a count going back."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)`` for each bucket, ending with
        ``(inf, count)``: Prometheus's ``le`` buckets."""
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class FunctionLabels:
    """A function's label: its name for the first ``cap`` names, then ``OTHER``. (``known``
    holds the names given their own label: a hot path looks there first.)"""

    __slots__ = ("cap", "known")

    def __init__(self, cap: int = FUNCTION_LABELS) -> None:
        self.known: dict[str, str] = {}
        self.cap = cap

    def __call__(self, function: str) -> str:
        label = self.known.get(function)
        if label is None:
            if len(self.known) >= self.cap:
                return OTHER  # (not remembered: names past the cap take no memory)
            label = self.known[function] = function
        return label


class EngineMetrics:
    """One engine's counts and histograms (see the module docstring).

    Attributes:
        enqueued: tasks submitted (enqueues and schedules' firings), by function label.
        finished: tasks that reached a final state, by ``(function label, status)``.
        runs: runs ended, by ``(function label, outcome)``: ``success``, ``error`` (the
            function failed), ``timeout`` (no answer in time), ``unknown`` (a broken
            connection, a result that cannot be stored), ``deadline`` (a continued task's
            deadline passed), ``continued``, ``requeued`` (the host was unreachable, or the
            queue restarted during the run: not charged), ``lost`` (the queue restarted
            during an atMostOnce run).
        quota_rejections: enqueue calls a quota refused, by quota (``rate``, ``daily``,
            ``held``).
        ack: seconds from the engine taking an enqueue call to its acknowledgement (one
            observation per call; a batch is one).
        queue_wait: seconds from a task being ready to its run starting.
        run_duration: seconds from a run's start to its outcome, by function label.
    """

    def __init__(self, core: EngineCore, *, function_labels: int = FUNCTION_LABELS) -> None:
        self._core = core
        self.label = FunctionLabels(function_labels)
        self._known = self.label.known
        self.enqueued: defaultdict[str, int] = defaultdict(int)
        self.finished: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.runs: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.quota_rejections: defaultdict[str, int] = defaultdict(int)
        self.ack = Histogram(ACK_BUCKETS)
        self.queue_wait = Histogram(QUEUE_WAIT_BUCKETS)
        self.run_duration: dict[str, Histogram] = {}
        # when a task became ready again after a run (a retry woken, a run requeued or
        # continued); a first run is ready at created + delay, which its task says
        self._ready_since: dict[str, int] = {}
        self._in_flight: dict[int, tuple[int, str]] = {}  # run seq -> (started ms, label)
        self._on: dict[type, Callable[[Any], None]] = {
            TaskSubmitted: self._submitted, RunStarted: self._started,
            RunSucceeded: self._succeeded, RunFailed: self._failed,
            RunRequeued: self._requeued, RunContinued: self._continued,
            TaskWoken: self._woken, TaskCancelled: self._gone, TaskPurged: self._gone,
            TaskRetried: self._woken, TaskRunNow: self._woken}  # an operator made it ready

    # ------------------------------------------------------------------ fed by the engine

    def events(self, events: Iterable[Any]) -> None:
        """A batch of events the core emitted (live, never replayed ones)."""
        on = self._on
        for event in events:
            handler = on.get(type(event))
            if handler is not None:
                handler(event)

    def task_finished(self, task: Task) -> None:
        """``task`` reached its final state (success, failed or cancelled)."""
        function = task.function
        # (a StrEnum is its value: the state itself is the key, no ``.value`` read per task)
        self.finished[self._known.get(function) or self.label(function), task.state] += 1

    def acknowledged(self, elapsed_ms: float) -> None:
        self.ack.observe(elapsed_ms / 1000)

    def quota_rejected(self, quota: str) -> None:
        self.quota_rejections[quota] += 1

    # ------------------------------------------------------------------ read when collected

    def oldest_ready_age_ms(self, now_ms: int) -> int:
        """How long the task that has been ready longest has waited (0: none is ready). Looks
        at the head of each ready queue (the one pushed longest ago), not at every task."""
        heads = self._core.ready_heads()
        if not heads:
            return 0
        return max(0, now_ms - min(self._ready_at(task) for task in heads))

    # ------------------------------------------------------------------ the events

    def _ready_at(self, task: Task) -> int:
        since = self._ready_since.get(task.unique_id)
        if since is not None:
            return since
        if task.attempt == 0 and task.slices == 0:
            if task.run_now_ms is not None:  # an operator made it ready (run now, retry)
                return task.run_now_ms
            return task.created_ms + task.options.delay_ms
        # ready again since before this process started: its last run's start is a bound
        return task.started_ms if task.started_ms is not None else task.created_ms

    def _submitted(self, event: TaskSubmitted) -> None:  # (the enqueue's hot path: inlined)
        label = self._known.get(event.function) or self.label(event.function)
        self.enqueued[label] += 1

    def _started(self, event: RunStarted) -> None:
        task = self._core.task(event.unique_id)
        if task is None:  # (purged in the same batch: nothing left to measure)
            return
        function = task.function
        self._in_flight[event.seq] = (event.t_ms, self._known.get(function)
                                      or self.label(function))
        ready = self._ready_since.pop(event.unique_id, None)
        if ready is None and event.attempt == 1 and task.slices == 0:
            ready = (task.created_ms + task.options.delay_ms if task.run_now_ms is None
                     else task.run_now_ms)
        if ready is not None:
            self.queue_wait.observe(max(0, event.t_ms - ready) / 1000)

    def _ended(self, unique_id: str, run_seq: int, t_ms: int, outcome: str) -> None:
        started = self._in_flight.pop(run_seq, None)
        if started is None:  # started before this process (a restart decides its fate)
            task = self._core.task(unique_id)
            label = self.label(task.function) if task is not None else OTHER
        else:
            started_ms, label = started
            histogram = self.run_duration.get(label)
            if histogram is None:
                histogram = self.run_duration[label] = Histogram(RUN_BUCKETS)
            histogram.observe((t_ms - started_ms) / 1000)
        self.runs[label, outcome] += 1

    def _succeeded(self, event: RunSucceeded) -> None:
        self._ended(event.unique_id, event.run_seq, event.t_ms, "success")

    def _failed(self, event: RunFailed) -> None:
        self._ended(event.unique_id, event.run_seq, event.t_ms, event.kind)

    def _requeued(self, event: RunRequeued) -> None:
        self._ended(event.unique_id, event.run_seq, event.t_ms, "requeued")
        self._ready_since[event.unique_id] = event.t_ms

    def _continued(self, event: RunContinued) -> None:
        self._ended(event.unique_id, event.run_seq, event.t_ms, "continued")
        self._ready_since[event.unique_id] = event.t_ms

    def _woken(self, event: TaskWoken | TaskRetried | TaskRunNow) -> None:
        self._ready_since[event.unique_id] = event.t_ms

    def _gone(self, event: TaskCancelled | TaskPurged) -> None:
        self._ready_since.pop(event.unique_id, None)
