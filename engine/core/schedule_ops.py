"""EngineCore's schedule operations (a mixin: the same state, the same fold).

Create, replace, pause, resume and delete are logged events applied by ``apply``; a slot fires
from the timer wheel as a ``TaskSubmitted`` naming the schedule and slot (see ``schedules``);
``recover`` decides missed slots once at start: one catch-up for atLeastOnce, a logged skip for
atMostOnce.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from cloudqueue.engine.core.commands import Append, Command
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
from cloudqueue.engine.core.schedules import MISSED_COUNT_CAP, Schedule, ScheduleSpec, task_id

if TYPE_CHECKING:
    from cloudqueue.engine.core.task import Task


class ScheduleOps:
    _schedules: dict[str, Schedule]
    _tasks: dict[str, Task]

    if TYPE_CHECKING:  # provided by EngineCore
        def _seq(self) -> int: ...
        def _emit(self, event: Event) -> Event: ...
        def _expired(self, task: Task, now_ms: int) -> bool: ...
        def _set_timer(self, obj: Any, kind: Any, at_ms: int, key: str | None = None) -> None:
            ...
        def _cron_kind(self) -> Any: ...

    # ------------------------------------------------------------------ requests

    def set_schedule(self, spec: ScheduleSpec, now_ms: int) -> list[Command]:
        return [Append((self._emit(ScheduleSet(self._seq(), now_ms, spec)),))]

    def pause_schedule(self, name: str, paused: bool, now_ms: int) -> list[Command]:
        self.schedule(name)
        return [Append((self._emit(SchedulePaused(self._seq(), now_ms, name, paused)),))]

    def delete_schedule(self, name: str, now_ms: int) -> list[Command]:
        self.schedule(name)
        return [Append((self._emit(ScheduleDeleted(self._seq(), now_ms, name)),))]

    def schedule(self, name: str) -> Schedule:
        found = self._schedules.get(name)
        if found is None:
            raise UnknownScheduleError(name)
        return found

    def schedules(self) -> list[Schedule]:
        return [self._schedules[name] for name in sorted(self._schedules)]

    # ------------------------------------------------------------------ the fold

    def _apply_schedule_event(self, event: Event) -> None:
        if isinstance(event, ScheduleSet):
            old = self._schedules.get(event.spec.name)
            if old is not None:
                self._set_timer(old, None, 0, old.spec.name)
            fresh = Schedule(event.spec, event.t_ms, old.last_slot_ms if old else None)
            self._schedules[event.spec.name] = fresh
            self._arm(fresh, max(event.t_ms, fresh.last_slot_ms or 0))
        elif isinstance(event, SchedulePaused):
            found = self._schedules[event.name]
            found.spec = replace(found.spec, paused=event.paused)
            self._arm(found, event.t_ms)  # a resumed schedule does not catch up paused time
        elif isinstance(event, ScheduleDeleted):
            gone = self._schedules.pop(event.name)
            self._set_timer(gone, None, 0, event.name)
        elif isinstance(event, ScheduleSkipped):
            found = self._schedules[event.name]
            found.last_slot_ms = event.last_slot_ms
            self._arm(found, max(event.t_ms, event.last_slot_ms))

    def _slot_fired(self, event: TaskSubmitted) -> None:
        found = self._schedules.get(event.schedule or "")
        if found is not None and event.slot_ms is not None:
            found.last_slot_ms = max(found.last_slot_ms or 0, event.slot_ms)
            self._arm(found, event.slot_ms)

    def _arm(self, found: Schedule, after_ms: int) -> None:
        if found.spec.paused:
            found.next_slot_ms = None
            self._set_timer(found, None, 0, found.spec.name)
            return
        found.next_slot_ms = found.next_after(after_ms)
        self._set_timer(found, self._cron_kind(), found.next_slot_ms, found.spec.name)

    def restore_schedule(self, found: Schedule) -> None:
        """A schedule read from a snapshot."""
        found.timer, found.timer_token = None, 0
        self._schedules[found.spec.name] = found
        self._arm(found, max(found.created_ms, found.last_slot_ms or 0))

    # ------------------------------------------------------------------ firing

    def _fire(self, found: Schedule, now_ms: int, events: list[Event]) -> None:
        slot = found.next_slot_ms
        if slot is None:
            return
        spec = found.spec
        uid = task_id(spec.name, slot)
        held = self._tasks.get(uid)
        if held is not None and not self._expired(held, now_ms):
            found.last_slot_ms = slot  # fired before (a replayed slot): never twice
            self._arm(found, slot)
            return
        if held is not None:
            events.append(self._emit(TaskPurged(self._seq(), now_ms, uid)))
        events.append(self._emit(TaskSubmitted(self._seq(), now_ms, uid, spec.function,
                                               spec.params, spec.options, slot, spec.name,
                                               slot)))

    def _recover_schedules(self, now_ms: int, events: list[Event]) -> None:
        for found in self.schedules():
            if found.next_slot_ms is None or found.next_slot_ms > now_ms:
                continue
            latest, count = self._missed(found, now_ms)
            if found.spec.options.delivery_mode is DeliveryMode.AT_MOST_ONCE:
                events.append(self._emit(ScheduleSkipped(self._seq(), now_ms, found.spec.name,
                                                         count, latest)))
            else:
                found.next_slot_ms = latest
                self._fire(found, now_ms, events)  # one catch-up, for the latest missed slot
                if found.next_slot_ms is not None and found.next_slot_ms <= now_ms:
                    self._arm(found, now_ms)

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
