"""Named schedules: a function, params and task options fired by a cron expression or an interval.

Pure. A schedule's firing is an ordinary task whose uniqueId is derived from the schedule and the
slot (``cron:<name>:<slot_ms>``) and whose priority is the slot time, submitted by a
``TaskSubmitted`` that also names the schedule and slot: the task and the fact that the slot was
fired are one record, so no crash can separate them, and a slot submitted twice (replayed after a
torn write) meets its own uniqueId and is not doubled.

Missed slots (the queue was down): ``atLeastOnce`` schedules fire exactly one catch-up at start,
for the latest missed slot; ``atMostOnce`` schedules fire none, and a ``ScheduleSkipped`` record
says how many slots were skipped. A failover between nodes sharing a database is not the queue
being down: the node that takes the app over moments after its previous lease ended fires every
slot an ``atLeastOnce`` schedule missed meanwhile, each once (at most ``MAX_FAILOVER_SLOTS``). A
paused schedule has no timer; resuming does not catch up the paused time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudqueue.engine.core.cron import CronExpr, check_interval, check_timezone, parse_cron
from cloudqueue.engine.core.cron_next import next_fire_ms
from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.options import (
    BackoffType,
    Limits,
    TaskOptions,
    check_function_name,
    check_params,
    parse_options,
)

MAX_NAME_CHARS = 64
_NAME = re.compile(r"^[A-Za-z0-9_.~-]+$")
# Per-fire task options a schedule may set; the rest (delay, uniqueId, priority) the slot decides.
_TASK_OPTION_NAMES = {"attempts", "backoff", "backoffType", "backoffMax", "deliveryMode", "timeout",
                      "keepResult"}
_PY_TASK_OPTION_NAMES = {"attempts", "backoff", "backoff_type", "backoff_max", "delivery_mode",
                         "timeout", "keep_result"}
MISSED_COUNT_CAP = 100_000
# After a failover between nodes, an atLeastOnce schedule fires each slot it missed, up to this
# many (a schedule of a few milliseconds' interval misses more: it fires one catch-up)
MAX_FAILOVER_SLOTS = 1_000


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    name: str
    function: str
    params: Any
    cron: str | None
    interval_ms: int | None
    timezone: str
    options: TaskOptions
    paused: bool = False


@dataclass(slots=True, eq=False)
class Schedule:
    """A schedule's live state in the core."""

    spec: ScheduleSpec
    created_ms: int
    last_slot_ms: int | None = None
    next_slot_ms: int | None = None
    expr: CronExpr | None = field(default=None)
    # The next slot is the first after this time: set when the schedule is created, resumed,
    # skips or fires (None: after its creation or its last slot, whichever is later)
    after_ms: int | None = None
    timer: Any = None
    timer_token: int = 0

    def __post_init__(self) -> None:
        if self.spec.cron is not None and self.expr is None:
            self.expr = parse_cron(self.spec.cron)

    def next_after(self, after_ms: int) -> int:
        """The first slot strictly after ``after_ms``."""
        if self.expr is not None:
            return next_fire_ms(self.expr, self.spec.timezone, after_ms)
        assert self.spec.interval_ms is not None
        return next_fire_ms(self.spec.interval_ms, self.spec.timezone, after_ms,
                            anchor_ms=self.created_ms)


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A snapshot of one schedule, with its upcoming fire times."""

    spec: ScheduleSpec
    last_slot_ms: int | None
    upcoming_ms: tuple[int, ...]

    def to_wire(self) -> dict[str, Any]:
        from cloudqueue.engine.core.task import iso_ms

        spec = self.spec
        wire: dict[str, Any] = {"name": spec.name, "function": spec.function,
                                "params": spec.params, "timezone": spec.timezone,
                                "paused": spec.paused}
        if spec.cron is not None:
            wire["cron"] = spec.cron
        else:
            wire["interval"] = spec.interval_ms
        options = spec.options
        wire.update({"attempts": options.attempts, "backoff": options.backoff_ms,
                     "deliveryMode": options.delivery_mode.value, "timeout": options.timeout_ms,
                     "keepResult": options.keep_result_ms})
        if options.backoff_type is not BackoffType.FIXED:
            wire.update({"backoffType": options.backoff_type.value,
                         "backoffMax": options.backoff_max_ms})
        if self.last_slot_ms is not None:
            wire["lastFiredAt"] = iso_ms(self.last_slot_ms)
        wire["nextFireTimes"] = [iso_ms(ms) for ms in self.upcoming_ms]
        return wire


def describe(found: Schedule, upcoming: int) -> ScheduleInfo:
    times: list[int] = []
    if not found.spec.paused and found.next_slot_ms is not None:
        times.append(found.next_slot_ms)
        while len(times) < upcoming:
            times.append(found.next_after(times[-1]))
    return ScheduleInfo(found.spec, found.last_slot_ms, tuple(times))


def task_id(name: str, slot_ms: int) -> str:
    return f"cron:{name}:{slot_ms}"


def check_schedule_name(name: Any) -> str:
    if (not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME_CHARS
            or name in (".", "..")):  # dot segments are rewritten by clients and proxies
        raise ValidationError(
            f"schedule name must be 1 to {MAX_NAME_CHARS} of letters, digits and _ . ~ -, "
            f"got {name!r}", "name")
    return name


def parse_schedule(name: str, values: Mapping[str, Any], *, wire: bool, default_timezone: str,
                   limits: Limits | None = None) -> ScheduleSpec:
    """Validate a schedule given in the wire (``deliveryMode``) or Python spelling.

    Raises:
        ValidationError: naming the field and what it accepts.
    """
    check_schedule_name(name)
    allowed = _TASK_OPTION_NAMES if wire else _PY_TASK_OPTION_NAMES
    known = allowed | {"function", "params", "cron", "interval", "timezone", "paused"}
    for key in ("delay", "uniqueId", "unique_id", "priority"):
        if key in values:
            raise ValidationError(f"{key} cannot be set on a schedule: each firing's uniqueId "
                                  "and priority come from its slot time", key)
    # Schedules are this queue's own API (no SDK sends extra fields): a misspelt field is refused
    # rather than silently ignored.
    if set(values) - known:
        unknown = sorted(set(values) - known)[0]
        raise ValidationError(f"unknown schedule field {unknown!r}; fields are: "
                              f"{', '.join(sorted(known))}", unknown)
    function = check_function_name(values.get("function"))
    params = values.get("params")
    params = {} if params is None else params
    check_params(params)
    cron, interval = values.get("cron"), values.get("interval")
    if (cron is None) == (interval is None):
        raise ValidationError("give exactly one of cron (an expression) or interval (ms)", "cron")
    if cron is not None:
        if not isinstance(cron, str):
            raise ValidationError("cron must be a string expression", "cron")
        parse_cron(cron)
    else:
        if isinstance(interval, float) and interval.is_integer():
            interval = int(interval)
        interval = check_interval(interval)  # type: ignore[arg-type]  # it checks the type
    timezone = check_timezone(values.get("timezone") or default_timezone)
    paused = values.get("paused", False)
    if not isinstance(paused, bool):
        raise ValidationError("paused must be true or false", "paused")
    options = parse_options({k: v for k, v in values.items() if k in allowed}, wire=wire,
                            limits=limits or Limits())
    return ScheduleSpec(name, function, params, cron, interval, timezone, options, paused)
