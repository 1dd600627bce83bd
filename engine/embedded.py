"""The embedded queue: ``Engine``, the API a Python service uses inside its own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from cloudqueue.engine.core.commands import Append, Command, TaskFinished
from cloudqueue.engine.core.cron import (
    CronExpr,
    check_interval,
    check_timezone,
    fire_times,
    parse_cron,
)
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.errors import (
    DiskFullError,
    EngineClosedError,
    LogError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.events import Event, ScheduleSkipped, TaskSubmitted
from cloudqueue.engine.core.options import (
    Limits,
    TaskOptions,
    check_function_name,
    check_params,
    parse_options,
)
from cloudqueue.engine.core.quotas import Quotas
from cloudqueue.engine.core.schedules import ScheduleInfo, ScheduleSpec, describe, parse_schedule
from cloudqueue.engine.core.task import TaskInfo, iso_ms
from cloudqueue.engine.runtime.clock import Clock, SystemClock
from cloudqueue.engine.runtime.driver import Driver
from cloudqueue.engine.runtime.functions import FunctionRegistry, Invoker
from cloudqueue.engine.runtime.ids import random_uuid
from cloudqueue.engine.runtime.log_file import (
    DEFAULT_SEGMENT_BYTES,
    FileOps,
    FsyncPolicy,
    LogNeedsRepairError,
    RecoveryReport,
)
from cloudqueue.engine.runtime.log_store import LogStore
from cloudqueue.engine.runtime.rebuild import rebuild
from cloudqueue.engine.runtime.store import MemoryStore, Store, StoreHooks, StoreOpener
from cloudqueue.engine.runtime.watchers import Watchers

log = logging.getLogger("cloudqueue")


class Engine:
    """A task queue in this process.

    Example::

        async with Engine() as queue:
            @queue.define
            async def add(params, ctx):
                return params["a"] + params["b"]

            uid = await queue.enqueue("add", {"a": 1, "b": 2}, attempts=3, backoff=1000)
            info = await queue.wait(uid)          # info.status == "success"
            assert info.result == {"result": 3}

    Args:
        concurrency: runs in flight at once (LeanCloud's default is 1).
        adaptive_concurrency: while the event loop lags (the process is overloaded), keep fewer
            runs in flight than ``concurrency`` so that enqueues are still acknowledged quickly;
            back up to ``concurrency`` as the lag clears (``engine/runtime/pacing.py``). Off by
            default here; ``cloudqueue serve`` turns it on.
        max_timeout_ms: the largest ``timeout`` a task may ask for.
        quotas: limits on enqueue (rate, per day, held); ``QuotaExceededError`` past them.
        timezone: the default zone of schedules (an IANA name).
        schedule_concurrency: give schedules' firings a concurrency group of their own, so a
            backlog of ordinary tasks cannot delay them (default: they share ``concurrency``).
        data_dir: keep tasks in a durable log in this directory (replayed on start). Without
            it (and without ``store``) tasks are kept in memory only.
        fsync: ``always`` (default: fsync before acknowledging), ``interval[:MS]`` or ``never``.
        segment_bytes: the log rotates to a new segment past this size.
        compact_bytes: snapshot and drop old segments once this much log was written since the
            last snapshot (default 4 segments).
        file_ops: the file layer under the log (tests inject faults through it).
        store: a custom ``Store`` instead of ``data_dir``.
        clock: time source (default: the system clock; tests pass a ``FakeClock``).
        invoker: runs tasks (default: the in-process functions registered with ``define``).
    """

    def __init__(self, *, concurrency: int = 1, max_timeout_ms: int = 600_000,
                 quotas: Quotas | None = None, timezone: str = "UTC",
                 schedule_concurrency: int | None = None,
                 data_dir: str | Path | None = None, fsync: str = "always",
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, compact_bytes: int | None = None,
                 file_ops: FileOps | None = None,
                 store: Store | None = None,
                 clock: Clock | None = None, invoker: Invoker | None = None,
                 adaptive_concurrency: bool = False) -> None:
        if data_dir is not None and store is not None:
            raise ValueError("give data_dir or store, not both")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.clock = clock or SystemClock()
        self.functions = FunctionRegistry()
        self.limits = Limits(max_timeout_ms=max_timeout_ms)
        self._no_options = parse_options({}, wire=False, limits=self.limits)
        self.timezone = check_timezone(timezone)
        if schedule_concurrency is not None and schedule_concurrency < 1:
            raise ValueError(f"schedule_concurrency must be >= 1, got {schedule_concurrency}")
        self.core = EngineCore(CoreConfig(concurrency=concurrency, limits=self.limits,
                                          quotas=quotas or Quotas(),
                                          schedule_concurrency=schedule_concurrency),
                               start_ms=self.clock.now_ms())
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._open_store: StoreOpener = (
            LogStore.opener(self.data_dir, policy=FsyncPolicy.parse(fsync),
                            segment_bytes=segment_bytes, ops=file_ops,
                            compact_bytes=compact_bytes or 4 * segment_bytes,
                            clock=self.clock)
            if self.data_dir is not None else MemoryStore.opener(store))
        self.store: Store = store or MemoryStore()
        self._invoker = invoker or self.functions
        self.functions.progress_sink = self._report_progress
        self.watchers = Watchers(self._info_or_none)
        self._adaptive = adaptive_concurrency
        self._driver = self._new_driver(self.store)
        self._state = "new"
        self.recovery: RecoveryReport | None = None
        self._compaction: asyncio.Future[None] | None = None
        self._compact_wanted = False

    def _new_driver(self, store: Store) -> Driver:
        return Driver(self.core, store, self.clock, self._invoker, self.watchers,
                      adaptive=self._adaptive)

    @property
    def run_cap(self) -> int:
        """Runs the engine lets be in flight right now: ``concurrency``, or less while adaptive
        concurrency holds runs back."""
        return self.core.run_limit

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"engine already {self._state}")
        await self._open()
        self._state = "running"
        await self._invoker.start()
        self.store.start()
        recovery = self.core.recover(self.clock.now_ms())
        for command in recovery:
            for event in command.events if isinstance(command, Append) else ():
                if isinstance(event, ScheduleSkipped):
                    log.warning("schedule %s: %d slot(s) missed while the queue was down were "
                                "skipped (atMostOnce), the last at %s", event.name,
                                event.skipped, iso_ms(event.last_slot_ms))
        self._driver.execute(recovery)
        self._driver.start()
        self._driver.poke()

    async def _open(self) -> None:
        # Loading builds hundreds of thousands of long-lived objects: cyclic GC passes over them
        # cost ~40% of replay and find nothing. Off while loading; afterwards freeze() moves them
        # out of every later collection too.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            await self._load()
        finally:
            if gc_was_enabled:
                gc.enable()
        gc.freeze()

    async def _load(self) -> None:
        """Open the store, and rebuild the core from the state it holds (``rebuild``)."""
        hooks = StoreHooks(self._roll_back_unstored, self._compact_soon)
        store, loaded = await asyncio.to_thread(self._open_store, hooks)
        started = time.perf_counter()
        try:
            rebuild(self.core, loaded.events, snapshot_seq=loaded.snapshot_seq,
                    snapshot_tasks=loaded.snapshot_tasks,
                    snapshot_schedules=loaded.snapshot_schedules, counters=loaded.counters)
        except BaseException as exc:
            await store.close()
            if isinstance(exc, LogNeedsRepairError) and self.data_dir is not None:
                exc.in_directory(self.data_dir)  # the repair command names this directory
            raise
        self.store = store
        self._driver = self._new_driver(store)
        if loaded.report is not None:
            loaded.report.apply_seconds = time.perf_counter() - started
            self.recovery = loaded.report
            log.info("%s: %s", self.data_dir, loaded.report.summary())

    @property
    def failure(self) -> LogError | None:
        """Why this engine cannot take work right now (its store failed closed, or is full),
        or None: what readiness reports."""
        return self.store.failure

    async def compact(self) -> int:
        """Snapshot the live state and drop the log segments it covers (also done on its own
        every ``compact_bytes`` of log). Returns the number of segments removed."""
        # the log folds the state at this seq from its own files, in a process of its own
        return await self.store.compact(self.core.last_seq)

    def _compact_soon(self) -> None:
        self._compact_wanted = True
        if self._compaction is None or self._compaction.done():
            self._compaction = asyncio.ensure_future(self._compact_logging_errors())

    async def _compact_logging_errors(self) -> None:
        while self._compact_wanted and self._state == "running":
            self._compact_wanted = False  # a compaction asked for while this one runs: next
            await self._compact_once()

    async def _compact_once(self) -> None:
        try:
            removed = await self.compact()
            log.info("compacted the log: %d segment(s) removed", removed)
        except LogError as exc:
            log.error("compaction failed: %s", exc)
        except OSError as exc:  # writing the snapshot (e.g. a full disk): the log goes on as is
            log.error("compaction failed writing the snapshot in %s: %s; the log goes on "
                      "uncompacted", self.data_dir, exc.strerror or exc)
        except Exception:  # a bug: said loudly, and the log goes on uncompacted
            log.exception("compaction of %s failed; the log goes on uncompacted", self.data_dir)

    def _roll_back_unstored(self, batch: list[Event]) -> list[Event]:
        """The disk filled up before ``batch`` (every event not yet written) was written:
        forget the tasks submitted in it (their callers get DiskFullError), drop every later
        event about them, and keep the rest for a retry."""
        # A schedule's firing has no caller to tell: it stays in the batch and is retried.
        submitted = {e.unique_id: e.seq for e in batch
                     if isinstance(e, TaskSubmitted) and e.schedule is None}
        for unique_id in submitted:
            self.core.forget(unique_id)
        return [e for e in batch
                if e.unique_id not in submitted or e.seq < submitted[e.unique_id]]

    async def close(self, grace_ms: int = 5_000) -> None:
        """Stop taking work, give runs in flight ``grace_ms`` to finish, flush and stop."""
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closing"
        await self._driver.stop(grace_ms)
        await self._invoker.close()
        if self._compaction is not None:
            await asyncio.gather(self._compaction, return_exceptions=True)
        await self.store.close()
        self.watchers.close()
        self._state = "closed"

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ functions

    def define(self, name: Any = None) -> Any:
        """Register an ``async def fn(params, ctx)``: ``@queue.define`` or
        ``@queue.define("name")``. Raising fails the run; returning a JSON value succeeds."""
        return self.functions.define(name)

    # ------------------------------------------------------------------ tasks

    async def enqueue(self, function: str, params: Any = None, **options: Any) -> str:
        """Queue a task; return its uniqueId once it is durable.

        Options (LeanCloud's, snake_case, durations in ms): ``attempts`` (retries; runs =
        attempts + 1; default 1), ``backoff`` (default 60000), ``delay`` (0), ``delivery_mode``
        ("atLeastOnce" | "atMostOnce"), ``keep_result`` (300000), ``priority`` (lower first;
        default the enqueue time), ``timeout`` (per run, default 15000), ``unique_id`` (1-32
        chars; default a random UUID).

        Raises:
            ValidationError: a bad option, function name or params; nothing is created.
            DuplicateTaskError: the uniqueId is held by a task (queued .. keepResult).
            EngineClosedError: the engine is not running.
            LogError: the store cannot make the task durable (nothing was acknowledged).
        """
        opts = parse_options(options, wire=False, limits=self.limits)
        check_function_name(function)
        if params is None:
            params = {}
        check_params(params)
        unique_id = self._submit_now(function, params, opts)
        seq = self.core.last_seq
        if self.store.durable_seq < seq:
            await self.store.wait_durable(seq)
        return unique_id

    async def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Queue many tasks at once, all or none; return their uniqueIds (in order) once every
        one is durable. They are one submission to the core and one group commit: one write and
        one fsync for the whole batch.

        Each item is a mapping: ``"function"``, optional ``"params"`` and any of ``enqueue``'s
        options by their Python names, e.g. ``{"function": "resize", "params": {"w": 64},
        "delay": 1_000, "unique_id": "resize-64"}``.

        Raises (nothing is created, nothing written; ``index`` on the error names the item):
            ValidationError: an item has a bad function name, params or option.
            DuplicateTaskError: an item's uniqueId is held by a task, or given to an earlier
                item of the same batch.
            QuotaExceededError: the batch as a whole would break a quota.
            EngineClosedError, LogError: as ``enqueue`` (after a ``DiskFullError`` none of the
                batch exists).
        """
        self._check_open()
        memo: dict[tuple[Any, ...], TaskOptions] = {}  # items tend to share their options
        batch = [self._validated_item(index, item, memo) for index, item in enumerate(items)]
        if not batch:
            return []
        commands = self.core.submit_many(batch, self.clock.now_ms())
        self._driver.execute(commands)
        self._driver.poke_if_needed()
        seq = self.core.last_seq
        if self.store.durable_seq < seq:
            await self.store.wait_durable(seq)
        return [item[0] for item in batch]

    def _validated_item(self, index: int, item: Mapping[str, Any],
                        memo: dict[tuple[Any, ...], TaskOptions]
                        ) -> tuple[str, str, Any, TaskOptions]:
        """(uniqueId, function, params, options) of one ``enqueue_many`` item."""
        try:
            if item.__class__ is not dict and not isinstance(item, Mapping):
                raise ValidationError(f"must be a mapping with \"function\", got "
                                      f"{type(item).__name__}", "function")
            function = check_function_name(item.get("function"))
            params = item.get("params")
            if params is None:
                params = {}
            check_params(params)
            options = self._item_options(item, memo)
        except ValidationError as exc:
            raise exc.at_item(index) from None
        return options.unique_id or random_uuid(), function, params, options

    def _item_options(self, item: Mapping[str, Any],
                      memo: dict[tuple[Any, ...], TaskOptions]) -> TaskOptions:
        if len(item) == ("function" in item) + ("params" in item):
            return self._no_options
        if "unique_id" in item:  # differs per item: nothing to share
            return parse_options({k: v for k, v in item.items()
                                  if k != "function" and k != "params"},
                                 wire=False, limits=self.limits)
        try:
            key = tuple([(k, v.__class__, v) for k, v in item.items()
                         if k != "function" and k != "params"])
            found = memo.get(key)
        except TypeError:  # an unhashable option value: parse_options says what is wrong
            key, found = (), None
        if found is None:
            found = parse_options({k: v for k, v in item.items()
                                   if k != "function" and k != "params"},
                                  wire=False, limits=self.limits)
            if key:
                memo[key] = found
        return found

    async def submit(self, function: str, params: Any, options: TaskOptions) -> str:
        """``enqueue`` for callers that validated already (the HTTP API): same guarantees."""
        unique_id = self._submit_now(function, params, options)
        seq = self.core.last_seq
        if self.store.durable_seq < seq:
            await self.store.wait_durable(seq)
        return unique_id

    def _submit_now(self, function: str, params: Any, options: TaskOptions) -> str:
        """Submit to the core and hand its records to the store; durability is the caller's
        to await (``core.last_seq``)."""
        self._check_open()
        unique_id = options.unique_id or random_uuid()
        commands = self.core.submit(unique_id, function, params, options, self.clock.now_ms())
        self._driver.execute(commands)
        self._driver.poke_if_needed()
        return unique_id

    async def get_task_info(self, unique_id: str) -> TaskInfo:
        """The task's state as durable in the log: when its latest change is not durable yet,
        waits until it is (at once when it already is), so a crash can never take back what a
        reader was shown. Raises ``UnknownTaskError`` for an unknown or expired uniqueId, and
        the store's ``LogError`` when that change will never be durable."""
        info, seq = self.core.task_info_at(unique_id, self.clock.now_ms())
        if self.store.durable_seq < seq:
            await self._until_durable(unique_id, seq)
        return info

    async def list_tasks(self, state: str | None = None,
                         limit: int = 100) -> tuple[list[TaskInfo], int]:
        """Up to ``limit`` tasks (in ``state``, when given), newest first, and how many there
        are; durable as ``get_task_info``'s."""
        tasks = [t for t in self.core.tasks() if state is None or t.state.value == state]
        shown = heapq.nlargest(limit, tasks, key=lambda t: t.seq)
        seq = max((t.changed_seq for t in shown), default=0)
        infos = [t.info() for t in shown]
        if self.store.durable_seq < seq:
            await self.store.wait_durable(seq)
        return infos, len(tasks)

    async def _until_durable(self, unique_id: str, seq: int) -> None:
        try:
            await self.store.wait_durable(seq)
        except DiskFullError:  # the disk filled before the task was stored: it never existed
            raise UnknownTaskError(unique_id) from None

    async def cancel(self, unique_id: str) -> TaskInfo:
        """Cancel a queued or retry-waiting task; returns its final info.

        Raises:
            UnknownTaskError: no such task.
            InvalidTransitionError: the task is running or already finished.
        """
        self._check_open()
        commands = self.core.cancel(unique_id, self.clock.now_ms())
        # the snapshot taken at the moment of cancelling: with keepResult 0 the task is gone now
        info = next(c.info for c in commands if isinstance(c, TaskFinished))
        self._driver.execute(commands)
        self._driver.poke()
        seq = self.core.last_seq
        if self.store.durable_seq < seq:
            await self.store.wait_durable(seq)
        return info

    async def wait(self, unique_id: str, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is final (success, failed or cancelled) and return its info.

        ``timeout`` is in seconds (asyncio's convention); raises ``TimeoutError`` when it passes.
        Like ``get_task_info``, it answers only once the final state is durable.
        """
        info, seq = self.core.task_info_at(unique_id, self.clock.now_ms())
        if info.state.is_final:
            if self.store.durable_seq < seq:
                await asyncio.wait_for(self._until_durable(unique_id, seq), timeout)
            return info
        future = self._driver.wait_finished(unique_id)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self._driver.drop_waiter(unique_id, future)

    def report_progress(self, unique_id: str, run_seq: int, report: dict[str, Any]) -> None:
        """Progress for run ``run_seq`` of a task (from a function host; in-process functions use
        ``ctx.progress``). Raises ``StaleRunError`` if that run is not the current one."""
        self._report_progress(unique_id, run_seq, report)

    def run_checkpoint(self, unique_id: str, run_seq: int) -> tuple[Any, int]:
        """``(checkpoint, slice)`` for run ``run_seq`` of a task: what a function host fetches
        when the checkpoint cannot ride in the params. Raises ``StaleRunError`` if that run is
        not the current one."""
        return self.core.run_checkpoint(unique_id, run_seq)

    def _report_progress(self, unique_id: str, run_seq: int, report: dict[str, Any]) -> None:
        commands = self.core.report_progress(unique_id, run_seq, report, self.clock.now_ms())
        if not commands:  # held for its window: watchers still see it now
            self.watchers.notify(unique_id, "progress")
        self._driver.execute(commands)
        self._driver.poke()  # a report held for its window gives the driver a new deadline

    def watch(self, unique_id: str) -> AsyncIterator[dict[str, Any]]:
        """Live updates of a task: first ``{"type": "state", "task": ...}``, then ``queued``,
        ``running``, ``progress``, ``retry``, ``continued``, and a last ``finished``. A slow
        reader misses intermediate updates, never the latest; raises ``UnknownTaskError``."""
        self.core.task_info(unique_id, self.clock.now_ms())
        return self.watchers.subscribe(unique_id)

    def _info_or_none(self, unique_id: str) -> TaskInfo | None:
        try:
            return self.core.task_info(unique_id, self.clock.now_ms())
        except UnknownTaskError:
            return None

    # ------------------------------------------------------------------ schedules

    async def set_schedule(self, name: str, function: str, params: Any = None, *,
                           cron: str | None = None, interval: int | None = None,
                           timezone: str | None = None, paused: bool = False,
                           **options: Any) -> ScheduleInfo:
        """Create or replace the schedule ``name``: ``cron`` (LeanCloud's six fields, seconds
        first) or ``interval`` (ms), in ``timezone`` (default: the engine's). Task options for
        each firing: attempts, backoff, delivery_mode, timeout, keep_result. Each firing is a
        task with uniqueId ``cron:<name>:<slot_ms>`` and priority the slot time."""
        self._check_open()
        values = {"function": function, "params": params, "cron": cron, "interval": interval,
                  "timezone": timezone, "paused": paused, **options}
        spec = parse_schedule(name, {k: v for k, v in values.items() if v is not None},
                              wire=False, default_timezone=self.timezone, limits=self.limits)
        return await self._schedule_change(name, self.core.set_schedule(spec, self.clock.now_ms()))

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        self._check_open()
        return await self._schedule_change(
            name, self.core.pause_schedule(name, True, self.clock.now_ms()))

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Resume from now: slots missed while paused are not caught up."""
        self._check_open()
        return await self._schedule_change(
            name, self.core.pause_schedule(name, False, self.clock.now_ms()))

    async def delete_schedule(self, name: str) -> None:
        self._check_open()
        await self._durable(self.core.delete_schedule(name, self.clock.now_ms()))

    async def get_schedule(self, name: str, upcoming: int = 5) -> ScheduleInfo:
        """Raises ``UnknownScheduleError``. Durable as ``get_task_info``'s answer."""
        found = describe(self.core.schedule(name), upcoming)
        await self._everything_durable()
        return found

    async def list_schedules(self, upcoming: int = 1) -> list[ScheduleInfo]:
        found = [describe(schedule, upcoming) for schedule in self.core.schedules()]
        await self._everything_durable()
        return found

    async def _everything_durable(self) -> None:
        """Wait until every change made so far is durable (at once when it is): schedules keep
        no seq of their own, and change rarely."""
        seq = self.core.last_seq
        if self.store.durable_seq < seq:
            with contextlib.suppress(DiskFullError):  # refused and rolled back: not shown
                await self.store.wait_durable(seq)

    async def set_schedule_spec(self, spec: ScheduleSpec) -> ScheduleInfo:
        """``set_schedule`` for callers that validated already (the HTTP API)."""
        self._check_open()
        return await self._schedule_change(spec.name,
                                           self.core.set_schedule(spec, self.clock.now_ms()))

    def preview_schedule(self, *, cron: str | None = None, interval: int | None = None,
                         timezone: str | None = None, from_ms: int | None = None,
                         count: int = 5) -> list[int]:
        """The next ``count`` fire times strictly after ``from_ms`` (default now); an interval
        counts from ``from_ms``. Raises ``ValidationError``."""
        if (cron is None) == (interval is None):
            raise ValidationError("give exactly one of cron (an expression) or interval (ms)",
                                  "cron")
        start = self.clock.now_ms() if from_ms is None else from_ms
        zone = check_timezone(timezone or self.timezone)
        spec: CronExpr | int = parse_cron(cron) if cron is not None else check_interval(
            interval)  # type: ignore[arg-type]
        return fire_times(spec, zone, start, count, anchor_ms=start)

    async def _schedule_change(self, name: str, commands: list[Command]) -> ScheduleInfo:
        await self._durable(commands)
        return describe(self.core.schedule(name), 5)

    async def _durable(self, commands: list[Command]) -> None:
        self._driver.execute(commands)
        self._driver.poke()
        seq = self.core.last_seq
        if self.store.durable_seq < seq:
            await self.store.wait_durable(seq)

    # ------------------------------------------------------------------ tests and tools

    @property
    def idle(self) -> bool:
        return self._driver.idle and self.store.durable_seq >= self.core.last_seq

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Let the driver, in-flight runs and the log proceed until nothing more happens without
        the clock moving (for tests with a ``FakeClock``): no poke pending, everything durable,
        no log IO or compaction in flight, and no event, run or durability change for several
        loop turns. Waits for real IO (an fsync) rather than spinning; a run blocked on
        something outside counts as settled. Raises ``TimeoutError`` after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            quiet, last = 0, None
            while quiet < 5:
                if self.store.durable_seq < self.core.last_seq and self.store.failure is None:
                    await self.store.wait_durable(self.core.last_seq)
                elif self.store.busy:
                    await asyncio.sleep(0.001)  # IO in a worker thread: nothing to await here
                else:
                    await asyncio.sleep(0)
                mark = (self.core.last_seq, self.store.durable_seq, self._driver.running_runs)
                calm = (not self._driver.poked and mark == last
                        and (self.store.durable_seq >= self.core.last_seq
                             or self.store.failure is not None)
                        and not self.store.busy
                        and (self._compaction is None or self._compaction.done()))
                quiet = quiet + 1 if calm else 0
                last = mark

    def _check_open(self) -> None:
        if self._state != "running":
            raise EngineClosedError(f"the engine is {self._state}; it takes no new tasks")
        failure = self.store.failure
        if failure is not None:
            raise failure
