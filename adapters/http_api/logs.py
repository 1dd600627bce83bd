"""Logging that a hostile or broken client cannot turn into a flood, and that keeps credentials out.

:class:`RepeatFilter` lets one line of each kind through per interval (a kind: the logger, the
level, the message's format string and the exception's type) and adds to it how many like it were
held back since the last one. It applies to warnings and errors, and to lines logged with
``extra=RATE_LIMITED`` (one per malformed request, say). :func:`rate_limit_logs` puts it on the
loggers a server writes through for as long as the server runs.

:class:`AccessLog` is the per-request line (``--access-log``) with the read token in an
``EventSource`` URL (``?token=``) shown as ``***``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from cloudqueue.engine.runtime.clock import Clock, SystemClock

RATE_LIMITED = {"rate_limited": True}
# the loggers of a running server (a filter on a logger does not see its children's records)
SERVER_LOGGERS = ("asyncio", "aiohttp.server", "aiohttp.web", "cloudqueue", "cloudqueue.http",
                  "cloudqueue.serve", "cloudqueue.invoker", "cloudqueue.driver", "cloudqueue.log")
_MAX_KINDS = 1024  # kinds remembered, least recently seen forgotten first
_SECRET_QUERY_KEYS = frozenset({"token"})


class RepeatFilter(logging.Filter):
    """One line per kind per ``interval_s`` (on ``clock``); the next one that passes says how many
    were held."""

    def __init__(self, interval_s: float, clock: Clock | None = None) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock or SystemClock()
        # kind -> (when the last line of it passed, how many have been held back since)
        self._kinds: collections.OrderedDict[tuple[Any, ...], tuple[float, int]] = (
            collections.OrderedDict())

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and not getattr(record, "rate_limited", False):
            return True
        kind = (record.name, record.levelno, str(record.msg),
                type(record.exc_info[1]).__name__ if record.exc_info else None)
        now = self._clock.monotonic_ms() / 1000
        last = self._kinds.get(kind)
        if last is not None and now - last[0] < self.interval_s:
            self._kinds[kind] = (last[0], last[1] + 1)
            return False
        self._remember(kind, now)
        if last is not None and last[1]:
            record.msg = (f"{record.getMessage()} [{last[1]} more like this in the "
                          f"{now - last[0]:.0f} s before were not logged]")
            record.args = None
        return True

    def _remember(self, kind: tuple[Any, ...], now: float) -> None:
        self._kinds[kind] = (now, 0)
        self._kinds.move_to_end(kind)
        while len(self._kinds) > _MAX_KINDS:
            self._kinds.popitem(last=False)


@contextlib.contextmanager
def rate_limit_logs(interval_s: float, names: tuple[str, ...] = SERVER_LOGGERS
                    ) -> Iterator[RepeatFilter]:
    """Install one :class:`RepeatFilter` on ``names`` while the block runs (0: no limit)."""
    repeat = RepeatFilter(interval_s)
    loggers = [logging.getLogger(name) for name in names] if interval_s > 0 else []
    for logger in loggers:
        logger.addFilter(repeat)
    try:
        yield repeat
    finally:
        for logger in loggers:
            logger.removeFilter(repeat)


def redacted_path(request: BaseRequest) -> str:
    """The request's path and query, with secret query values as ``***``."""
    query = request.rel_url.query
    if not _SECRET_QUERY_KEYS.intersection(query):
        return request.path_qs
    shown = "&".join(f"{key}=***" if key in _SECRET_QUERY_KEYS else f"{key}={value}"
                     for key, value in query.items())
    return f"{request.path}?{shown}"


class AccessLog(AbstractAccessLogger):
    """``remote "METHOD path?query HTTP/1.1" status bytes seconds``, secrets redacted."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        version = request.version
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.6f', request.remote, request.method,
                         redacted_path(request), version.major, version.minor, response.status,
                         response.body_length, time)
