"""Where events go: the ``Store`` protocol, what a store hands back at open, and the memory store.

A store is what the engine needs to keep its facts: it takes the events the core emits
(``append``, never blocking), says when they are durable (``durable_seq``, ``wait_durable``),
says when it cannot take more (``accepting``, ``failure``), compacts what it holds where that
applies, and at open hands back the state it holds (``StoredState``: a snapshot's contents and
the events after it, which ``rebuild`` folds into a core). The driver starts a run, answers an
enqueue or wakes a waiter only once the events behind it are durable.

Two stores implement it: ``LogStore`` (the durable msgpack log in a data directory) and
``MemoryStore`` (keeps nothing; everything is durable at once: for tests and throwaway use). A
third (a database shared by several nodes) is one more module behind the same protocol, run
through the same behaviour tests (``tests/runtime/test_store_contract.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from cloudqueue.engine.core.errors import LogError
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.schedules import Schedule
from cloudqueue.engine.core.task import Task


class OpenReport(Protocol):
    """What a store says about its opening (the log's ``RecoveryReport``): for the start-up
    line."""

    apply_seconds: float

    def summary(self) -> str: ...


@dataclass
class StoredState:
    """What a store holds at open: the latest snapshot's contents and the events after it."""

    snapshot_tasks: list[Task] = field(default_factory=list)
    snapshot_seq: int = 0
    events: list[Event] = field(default_factory=list)
    report: Any = None  # an OpenReport, or None when there is nothing to say
    # what a snapshot keeps beyond the tasks; None: the events go on from a core that has them
    counters: dict[str, Any] | None = field(default_factory=dict)
    snapshot_schedules: list[Schedule] = field(default_factory=list)
    # another node dispatched this app until moments ago (a failover or handover between nodes
    # sharing a database, not a start after the queue was down): schedules fire every slot they
    # missed meanwhile, not one catch-up (``EngineCore.recover``)
    failover: bool = False

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else self.snapshot_seq


class StoreHooks(NamedTuple):
    """What the engine hands a store at open: ``on_disk_full(events) -> events kept`` (a store
    that can run out of space rolls back the tasks it could not store), and ``on_compact_due()``
    (the store has grown enough to compact)."""

    on_disk_full: Callable[[list[Event]], list[Event]] | None = None
    on_compact_due: Callable[[], None] | None = None


class Store(Protocol):
    @property
    def durable_seq(self) -> int:
        """Every event with ``seq <= durable_seq`` is durable."""
        ...

    @property
    def accepting(self) -> bool:
        """False while the store cannot take new work (failed, or the disk is full)."""
        ...

    @property
    def failure(self) -> LogError | None:
        """Why the store is not accepting, or None (readiness reports it)."""
        ...

    @property
    def busy(self) -> bool:
        """Writing, syncing or compacting right now (``testing.settle`` waits for quiet)."""
        ...

    @property
    def holds_lease(self) -> bool:
        """Whether runs may start now: always, for a store only this process writes; for a
        store shared by several nodes, while this node's lease on the app holds (the driver
        asks right before each call)."""
        ...

    def start(self) -> None: ...

    def append(self, events: Sequence[Event]) -> None:
        """Queue events for writing. Never blocks; raises ``LogError`` once the store has
        failed (fail closed)."""
        ...

    async def wait_durable(self, seq: int) -> None:
        """Return once the event ``seq`` is durable; raise ``LogError`` if it never will be."""
        ...

    async def compact(self, seq: int) -> int:
        """Make the state at ``seq`` the base of what the store holds and drop what it covers;
        returns how many pieces were dropped. Raises ``ValueError`` where it does not apply."""
        ...

    async def close(self) -> None: ...


StoreOpener = Callable[[StoreHooks], tuple[Store, StoredState]]
"""How an engine gets its store: called once at start, in a worker thread (it may read a lot)."""

AsyncStoreOpener = Callable[[StoreHooks], Awaitable[tuple[Store, StoredState]]]
"""The same, for a store read over the network (a database): awaited on the event loop."""


class MemoryStore:
    """Keeps nothing: every event is 'durable' the moment it is appended."""

    def __init__(self) -> None:
        self._durable_seq = 0
        self.appended = 0

    @property
    def durable_seq(self) -> int:
        return self._durable_seq

    @property
    def accepting(self) -> bool:
        return True

    @property
    def failure(self) -> LogError | None:
        return None

    @property
    def busy(self) -> bool:
        return False

    @property
    def holds_lease(self) -> bool:
        return True

    def start(self) -> None:
        return None

    @classmethod
    def opener(cls, store: Store | None = None) -> StoreOpener:
        """An opener handing back ``store`` (a new ``MemoryStore`` by default), holding
        nothing."""
        return lambda hooks: (store or cls(), StoredState())

    async def compact(self, seq: int) -> int:
        raise ValueError("compaction needs a durable log (Engine(data_dir=...))")

    def append(self, events: Sequence[Event]) -> None:
        if events:
            self._durable_seq = events[-1].seq
            self.appended += len(events)

    async def wait_durable(self, seq: int) -> None:
        return None

    async def close(self) -> None:
        return None
