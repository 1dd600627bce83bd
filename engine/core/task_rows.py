"""Tasks as arrays: the body of a format-2 snapshot (``engine.runtime.snapshot``).

A format-1 snapshot stored each task as a map with string keys in a frame of its own
(``codec.task_to_record``); restoring 100,000 tasks spent most of its time on frames and key
lookups. Format 2 stores tasks in chunks, one frame per chunk, each task an array whose fields
keep this order (never reorder: it is on disk)::

    [id, function, params, options, priority, seq, created_ms, state, attempt, run_seq,
     started_ms, finished_ms, status_code, error, retry_at_ms, schedule, result, progress,
     continuation]

``options`` is the dict of non-default fields (as in the log); ``result`` is ``[value]`` or null
while it is absent (a JSON null result is ``[null]``); ``progress`` is null or ``[progress,
progress_ms, [[t_ms, message], ...]]``; ``continuation`` null or ``[checkpoint, slices]``.
"""

from __future__ import annotations

from typing import Any

from cloudqueue.engine.core.batch_codec import options_to_dict
from cloudqueue.engine.core.codec import UnknownRecordKindError, options_from_dict
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import ABSENT, PackedParams, Task, pack_params, unpacked

_STATES = {state.value: state for state in TaskState}


def task_to_array(task: Task, *, packed: bool = False) -> list[Any]:
    """A live task's whole state (derived state is rebuilt on restore). Large params are kept
    packed in memory (``PackedParams``); with ``packed`` they stay so in the row, for
    ``unpack_rows`` to decode in a worker thread rather than on the loop."""
    params = task.params if packed else unpacked(task.params)
    return [task.unique_id, task.function, params, options_to_dict(task.options),
            task.priority, task.seq, task.created_ms, task.state.value, task.attempt,
            task.run_seq, task.started_ms, task.finished_ms, task.status_code, task.error,
            task.retry_at_ms, task.schedule,
            None if task.result is ABSENT else [task.result],
            None if task.progress is None else [task.progress, task.progress_ms,
                                                [list(m) for m in task.messages]],
            [task.checkpoint, task.slices] if task.slices else None]


def task_from_array(row: Any) -> Task:
    """Raises ``UnknownRecordKindError`` for anything but a task row."""
    try:
        (unique_id, function, params, options, priority, seq, created_ms, state, attempt,
         run_seq, started_ms, finished_ms, status_code, error, retry_at_ms, schedule, result,
         progress, continuation) = row
        task = Task(unique_id, function, pack_params(params), options_from_dict(options),
                    priority, seq, created_ms, _STATES[state], attempt, run_seq, started_ms,
                    finished_ms, status_code, ABSENT if result is None else result[0], error,
                    retry_at_ms, schedule=schedule)
        if progress is not None:
            task.progress, task.progress_ms = progress[0], progress[1]
            task.messages = tuple((int(t), str(m)) for t, m in progress[2])
        if continuation is not None:
            task.checkpoint, task.slices = continuation
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise UnknownRecordKindError("task", 2) from exc
    return task


def unpack_rows(rows: list[list[Any]]) -> list[list[Any]]:
    """``rows`` from ``task_to_array(..., packed=True)`` with their params decoded (in place)."""
    for row in rows:
        if row[2].__class__ is PackedParams:
            row[2] = row[2].unpack()
    return rows
