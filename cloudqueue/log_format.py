"""How ``cloudqueue serve`` writes its log lines: ``text`` (the default) or ``json``.

A record may carry structured fields as ``extra={"structured": {...}}`` (a failed run's: app,
function, uniqueId, attempt, maxRuns, outcome, error, traceback; ``engine/runtime/driver.py``).

* ``text``: ``time LEVEL logger: message``, then the record's traceback (a failed run's, or an
  exception's) on the lines below.
* ``json``: one JSON object per line: ``time`` (ISO-8601 UTC, ms), ``level``, ``logger``,
  ``message``, the structured fields (those without a value left out), and ``exception`` for a
  record logged with one.

What a line holds is redacted where it is made (keys and a host URL's password are ``***``);
the format changes only its layout.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cloudqueue.engine.core.errors import ConfigError
from cloudqueue.engine.core.names import near_miss
from cloudqueue.engine.core.task import iso_ms

LOG_FORMATS = ("text", "json")
TEXT_LAYOUT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def check_log_format(name: Any, where: str) -> str:
    """``"text"`` or ``"json"``; ConfigError naming ``where`` (and a near miss) otherwise."""
    if isinstance(name, str) and name in LOG_FORMATS:
        return name
    meant = near_miss(name, LOG_FORMATS) if isinstance(name, str) else None
    hint = f" (did you mean {meant!r}?)" if meant else ""
    raise ConfigError(f"{where} must be \"text\" or \"json\" (one JSON object per line), got "
                      f"{name!r}{hint}")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "structured", None)
    return fields if isinstance(fields, dict) else {}


class TextFormatter(logging.Formatter):
    """The plain layout, with a structured ``traceback`` under the line as an exception's is."""

    def __init__(self) -> None:
        super().__init__(TEXT_LAYOUT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace = _fields(record).get("traceback")
        if trace:
            line = f"{line}\n{trace.rstrip()}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": iso_ms(int(record.created * 1000)),
                                "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        for key, value in _fields(record).items():
            if value is not None and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(name: str) -> logging.Formatter:
    """The formatter of the log format ``name`` (``check_log_format``'s)."""
    return JsonFormatter() if name == "json" else TextFormatter()


def use(name: str, logger: logging.Logger | None = None) -> None:
    """Write every line of ``logger``'s handlers (default: the root logger's, which
    ``logging.basicConfig`` made) in the log format ``name``."""
    chosen = formatter(name)
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(chosen)
