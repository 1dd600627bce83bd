"""Per-app quotas on enqueue: rate, enqueues per day, tasks held at once. Pure.

* **rate**: a token bucket of ``rate_per_s`` tokens a second, holding at most ``burst`` (default:
  one second's worth). Kept in memory only: a restart takes longer than the bucket's window.
* **per day**: enqueues per UTC day. Counted by ``apply(TaskSubmitted)``, so replaying the log
  rebuilds it, and kept in snapshots (compaction drops the records it was counted from).
* **held**: tasks not yet finished (queued, running or waiting to retry).

Each refusal says which limit, and when to try again (``retry_after_ms``): when the bucket has a
token again, at the next UTC midnight, or (held) after a second, since it depends on tasks
finishing. Example: ``Quotas(rate_per_s=100, per_day=10_000, held=1_000)`` are LeanCloud's beta
limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudqueue.engine.core.errors import QuotaExceededError as QuotaExceededError  # re-export

DAY_MS = 86_400_000
HELD_RETRY_MS = 1_000


@dataclass(frozen=True, slots=True)
class Quotas:
    """Each limit is off while None."""

    rate_per_s: float | None = None
    burst: int | None = None
    per_day: int | None = None
    held: int | None = None

    def __post_init__(self) -> None:
        for name in ("rate_per_s", "burst", "per_day", "held"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"quota {name} must be > 0 (or unset), got {value}")


class QuotaTracker:
    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas
        self._tokens = float(self._capacity)
        self._refilled_ms: int | None = None
        self.day = -1
        self.day_count = 0

    @property
    def _capacity(self) -> int:
        rate = self.quotas.rate_per_s
        return self.quotas.burst or (max(1, int(rate)) if rate else 0)

    def check(self, now_ms: int, unfinished: int, count: int = 1) -> None:
        """Raise ``QuotaExceededError`` if ``count`` enqueues now (a batch is all or nothing)
        would break a quota; otherwise take their rate tokens. The day count moves when the
        submissions are applied."""
        q = self.quotas
        if q.held is not None and unfinished + count > q.held:
            batch = f"; a batch of {count} would exceed it" if count > 1 else ""
            raise QuotaExceededError(
                "held", f"this app holds {unfinished} unfinished tasks, its limit is {q.held}"
                f"{batch}; retry when some have finished", HELD_RETRY_MS)
        day = now_ms // DAY_MS
        today = self.day_count if day == self.day else 0
        if q.per_day is not None and today + count > q.per_day:
            batch = f"; a batch of {count} would exceed it" if count > 1 else ""
            raise QuotaExceededError(
                "daily", f"this app has enqueued {today} tasks today (UTC), its limit "
                f"is {q.per_day}{batch}", (day + 1) * DAY_MS - now_ms)
        if q.rate_per_s is not None:
            self._take_tokens(now_ms, q.rate_per_s, count)

    def _take_tokens(self, now_ms: int, rate_per_s: float, count: int) -> None:
        if self._refilled_ms is not None and now_ms > self._refilled_ms:
            gained = (now_ms - self._refilled_ms) * rate_per_s / 1000
            self._tokens = min(float(self._capacity), self._tokens + gained)
        self._refilled_ms = max(now_ms, self._refilled_ms or now_ms)
        if count > self._capacity:
            raise QuotaExceededError(
                "rate", f"a batch of {count} is over this app's burst of {self._capacity} "
                "enqueues; split it", max(1, math.ceil(count * 1000 / rate_per_s)))
        if self._tokens < count:
            wait_ms = max(1, math.ceil((count - self._tokens) * 1000 / rate_per_s - 1e-6))
            raise QuotaExceededError(
                "rate", f"this app may enqueue {rate_per_s:g} tasks a second; slow down",
                wait_ms)
        self._tokens -= count

    def uncounted(self, t_ms: int) -> None:
        """A submission counted at ``t_ms`` was rolled back (it was never stored)."""
        if t_ms // DAY_MS == self.day and self.day_count > 0:
            self.day_count -= 1

    def counted(self, t_ms: int) -> None:
        """A submission at ``t_ms`` was applied (live or in replay)."""
        day = t_ms // DAY_MS
        if day != self.day:
            self.day, self.day_count = day, 0
        self.day_count += 1
