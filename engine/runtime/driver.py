"""Driver: the one asyncio task that owns the core and carries out its commands.

The core is only ever touched from the event loop's thread and never across an ``await``, so
there is one writer and no lock. Requests (``Engine.enqueue`` …) call the core directly, hand the
returned commands to ``execute`` and ``poke`` the driver; the driver's loop ticks the core, sleeps
until the next timer or the next poke, and repeats.

Effects happen after commit: a run starts only once the events it depends on are durable
(``Invoke.durable_seq``), and a waiter or a watcher hears of a change only once the event behind
it is durable (``Watchers`` holds updates until then).

Two rules may hold runs in flight below the app's ``concurrency``, each off unless asked for: the
loop-lag cap (``pacing.py``: the queue's own event loop is overloaded) and the host limit
(``host_limit.py``: the function host slows or errs). The core's ``run_cap`` is the lower of the
two.

Every failed run is logged on ``cloudqueue.runs``, one line each, whatever failed it (the
function, the host, a timeout, a restart): at WARNING when the task will retry, at ERROR when the
task failed for good, with the app, function, uniqueId, attempt, error and traceback as the
record's ``structured`` fields (``cloudqueue.log_format`` writes them as text or JSON).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cloudqueue.engine.core.commands import Append, CancelRun, Command, Invoke, TaskFinished
from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.core.errors import LogError
from cloudqueue.engine.core.events import FailureKind, RunFailed
from cloudqueue.engine.core.task import Task, TaskInfo, iso_ms
from cloudqueue.engine.runtime.clock import Clock, TimerCancel
from cloudqueue.engine.runtime.functions import (
    Continued,
    Failed,
    Invoker,
    Outcome,
    Succeeded,
    Unavailable,
)
from cloudqueue.engine.runtime.host_limit import HostLimit
from cloudqueue.engine.runtime.metrics import EngineMetrics
from cloudqueue.engine.runtime.pacing import RunCap, SharedLagMonitor
from cloudqueue.engine.runtime.store import Store
from cloudqueue.engine.runtime.watchers import Watchers

log = logging.getLogger("cloudqueue.driver")
# one line per failed run: not rate-limited like the server's other warnings (a filter on
# "cloudqueue" does not see a child's records)
runs_log = logging.getLogger("cloudqueue.runs")


class Driver:
    def __init__(self, core: EngineCore, store: Store, clock: Clock, invoker: Invoker,
                 watchers: Watchers | None = None, *, adaptive: bool = False,
                 host_adaptive: bool = False, name: str | None = None,
                 metrics: EngineMetrics | None = None) -> None:
        self.core = core
        self.name = name  # the app's, in log lines
        self.watchers = watchers
        self.metrics = metrics  # told every event and finished task it carries out
        self.store = store
        self.clock = clock
        self.invoker = invoker
        self._wake = asyncio.Event()
        self._runs: dict[int, asyncio.Task[None]] = {}
        self._waiters: dict[str, list[asyncio.Future[TaskInfo]]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._sleep_deadline: int | None = None  # when the loop's armed timer wakes it
        self._timer: TimerCancel | None = None
        self._stopping = False
        # adaptive concurrency (pacing.py): fewer runs in flight while the loop lags
        self.run_cap = RunCap(core.concurrency) if adaptive else None
        self._stop_lag: Callable[[], None] | None = None
        # host-adaptive concurrency (host_limit.py): fewer runs in flight while the host slows
        self.host_limit = HostLimit(core.concurrency) if host_adaptive else None
        self._host_runs: dict[int, tuple[float, int]] = {}  # run_seq -> (started ms, epoch)
        self._apply_caps()
        invoker.set_wake(self.poke)
        if watchers is not None:  # subscribers see a change once it is durable in this store
            watchers.bind(store, lambda: core.last_seq)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="cloudqueue-driver")
        if self.run_cap is not None:
            self._stop_lag = SharedLagMonitor.subscribe(
                self._on_lag, lambda: bool(self._runs) or self.core.has_ready, self.clock)

    def _on_lag(self, lag_ms: float) -> None:
        assert self.run_cap is not None
        self.run_cap.observe(lag_ms)
        if self._apply_caps():
            self.poke()  # room for more runs

    def _apply_caps(self) -> bool:
        """Set the core's ``run_cap`` to the lower of the loop-lag cap and the host limit (None
        when neither holds runs below ``concurrency``); True if that made room."""
        before = self.core.run_cap
        caps = [rule.cap for rule in (self.run_cap,) if rule is not None]
        if self.host_limit is not None:
            caps.append(self.host_limit.limit)
        cap = min(caps, default=self.core.concurrency)
        self.core.run_cap = cap if cap < self.core.concurrency else None
        return before is not None and (self.core.run_cap is None or self.core.run_cap > before)

    def poke(self) -> None:
        self._wake.set()

    def poke_if_needed(self) -> None:
        """``poke``, unless the driver would have nothing new to do: no task can start (none is
        ready, or every slot is taken) and the core's next deadline is not earlier than the one
        the loop sleeps until. An enqueue of a delayed task, or one behind full slots, then
        costs no driver turn (a turn is ~20 us: tick, re-arm a timer)."""
        if self._wake.is_set():
            return
        if self.core.can_start:
            self._wake.set()
            return
        deadline = self.core.next_deadline_ms()
        if deadline is not None and (self._sleep_deadline is None
                                     or deadline < self._sleep_deadline):
            self._wake.set()

    @property
    def running_runs(self) -> int:
        return len(self._runs)

    @property
    def poked(self) -> bool:
        return self._wake.is_set()

    @property
    def idle(self) -> bool:
        """Nothing to do right now: no poke pending and every run finished."""
        return not self._wake.is_set() and not self._runs

    async def stop(self, grace_ms: int) -> None:
        """Stop ticking; give runs in flight ``grace_ms`` to finish, then cancel them (an
        unfinished run is handed back: on restart the log's recovery decides its fate)."""
        if self._runs and grace_ms > 0:
            await asyncio.wait(list(self._runs.values()), timeout=grace_ms / 1000)
        self._stopping = True
        self._wake.set()
        if self._stop_lag is not None:
            self._stop_lag()
            self._stop_lag = None
        for task in list(self._runs.values()):
            task.cancel()
        tasks = [t for t in [self._loop_task, *self._runs.values()] if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runs.clear()
        self._host_runs.clear()

    async def _loop(self) -> None:
        try:
            while not self._stopping:
                self._wake.clear()
                dispatch = (self.store.accepting and self.invoker.available
                            and self.store.holds_lease)
                self.execute(self.core.tick(self.clock.now_ms(), dispatch=dispatch))
                self._arm(self.core.next_deadline_ms())
                await self._wake.wait()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._sleep_deadline = None

    def _arm(self, deadline: int | None) -> None:
        """Make sure the loop wakes by ``deadline``. A timer already armed for an earlier time
        is kept: waking early costs one idle tick, while re-arming on every turn (each run moves
        the deadline to its own timeout) cost a timer created and cancelled per task."""
        if deadline is None or (self._sleep_deadline is not None
                                and self._sleep_deadline <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.clock.call_at(deadline, self._on_timer)
        self._sleep_deadline = deadline

    def _on_timer(self) -> None:
        self._timer = self._sleep_deadline = None
        self._wake.set()

    # ------------------------------------------------------------------ commands

    def execute(self, commands: Iterable[Command]) -> None:
        if not isinstance(commands, Sequence):  # (a failure's line looks ahead in them)
            commands = list(commands)
        for command in commands:
            if isinstance(command, Append):
                self._append(command, commands)
            elif isinstance(command, Invoke):
                self._runs[command.run_seq] = asyncio.create_task(self._run(command))
            elif isinstance(command, CancelRun):
                run = self._runs.pop(command.run_seq, None)
                if run is not None:
                    run.cancel()
                if self._host_runs:
                    self._host_answered(command.run_seq, host_error=True)  # no answer in time
            elif isinstance(command, TaskFinished):
                self._finished(command)

    def _append(self, append: Append, commands: Sequence[Command]) -> None:
        events = append.events
        self.store.append(events)
        if self.watchers:
            self.watchers.events(events)
        if self.metrics is not None:
            self.metrics.events(events)
        for event in events:
            if type(event) is RunFailed:
                self._log_failure(event, commands)

    async def _run(self, command: Invoke) -> None:
        try:
            if self.store.durable_seq < command.durable_seq:
                await self.store.wait_durable(command.durable_seq)
            if not self.store.holds_lease:  # another node may own the app by now: no call
                outcome: Outcome = Unavailable("this node's lease on the app lapsed before the "
                                               "call; nothing was sent")
            else:
                if self.host_limit is not None and self.invoker.at_host(command.function):
                    self._host_runs[command.run_seq] = (self.clock.monotonic_ms(),
                                                        self.host_limit.epoch)
                outcome = await self.invoker.invoke(command)
        except LogError:
            self._host_runs.pop(command.run_seq, None)
            return  # the store failed: nothing may run; the engine is failing closed
        except Exception as exc:  # an invoker bug: we cannot tell whether the function ran
            scrub = self.invoker.scrub  # the traceback may quote a secret (a URL, a key)
            log.error("invoker failed on %s run %d: %s", command.unique_id, command.run_seq,
                      scrub(traceback.format_exc()))
            outcome = Failed(scrub(f"internal error while running the task: {exc!r}"),
                             FailureKind.UNKNOWN)
        finally:
            if self._runs.get(command.run_seq) is asyncio.current_task():
                del self._runs[command.run_seq]
        if self._host_runs:  # (empty unless the host limit follows runs)
            self._host_answered(command.run_seq, host_error=_host_error(outcome))
        self._report(command, outcome)

    def _host_answered(self, run_seq: int, *, host_error: bool) -> None:
        """Tell the host limit how a run at the host went (a run it does not follow: nothing)."""
        started = self._host_runs.pop(run_seq, None)
        if started is None or self.host_limit is None:
            return
        started_ms, epoch = started
        self.host_limit.observe(self.clock.monotonic_ms() - started_ms, epoch=epoch,
                                in_flight=len(self._runs) + 1, host_error=host_error)
        self._apply_caps()  # the outcome's report pokes the driver next

    def _report(self, command: Invoke, outcome: Outcome) -> None:
        now_ms = self.clock.now_ms()
        uid, run_seq = command.unique_id, command.run_seq
        if isinstance(outcome, Succeeded):
            commands = self.core.run_succeeded(uid, run_seq, outcome.result, now_ms,
                                               outcome.status_code)
        elif isinstance(outcome, Failed):
            scrub, trace = self.invoker.scrub, outcome.traceback
            commands = self.core.run_failed(uid, run_seq, scrub(outcome.error), now_ms,
                                            outcome.kind, outcome.status_code,
                                            None if trace is None else scrub(trace))
        elif isinstance(outcome, Unavailable):
            commands = self.core.run_requeued(uid, run_seq, self.invoker.scrub(outcome.reason),
                                              now_ms)
        elif isinstance(outcome, Continued):
            commands = self.core.run_continued(uid, run_seq, outcome.checkpoint, now_ms)
        try:
            self.execute(commands)
        except LogError as exc:  # the store refuses: it failed closed and says why
            log.error("could not record the outcome of %s: %s", uid, exc)
        self.poke()

    def _log_failure(self, event: RunFailed, commands: Sequence[Command]) -> None:
        """The line for a failed run: WARNING if its task retries, ERROR if it failed for good
        (a ``TaskFinished`` among the same commands says so)."""
        uid = event.unique_id
        finished = _finished_task(commands, uid)
        task = finished or self.core.task(uid)
        if task is None or not task.runs:
            return
        run = task.runs[-1]  # a task's run ends at most once among one call's commands
        scrub = self.invoker.scrub
        fields: dict[str, Any] = {"app": self.name, "function": task.function, "uniqueId": uid,
                                  "attempt": run.attempt, "maxRuns": task.options.max_runs,
                                  "outcome": str(run.outcome), "error": scrub(event.error)}
        if event.traceback is not None:
            fields["traceback"] = scrub(event.traceback)
        app = f", app {self.name}" if self.name is not None else ""
        which = f"attempt {run.attempt} of {task.options.max_runs}"
        if finished is not None:
            runs_log.error("task %s (%s%s) failed for good on %s: %s", uid, task.function, app,
                           which, fields["error"], extra={"structured": fields})
        else:
            retry = task.retry_at_ms
            then = f"retry at {iso_ms(retry)}" if retry is not None else "will retry"
            runs_log.warning("task %s (%s%s): %s failed, %s: %s", uid, task.function, app,
                             which, then, fields["error"], extra={"structured": fields})

    # ------------------------------------------------------------------ waiters

    def wait_finished(self, unique_id: str) -> asyncio.Future[TaskInfo]:
        future: asyncio.Future[TaskInfo] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(unique_id, []).append(future)
        return future

    def drop_waiter(self, unique_id: str, future: asyncio.Future[TaskInfo]) -> None:
        waiters = self._waiters.get(unique_id)
        if waiters and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._waiters[unique_id]

    def _finished(self, finished: TaskFinished) -> None:
        """A task reached its final state: its waiters, its watchers and the metrics hear."""
        self._wake_waiters(finished)
        if self.watchers:
            self.watchers.finished(finished.info)
        if self.metrics is not None:
            self.metrics.task_finished(finished.task)

    def _wake_waiters(self, finished: TaskFinished) -> None:
        waiters = self._waiters.pop(finished.task.unique_id, None)
        if not waiters:
            return
        info = finished.info
        seq = self.core.last_seq
        if self.store.durable_seq >= seq:
            _resolve(waiters, info)
        else:
            asyncio.ensure_future(self._resolve_when_durable(seq, waiters, info))

    async def _resolve_when_durable(self, seq: int, waiters: list[asyncio.Future[TaskInfo]],
                                    info: TaskInfo) -> None:
        try:
            await self.store.wait_durable(seq)
        except LogError as exc:
            for future in waiters:
                if not future.done():
                    future.set_exception(exc)
            return
        _resolve(waiters, info)


def _finished_task(commands: Sequence[Command], unique_id: str) -> Task | None:
    """The task a ``TaskFinished`` among ``commands`` names, if one names ``unique_id``."""
    for command in commands:
        if isinstance(command, TaskFinished) and command.task.unique_id == unique_id:
            return command.task
    return None


def _host_error(outcome: Outcome) -> bool:
    """The host, not the function, failed the call: it was unreachable, or the invoker marked
    the failure (``Failed.host_error``)."""
    return isinstance(outcome, Unavailable) or (isinstance(outcome, Failed)
                                                and outcome.host_error)


def _resolve(waiters: list[asyncio.Future[TaskInfo]], info: TaskInfo) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(info)
