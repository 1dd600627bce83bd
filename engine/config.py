"""The embedded engine's configuration, typed and frozen: ``EngineConfig`` (the queue's own
settings, and where it keeps its tasks) and the log's ``LogOptions``.

``Engine(config)`` takes one; ``Engine(concurrency=4, data_dir=...)`` builds one from the same
names as keywords (``EngineOptions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from cloudqueue.engine.core.cron import check_timezone
from cloudqueue.engine.core.quotas import Quotas
from cloudqueue.engine.runtime.log_file import FileOps
from cloudqueue.engine.runtime.log_options import LogOptions

# how many runs an app keeps in flight at its function host: always ``concurrency``, or as many
# as the host takes without slowing, up to ``concurrency`` (engine/runtime/host_limit.py)
HOST_CONCURRENCY = ("fixed", "adaptive")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Attributes:
        concurrency: runs in flight at once (LeanCloud's default is 1).
        adaptive_concurrency: while the event loop lags (the process is overloaded), keep fewer
            runs in flight than ``concurrency`` so that enqueues are still acknowledged quickly;
            back up to ``concurrency`` as the lag clears (``engine/runtime/pacing.py``). Off by
            default here; ``cloudqueue serve`` turns it on.
        host_concurrency: ``"fixed"`` (the default): ``concurrency`` runs in flight whenever
            there is work. ``"adaptive"``: start at one run in flight and raise it while the
            function host's latency stays flat, back off when it rises or the host errs;
            ``concurrency`` is then the ceiling (``engine/runtime/host_limit.py``,
            docs/concurrency.md). ``Engine.host_limit`` shows the current limit.
        max_timeout_ms: the largest ``timeout`` a task may ask for.
        quotas: limits on enqueue (rate, per day, held); ``QuotaExceededError`` past them.
        timezone: the default zone of schedules (an IANA name).
        schedule_concurrency: give schedules' firings a concurrency group of their own, so a
            backlog of ordinary tasks cannot delay them (default: they share ``concurrency``).
        data_dir: keep tasks in a durable log in this directory (replayed on start). Without
            it (and without a ``store``) tasks are kept in memory only.
        log: how that log is written.
        name: the queue's name in its log lines (``cloudqueue serve``: the app id); None: none.
        metrics: count what the engine does for its metrics (``Engine.metrics``,
            ``GET /metrics``: docs/metrics.md); False leaves the counting out.
        lease_ms: with a database store (``Engine(store="postgresql://...")``), how long the
            engine's hold on its app lasts after each renewal: if the process dies, another node
            takes the app over about this long after (docs/multinode.md).

    Raises:
        ValueError: a concurrency below 1, an unknown host_concurrency; ``ValidationError`` for
            an unknown zone.
    """

    concurrency: int = 1
    adaptive_concurrency: bool = False
    host_concurrency: str = "fixed"
    max_timeout_ms: int = 600_000
    quotas: Quotas = field(default_factory=Quotas)
    timezone: str = "UTC"
    schedule_concurrency: int | None = None
    data_dir: Path | None = None
    log: LogOptions = field(default_factory=LogOptions)
    name: str | None = None
    metrics: bool = True
    lease_ms: int = 4_000

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.host_concurrency not in HOST_CONCURRENCY:
            raise ValueError(f"host_concurrency must be one of {', '.join(HOST_CONCURRENCY)}, "
                             f"got {self.host_concurrency!r}")
        object.__setattr__(self, "timezone", check_timezone(self.timezone))
        if self.schedule_concurrency is not None and self.schedule_concurrency < 1:
            raise ValueError(f"schedule_concurrency must be >= 1, got "
                             f"{self.schedule_concurrency}")
        if self.lease_ms < 1_000:
            raise ValueError(f"lease_ms must be >= 1000, got {self.lease_ms}")
        if self.data_dir is not None and not isinstance(self.data_dir, Path):
            object.__setattr__(self, "data_dir", Path(self.data_dir))

    @classmethod
    def of(cls, *, data_dir: str | Path | None = None, fsync: str = "always",
           segment_bytes: int | None = None, compact_bytes: int | None = None,
           file_ops: FileOps | None = None, concurrency: int = 1,
           adaptive_concurrency: bool = False, host_concurrency: str = "fixed",
           max_timeout_ms: int = 600_000, quotas: Quotas | None = None, timezone: str = "UTC",
           schedule_concurrency: int | None = None, name: str | None = None,
           metrics: bool = True, lease_ms: int = 4_000) -> EngineConfig:
        """A config from ``Engine``'s keywords (the log's options flat beside the rest)."""
        log = LogOptions(fsync=fsync, compact_bytes=compact_bytes, file_ops=file_ops)
        if segment_bytes is not None:
            log = LogOptions(fsync, segment_bytes, compact_bytes, file_ops)
        return cls(concurrency=concurrency, adaptive_concurrency=adaptive_concurrency,
                   host_concurrency=host_concurrency, max_timeout_ms=max_timeout_ms,
                   quotas=quotas or Quotas(), timezone=timezone,
                   schedule_concurrency=schedule_concurrency,
                   data_dir=Path(data_dir) if data_dir is not None else None, log=log, name=name,
                   metrics=metrics, lease_ms=lease_ms)


class EngineOptions(TypedDict, total=False):
    """``Engine``'s keywords: ``EngineConfig.of``'s arguments."""

    data_dir: str | Path | None
    fsync: str
    segment_bytes: int
    compact_bytes: int | None
    file_ops: FileOps | None
    concurrency: int
    adaptive_concurrency: bool
    host_concurrency: str
    max_timeout_ms: int
    quotas: Quotas | None
    timezone: str
    schedule_concurrency: int | None
    name: str | None
    metrics: bool
    lease_ms: int
