"""The embedded queue: ``Engine``, the API a Python service uses inside its own event loop.

A facade over parts put together once (``engine.assembly``, from an ``EngineConfig``); policies
live with what they govern (``runtime.compaction``, ``runtime.disk_full``, ``core.batch_items``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Unpack

from cloudqueue.engine.assembly import (
    build_core,
    build_driver,
    log_recovery,
    open_and_replay,
    store_opener,
)
from cloudqueue.engine.config import EngineConfig, EngineOptions
from cloudqueue.engine.core.actions import (
    EMBEDDED,
    MAX_AUDIT,
    MAX_BULK,
    Actor,
    AuditEntry,
    BulkAction,
    BulkResult,
    DispatchState,
    TaskFilter,
    bulk_filter,
)
from cloudqueue.engine.core.batch_items import Item, parse_batch, parse_each
from cloudqueue.engine.core.commands import Command, TaskFinished
from cloudqueue.engine.core.cron import CronExpr, check_interval, check_timezone, parse_cron
from cloudqueue.engine.core.cron_next import fire_times
from cloudqueue.engine.core.errors import (
    DiskFullError,
    EngineClosedError,
    EngineError,
    LogError,
    QuotaExceededError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.options import (
    Limits,
    TaskOptions,
    check_function_name,
    check_params,
    parse_options,
)
from cloudqueue.engine.core.schedules import ScheduleInfo, ScheduleSpec, describe, parse_schedule
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import Task, TaskInfo, unpacked
from cloudqueue.engine.core.waiting import TaskDetail
from cloudqueue.engine.queue import TaskPage, parse_cursor, task_filter
from cloudqueue.engine.runtime.clock import Clock, SystemClock
from cloudqueue.engine.runtime.compaction import CompactionSchedule
from cloudqueue.engine.runtime.defined import Handler, defined_in
from cloudqueue.engine.runtime.disk_full import roll_back_unstored
from cloudqueue.engine.runtime.driver import Driver
from cloudqueue.engine.runtime.functions import FunctionRegistry, Invoker, Routed
from cloudqueue.engine.runtime.host_limit import HostLimit
from cloudqueue.engine.runtime.ids import random_uuid
from cloudqueue.engine.runtime.log_file import RecoveryReport
from cloudqueue.engine.runtime.metrics import EngineMetrics
from cloudqueue.engine.runtime.postgres.urls import is_database_url
from cloudqueue.engine.runtime.store import (
    AsyncStoreOpener,
    MemoryStore,
    Store,
    StoreHooks,
    StoreOpener,
)
from cloudqueue.engine.runtime.watchers import Watchers

if TYPE_CHECKING:  # (the database's driver loads only when an engine uses one)
    from cloudqueue.engine.runtime.postgres.sole import Joined


class Engine:
    """A task queue in this process; it implements the ``Queue`` protocol.

    Example::

        async with Engine() as queue:
            @queue.define
            async def add(params, run):
                return params["a"] + params["b"]

            uid = await queue.enqueue("add", {"a": 1, "b": 2}, attempts=3, backoff=1000)
            info = await queue.wait(uid, timeout=10_000)   # info.result == {"result": 3}

    ``config`` is an ``EngineConfig``, or its fields come as keywords (``EngineConfig.of``:
    ``concurrency``, ``data_dir``, ``fsync``, ...). ``store``: a custom ``Store`` instead of
    ``data_dir``, or a PostgreSQL URL (``"postgresql://user@host/db"``): the engine then keeps
    its tasks in that database, as a node holding its app's lease (its ``name``, else
    "default"), shared with ``cloudqueue serve --store`` nodes (docs/multinode.md);
    ``opener``: how the engine gets its store at start, instead of either (the server's
    nodes); ``clock``: default the system clock (tests pass a ``FakeClock``); ``invoker``:
    runs tasks (default: the in-process functions registered with ``define``).
    """

    def __init__(self, config: EngineConfig | None = None, *, store: Store | str | None = None,
                 clock: Clock | None = None, invoker: Invoker | None = None,
                 opener: StoreOpener | AsyncStoreOpener | None = None,
                 **options: Unpack[EngineOptions]) -> None:
        if config is not None and options:
            raise TypeError("give an EngineConfig or its fields as keywords, not both")
        self.config = config = config or EngineConfig.of(**options)
        self.clock = clock or SystemClock()
        self.database_url: str | None = None  # Engine(store="postgresql://..."): joined at start
        self._joined: Joined | None = None
        if isinstance(store, str):
            if not is_database_url(store):
                raise ValueError(f"store must be a Store or a postgresql:// URL, got {store!r}")
            if config.data_dir is not None:
                raise ValueError("give data_dir or store, not both")
            self.database_url, store = store, None
        self._open_store: StoreOpener | AsyncStoreOpener = (
            opener or store_opener(config, store, self.clock))
        self.functions = FunctionRegistry()
        self.limits = Limits(max_timeout_ms=config.max_timeout_ms)
        self.timezone = config.timezone
        self.data_dir = config.data_dir
        self.core = build_core(config, self.limits, self.clock.now_ms())
        self.store: Store = store or MemoryStore()
        # functions defined here run here; others go to ``invoker`` (a function host), if any
        self._invoker = self.functions if invoker is None else Routed(self.functions, invoker)
        self.functions.progress_sink = self.report_progress
        self.functions.limit_sink = self._set_function_limit
        self.watchers = Watchers(self._info_or_none)
        # what the engine counts for GET /metrics (None with EngineConfig(metrics=False))
        self.metrics = EngineMetrics(self.core) if config.metrics else None
        self._driver = build_driver(config, self.core, self.store, self.clock, self._invoker,
                                    self.watchers, self.metrics)
        self._state = "new"
        self.recovery: RecoveryReport | None = None
        self._froze_heap = False  # open_and_replay froze the heap: close unfreezes it
        self.compaction = CompactionSchedule(self.compact, lambda: self._state == "running",
                                             self.data_dir)

    @property
    def driver(self) -> Driver:  # (``cloudqueue.testing.settle`` watches it)
        return self._driver

    @property
    def has_function_host(self) -> bool:
        """Tasks of functions not registered here go to another invoker (a function host)."""
        return self._invoker is not self.functions

    @property
    def run_cap(self) -> int:
        """Runs the engine lets be in flight right now: ``concurrency``, or less while adaptive
        concurrency (the loop-lag cap or the host limit) holds runs back."""
        return self.core.run_limit

    @property
    def host_limit(self) -> HostLimit | None:
        """With ``host_concurrency="adaptive"``, the rule that sets how many runs the function
        host gets (read it: ``limit``, ``baseline_ms``, ``latency_ms``, ``host_errors``,
        ``backoffs``); None otherwise."""
        return self._driver.host_limit

    @property
    def host_available(self) -> bool | None:
        """Whether the function host answers (False while dispatch is paused and the host is
        probed); None without a function host."""
        return None if self._invoker is self.functions else self._invoker.available

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"engine already {self._state}")
        hooks = StoreHooks(lambda batch: roll_back_unstored(self.core, batch),
                           self.compaction.soon)
        if self.database_url is not None:  # a node of its one app: wait for the app's lease
            from cloudqueue.engine.runtime.postgres.node import NodeOptions
            from cloudqueue.engine.runtime.postgres.sole import DEFAULT_APP, join
            self._joined = await join(self.database_url, self.config.name or DEFAULT_APP,
                                      self.clock, options=NodeOptions.of(self.config.lease_ms))
            self._joined.opener.lease.on_valid = lambda: self._driver.poke()
            self._joined.holder.on_lost = self.lease_lost
            self._open_store = self._joined.opener
        try:
            opened = await open_and_replay(self._open_store, hooks, self.core, self.config)
        except BaseException:
            await self._leave_database()
            raise
        self.store, self.recovery = opened.store, opened.report
        self._froze_heap = opened.froze_heap
        self._driver = build_driver(self.config, self.core, self.store, self.clock,
                                    self._invoker, self.watchers, self.metrics)
        self._state = "running"
        await self._invoker.start()
        self.store.start()
        recovery = self.core.recover(self.clock.now_ms(), failover=opened.failover)
        log_recovery(recovery)
        self._driver.execute(recovery)
        self._driver.start()
        self._driver.poke()

    def lease_lost(self) -> None:
        """Another node took this engine's app over: fail closed (``PgStore.fence``), nothing
        more written or started. (A store that has no lease: nothing to do.)"""
        fence = getattr(self.store, "fence", None)
        if fence is not None:
            fence()

    async def _leave_database(self) -> None:
        if self._joined is not None:
            joined, self._joined = self._joined, None
            await joined.leave()

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

    async def close(self, grace_ms: int = 5_000) -> None:
        """Stop taking work, give runs in flight ``grace_ms`` to finish, flush and stop."""
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closing"
        await self._driver.stop(grace_ms)
        await self._invoker.close()
        await self.compaction.finish()
        await self.store.close()
        await self._leave_database()
        self.watchers.close()
        self._state = "closed"
        # Frozen objects are never collected, and the engine's own (its core, its driver) were
        # frozen at start (open_and_replay): left frozen, their reference cycles would keep
        # every task this engine held alive until the process ends. Not so for an engine that
        # opened a shared store: it froze nothing, and unfreezing the server's heap (what its
        # HeapFreezer froze) would make the next collection walk all of it, for seconds.
        if self._froze_heap:
            gc.unfreeze()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ functions

    def define(self, name: Any = None) -> Any:
        """Register an ``async def fn(params, run)`` (``run`` is a ``RunContext``):
        ``@queue.define`` or ``@queue.define("name")``. Raising fails the run; returning a JSON
        value succeeds; returning ``run.continue_with(checkpoint)`` runs it again from there."""
        return self.functions.define(name)

    def _set_function_limit(self, function: str, limit: int | None) -> None:
        self.core.set_function_limit(function, limit)
        if self._state == "running":
            self._driver.poke()  # a higher limit (or none) may let runs start now

    def register(self, *items: ModuleType | Handler) -> None:
        """Register functions declared with ``cloudqueue.define``: each item a module (all it
        declares) or a function. Raises ``ConfigError`` (a module declaring none, two functions
        of one name)."""
        for declared in defined_in(items):
            self.functions.add(declared)

    # ------------------------------------------------------------------ tasks

    async def enqueue(self, function: str, params: Any = None, **options: Any) -> str:
        """Queue a task; return its uniqueId once it is durable.

        Options (LeanCloud's, snake_case, durations in ms): ``attempts`` (retries; runs =
        attempts + 1; default 1), ``backoff`` (default 60000; ``backoff_type`` "fixed" or
        "exponential", capped at ``backoff_max``, default 3600000), ``delay`` (0), ``delivery_mode``
        ("atLeastOnce" | "atMostOnce"), ``keep_result`` (300000), ``priority`` (lower first;
        default the enqueue time), ``timeout`` (per run, default 15000), ``unique_id`` (1-32
        chars; default a random UUID).

        Raises ``ValidationError`` (a bad option, function name or params; nothing is created),
        ``DuplicateTaskError`` (the uniqueId is held by a task, queued .. keepResult),
        ``EngineClosedError``, or the store's ``LogError`` (nothing was acknowledged).
        """
        opts = parse_options(self.functions.with_defaults(function, options), wire=False,
                             limits=self.limits)
        check_function_name(function)
        if params is None:
            params = {}
        check_params(params)
        return await self.submit(function, params, opts)

    async def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Queue many tasks at once, all or none; return their uniqueIds (in order) once every
        one is durable. They are one submission to the core and one group commit: one write and
        one fsync for the whole batch.

        Each item is a mapping: ``"function"``, optional ``"params"`` and any of ``enqueue``'s
        options by their Python names, e.g. ``{"function": "resize", "params": {"w": 64},
        "delay": 1_000, "unique_id": "resize-64"}``.

        All or nothing (``index`` on the error names the item): ``ValidationError`` (a bad
        item), ``DuplicateTaskError`` (a uniqueId held, or given to an earlier item too),
        ``QuotaExceededError`` (the batch as a whole), ``EngineClosedError`` and ``LogError`` as
        ``enqueue`` (after a ``DiskFullError`` none of the batch exists).
        """
        self._check_open()
        batch = parse_batch(self._with_defaults(items), self.limits, random_uuid)
        return await self.submit_many(batch)

    async def enqueue_each(self, items: Iterable[Mapping[str, Any]]) -> list[str | EngineError]:
        """Queue many tasks at once, each on its own: in each item's place, its uniqueId or why
        it was refused (a ``ValidationError`` or ``DuplicateTaskError``, ``index`` naming the
        item). Every task accepted is durable before this returns; they are one group commit.
        Items as ``enqueue_many``'s.

        Raises (nothing accepted then): ``QuotaExceededError`` (the accepted items together
        would break a quota), ``EngineClosedError`` and ``LogError`` as ``enqueue``.
        """
        self._check_open()
        return await self.submit_each(parse_each(self._with_defaults(items), self.limits,
                                                 random_uuid))

    async def submit_many(self, batch: Sequence[Item]) -> list[str]:
        """``enqueue_many`` for callers that validated already (the HTTP API): same
        guarantees."""
        self._check_open()
        if not batch:
            return []
        started = self._taking()
        try:
            commands = self.core.submit_many(batch, self.clock.now_ms())
        except QuotaExceededError as exc:
            self._quota_rejected(exc)
            raise
        await self._apply(commands, poke=False)
        self._acknowledged(started)
        return [item[0] for item in batch]

    async def submit_each(self, batch: Sequence[Item | EngineError]) -> list[str | EngineError]:
        """``enqueue_each`` for callers that validated already (the HTTP API): an item that is
        an error stays in its place; the others are submitted as ``enqueue_each`` does."""
        self._check_open()
        valid = [item for item in batch if not isinstance(item, EngineError)]
        indexes = [i for i, item in enumerate(batch) if not isinstance(item, EngineError)]
        started = self._taking()
        try:
            commands, refused = self.core.submit_each(valid, self.clock.now_ms(), indexes)
        except QuotaExceededError as exc:
            self._quota_rejected(exc)
            raise
        if commands:
            await self._apply(commands, poke=False)
            self._acknowledged(started)
        answers = iter([item[0] if why is None else why
                        for item, why in zip(valid, refused, strict=True)])
        return [item if isinstance(item, EngineError) else next(answers) for item in batch]

    async def submit(self, function: str, params: Any, options: TaskOptions) -> str:
        """``enqueue`` for callers that validated already (the HTTP API): same guarantees."""
        self._check_open()
        metrics = self.metrics
        started = self.clock.monotonic_ms() if metrics is not None else 0.0
        unique_id = options.unique_id or random_uuid()
        try:
            commands = self.core.submit(unique_id, function, params, options,
                                        self.clock.now_ms())
        except QuotaExceededError as exc:
            self._quota_rejected(exc)
            raise
        await self._apply(commands, poke=False)
        if metrics is not None:
            metrics.ack.observe((self.clock.monotonic_ms() - started) / 1000)
        return unique_id

    async def get_task_info(self, unique_id: str) -> TaskInfo:
        """The task's state as durable in the log (waits for its latest change to be), so a
        crash never takes back what a reader was shown. Raises ``UnknownTaskError`` (unknown or
        expired), or the store's ``LogError`` when that change will never be durable."""
        info, seq = self.core.task_info_at(unique_id, self.clock.now_ms())
        if self.store.durable_seq < seq:
            await self._until_durable(unique_id, seq)
        return info

    async def list_tasks(self, state: TaskState | str | None = None,
                         limit: int = 100, *, status: str | None = None,
                         function: str | None = None, created_from: int | None = None,
                         created_to: int | None = None, cursor: str | None = None) -> TaskPage:
        """Up to ``limit`` tasks newest first, how many match, and the next page's cursor;
        durable as ``get_task_info``'s. ``state`` filters by the detailed state (``queued`` is
        only tasks waiting for a slot); ``status`` by LeanCloud's three-valued one (``queued``
        is every unfinished task, ``retry_wait`` and ``running`` included); ``function`` and
        ``created_from``/``created_to`` (epoch ms, from inclusive) narrow it. The count comes
        from the numbers the queue keeps by state as it works: with a function or a time in
        the filter it is None. ``cursor``: the ``next`` of the page before, same filter. Raises
        ``ValidationError`` for state and status at once, an unknown value or a bad cursor."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be a whole number from 1, got {limit!r}",
                                  "limit")
        by_state = task_filter(state, status)
        below = parse_cursor(cursor)
        narrowed = function is not None or created_from is not None or created_to is not None
        if narrowed:
            low = created_from if created_from is not None else -2 ** 63
            high = created_to if created_to is not None else 2 ** 63

            def keep(task: Task) -> bool:
                return (by_state(task.state) and (function is None or task.function == function)
                        and low <= task.created_ms < high)
        else:
            def keep(task: Task) -> bool:
                return by_state(task.state)
        shown, more = self.core.page(keep, limit, below)
        counts = self.core.tasks_by_state()
        total = None if narrowed else sum(n for s, n in counts.items() if by_state(s))
        seq = max((t.changed_seq for t in shown), default=0)
        infos = [self.core.info(t) for t in shown]
        if self.store.durable_seq < seq:
            await self.store.wait_durable(seq)
        return TaskPage(infos, total, None if more is None else str(more))

    async def inspect(self, unique_id: str) -> TaskDetail:
        """The task's info (durable, as ``get_task_info``'s), its params and options, and why
        it waits if it does (``engine.core.waiting``). Raises ``UnknownTaskError``."""
        info = await self.get_task_info(unique_id)
        task = self.core.task(unique_id)
        if task is None:  # (purged while its info became durable)
            raise UnknownTaskError(unique_id)
        waiting = self.core.waiting(unique_id, self.clock.now_ms(), self.host_available)
        return TaskDetail(info, unpacked(task.params), task.options, waiting)

    async def _until_durable(self, unique_id: str, seq: int) -> None:
        try:
            await self.store.wait_durable(seq)
        except DiskFullError:  # the disk filled before the task was stored: it never existed
            raise UnknownTaskError(unique_id) from None

    async def cancel(self, unique_id: str, *, actor: Actor | None = None) -> TaskInfo:
        """Cancel a queued or retry-waiting task; returns its final info. An operator action:
        logged with ``actor`` (default ``embedded``) in the audit list. Raises
        ``UnknownTaskError``, or ``InvalidTransitionError`` (running or already finished)."""
        self._check_open()
        commands = self.core.cancel(unique_id, self.clock.now_ms(), actor or EMBEDDED)
        # the snapshot taken at the moment of cancelling: with keepResult 0 the task is gone now
        info = next(c.info for c in commands if isinstance(c, TaskFinished))
        await self._apply(commands)
        return info

    # ------------------------------------------------------------------ operator actions

    async def retry(self, unique_id: str, *, actor: Actor | None = None) -> TaskInfo:
        """Queue a failed or cancelled task again, now: fresh runs (attempt 0), the same
        uniqueId, params and options; its info once durable. Raises ``UnknownTaskError``, or
        ``InvalidTransitionError`` (a task not finished, or one that succeeded)."""
        return await self._on_task(unique_id, self.core.retry, actor)

    async def run_now(self, unique_id: str, *, actor: Actor | None = None) -> TaskInfo:
        """Make a task waiting for its ``delay`` or for its retry ready at once (it starts when
        a slot is free; a restart does not bring the wait back). Raises ``UnknownTaskError``,
        or ``InvalidTransitionError`` (a task waiting for neither)."""
        return await self._on_task(unique_id, self.core.run_now, actor)

    async def _on_task(self, unique_id: str, act: Any, actor: Actor | None) -> TaskInfo:
        self._check_open()
        now_ms = self.clock.now_ms()
        commands = act(unique_id, now_ms, actor or EMBEDDED)
        info = self.core.task_info(unique_id, now_ms)
        await self._apply(commands)
        return info

    async def pause(self, *, actor: Actor | None = None) -> DispatchState:
        """Pause dispatch: no run starts (runs in flight finish; timers still fire; enqueues
        are still accepted and durable) until ``resume``, across restarts too."""
        return await self._set_paused(True, actor)

    async def resume(self, *, actor: Actor | None = None) -> DispatchState:
        return await self._set_paused(False, actor)

    async def _set_paused(self, paused: bool, actor: Actor | None) -> DispatchState:
        self._check_open()
        await self._apply(self.core.set_paused(paused, self.clock.now_ms(), actor or EMBEDDED))
        return self.core.dispatch_state()

    async def dispatch_state(self) -> DispatchState:
        """Whether dispatch is paused, and since when (durable, as ``get_task_info``'s)."""
        found = self.core.dispatch_state()
        await self._everything_durable()
        return found

    async def retry_tasks(self, *, state: Any = None, function: str | None = None,
                          created_from: int | None = None, created_to: int | None = None,
                          dry_run: bool = False, limit: int = MAX_BULK,
                          actor: Actor | None = None) -> BulkResult:
        """``retry`` every failed or cancelled task the filter takes: ``state`` (one or a list
        of failed, cancelled; default both), ``function``, created at or after
        ``created_from`` and before ``created_to`` (epoch ms); oldest first, at most ``limit``
        (and ``MAX_BULK``) in one write. ``dry_run``: change nothing, count what would change.
        Raises ``ValidationError`` for a bad filter."""
        return await self.bulk(BulkAction.RETRY, bulk_filter(
            BulkAction.RETRY, state, function, created_from, created_to), dry_run=dry_run,
            limit=limit, actor=actor)

    async def cancel_tasks(self, *, state: Any = None, function: str | None = None,
                           created_from: int | None = None, created_to: int | None = None,
                           dry_run: bool = False, limit: int = MAX_BULK,
                           actor: Actor | None = None) -> BulkResult:
        """``cancel`` every queued or retry-waiting task the filter takes (as
        ``retry_tasks``'s; ``state`` among queued, retry_wait)."""
        return await self.bulk(BulkAction.CANCEL, bulk_filter(
            BulkAction.CANCEL, state, function, created_from, created_to), dry_run=dry_run,
            limit=limit, actor=actor)

    async def purge_tasks(self, *, state: Any = None, function: str | None = None,
                          created_from: int | None = None, created_to: int | None = None,
                          dry_run: bool = False, limit: int = MAX_BULK,
                          actor: Actor | None = None) -> BulkResult:
        """Forget every finished task the filter takes (as ``retry_tasks``'s; ``state`` among
        success, failed, cancelled): gone as when its keepResult ends, its uniqueId free."""
        return await self.bulk(BulkAction.PURGE, bulk_filter(
            BulkAction.PURGE, state, function, created_from, created_to), dry_run=dry_run,
            limit=limit, actor=actor)

    async def bulk(self, action: BulkAction, chosen: TaskFilter, *, dry_run: bool = False,
                   limit: int = MAX_BULK, actor: Actor | None = None) -> BulkResult:
        """``retry_tasks``, ``cancel_tasks`` or ``purge_tasks`` with a filter built already
        (the HTTP API); durable when it returns."""
        self._check_open()
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_BULK:
            raise ValidationError(f"limit must be a whole number from 1 to {MAX_BULK}, got "
                                  f"{limit!r}", "limit")
        commands, result = self.core.bulk(action, chosen, self.clock.now_ms(),
                                          actor or EMBEDDED, dry_run=dry_run, limit=limit)
        if commands:
            await self._apply(commands)
        else:
            await self._everything_durable()
        return result

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        """The last ``limit`` (1 to 200) operator actions, newest first: who, what, on which
        task or filter, how many, when (durable, as ``get_task_info``'s)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_AUDIT:
            raise ValidationError(f"limit must be a whole number from 1 to {MAX_AUDIT}, got "
                                  f"{limit!r}", "limit")
        found = self.core.audit(limit)
        await self._everything_durable()
        return found

    async def wait(self, unique_id: str, timeout: int | None = None) -> TaskInfo:
        """The task's info once it is final (success, failed or cancelled) and durable;
        ``TimeoutError`` after ``timeout`` ms (None: no limit)."""
        seconds = None if timeout is None else timeout / 1000
        info, seq = self.core.task_info_at(unique_id, self.clock.now_ms())
        if info.state.is_final:
            if self.store.durable_seq < seq:
                await asyncio.wait_for(self._until_durable(unique_id, seq), seconds)
            return info
        future = self._driver.wait_finished(unique_id)
        try:
            return await asyncio.wait_for(asyncio.shield(future), seconds)
        finally:
            self._driver.drop_waiter(unique_id, future)

    def run_checkpoint(self, unique_id: str, run_seq: int) -> tuple[Any, int]:
        """``(checkpoint, slice)`` for run ``run_seq`` of a task: what a function host fetches
        when the checkpoint cannot ride in the params. Raises ``StaleRunError`` if that run is
        not the current one."""
        return self.core.run_checkpoint(unique_id, run_seq)

    def report_progress(self, unique_id: str, run_seq: int, report: dict[str, Any]) -> None:
        """Progress for run ``run_seq`` of a task (from a function host; in-process functions use
        ``run.progress``). Raises ``StaleRunError`` if that run is not the current one."""
        commands = self.core.report_progress(unique_id, run_seq, report, self.clock.now_ms())
        if not commands:  # held for its window: watchers still see it now
            self.watchers.notify(unique_id, "progress")
        self._driver.execute(commands)
        self._driver.poke()  # a report held for its window gives the driver a new deadline

    def watch(self, unique_id: str) -> AsyncIterator[tuple[str, TaskInfo]]:
        """Live updates of a task as ``(type, info)``: first ``state``, then ``queued``,
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
        each firing: attempts, backoff, backoff_type, backoff_max, delivery_mode, timeout,
        keep_result. Each firing is a
        task with uniqueId ``cron:<name>:<slot_ms>`` and priority the slot time."""
        values = {"function": function, "params": params, "cron": cron, "interval": interval,
                  "timezone": timezone, "paused": paused, **options}
        self._check_open()
        spec = parse_schedule(name, {k: v for k, v in values.items() if v is not None},
                              wire=False, default_timezone=self.timezone, limits=self.limits)
        return await self.set_schedule_spec(spec)

    async def set_schedule_spec(self, spec: ScheduleSpec) -> ScheduleInfo:
        """``set_schedule`` for callers that validated already (the HTTP API)."""
        self._check_open()
        return await self._schedule_change(spec.name,
                                           self.core.set_schedule(spec, self.clock.now_ms()))

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        self._check_open()
        return await self._schedule_change(
            name, self.core.pause_schedule(name, True, self.clock.now_ms()))

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Resume from now: slots missed while paused are not caught up."""
        self._check_open()
        return await self._schedule_change(
            name, self.core.pause_schedule(name, False, self.clock.now_ms()))

    async def run_schedule_now(self, name: str, *, actor: Actor | None = None) -> str:
        """Fire schedule ``name`` once now, outside its slots (an operator action, in the audit
        list): the uniqueId of the task, ``cron:<name>:now:<random>``, once durable. Raises
        ``UnknownScheduleError``."""
        self._check_open()
        unique_id = f"cron:{name}:now:{random_uuid()}"
        await self._apply(self.core.run_schedule_now(name, unique_id, self.clock.now_ms(),
                                                     actor or EMBEDDED))
        return unique_id

    async def delete_schedule(self, name: str) -> None:
        self._check_open()
        await self._apply(self.core.delete_schedule(name, self.clock.now_ms()))

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
        """Until every change so far is durable: schedules keep no seq of their own."""
        seq = self.core.last_seq
        if self.store.durable_seq < seq:
            with contextlib.suppress(DiskFullError):  # refused and rolled back: not shown
                await self.store.wait_durable(seq)

    async def preview_schedule(self, *, cron: str | None = None, interval: int | None = None,
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
        await self._apply(commands)
        return describe(self.core.schedule(name), 5)

    # ------------------------------------------------------------------ plumbing

    async def _apply(self, commands: list[Command], *, poke: bool = True) -> None:
        """Hand the core's commands to the driver and return once the changes are durable
        (``poke``: wake the driver now, else only if it needs it)."""
        self._driver.execute(commands)
        if poke:
            self._driver.poke()
        else:
            self._driver.poke_if_needed()
        seq = self.core.last_seq
        if self.store.durable_seq < seq:
            await self.store.wait_durable(seq)

    def _taking(self) -> float:
        """When an enqueue call is taken (monotonic ms), for its acknowledgement's time."""
        return self.clock.monotonic_ms() if self.metrics is not None else 0.0

    def _acknowledged(self, started_ms: float) -> None:
        """An enqueue call taken at ``started_ms`` (monotonic) is acknowledged now."""
        if self.metrics is not None:
            self.metrics.acknowledged(self.clock.monotonic_ms() - started_ms)

    def _quota_rejected(self, exc: QuotaExceededError) -> None:
        if self.metrics is not None:
            self.metrics.quota_rejected(exc.quota)

    @property
    def idle(self) -> bool:
        return self._driver.idle and self.store.durable_seq >= self.core.last_seq

    def _with_defaults(self, items: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        """``enqueue_many``'s items over their functions' option defaults."""
        if not self.functions.has_defaults:
            return items
        with_defaults = self.functions.with_defaults
        return [item if not isinstance(item, Mapping) or not isinstance(item.get("function"), str)
                else {"function": item["function"], **with_defaults(
                    item["function"], {k: v for k, v in item.items() if k != "function"})}
                for item in items]

    def _check_open(self) -> None:
        if self._state != "running":
            raise EngineClosedError(f"the engine is {self._state}; it takes no new tasks")
        failure = self.store.failure
        if failure is not None:
            raise failure
