"""When a schedule fires: the next fire time after a given one, across DST. Pure.

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

from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from cloudqueue.engine.core.cron import (
    _MONTH_DAYS,
    MAX_PREVIEW,
    CronExpr,
    _Tables,
    _zone,
    check_interval,
)
from cloudqueue.engine.core.errors import ValidationError

__all__ = ["fire_times", "next_fire_ms"]

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
