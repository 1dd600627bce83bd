"""When the log compacts: on its own once the store says enough was written (``soon``), one
compaction at a time, a request made during one running once more after it; a failure is
logged and the log goes on uncompacted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from cloudqueue.engine.core.errors import LogError

log = logging.getLogger("cloudqueue")


class CompactionSchedule:
    """Runs ``compact`` (returns the segments removed) in the background when asked, while
    ``running()`` holds."""

    def __init__(self, compact: Callable[[], Awaitable[int]], running: Callable[[], bool],
                 data_dir: Path | None) -> None:
        self._compact = compact
        self._running = running
        self._data_dir = data_dir
        self._task: asyncio.Future[None] | None = None
        self._wanted = False

    @property
    def idle(self) -> bool:
        """No compaction running or about to."""
        return self._task is None or self._task.done()

    def soon(self) -> None:
        """Compact in the background (the store's ``on_compact_due``)."""
        self._wanted = True
        if self.idle:
            self._task = asyncio.ensure_future(self._compact_while_wanted())

    async def finish(self) -> None:
        """Wait for the compaction in flight, if any (its errors are logged, not raised)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _compact_while_wanted(self) -> None:
        while self._wanted and self._running():
            self._wanted = False  # a compaction asked for while this one runs: next
            await self._compact_once()

    async def _compact_once(self) -> None:
        try:
            removed = await self._compact()
            log.info("compacted: %d piece(s) of the log removed (segments, or batches in a "
                     "database)", removed)
        except LogError as exc:
            log.error("compaction failed: %s", exc)
        except OSError as exc:  # writing the snapshot (e.g. a full disk): the log goes on as is
            log.error("compaction failed writing the snapshot in %s: %s; the log goes on "
                      "uncompacted", self._data_dir, exc.strerror or exc)
        except Exception:  # a bug: said loudly, and the log goes on uncompacted
            log.exception("compaction of %s failed; the log goes on uncompacted",
                          self._data_dir)
