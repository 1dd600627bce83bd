"""Cron schedules: LeanCloud's six-field dialect, fixed intervals, and fire times across DST. Pure.

Theory of operation
-------------------
``parse_cron`` validates an expression once and compiles each field into a sorted tuple of
allowed values plus small "next allowed value at or after i" tables. ``next_fire_ms`` then works
in two spaces:

* **wall time**: seconds since 1970-01-01 00:00 *as read on the zone's clocks* (an int).
  ``_next_wall`` finds the first matching wall time after a given one by carrying through the
  tables (second -> minute -> hour, then day -> month): a few table look-ups, no search loop over
  seconds and no call into croniter, whose ``get_next`` costs 80-260 us here against ~10 us.
* **instants**: epoch seconds. A wall time maps to zero, one or two instants (a DST gap, an
  ordinary time, a repeated hour); ``zoneinfo`` tells which through the two ``fold`` offsets.

From ``after`` (in whole seconds: fires are whole seconds, so "> after_ms" is "> after_ms //
1000"), the ``"once"`` policy (below) takes the first matching wall time after the clock reading
at ``after``: usually its instant has the same offset and is a first reading, which one
``fromtimestamp`` confirms; otherwise it resolves gaps and repeats with the fold offsets. The
``"clock"`` policy walks stretches of constant UTC offset, finding each offset change by
probing daily and bisecting; it jumps over long match-free stretches (see ``_next_clock``).
Nothing is cached between calls and no clock is read: the caller passes ``after_ms``.

``croniter_expr`` is the same schedule in croniter's syntax (seconds as the *sixth* field,
days of week 0-6 from Sunday, each field spelled out from the validated value set), kept for
logs and interop; the tests check ``_next_wall`` against croniter on random expressions.

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

Daylight saving (pinned in tests/core/test_cron.py for Europe/Berlin and America/New_York)
-----------------------------------------------------------------------------------------
The policy depends on whether the expression names every hour (``dst_policy``):

* ``"clock"`` -- the hour field allows all 24 hours (``0 */15 * * * ?``, ``0 30 * * * ?``): the
  schedule is a clock watcher and fires at every instant whose local time matches. Times inside
  a spring gap never show on a clock, so they are skipped; a repeated hour shows twice, so it
  fires twice. Elapsed time stays regular: every 15 minutes stays every 15 minutes of real time
  through both transitions (Berlin 2024-03-31: ``01:45+01, 03:00+02``; 2024-10-27:
  ``02:45+02, 02:00+01``).
* ``"once"`` -- the hour field is restricted (``0 30 2 * * ?``): each matching date and time
  fires exactly once. A time inside a gap fires at the first instant after the gap, and several
  such times collapse into that one fire (Berlin 2024-03-31 ``02:30`` -> ``03:00+02:00``); a
  repeated time fires at its first occurrence only (2024-10-27 ``02:30+02:00``, not again at
  ``02:30+01:00``).

Measured with croniter 7.0.0 and a tz-aware start: croniter agrees with ``"clock"`` and with
``"once"`` in spring, but fires a repeated time twice for every expression (``30 2 * * *`` at
02:30+02:00 *and* 02:30+01:00 on Berlin 2024-10-27); that is the case corrected here.
Results are always strictly after ``after_ms`` and strictly increasing from call to call.

Fixed intervals fire at ``anchor_ms + k * interval_ms`` for every integer k (elapsed time, so
the zone and DST do not matter); the default anchor 0 gives multiples of the interval since the
epoch, while a schedule created at C that passes ``anchor_ms=C`` fires at C + I, C + 2I, ...

Worked example::

    >>> c = parse_cron("0 30 10-13 ? * wed,FRI")
    >>> c.croniter_expr, c.days_of_week, c.dst_policy
    ('30 10-13 * * 3,5 0', (4, 6), 'once')
    >>> # 2024-01-01T00:00:00Z is Monday 08:00 in Shanghai; next: Wednesday 10:30 (02:30Z)
    >>> next_fire_ms(c, "Asia/Shanghai", 1_704_067_200_000)
    1704249000000
    >>> fire_times(c, "UTC", 1_704_249_000_000, 2)   # in UTC: 10:30Z, 11:30Z that Wednesday
    [1704277800000, 1704281400000]
    >>> next_fire_ms(60_000, "UTC", 1_704_067_200_001)   # every minute since the epoch
    1704067260000
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final, Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloudqueue.engine.core.errors import ValidationError

__all__ = [
    "MAX_PREVIEW",
    "CronExpr",
    "check_interval",
    "check_timezone",
    "fire_times",
    "next_fire_ms",
    "parse_cron",
]

MAX_PREVIEW: Final = 1000  # most fire times one fire_times call returns

_DAY_S: Final = 86_400
_EPOCH: Final = datetime(1970, 1, 1)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_ONE_DAY: Final = timedelta(days=1)
# Supported after_ms: [1900-01-01, 9000-01-01). Any fire is within ~8 years of any start.
_MIN_MS: Final = (date(1900, 1, 1).toordinal() - _EPOCH_ORDINAL) * _DAY_S * 1000
_MAX_MS: Final = (date(9000, 1, 1).toordinal() - _EPOCH_ORDINAL) * _DAY_S * 1000
# Offsets are re-read at least this often when looking for a DST transition. tzdata has no two
# utcoffset changes of one zone closer than 7 days since 1970 (measured), so a change and its
# reversal can never both hide between two probes.
_PROBE_S: Final = _DAY_S
# More than any two offsets of one zone ever differ by (all lie within UTC-12..UTC+14).
_SHIFT_S: Final = 2 * _DAY_S
_DAY_SEARCH_STEPS: Final = 1000  # _day_at_or_after needs < 40 (Feb 29 across 2100: ~20)
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
        _fail(field, None, f"expected 6 fields ({_ORDER}), got {len(parts)}")
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


# --- wall-clock matching (local seconds since 1970-01-01 00:00 on the zone's clocks) ---------


def _month_length(year: int, month: int) -> int:
    if month == 2 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return 28
    return _MONTH_DAYS[month]


def _first_of_month(t: _Tables, year: int, month: int) -> date:
    """The 1st of the first allowed month at or after ``month`` (which may be 13)."""
    m = t.next_month[month]
    return date(year, m, 1) if m >= 0 else date(year + 1, t.first_month, 1)


def _day_at_or_after(t: _Tables, d: date) -> date:
    """The first date >= d whose month, day of month and day of week all match."""
    for _ in range(_DAY_SEARCH_STEPS):
        if t.next_month[d.month] != d.month:
            d = _first_of_month(t, d.year, d.month + 1)
        elif skip := t.weekday_skip[d.weekday()]:
            d += timedelta(days=skip)
        elif (day := t.next_day[d.day]) == d.day:
            return d
        elif 0 < day <= _month_length(d.year, d.month):
            d = d.replace(day=day)
        else:
            d = _first_of_month(t, d.year, d.month + 1)
    raise AssertionError("no matching day; parse_cron refuses expressions that never fire")


def _time_at_or_after(t: _Tables, sod: int) -> int:
    """Seconds into the day of the first matching time >= ``sod``, or -1 if none today."""
    h, rest = divmod(sod, 3600)
    m, s = divmod(rest, 60)
    s2 = t.next_second[s]
    if s2 < 0:
        m, s2 = m + 1, t.first_second
    m2 = t.next_minute[m]
    if m2 < 0:
        h, m2, s2 = h + 1, t.first_minute, t.first_second
    elif m2 != m:
        s2 = t.first_second
    h2 = t.next_hour[h]
    if h2 < 0:
        return -1
    if h2 != h:
        m2, s2 = t.first_minute, t.first_second
    return h2 * 3600 + m2 * 60 + s2


def _next_wall(t: _Tables, wall: int) -> int:
    """The first matching wall time strictly after ``wall``."""
    days, sod = divmod(wall + 1, _DAY_S)
    d = date.fromordinal(_EPOCH_ORDINAL + days)
    day = _day_at_or_after(t, d)
    if day == d:
        hit = _time_at_or_after(t, sod)
        if hit >= 0:
            return wall + 1 - sod + hit
        day = _day_at_or_after(t, d + _ONE_DAY)
    return (day.toordinal() - _EPOCH_ORDINAL) * _DAY_S + t.first_time


# --- wall times to instants -------------------------------------------------------------------


def _seconds(delta: timedelta | None) -> int:
    assert delta is not None  # a ZoneInfo always has an offset
    return delta.days * _DAY_S + delta.seconds


def _offset_at(zone: ZoneInfo, instant: int) -> int:
    """UTC offset (s) in force at an instant."""
    return _seconds(datetime.fromtimestamp(instant, zone).utcoffset())


def _wall_offsets(zone: ZoneInfo, wall: int) -> tuple[int, int]:
    """The offsets of a wall time's first (fold=0) and second (fold=1) reading: equal for an
    ordinary time; first > second for a repeated time; first < second inside a gap."""
    naive = _EPOCH + timedelta(seconds=wall)
    return (_seconds(zone.utcoffset(naive)), _seconds(zone.utcoffset(naive.replace(fold=1))))


def _change_in(zone: ZoneInfo, low: int, high: int, offset: int) -> int | None:
    """The first instant in (low, high] whose offset is not ``offset`` (the offset at low)."""
    probe = low
    while probe < high:
        low, probe = probe, min(probe + _PROBE_S, high)
        if _offset_at(zone, probe) != offset:
            while probe - low > 1:  # offset(low) == offset != offset(probe)
                mid = (low + probe) // 2
                low, probe = (mid, probe) if _offset_at(zone, mid) == offset else (low, mid)
            return probe
    return None


def _transition(zone: ZoneInfo, low: int, high: int, offset: int) -> int:
    """Like ``_change_in`` where the offsets at low and high are known to differ."""
    change = _change_in(zone, low, high, offset)
    assert change is not None
    return change


def _next_clock(t: _Tables, zone: ZoneInfo, after: int) -> int:
    """"clock" policy: the first instant > after whose local time matches.

    Walks stretches of constant offset: the first match of a stretch counts only if no offset
    change comes before it. Only the two ends of a long search can hide an earlier fire under
    another offset: a fire at x with offset o' != o reads a matching wall time, and none lies in
    [wall(low), W), so x < low + (o - o') or x >= W - o' = instant - (o' - o). So after the
    start is checked, the search moves to ``_SHIFT_S`` before the candidate.
    """
    low = after + 1
    while True:
        offset = _offset_at(zone, low)
        instant = _next_wall(t, low + offset - 1) - offset
        change = _change_in(zone, low, min(instant, low + _SHIFT_S), offset)
        if change is not None:
            low = change
        elif instant - low <= _SHIFT_S:
            return instant
        else:
            low = instant - _SHIFT_S


def _next_once(t: _Tables, zone: ZoneInfo, after: int) -> int:
    """"once" policy: matching wall times map to one instant each (the first reading; the end
    of the gap for a time that does not exist); that map never decreases, so the first wall
    time after the clock reading at ``after`` is the answer, unless it is a repeated time whose
    first reading has already passed."""
    offset = _offset_at(zone, after)
    wall = _next_wall(t, after + offset)
    local = datetime.fromtimestamp(wall - offset, zone)
    if local.fold == 0 and _seconds(local.utcoffset()) == offset:
        return wall - offset  # the common case: same offset, and the first reading of ``wall``
    while True:
        first, second = _wall_offsets(zone, wall)
        instant = wall - first
        if first < second:  # in a gap: the transition instant, when clocks read the gap's end
            instant = _transition(zone, wall - second, wall - first, first)
        if instant > after:
            return instant
        if first > second:  # a repeated time after its first reading: skip the repeat
            wall = _transition(zone, instant, wall - second, first) + first - 1
        wall = _next_wall(t, wall)


# --- public entry points ----------------------------------------------------------------------


def _check_ms(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name}: expected epoch milliseconds (an int), got {value!r}", name)
    if not _MIN_MS <= value < _MAX_MS:
        raise ValidationError(f"{name}: {value} is outside 1900-01-01..9000-01-01", name)
    return value


def next_fire_ms(spec: CronExpr | int, tz: str, after_ms: int, *, anchor_ms: int = 0) -> int:
    """The first fire time strictly after ``after_ms`` (epoch ms).

    ``spec`` is a ``CronExpr`` evaluated in zone ``tz`` (DST policy: module docstring), or a
    fixed interval in ms firing at ``anchor_ms + k * interval`` (``tz`` is then only checked).
    """
    _check_ms(after_ms, "after_ms")
    zone = _zone(tz)
    if isinstance(spec, CronExpr):
        after_s = after_ms // 1000  # fires are whole seconds: > after_ms <=> > after_s
        if spec.dst_policy == "clock":
            return _next_clock(spec._tables, zone, after_s) * 1000
        return _next_once(spec._tables, zone, after_s) * 1000
    interval = check_interval(spec)
    _check_ms(anchor_ms, "anchor_ms")
    return anchor_ms + ((after_ms - anchor_ms) // interval + 1) * interval


def fire_times(spec: CronExpr | int, tz: str, after_ms: int, count: int, *,
               anchor_ms: int = 0) -> list[int]:
    """A preview: the next ``count`` (0..MAX_PREVIEW) fire times after ``after_ms``,
    strictly increasing; exactly what repeated ``next_fire_ms`` calls give."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_PREVIEW:
        raise ValidationError(f"count: not a whole number 0-{MAX_PREVIEW}", "count")
    out: list[int] = []
    for _ in range(count):
        after_ms = next_fire_ms(spec, tz, after_ms, anchor_ms=anchor_ms)
        out.append(after_ms)
    return out
