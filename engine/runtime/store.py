"""Where events go: the ``Store`` protocol and the in-memory store.

The driver appends every event the core emits and starts a run, answers an enqueue or wakes a
waiter only once the events behind it are durable (``wait_durable``). ``MemoryStore`` keeps
nothing and calls everything durable at once: for tests and throwaway use. The durable msgpack log
implements the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.core.errors import LogError
from engine.core.events import Event


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
        """Why the store is not accepting, or None."""
        ...

    def start(self) -> None: ...

    def append(self, events: Sequence[Event]) -> None:
        """Queue events for writing. Never blocks; raises ``LogError`` once the store has
        failed (fail closed)."""
        ...

    async def wait_durable(self, seq: int) -> None:
        """Return once the event ``seq`` is durable; raise ``LogError`` if it never will be."""
        ...

    async def close(self) -> None: ...


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

    def start(self) -> None:
        return None

    def append(self, events: Sequence[Event]) -> None:
        if events:
            self._durable_seq = events[-1].seq
            self.appended += len(events)

    async def wait_durable(self, seq: int) -> None:
        return None

    async def close(self) -> None:
        return None
