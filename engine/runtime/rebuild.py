"""State from what the log holds: a snapshot and the events after it.

Every path that turns the log back into a core goes through ``rebuild``: a start
(``Engine``), ``cloudqueue log verify|inspect|compact``, and compaction (which folds the log
in a process of its own, ``compactor``). So whatever a start would make of the files, they all
make of them, and a start that would fail fails in ``log verify`` too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.schedules import Schedule
from cloudqueue.engine.core.task import Task
from cloudqueue.engine.runtime.log_file import apply_logged


def rebuild(core: EngineCore, events: Iterable[Event], *, snapshot_seq: int = 0,
            snapshot_tasks: Iterable[Task] = (), snapshot_schedules: Iterable[Schedule] = (),
            counters: dict[str, Any] | None = None) -> EngineCore:
    """Fill ``core`` (new, empty) with a snapshot's contents and fold ``events`` (those after
    the snapshot's seq) into it; no recovery decisions are taken (a start takes them next).
    ``counters`` None: ``core`` already holds the state up to ``snapshot_seq`` (a standby's,
    ``postgres/standby.py``) and the events go on from it.

    Raises:
        LogInconsistentError: an event that does not follow from those before it.
    """
    core.restore_many(snapshot_tasks)
    for found in snapshot_schedules:
        core.restore_schedule(found)
    if counters is not None:
        core.restore_counters(counters)
    core.last_seq = max(core.last_seq, snapshot_seq)
    apply_logged(core.apply, events)
    return core


STEP = 5_000  # tasks restored, or events applied, between two turns of the event loop


async def rebuild_yielding(core: EngineCore, events: Sequence[Event], *, snapshot_seq: int = 0,
                           snapshot_tasks: Sequence[Task] = (),
                           snapshot_schedules: Iterable[Schedule] = (),
                           counters: dict[str, Any] | None = None) -> EngineCore:
    """``rebuild``, in steps of ``STEP`` with a turn of the event loop between them: for a node
    that opens an app while it serves others (a takeover), so that its lease renewals and its
    other apps' requests go on meanwhile. The same calls as ``rebuild``, in the same order."""
    for start in range(0, len(snapshot_tasks), STEP):
        core.restore_many(snapshot_tasks[start:start + STEP])
        await asyncio.sleep(0)
    for found in snapshot_schedules:
        core.restore_schedule(found)
    if counters is not None:
        core.restore_counters(counters)
    core.last_seq = max(core.last_seq, snapshot_seq)
    for start in range(0, len(events), STEP):
        apply_logged(core.apply, events[start:start + STEP])
        await asyncio.sleep(0)
    return core
