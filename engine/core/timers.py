"""The core's timers: each task or schedule waits for at most one time.

Timers due together fire in the order ``(at_ms, order)``, where ``order`` is the owner's
submission seq (a schedule's is 0, then its name), which the caller tells ``due``: both survive
a snapshot, so a core restored from one, whose timers were armed in another order, fires timers
due at the same millisecond in the same order as the live core did — and so logs the same
events with the same seqs.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, Protocol

from cloudqueue.engine.core.timer_wheel import TimerHandle, TimerWheel


class TimerKind(IntEnum):
    START = 1    # a delayed task may start
    WAKE = 2     # a retry's backoff has passed
    TIMEOUT = 3  # a run has had its time
    EXPIRE = 4   # a finished task's keepResult window has passed
    CRON = 5     # a schedule's next slot (keyed by the schedule's name)


# (kind, uniqueId or schedule name, token)
TimerKey = tuple[TimerKind, str, int]
# the order among timers due at the same time: an owner's submission seq (0 for a schedule)
Order = Callable[[TimerKey], int]


class Timed(Protocol):
    """What waits for a time: a task or a schedule."""

    timer: TimerHandle | None
    timer_token: int


class Timers:
    """A ``TimerWheel`` of owners' single timers, plus those already due when armed."""

    def __init__(self, start_ms: int, tick_ms: int, slots: int) -> None:
        self._wheel: TimerWheel[TimerKey] = TimerWheel(start_ms, tick_ms, slots)
        self._due: list[tuple[int, TimerKey]] = []  # armed when already due
        self._tokens = 0

    @property
    def current_ms(self) -> int:
        return self._wheel.current_ms

    def set(self, owner: Timed, kind: TimerKind | None, at_ms: int, key: str) -> None:
        """Replace ``owner``'s pending timer with one of ``kind`` at ``at_ms`` (None: none)."""
        self.clear(owner)
        if kind is not None:
            self.arm(owner, kind, at_ms, key)

    def arm(self, owner: Timed, kind: TimerKind, at_ms: int, key: str) -> None:
        """``set`` for an owner with no pending timer (new, or just cleared)."""
        self._tokens = token = self._tokens + 1
        timer_key = (kind, key, token)
        owner.timer_token = token
        handle = self._wheel.add(timer_key, at_ms)
        if handle is None:  # due already: fires at the next tick
            self._due.append((at_ms, timer_key))
        else:
            owner.timer = handle

    def let_go(self) -> None:
        """Drop every timer (``EngineCore.let_go``)."""
        self._wheel.clear()
        self._due.clear()

    def clear(self, owner: Timed) -> None:
        if owner.timer is not None:
            self._wheel.cancel(owner.timer)
            owner.timer = None
        owner.timer_token = 0

    def due(self, now_ms: int, order: Order) -> list[TimerKey]:
        """Every timer due at ``now_ms``, in firing order ``(at_ms, order(key), key)``; each is
        handed out once (the owner checks ``fired`` before acting: a replaced timer no longer
        speaks for it)."""
        due = self._wheel.advance_timed(now_ms)
        if self._due:
            due += self._due
            self._due = []
        if not due:
            return []  # the common tick: nothing due
        if len(due) > 1:
            due.sort(key=lambda item: (item[0], order(item[1]), item[1]))
        return [key for _, key in due]

    @staticmethod
    def fired(owner: Any, token: int) -> bool:
        """``owner``'s timer ``token`` is the current one: it fires, and is gone."""
        if owner is None or owner.timer_token != token:
            return False
        owner.timer, owner.timer_token = None, 0
        return True

    def next_ms(self) -> int | None:
        """When a timer is next due (now, if one is due already)."""
        if self._due:
            return self._wheel.current_ms
        return self._wheel.next_expiry_ms()
