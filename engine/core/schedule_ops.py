"""The core's schedules: their fold, their timers, and their firings.

Create, replace, pause, resume and delete are logged events applied by ``apply``; a slot fires from
its timer as a ``TaskSubmitted`` naming the schedule and slot (see ``schedules``), and a slot whose
task is still held is skipped with a logged ``ScheduleSkipped``, so every change to a schedule is a
logged fact. ``recover`` decides missed slots once at start: one catch-up for atLeastOnce (every
missed slot after a failover between nodes), a logged skip for atMostOnce. A schedule's next slot
and timer derive from its fields (``place``), the same way live, in replay and after a restore.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from cloudqueue.engine.core.errors import UnknownScheduleError
from cloudqueue.engine.core.events import (
    Event,
    ScheduleDeleted,
    SchedulePaused,
    ScheduleSet,
    ScheduleSkipped,
    TaskPurged,
    TaskSubmitted,
)
from cloudqueue.engine.core.options import DeliveryMode
from cloudqueue.engine.core.runs import Emit
from cloudqueue.engine.core.schedules import (
    MAX_FAILOVER_SLOTS,
    MISSED_COUNT_CAP,
    Schedule,
    task_id,
)
from cloudqueue.engine.core.task import Task, expired
from cloudqueue.engine.core.timers import TimerKind, Timers

# The task of a uniqueId, if the core has one (held, or kept past its keepResult until purged)
Lookup = Callable[[str], Task | None]


class ScheduleBook:
    def __init__(self, timers: Timers, emit: Emit, lookup: Lookup) -> None:
        self._schedules: dict[str, Schedule] = {}
        self._timers = timers
        self._emit = emit
        self._lookup = lookup

    def get(self, name: str) -> Schedule:
        found = self._schedules.get(name)
        if found is None:
            raise UnknownScheduleError(name)
        return found

    def all(self) -> list[Schedule]:
        return [self._schedules[name] for name in sorted(self._schedules)]

    # ------------------------------------------------------------------ the fold

    def apply(self, event: Event) -> None:
        if isinstance(event, ScheduleSet):
            old = self._schedules.get(event.spec.name)
            if old is not None:
                self._timers.clear(old)
            fresh = Schedule(event.spec, event.t_ms, old.last_slot_ms if old else None)
            self._schedules[event.spec.name] = fresh
            self._place(fresh, max(event.t_ms, fresh.last_slot_ms or 0))
        elif isinstance(event, SchedulePaused):
            found = self._schedules[event.name]
            found.spec = replace(found.spec, paused=event.paused)
            self._place(found, event.t_ms)  # a resumed schedule does not catch up paused time
        elif isinstance(event, ScheduleDeleted):
            self._timers.clear(self._schedules.pop(event.name))
        elif isinstance(event, ScheduleSkipped):
            found = self._schedules[event.name]
            found.last_slot_ms = event.last_slot_ms
            self._place(found, max(event.t_ms, event.last_slot_ms))

    def slot_fired(self, event: TaskSubmitted) -> None:
        found = self._schedules.get(event.schedule or "")
        if found is not None and event.slot_ms is not None:
            found.last_slot_ms = max(found.last_slot_ms or 0, event.slot_ms)
            self._place(found, event.slot_ms)

    def restore(self, found: Schedule) -> None:
        """A schedule read from a snapshot: fields set, its next slot derived."""
        found.timer, found.timer_token = None, 0
        self._schedules[found.spec.name] = found
        after_ms = found.after_ms
        self._place(found, max(found.created_ms, found.last_slot_ms or 0)
                    if after_ms is None else after_ms)

    def _place(self, found: Schedule, after_ms: int) -> None:
        """Its next slot after ``after_ms``, and the timer for it (none while paused)."""
        found.after_ms = after_ms
        if found.spec.paused:
            found.next_slot_ms = None
            self._timers.clear(found)
            return
        found.next_slot_ms = found.next_after(after_ms)
        self._timers.set(found, TimerKind.CRON, found.next_slot_ms, found.spec.name)

    # ------------------------------------------------------------------ firing

    def due(self, name: str, token: int, now_ms: int, events: list[Event]) -> None:
        """The timer ``token`` of schedule ``name`` fired."""
        found = self._schedules.get(name)
        if Timers.fired(found, token) and found is not None and found.next_slot_ms is not None:
            self._fire(found, found.next_slot_ms, now_ms, events)

    def _fire(self, found: Schedule, slot: int, now_ms: int, events: list[Event]) -> None:
        spec = found.spec
        uid = task_id(spec.name, slot)
        held = self._lookup(uid)
        if held is not None and not expired(held, now_ms):
            # fired before (a replayed slot): never twice
            events.append(self._emit(lambda seq: ScheduleSkipped(seq, now_ms, spec.name, 1,
                                                                 slot)))
            return
        if held is not None:
            events.append(self._emit(lambda seq: TaskPurged(seq, now_ms, uid)))
        events.append(self._emit(lambda seq: TaskSubmitted(
            seq, now_ms, uid, spec.function, spec.params, spec.options, slot, spec.name, slot)))

    def recover(self, now_ms: int, events: list[Event], *, every_slot: bool = False) -> None:
        """Missed slots at start. ``every_slot``: the app was dispatched elsewhere until moments
        ago (a failover or handover between nodes, not an outage): an atLeastOnce schedule
        fires each slot it missed, up to ``MAX_FAILOVER_SLOTS`` (more: one catch-up)."""
        for found in self.all():
            first = found.next_slot_ms
            if first is None or first > now_ms:
                continue
            latest, count = self._missed(found, now_ms)
            if found.spec.options.delivery_mode is DeliveryMode.AT_MOST_ONCE:
                events.append(self._emit(partial(ScheduleSkipped, t_ms=now_ms,
                                                 name=found.spec.name, skipped=count,
                                                 last_slot_ms=latest)))
            elif every_slot and count <= MAX_FAILOVER_SLOTS:
                slots = [first]
                while slots[-1] < latest:
                    slots.append(found.next_after(slots[-1]))
                for slot in slots:  # each fired places the timer after it; the last, after now
                    self._fire(found, slot, now_ms, events)
            else:
                self._fire(found, latest, now_ms, events)  # one catch-up, the latest slot

    def _missed(self, found: Schedule, now_ms: int) -> tuple[int, int]:
        """(the latest missed slot, how many were missed, counted up to a cap)."""
        first = found.next_slot_ms
        assert first is not None
        window = 1_000
        while now_ms - window > first and found.next_after(now_ms - window) > now_ms:
            window *= 2
        latest = found.next_after(max(first - 1, now_ms - window))
        while (following := found.next_after(latest)) <= now_ms:
            latest = following
        count, slot = 1, first
        while slot < latest and count < MISSED_COUNT_CAP:
            slot = found.next_after(slot)
            count += 1
        return latest, count
