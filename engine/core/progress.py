"""Progress reports and continuation checkpoints from a running task: validation. Pure.

A report carries any of ``percent`` (0-100), ``done``/``total`` (whole numbers, done <= total), a
short ``message`` and a small JSON ``detail``. The core keeps the latest report and the last few
messages; it logs at most one report per task every ``PROGRESS_WINDOW_MS`` (the latest wins), so
a chatty function cannot flood the log, and it flushes a pending report before the run's outcome.
"""

from __future__ import annotations

import json
import math
from typing import Any

from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.options import _describe, check_params, check_storable_int

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
