"""Watchers: live updates of one task for whoever subscribes (an SSE stream, a Python iterator).

Each subscriber has a small bounded buffer. The queue only ever puts into it and never waits: a
subscriber that falls behind loses intermediate updates, and its buffer keeps the newest (the
state it will see next is always current). A late subscriber first gets the current state.
The stream ends after a final state (success, failed, cancelled).

Subscribers only ever see durable state: each update is the task as it was when it changed, held
until the seq of that change is durable in the store (``bind``), then released in order. A crash
can therefore never take back something a browser was shown (a ``success`` that replay does not
reproduce). One exception, as in task info: a progress report shown within its logging window
(``PROGRESS_WINDOW_MS``) is in memory until its window ends; it is released once everything
logged before it is durable. With nobody watching, none of this costs anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TypeAlias

from cloudqueue.engine.core.errors import LogError
from cloudqueue.engine.core.events import EVENT_TYPES, Event
from cloudqueue.engine.core.task import TaskInfo
from cloudqueue.engine.runtime.store import Store

BUFFER = 64

# The update each event causes, as its declaration says (``live``); final states arrive
# through ``finished`` (TaskFinished carries the snapshot).
_KINDS: dict[type, str] = {t.cls: t.live for t in EVENT_TYPES if t.live is not None}

Update: TypeAlias = tuple[str, TaskInfo]  # (type, the task as of that update)
Queues = tuple["asyncio.Queue[Update]", ...]


class Watchers:
    def __init__(self, lookup: Callable[[str], TaskInfo | None]) -> None:
        self._lookup = lookup
        self._subscribers: dict[str, set[asyncio.Queue[Update]]] = {}
        self._store: Store | None = None
        self._last_seq: Callable[[], int] = lambda: 0
        # updates waiting for their seq to be durable, in seq order: (seq, to whom, update)
        self._held: deque[tuple[int, Queues, Update]] = deque()
        self._releaser: asyncio.Future[None] | None = None
        # app-wide listeners (the dashboard's event stream): told the uniqueId of every task
        # that changed, undelayed; what they then read waits for durability on its own
        self.feeds: list[Callable[[str], None]] = []

    def __bool__(self) -> bool:
        return bool(self._subscribers) or bool(self.feeds)

    def bind(self, store: Store, last_seq: Callable[[], int]) -> None:
        """Release updates only once durable in ``store``; ``last_seq`` is the seq of the latest
        change in memory (every update shows the state as of that seq)."""
        self._store, self._last_seq = store, last_seq

    def close(self) -> None:
        """The engine closed: what is still held will never be released."""
        self._held.clear()
        if self._releaser is not None:
            self._releaser.cancel()
            self._releaser = None

    def events(self, events: tuple[Event, ...]) -> None:
        """Called with every batch the core emits; cheap when nobody watches."""
        if self.feeds:
            for event in events:
                unique_id = getattr(event, "unique_id", "")
                if unique_id:
                    for feed in self.feeds:
                        feed(unique_id)
        if not self._subscribers:
            return
        for event in events:
            kind = _KINDS.get(type(event))
            if kind is not None and event.unique_id in self._subscribers:
                self.notify(event.unique_id, kind)

    def notify(self, unique_id: str, kind: str) -> None:
        if kind == "progress":  # a report held for its window: no event told the feeds
            for feed in self.feeds:
                feed(unique_id)
        queues = self._subscribers.get(unique_id)
        info = self._lookup(unique_id) if queues else None
        if not queues or info is None or info.state.is_final:
            return  # a final state is sent by finished()
        self._send(queues, (kind, info))

    def finished(self, info: TaskInfo) -> None:
        queues = self._subscribers.get(info.unique_id)
        if queues:
            self._send(queues, ("finished", info))

    def _send(self, queues: set[asyncio.Queue[Update]], update: Update) -> None:
        """Put ``update`` (the state as of now) into ``queues`` once it is durable: at once if
        it is already and nothing is held before it, else in order after what is held."""
        seq = self._last_seq()
        if not self._held and self._durable(seq):
            _put(queues, update)
            return
        self._held.append((seq, tuple(queues), update))
        if self._releaser is None:
            self._releaser = asyncio.ensure_future(self._release())

    def _durable(self, seq: int) -> bool:
        return self._store is None or self._store.durable_seq >= seq

    async def _release(self) -> None:
        """Release held updates, oldest first, as their seqs become durable. An update whose
        change will never be durable (the store failed, or rolled it back) is never shown."""
        held = self._held
        try:
            while held:
                seq = held[0][0]
                store = self._store
                try:
                    if store is not None and store.durable_seq < seq:
                        await store.wait_durable(seq)
                except LogError:
                    held.popleft()
                    continue
                while held and self._durable(held[0][0]):
                    _, queues, update = held.popleft()
                    _put(queues, update)
        finally:
            self._releaser = None

    async def subscribe(self, unique_id: str) -> AsyncIterator[Update]:
        """Updates of one task: ``(state|queued|running|progress|retry|continued|finished,
        TaskInfo)``, first the current durable state."""
        info = self._lookup(unique_id)
        if info is None:
            return
        seq = self._last_seq()
        queue: asyncio.Queue[Update] = asyncio.Queue(BUFFER)
        self._subscribers.setdefault(unique_id, set()).add(queue)
        try:
            if not self._durable(seq):
                assert self._store is not None
                try:
                    await self._store.wait_durable(seq)
                except LogError:
                    return  # the state in memory will never be durable: nothing to show
            yield "state", info
            if info.state.is_final:
                return
            while True:
                update = await queue.get()
                yield update
                if update[0] == "finished":
                    return
        finally:
            subscribers = self._subscribers.get(unique_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._subscribers[unique_id]


def _put(queues: Queues | set[asyncio.Queue[Update]], update: Update) -> None:
    for queue in queues:
        if queue.full():  # a slow subscriber: drop its oldest, never wait
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
        queue.put_nowait(update)
