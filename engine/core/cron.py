"""Cron schedules: LeanCloud's six-field dialect, parsed and checked once. Pure.

When a parsed schedule (or a fixed interval) fires is ``cron_next``'s: ``next_fire_ms``,
``fire_times``, and the daylight-saving policy.

Dialect (LeanCloud's, Quartz-like)
----------------------------------
Six whitespace-separated fields, seconds first: ``second minute hour day-of-month month
day-of-week``. Every field takes ``*``, lists ``a,b``, ranges ``a-b`` (start <= end; no
wrap-around) and steps ``*/n``, ``a/n`` (a, a+n, ... up to the field's end), ``a-b/n``.
Months are ``1-12`` or ``JAN-DEC``; days of week ``1-7`` = **SUN-SAT** (croniter counts 0-6
from Sunday, so ``2`` is Monday here) or ``SUN-SAT``; names are case-insensitive. ``?`` ("no
specific value") may stand alone in day-of-month or day-of-week, never in both. When neither is
``?``, at most one of them may be restricted: ``0 0 12 * * 2`` is every Monday, but ``0 0 12 1
* 2`` is refused, because Quartz (which LeanCloud follows) refuses it and classic cron's "1st
of the month OR any Monday" would silently mean something else. An expression that can never
fire (``0 0 0 31 2 ?``) is refused too. ``L``, ``W``, ``#`` and a seventh (year) field are not
part of the dialect. Every refusal is a ``ValidationError`` naming the field and the reason,
e.g. ``cron day-of-week: 8 is out of range 1-7 (or SUN-SAT)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloudqueue.engine.core.errors import ValidationError

__all__ = [
    "MAX_PREVIEW",
    "CronExpr",
    "check_interval",
    "check_timezone",
    "parse_cron",
]

MAX_PREVIEW: Final = 1000  # most fire times one fire_times call returns

_MONTH_DAYS: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ALLOWED_CHARS: Final = frozenset("0123456789*,-/?" "abcdefghijklmnopqrstuvwxyz"
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    hint: str
    names: tuple[str, ...] = ()  # names[i] spells value low + i
    question_mark: bool = False


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELDS: Final = (
    _Field("second", 0, 59, "0-59"),
    _Field("minute", 0, 59, "0-59"),
    _Field("hour", 0, 23, "0-23"),
    _Field("day-of-month", 1, 31, "1-31", question_mark=True),
    _Field("month", 1, 12, "1-12 (or JAN-DEC)", _MONTHS),
    _Field("day-of-week", 1, 7, "1-7 (or SUN-SAT)", _DAYS, question_mark=True),
)
_ORDER = " ".join(f.name for f in _FIELDS)


def _next_table(values: tuple[int, ...], size: int) -> tuple[int, ...]:
    """``t[i]`` = the smallest value >= i, or -1; indices 0..size (``t[size]`` is -1)."""
    allowed, out, nxt = set(values), [-1] * (size + 1), -1
    for i in range(size - 1, -1, -1):
        if i in allowed:
            nxt = i
        out[i] = nxt
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Tables:
    """Look-up tables for ``_next_wall``; built once per expression."""

    next_second: tuple[int, ...]
    next_minute: tuple[int, ...]
    next_hour: tuple[int, ...]
    next_day: tuple[int, ...]  # day of month, indices 0..32
    next_month: tuple[int, ...]  # indices 0..13
    weekday_skip: tuple[int, ...]  # by date.weekday(): days to the next allowed weekday
    first_second: int
    first_minute: int
    first_month: int
    first_time: int  # seconds into the day of the day's first match


@dataclass(frozen=True)
class CronExpr:
    """A parsed, validated LeanCloud cron expression (build it with ``parse_cron``).

    The value tuples are sorted; ``days_of_week`` uses the dialect's numbering (1 = Sunday) and
    ``days_of_month``/``days_of_week`` are all values when the field is ``?`` or ``*``.
    """

    source: str
    croniter_expr: str  # "minute hour day month weekday second", weekdays 0-6 from Sunday
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: tuple[int, ...]
    dst_policy: Literal["clock", "once"]
    _tables: _Tables = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        weekdays = {(d + 5) % 7 for d in self.days_of_week}  # 1 = SUN -> date.weekday() 6
        skip = tuple(next(k for k in range(7) if (wd + k) % 7 in weekdays) for wd in range(7))
        tables = _Tables(
            _next_table(self.seconds, 60), _next_table(self.minutes, 60),
            _next_table(self.hours, 24), _next_table(self.days_of_month, 32),
            _next_table(self.months, 13), skip, self.seconds[0], self.minutes[0],
            self.months[0], self.hours[0] * 3600 + self.minutes[0] * 60 + self.seconds[0])
        object.__setattr__(self, "_tables", tables)


# --- parsing ------------------------------------------------------------------------------


def _fail(field: str, spec: _Field | None, reason: str) -> NoReturn:
    where = f"{field} {spec.name}" if spec is not None else field
    raise ValidationError(f"{where}: {reason}", field)


def _value(token: str, spec: _Field, field: str) -> int:
    if token.isascii() and token.isdigit():
        value = int(token)
        if not spec.low <= value <= spec.high:
            _fail(field, spec, f"{value} is out of range {spec.hint}")
        return value
    if token.upper() in spec.names:
        return spec.low + spec.names.index(token.upper())
    if not token:
        _fail(field, spec, "a value is missing")
    kind = "a number or a name" if spec.names else "a number"
    _fail(field, spec, f"{token!r} is not {kind} (expected {spec.hint})")


def _step(text: str, spec: _Field, field: str) -> int:
    if not (text.isascii() and text.isdigit()):
        _fail(field, spec, f"step {text!r} is not a whole number")
    step, span = int(text), spec.high - spec.low + 1
    if not 1 <= step <= span:
        _fail(field, spec, f"step {step} is out of range 1-{span}")
    return step


def _item(item: str, spec: _Field, field: str) -> range:
    """One list item: ``*``, ``a``, ``a-b``, each optionally ``/step``."""
    base, slash, step_text = item.partition("/")
    step = _step(step_text, spec, field) if slash else 1
    if base == "*":
        return range(spec.low, spec.high + 1, step)
    first, dash, last = base.partition("-")
    low = _value(first, spec, field)
    high = _value(last, spec, field) if dash else (spec.high if slash else low)
    if low > high:
        _fail(field, spec, f"range {base} runs backwards ({low} > {high}); ranges do not wrap")
    return range(low, high + 1, step)


def _field_values(text: str, spec: _Field, field: str) -> tuple[int, ...] | None:
    """The allowed values, sorted; None for ``?``."""
    if "?" in text:
        if not spec.question_mark:
            _fail(field, spec, "? is only allowed in day-of-month or day-of-week")
        if text != "?":
            _fail(field, spec, f"? must be the whole field, not part of {text!r}")
        return None
    bad = next((ch for ch in text if ch not in _ALLOWED_CHARS), None)
    if bad is not None:
        _fail(field, spec, f"unexpected character {bad!r} (this dialect has * , - / ? only)")
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            _fail(field, spec, f"empty list item in {text!r}")
        values.update(_item(item, spec, field))
    return tuple(sorted(values))


def _days(days: tuple[int, ...] | None, weekdays: tuple[int, ...] | None,
          months: tuple[int, ...], field: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Apply the ``?`` rules; return (days of month, days of week), all values where free."""
    dom_spec, dow_spec = _FIELDS[3], _FIELDS[5]
    if days is None and weekdays is None:
        _fail(field, dow_spec, "? may be used in day-of-month or day-of-week, not both")
    all_days, all_weekdays = tuple(range(1, 32)), tuple(range(1, 8))
    days, weekdays = days or all_days, weekdays or all_weekdays
    if days != all_days and weekdays != all_weekdays:
        _fail(field, dow_spec, "day-of-month and day-of-week are both restricted; "
              "write ? in one of them")
    if days[0] > max(_MONTH_DAYS[m] for m in months):
        _fail(field, dom_spec, f"never fires: none of the months has a day {days[0]}")
    return days, weekdays


def _spell(values: tuple[int, ...], low: int, high: int) -> str:
    """croniter syntax for a value set: ``*`` or runs like ``1-5,7``."""
    if len(values) == high - low + 1:
        return "*"
    runs: list[list[int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def parse_cron(expr: str, field: str = "cron") -> CronExpr:
    """Parse and validate a LeanCloud cron expression (see the module docstring for the
    dialect); ``ValidationError(message, field)`` names the cron field and the reason."""
    if not isinstance(expr, str):
        _fail(field, None, f"expected a string, got {type(expr).__name__}")
    parts = expr.split()
    if len(parts) != len(_FIELDS):
        hint = ""
        if len(parts) == len(_FIELDS) - 1:  # classic cron has no seconds field
            hint = (f"; this dialect starts with seconds: for the classic {expr.strip()!r} write "
                    f"'0 {' '.join(parts)}'")
            if any(ch.isdigit() for ch in parts[-1]):
                hint += " (and days of week count 1-7 from Sunday here, not 0-6)"
        _fail(field, None, f"expected 6 fields ({_ORDER}), got {len(parts)}{hint}")
    sec, minute, hour, dom, month, dow = (
        _field_values(text, spec, field) for text, spec in zip(parts, _FIELDS, strict=True))
    assert sec and minute and hour and month  # only day fields may be None (?)
    days, weekdays = _days(dom, dow, month, field)
    croniter_expr = " ".join([
        _spell(minute, 0, 59), _spell(hour, 0, 23), _spell(days, 1, 31), _spell(month, 1, 12),
        _spell(tuple(d - 1 for d in weekdays), 0, 6), _spell(sec, 0, 59)])
    policy: Literal["clock", "once"] = "clock" if len(hour) == 24 else "once"
    return CronExpr(expr, croniter_expr, sec, minute, hour, days, month, weekdays, policy)


def check_timezone(tz: str, field: str = "timezone") -> str:
    """Return ``tz`` if it names an IANA zone ``zoneinfo`` knows; ValidationError otherwise.

    ``localtime`` (the host's zone, which differs between machines) and the leap-second
    ``right/`` zones (their clocks are not UTC-based) are refused too."""
    _zone(tz, field)
    return tz


def _zone(tz: str, field: str = "timezone") -> ZoneInfo:
    if not isinstance(tz, str) or tz == "localtime" or tz.startswith("right/"):
        raise ValidationError(f"{field}: unknown time zone {tz!r} "
                              "(expected an IANA name such as 'Asia/Shanghai' or 'UTC')", field)
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(f"{field}: unknown time zone {tz!r} "
                              "(expected an IANA name such as 'Asia/Shanghai' or 'UTC')",
                              field) from None


MAX_INTERVAL_MS = 3_660 * 24 * 3600 * 1000  # ten years: fire times stay far inside 64 bits


def check_interval(interval_ms: int, field: str = "interval") -> int:
    """Return ``interval_ms`` if it is a whole number of milliseconds from 1 to ten years."""
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms < 1:
        shown = f"{interval_ms!r}" if not isinstance(interval_ms, int) else "a number below 1"
        raise ValidationError(
            f"{field}: {shown} is not a positive whole number of milliseconds", field)
    if interval_ms > MAX_INTERVAL_MS:
        raise ValidationError(f"{field} must be at most {MAX_INTERVAL_MS} ms (3660 days)", field)
    return interval_ms
