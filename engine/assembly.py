"""How an ``Engine`` is put together: the one place that turns an ``EngineConfig`` into the core,
the store opener and the driver, and that opens the store and replays what it holds."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import time
from dataclasses import dataclass
from typing import cast

from cloudqueue.engine.config import EngineConfig
from cloudqueue.engine.core.commands import Append, Command
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.events import ScheduleSkipped
from cloudqueue.engine.core.options import Limits
from cloudqueue.engine.core.task import iso_ms
from cloudqueue.engine.runtime.clock import Clock
from cloudqueue.engine.runtime.driver import Driver
from cloudqueue.engine.runtime.functions import Invoker
from cloudqueue.engine.runtime.log_file import LogNeedsRepairError, RecoveryReport
from cloudqueue.engine.runtime.metrics import EngineMetrics
from cloudqueue.engine.runtime.rebuild import rebuild, rebuild_yielding
from cloudqueue.engine.runtime.store import (
    AsyncStoreOpener,
    MemoryStore,
    Store,
    StoreHooks,
    StoreOpener,
)
from cloudqueue.engine.runtime.watchers import Watchers

log = logging.getLogger("cloudqueue")


def build_core(config: EngineConfig, limits: Limits, start_ms: int) -> EngineCore:
    return EngineCore(CoreConfig(concurrency=config.concurrency, limits=limits,
                                 quotas=config.quotas,
                                 schedule_concurrency=config.schedule_concurrency),
                      start_ms=start_ms)


def store_opener(config: EngineConfig, store: Store | None, clock: Clock) -> StoreOpener:
    """The log in ``config.data_dir``, else ``store`` (default: a new ``MemoryStore``)."""
    if config.data_dir is not None:
        if store is not None:
            raise ValueError("give data_dir or store, not both")
        return config.log.opener(config.data_dir, clock)
    return MemoryStore.opener(store)


def build_driver(config: EngineConfig, core: EngineCore, store: Store, clock: Clock,
                 invoker: Invoker, watchers: Watchers,
                 metrics: EngineMetrics | None = None) -> Driver:
    return Driver(core, store, clock, invoker, watchers, adaptive=config.adaptive_concurrency,
                  host_adaptive=config.host_concurrency == "adaptive", name=config.name,
                  metrics=metrics)


@dataclass(frozen=True, slots=True)
class Opened:
    store: Store
    report: RecoveryReport | None
    failover: bool = False  # StoredState.failover
    froze_heap: bool = False  # gc.freeze() ran: the engine unfreezes when it closes


async def open_and_replay(opener: StoreOpener | AsyncStoreOpener, hooks: StoreHooks,
                          core: EngineCore, config: EngineConfig) -> Opened:
    """Open the store (in a worker thread: it may read a lot; an async opener on the loop) and
    rebuild ``core`` from the state it holds. A log that needs repair names its directory in
    the error."""
    # Loading builds hundreds of thousands of long-lived objects: cyclic GC passes over them
    # cost ~40% of replay and find nothing. Off while loading; afterwards freeze() moves them,
    # and everything else alive then, out of every later collection too (a fresh engine's
    # enqueues gain as well: 12% on 1,000-task bulk enqueues). A full collection first, while
    # the heap holds only what was there before, so no garbage is frozen with them (an engine
    # closed earlier in this process, say). The engine unfreezes when it closes.
    # Not so for a store shared by several nodes: a node opens an app (a takeover) while it
    # serves others, and a full collection of what it holds stalls its loop for seconds: long
    # enough for its other leases to lapse. (The server's HeapFreezer freezes in steps.)
    shared = _is_async(opener)  # a database shared with other nodes: this one serves on
    gc_was_enabled = gc.isenabled()
    if not shared:
        gc.collect()
        gc.disable()
    try:
        if shared:
            store, loaded = await cast(AsyncStoreOpener, opener)(hooks)
        else:
            store, loaded = await asyncio.to_thread(cast(StoreOpener, opener), hooks)
        started = time.perf_counter()
        try:
            if shared:  # (its leases renewed, its other apps answered) while this one opens
                await rebuild_yielding(core, loaded.events, snapshot_seq=loaded.snapshot_seq,
                                       snapshot_tasks=loaded.snapshot_tasks,
                                       snapshot_schedules=loaded.snapshot_schedules,
                                       counters=loaded.counters)
            else:
                rebuild(core, loaded.events, snapshot_seq=loaded.snapshot_seq,
                        snapshot_tasks=loaded.snapshot_tasks,
                        snapshot_schedules=loaded.snapshot_schedules, counters=loaded.counters)
        except BaseException as exc:
            await store.close()
            if isinstance(exc, LogNeedsRepairError) and config.data_dir is not None:
                exc.in_directory(config.data_dir)  # the repair command names this directory
            raise
    finally:
        if gc_was_enabled:
            gc.enable()
    if not shared:
        gc.freeze()
    report = loaded.report  # the log's RecoveryReport, a database's ReadReport, or None
    if report is not None:
        report.apply_seconds = time.perf_counter() - started
        log.info("%s: %s", config.data_dir if config.data_dir is not None else
                 f"app {config.name}", report.summary())
    return Opened(store, report if isinstance(report, RecoveryReport) else None,
                  loaded.failover, froze_heap=not shared)


def _is_async(opener: object) -> bool:
    """An ``AsyncStoreOpener`` (a coroutine function, or an object whose call is one)."""
    return (inspect.iscoroutinefunction(opener)
            or inspect.iscoroutinefunction(type(opener).__call__))


def log_recovery(recovery: list[Command]) -> None:
    """Say which schedules skipped slots while the queue was down (``atMostOnce``)."""
    for command in recovery:
        for event in command.events if isinstance(command, Append) else ():
            if isinstance(event, ScheduleSkipped):
                log.warning("schedule %s: %d slot(s) missed while the queue was down were "
                            "skipped (atMostOnce), the last at %s", event.name,
                            event.skipped, iso_ms(event.last_slot_ms))
