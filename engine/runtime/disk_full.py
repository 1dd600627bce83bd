"""What the engine does when the disk fills before a batch of events was written."""

from __future__ import annotations

from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.core.events import Event, TaskSubmitted


def roll_back_unstored(core: EngineCore, batch: list[Event]) -> list[Event]:
    """The disk filled up before ``batch`` (every event not yet written) was written: forget the
    tasks submitted in it (their callers get ``DiskFullError``), drop every later event about
    them, and return the rest, kept for a retry (the store's ``on_disk_full``).

    A schedule's firing has no caller to tell: it stays in the batch and is retried.
    """
    submitted = {e.unique_id: e.seq for e in batch
                 if isinstance(e, TaskSubmitted) and e.schedule is None}
    for unique_id in submitted:
        core.forget(unique_id)
    return [e for e in batch
            if e.unique_id not in submitted or e.seq < submitted[e.unique_id]]
