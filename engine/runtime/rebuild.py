"""State from what the log holds: a snapshot and the events after it.

Every path that turns the log back into a core goes through ``rebuild``: a start
(``Engine``), ``cloudqueue log verify|inspect|compact``, and compaction (which folds the log
in a process of its own, ``compactor``). So whatever a start would make of the files, they all
make of them, and a start that would fail fails in ``log verify`` too.
"""

from __future__ import annotations

from collections.abc import Iterable
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

    Raises:
        LogInconsistentError: an event that does not follow from those before it.
    """
    core.restore_many(snapshot_tasks)
    for found in snapshot_schedules:
        core.restore_schedule(found)
    core.restore_counters(counters or {})
    core.last_seq = max(core.last_seq, snapshot_seq)
    apply_logged(core.apply, events)
    return core
