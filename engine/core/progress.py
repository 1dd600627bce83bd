"""Progress reports and continuation checkpoints from a running task: validation. Pure.

A report carries any of ``percent`` (0-100), ``done``/``total`` (whole numbers, done <= total), a
short ``message`` and a small JSON ``detail``. The core keeps the latest report and the last few
messages; it logs at most one report per task every ``PROGRESS_WINDOW_MS`` (the latest wins), so
a chatty function cannot flood the log, and it flushes a pending report before the run's outcome.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.options import _describe, check_params, check_storable_int
from cloudqueue.engine.core.task import Task, TaskInfo

PROGRESS_WINDOW_MS = 500
MAX_MESSAGE_CHARS = 500
MAX_DETAIL_BYTES = 4_096
KEPT_MESSAGES = 5
MAX_CHECKPOINT_BYTES = 256 * 1024


def parse_progress(*, percent: Any = None, done: Any = None, total: Any = None,
                   message: Any = None, detail: Any = None) -> dict[str, Any]:
    """A validated report (only the fields given). Raises ``ValidationError``."""
    report: dict[str, Any] = {}
    if percent is not None:
        report["percent"] = _percent(percent)
    for name, value in (("done", done), ("total", total)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"{name} must be a whole number >= 0, got "
                                      f"{_describe(value)}", name)
            check_storable_int(value, name)
            report[name] = value
    if done is not None and total is not None and done > total:
        raise ValidationError(f"done ({done}) cannot exceed total ({total})", "done")
    if message is not None:
        if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
            raise ValidationError(f"message must be a string of at most {MAX_MESSAGE_CHARS} "
                                  "characters", "message")
        report["message"] = message
    if detail is not None:
        report["detail"] = _detail(detail)
    if not report:
        raise ValidationError("a progress report needs percent, done/total, message or detail",
                              "percent")
    return report


def _percent(value: Any) -> int | float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= 100):
        raise ValidationError(f"percent must be a number from 0 to 100, got {_describe(value)}",
                              "percent")
    return value


def _detail(value: Any) -> Any:
    check_params(value, "detail", max_depth=8)
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_DETAIL_BYTES:
        raise ValidationError(f"detail is {size} bytes of JSON, over {MAX_DETAIL_BYTES}",
                              "detail")
    return value


def checkpoint_problem(checkpoint: Any) -> str | None:
    """Why a continuation's checkpoint cannot be kept (not JSON, or over the cap), or None."""
    try:
        check_params(checkpoint, "the checkpoint")
    except ValidationError as exc:
        return str(exc)
    size = len(json.dumps(checkpoint, separators=(",", ":")).encode())
    if size > MAX_CHECKPOINT_BYTES:
        return (f"the checkpoint is {size} bytes of JSON, over the {MAX_CHECKPOINT_BYTES}-byte "
                "cap; keep large state elsewhere and checkpoint a reference to it")
    return None


class PendingProgress:
    """Progress reports held for their logging window: shown at once (``shown``), logged when
    the window ends or the run does. A held report is the one piece of a task's state outside
    the fold: the task's own fields change only when a report is logged (``apply``), so a
    snapshot or a replay holds exactly what the log does."""

    def __init__(self) -> None:
        # uniqueId -> (progress, reported at, messages); due: uniqueId -> when it is logged
        self._held: dict[str, tuple[dict[str, Any], int, tuple[tuple[int, str], ...]]] = {}
        self._due: dict[str, int] = {}

    def hold(self, task: Task, report: dict[str, Any], now_ms: int) -> bool:
        """Merge ``report`` over what the task shows. True if it is held for its window; else
        it is to be logged now (``take``)."""
        progress, _, messages = self._held.get(task.unique_id) or (
            task.progress or {}, 0, task.messages)
        if "message" in report:
            messages = (*messages, (now_ms, report["message"]))[-KEPT_MESSAGES:]
        self._held[task.unique_id] = ({**progress, **report}, now_ms, messages)
        logged = task.progress_ms  # the time of the last report logged (a restore keeps it)
        if logged is not None and now_ms - logged < PROGRESS_WINDOW_MS:
            self._due.setdefault(task.unique_id, logged + PROGRESS_WINDOW_MS)
            return True
        return False

    def holds(self, unique_id: str) -> bool:
        return unique_id in self._held

    def take(self, unique_id: str) -> tuple[dict[str, Any], int, tuple[tuple[int, str], ...]]:
        """The report to log now: ``(progress, reported at, messages)``."""
        self._due.pop(unique_id, None)
        return self._held.pop(unique_id)

    def clear(self) -> None:
        """Forget every held report (what a restart does: they were never logged)."""
        self._held.clear()
        self._due.clear()

    def drop(self, unique_id: str) -> None:
        self._due.pop(unique_id, None)
        self._held.pop(unique_id, None)

    def due(self, now_ms: int) -> list[str]:
        return [unique_id for unique_id, at_ms in self._due.items() if at_ms <= now_ms]

    def next_due_ms(self) -> int | None:
        return min(self._due.values()) if self._due else None

    def shown(self, task: Task, info: TaskInfo) -> TaskInfo:
        held = self._held.get(task.unique_id)
        if held is None:
            return info
        progress, progress_ms, messages = held
        return replace(info, progress=progress, progress_ms=progress_ms, messages=messages)
