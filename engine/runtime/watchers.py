"""Watchers: live updates of one task for whoever subscribes (an SSE stream, a Python iterator).

Each subscriber has a small bounded buffer. The queue only ever puts into it and never waits: a
subscriber that falls behind loses intermediate updates, and its buffer keeps the newest (the
state it will see next is always current). A late subscriber first gets the current state.
The stream ends after a final state (success, failed, cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from engine.core.events import (
    Event,
    ProgressReported,
    RunContinued,
    RunFailed,
    RunRequeued,
    RunStarted,
    TaskSubmitted,
)
from engine.core.task import TaskInfo

BUFFER = 64

# Final states arrive through ``finished`` (TaskFinished carries the snapshot).
_KINDS: dict[type, str] = {
    TaskSubmitted: "queued", RunStarted: "running", RunFailed: "retry",
    RunRequeued: "queued", RunContinued: "continued", ProgressReported: "progress",
}


class Watchers:
    def __init__(self, lookup: Callable[[str], TaskInfo | None]) -> None:
        self._lookup = lookup
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def events(self, events: tuple[Event, ...]) -> None:
        """Called with every batch the core emits; cheap when nobody watches."""
        if not self._subscribers:
            return
        for event in events:
            kind = _KINDS.get(type(event))
            if kind is not None and event.unique_id in self._subscribers:
                self.notify(event.unique_id, kind)

    def notify(self, unique_id: str, kind: str) -> None:
        queues = self._subscribers.get(unique_id)
        info = self._lookup(unique_id) if queues else None
        if not queues or info is None or info.state.is_final:
            return  # a final state is sent by finished()
        self._put(queues, {"type": kind, "task": info.to_wire()})

    def finished(self, info: TaskInfo) -> None:
        queues = self._subscribers.get(info.unique_id)
        if queues:
            self._put(queues, {"type": "finished", "task": info.to_wire()})

    @staticmethod
    def _put(queues: set[asyncio.Queue[dict[str, Any]]], update: dict[str, Any]) -> None:
        for queue in queues:
            if queue.full():  # a slow subscriber: drop its oldest, never wait
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(update)

    async def subscribe(self, unique_id: str) -> AsyncIterator[dict[str, Any]]:
        """Updates of one task: ``{"type": state|queued|running|progress|retry|continued|
        finished, "task": TaskInfo wire dict}``, first the current state."""
        info = self._lookup(unique_id)
        if info is None:
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(BUFFER)
        self._subscribers.setdefault(unique_id, set()).add(queue)
        try:
            yield {"type": "state", "task": info.to_wire()}
            if info.state.is_final:
                return
            while True:
                update = await queue.get()
                yield update
                if update["type"] == "finished":
                    return
        finally:
            subscribers = self._subscribers.get(unique_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._subscribers[unique_id]
