"""Tests for engine.core.cron: the LeanCloud dialect, fire times, DST policy, intervals.

Times are written as ISO strings with their UTC offset (readable and exact) and, where a number
is the point, as epoch milliseconds.
"""

from __future__ import annotations

import doctest
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cloudqueue.engine.core import cron
from cloudqueue.engine.core.cron import MAX_PREVIEW, check_interval, check_timezone, parse_cron
from cloudqueue.engine.core.cron_next import fire_times, next_fire_ms
from cloudqueue.engine.core.errors import ValidationError


def ms(iso: str) -> int:
    """Epoch ms of an ISO time with offset."""
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def iso(epoch_ms: int, tz: str) -> str:
    """An epoch-ms time as ISO in zone ``tz`` (whole seconds)."""
    assert epoch_ms % 1000 == 0
    return datetime.fromtimestamp(epoch_ms // 1000, ZoneInfo(tz)).isoformat()


def fires(expr: str, tz: str, after: str, count: int) -> list[str]:
    return [iso(t, tz) for t in fire_times(parse_cron(expr), tz, ms(after), count)]


def test_module_docstring_example_runs() -> None:
    assert doctest.testmod(cron).failed == 0


# --- the issue's four expressions, exactly ----------------------------------------------------

ISSUE_ROWS = [
    ("0 */5 * * * ?", "2024-01-01T23:52:30",
     ["2024-01-01T23:55:00", "2024-01-02T00:00:00", "2024-01-02T00:05:00",
      "2024-01-02T00:10:00"]),
    ("10 */5 * * * ?", "2024-01-01T00:00:10",  # a fire time itself: strictly after it
     ["2024-01-01T00:05:10", "2024-01-01T00:10:10", "2024-01-01T00:15:10"]),
    ("10 */5 * * * ?", "2024-01-01T00:00:09.999",
     ["2024-01-01T00:00:10", "2024-01-01T00:05:10"]),
    ("0 30 10-13 ? * WED,FRI", "2024-01-01T00:00:00",  # a Monday
     ["2024-01-03T10:30:00", "2024-01-03T11:30:00", "2024-01-03T12:30:00",
      "2024-01-03T13:30:00", "2024-01-05T10:30:00", "2024-01-05T11:30:00",
      "2024-01-05T12:30:00", "2024-01-05T13:30:00", "2024-01-10T10:30:00"]),
    ("0 */30 8-9 5,20 * ?", "2024-01-01T00:00:00",
     ["2024-01-05T08:00:00", "2024-01-05T08:30:00", "2024-01-05T09:00:00",
      "2024-01-05T09:30:00", "2024-01-20T08:00:00", "2024-01-20T08:30:00",
      "2024-01-20T09:00:00", "2024-01-20T09:30:00", "2024-02-05T08:00:00"]),
]


@pytest.mark.parametrize(("tz", "offset"), [("UTC", "+00:00"), ("Asia/Shanghai", "+08:00")])
@pytest.mark.parametrize(("expr", "after", "local_times"), ISSUE_ROWS)
def test_issue_expressions_fire_exactly_as_described(
        tz: str, offset: str, expr: str, after: str, local_times: list[str]) -> None:
    got = fires(expr, tz, after + offset, len(local_times))
    assert got == [t + offset for t in local_times]


@pytest.mark.parametrize(("expr", "tz", "after_ms", "expected_ms"), [
    ("0 */5 * * * ?", "UTC", 1_704_153_150_000, 1_704_153_300_000),  # 23:52:30Z -> 23:55Z
    ("10 */5 * * * ?", "UTC", 1_704_067_210_000, 1_704_067_510_000),  # 00:00:10 -> 00:05:10
    ("0 30 10-13 ? * WED,FRI", "UTC", 1_704_067_200_000, 1_704_277_800_000),  # Wed 10:30Z
    ("0 30 10-13 ? * WED,FRI", "Asia/Shanghai", 1_704_067_200_000, 1_704_249_000_000),  # 02:30Z
    ("0 */30 8-9 5,20 * ?", "UTC", 1_704_067_200_000, 1_704_441_600_000),  # Jan 5 08:00Z
    ("0 */30 8-9 5,20 * ?", "Asia/Shanghai", 1_704_067_200_000, 1_704_412_800_000),  # 00:00Z
])
def test_exact_epoch_ms(expr: str, tz: str, after_ms: int, expected_ms: int) -> None:
    assert next_fire_ms(parse_cron(expr), tz, after_ms) == expected_ms


def test_monday_is_2_not_1() -> None:
    got = fire_times(parse_cron("0 0 12 ? * 2"), "UTC", ms("2024-01-02T00:00:00Z"), 5)
    days = [datetime.fromtimestamp(t / 1000, ZoneInfo("UTC")) for t in got]
    assert [d.weekday() for d in days] == [0] * 5  # Monday
    assert [d.isoformat() for d in days[:2]] == ["2024-01-08T12:00:00+00:00",
                                                  "2024-01-15T12:00:00+00:00"]


@pytest.mark.parametrize(("number", "name", "first_day"), [
    (1, "SUN", "2024-01-07"), (2, "MON", "2024-01-08"), (3, "TUE", "2024-01-02"),
    (4, "WED", "2024-01-03"), (5, "THU", "2024-01-04"), (6, "FRI", "2024-01-05"),
    (7, "SAT", "2024-01-06"),
])
def test_day_of_week_numbers_and_names(number: int, name: str, first_day: str) -> None:
    after = ms("2024-01-01T00:00:00Z")  # Monday midnight, excluded (strictly after)
    for spelling in (str(number), name, name.lower(), name.title()):
        got = next_fire_ms(parse_cron(f"0 0 0 ? * {spelling}"), "UTC", after)
        assert iso(got, "UTC") == f"{first_day}T00:00:00+00:00"


# --- parsing: translation, names, whitespace ------------------------------------------------


@pytest.mark.parametrize(("expr", "weekdays", "croniter_dow"), [
    ("0 0 0 ? * *", (1, 2, 3, 4, 5, 6, 7), "*"),
    ("0 0 0 ? * */2", (1, 3, 5, 7), "0,2,4,6"),  # SUN, TUE, THU, SAT
    ("0 0 0 ? * 1/2", (1, 3, 5, 7), "0,2,4,6"),
    ("0 0 0 ? * 2/3", (2, 5), "1,4"),
    ("0 0 0 ? * MON/2", (2, 4, 6), "1,3,5"),
    ("0 0 0 ? * 2-6", (2, 3, 4, 5, 6), "1-5"),
    ("0 0 0 ? * MON-FRI", (2, 3, 4, 5, 6), "1-5"),
    ("0 0 0 ? * 1-7/3", (1, 4, 7), "0,3,6"),
    ("0 0 0 ? * SAT,sun", (1, 7), "0,6"),
    ("0 0 0 ? * 7", (7,), "6"),
    ("0 0 0 ? * 1-7", (1, 2, 3, 4, 5, 6, 7), "*"),
])
def test_day_of_week_translation(expr: str, weekdays: tuple[int, ...], croniter_dow: str) -> None:
    c = parse_cron(expr)
    assert c.days_of_week == weekdays
    assert c.croniter_expr.split()[4] == croniter_dow


@pytest.mark.parametrize(("expr", "croniter_expr"), [
    ("0 */5 * * * ?", "0,5,10,15,20,25,30,35,40,45,50,55 * * * * 0"),
    ("10 */5 * * * ?", "0,5,10,15,20,25,30,35,40,45,50,55 * * * * 10"),
    ("0 30 10-13 ? * WED,FRI", "30 10-13 * * 3,5 0"),
    ("0 */30 8-9 5,20 * ?", "0,30 8-9 5,20 * * 0"),
    ("0 0 12 ? * 2", "0 12 * * 1 0"),
    ("*/20 0 0 1 JAN-MAR,dec ?", "0 0 1 1-3,12 * 0,20,40"),
    ("0-59 0 0-23 1-31 1-12 ?", "0 * * * * *"),
])
def test_croniter_expr_is_seconds_last_and_croniter_agrees(expr: str, croniter_expr: str) -> None:
    c = parse_cron(expr)
    assert c.croniter_expr == croniter_expr
    assert croniter.is_valid(c.croniter_expr)
    start = datetime(2024, 1, 1, 0, 0, 1)  # naive: read as UTC on both sides
    theirs = croniter(c.croniter_expr, start).get_next(datetime)
    ours = next_fire_ms(c, "UTC", ms("2024-01-01T00:00:01Z"))
    assert iso(ours, "UTC") == theirs.isoformat() + "+00:00"


@pytest.mark.parametrize("spelling", [
    "0 30 10-13 ? * WED,FRI",
    "0 30 10-13 ? * wed,fri",
    "0 30 10-13 ? * Wed,fRi",
    "0 30 10-13 ? * 4,6",
    "0\t30\t10-13\t?\t*\tWED,FRI",
    "  0   30 10-13 \t ?  *\n WED,FRI  ",
])
def test_names_are_case_insensitive_and_any_whitespace_separates(spelling: str) -> None:
    c = parse_cron(spelling)
    reference = parse_cron("0 30 10-13 ? * WED,FRI")
    assert c.source == spelling
    assert (c.seconds, c.minutes, c.hours, c.days_of_month, c.months, c.days_of_week) == (
        reference.seconds, reference.minutes, reference.hours, reference.days_of_month,
        reference.months, reference.days_of_week)
    assert c.croniter_expr == reference.croniter_expr


@pytest.mark.parametrize(("month_field", "months"), [
    ("jan,Mar", (1, 3)), ("JAN-MAR", (1, 2, 3)), ("*/4", (1, 5, 9)), ("FEB/5", (2, 7, 12)),
    ("12", (12,)), ("oct-DEC", (10, 11, 12)), ("1,JAN,1-1", (1,)),
])
def test_month_names_and_numbers(month_field: str, months: tuple[int, ...]) -> None:
    assert parse_cron(f"0 0 0 1 {month_field} ?").months == months


@pytest.mark.parametrize(("expr", "attr", "values"), [
    ("*/15 0 0 * * ?", "seconds", (0, 15, 30, 45)),
    ("7/20 0 0 * * ?", "seconds", (7, 27, 47)),
    ("0 5-20/5 0 * * ?", "minutes", (5, 10, 15, 20)),
    ("0 0 22/1 * * ?", "hours", (22, 23)),
    ("0 0 0 1,15 * ?", "days_of_month", (1, 15)),
    ("0 0 0 */10 * ?", "days_of_month", (1, 11, 21, 31)),
    ("0 0 0 * * ?", "days_of_month", tuple(range(1, 32))),
    ("0 0 0 ? * *", "days_of_month", tuple(range(1, 32))),
    ("0 0 0 05 * ?", "days_of_month", (5,)),
    ("0 0 0 1,3,2,3 * ?", "days_of_month", (1, 2, 3)),
])
def test_field_forms(expr: str, attr: str, values: tuple[int, ...]) -> None:
    assert getattr(parse_cron(expr), attr) == values


@pytest.mark.parametrize(("expr", "policy"), [
    ("0 */15 * * * ?", "clock"), ("0 30 * * * ?", "clock"), ("0 0 0-23 * * ?", "clock"),
    ("0 0 */1 * * ?", "clock"), ("0 30 2 * * ?", "once"), ("0 */15 2 * * ?", "once"),
    ("0 0 */2 * * ?", "once"), ("0 0 1-23 * * ?", "once"),
])
def test_dst_policy_follows_the_hour_field(expr: str, policy: str) -> None:
    assert parse_cron(expr).dst_policy == policy


def test_day_fields_without_question_mark() -> None:
    # neither is ?: fine while at most one is restricted
    assert parse_cron("0 0 12 * * 2").days_of_week == (2,)
    every_day = parse_cron("0 0 0 * * *")
    assert every_day.days_of_month == tuple(range(1, 32)) and len(every_day.days_of_week) == 7
    assert next_fire_ms(parse_cron("0 0 12 * * 2"), "UTC", ms("2024-01-02T00:00:00Z")) == ms(
        "2024-01-08T12:00:00Z")


# --- refusals ---------------------------------------------------------------------------------

INVALID = [
    # (expression, cron field named in the message (None: the whole expression), reason)
    ("0 ? * * * ?", "minute", "? is only allowed in day-of-month or day-of-week"),
    ("? 0 * * * ?", "second", "? is only allowed"),
    ("0 0 ? * * ?", "hour", "? is only allowed"),
    ("0 0 0 * ? ?", "month", "? is only allowed"),
    ("0 0 0 ? * ?", "day-of-week", "not both"),
    ("0 0 0 ?,1 * *", "day-of-month", "? must be the whole field"),
    ("0 0 0 * * ?/2", "day-of-week", "? must be the whole field"),
    ("0 0 0 * *", None, "expected 6 fields (second minute hour day-of-month month day-of-week), "
                        "got 5"),
    ("0 0 0 * * ? 2024", None, "got 7"),
    ("", None, "got 0"),
    ("   \t ", None, "got 0"),
    ("60 0 0 * * ?", "second", "60 is out of range 0-59"),
    ("0 60 0 * * ?", "minute", "60 is out of range 0-59"),
    ("0 0 24 * * ?", "hour", "24 is out of range 0-23"),
    ("0 0 0 0 * ?", "day-of-month", "0 is out of range 1-31"),
    ("0 0 0 32 * ?", "day-of-month", "32 is out of range 1-31"),
    ("0 0 0 1 0 ?", "month", "0 is out of range 1-12 (or JAN-DEC)"),
    ("0 0 0 1 13 ?", "month", "13 is out of range 1-12 (or JAN-DEC)"),
    ("0 0 0 ? * 0", "day-of-week", "0 is out of range 1-7 (or SUN-SAT)"),
    ("0 0 0 ? * 8", "day-of-week", "8 is out of range 1-7 (or SUN-SAT)"),
    ("0 0 0 ? * 1-8", "day-of-week", "8 is out of range 1-7 (or SUN-SAT)"),
    ("0 0 0 1 FOO ?", "month", "'FOO' is not a number or a name (expected 1-12 (or JAN-DEC))"),
    ("0 0 0 1 SUN ?", "month", "'SUN' is not a number or a name"),
    ("0 0 0 1 JANUARY ?", "month", "'JANUARY' is not a number or a name"),
    ("0 0 0 ? * MONDAY", "day-of-week", "'MONDAY' is not a number or a name"),
    ("0 0 0 ? * JAN", "day-of-week", "'JAN' is not a number or a name"),
    ("0 0 MON * * ?", "hour", "'MON' is not a number (expected 0-23)"),
    ("0 0 0 L * ?", "day-of-month", "'L' is not a number"),
    ("0 0 0 15W * ?", "day-of-month", "'15W' is not a number"),
    ("0 0 0 ? * 6#3", "day-of-week", "unexpected character '#'"),
    ("0 0 0 ? * 6L", "day-of-week", "'6L' is not a number or a name"),
    ("0 0 0 1 * ？", "day-of-week", "unexpected character '？'"),
    ("*/0 0 0 * * ?", "second", "step 0 is out of range 1-60"),
    ("0 */61 0 * * ?", "minute", "step 61 is out of range 1-60"),
    ("0 0 */25 * * ?", "hour", "step 25 is out of range 1-24"),
    ("0 0 0 ? * */8", "day-of-week", "step 8 is out of range 1-7"),
    ("0 0 0 ? * 1/x", "day-of-week", "step 'x' is not a whole number"),
    ("0 5/ 0 * * ?", "minute", "step '' is not a whole number"),
    ("0 1/2/3 0 * * ?", "minute", "step '2/3' is not a whole number"),
    ("0 /5 0 * * ?", "minute", "a value is missing"),
    ("0 -5 0 * * ?", "minute", "a value is missing"),
    ("0 5- 0 * * ?", "minute", "a value is missing"),
    ("0 1-2-3 0 * * ?", "minute", "'2-3' is not a number"),
    ("0 1,,2 0 * * ?", "minute", "empty list item in '1,,2'"),
    ("0 30-10 0 * * ?", "minute", "range 30-10 runs backwards (30 > 10)"),
    ("0 0 13-10 * * ?", "hour", "range 13-10 runs backwards"),
    ("0 0 0 ? * FRI-MON", "day-of-week", "range FRI-MON runs backwards (6 > 2)"),
    ("0 0 0 1 DEC-JAN ?", "month", "range DEC-JAN runs backwards (12 > 1)"),
    ("0 0 0 20-10/2 * ?", "day-of-month", "range 20-10 runs backwards"),
    ("0 0 12 1 * 2", "day-of-week", "both restricted; write ? in one of them"),
    ("0 0 12 1-5 * MON-FRI", "day-of-week", "both restricted"),
    ("0 0 0 31 2,4,6 ?", "day-of-month", "never fires: none of the months has a day 31"),
    ("0 0 0 30 FEB ?", "day-of-month", "never fires"),
]


@pytest.mark.parametrize(("expr", "cron_field", "reason"), INVALID)
def test_invalid_expressions_are_refused_naming_the_field(
        expr: str, cron_field: str | None, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_cron(expr)
    message = str(info.value)
    prefix = f"cron {cron_field}: " if cron_field else "cron: "
    assert message.startswith(prefix), message
    assert reason in message, message
    assert info.value.field == "cron"
    assert info.value.http_status == 400


def test_the_exact_out_of_range_message() -> None:
    with pytest.raises(ValidationError, match=r"^cron day-of-week: 8 is out of range 1-7 "
                                              r"\(or SUN-SAT\)$"):
        parse_cron("0 0 12 ? * 8")


def test_the_caller_names_the_option() -> None:
    with pytest.raises(ValidationError, match=r"^schedule\.cron month: ") as info:
        parse_cron("0 0 0 1 13 ?", field="schedule.cron")
    assert info.value.field == "schedule.cron"


@pytest.mark.parametrize("value", [None, 5, b"0 0 0 * * ?"])
def test_a_non_string_expression_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="^cron: expected a string"):
        parse_cron(value)  # type: ignore[arg-type]


def test_feb_29_is_valid_and_waits_for_a_leap_year() -> None:
    c = parse_cron("0 0 0 29 2 ?")
    assert iso(next_fire_ms(c, "UTC", ms("2024-03-01T00:00:00Z")), "UTC") == (
        "2028-02-29T00:00:00+00:00")
    # 2100 is not a leap year: eight years between fires
    assert iso(next_fire_ms(c, "UTC", ms("2096-03-01T00:00:00Z")), "UTC") == (
        "2104-02-29T00:00:00+00:00")


# --- daylight saving ---------------------------------------------------------------------------

DST_ROWS = [
    # Europe/Berlin, spring 2024-03-31: 02:00+01:00 -> 03:00+02:00 (02:xx does not exist)
    ("0 30 2 * * ?", "Europe/Berlin", "2024-03-30T12:00:00+01:00",
     ["2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"]),
    ("0 */15 2 * * ?", "Europe/Berlin", "2024-03-31T01:40:00+01:00",  # four collapse into one
     ["2024-03-31T03:00:00+02:00", "2024-04-01T02:00:00+02:00", "2024-04-01T02:15:00+02:00"]),
    ("0 0 1-3 * * ?", "Europe/Berlin", "2024-03-31T00:40:00+01:00",  # 02:00 and 03:00: one fire
     ["2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00", "2024-04-01T01:00:00+02:00"]),
    ("0 */15 * * * ?", "Europe/Berlin", "2024-03-31T01:40:00+01:00",
     ["2024-03-31T01:45:00+01:00", "2024-03-31T03:00:00+02:00", "2024-03-31T03:15:00+02:00"]),
    ("0 30 * * * ?", "Europe/Berlin", "2024-03-31T00:40:00+01:00",
     ["2024-03-31T01:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-03-31T04:30:00+02:00"]),
    # Europe/Berlin, autumn 2024-10-27: 03:00+02:00 -> 02:00+01:00 (02:xx happens twice)
    ("0 30 2 * * ?", "Europe/Berlin", "2024-10-26T12:00:00+02:00",
     ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]),
    ("0 30 2 * * ?", "Europe/Berlin", "2024-10-27T02:15:00+01:00",  # in the repeat: done today
     ["2024-10-28T02:30:00+01:00"]),
    ("0 */15 2 * * ?", "Europe/Berlin", "2024-10-27T01:40:00+02:00",
     ["2024-10-27T02:00:00+02:00", "2024-10-27T02:15:00+02:00", "2024-10-27T02:30:00+02:00",
      "2024-10-27T02:45:00+02:00", "2024-10-28T02:00:00+01:00"]),
    ("0 */15 * * * ?", "Europe/Berlin", "2024-10-27T01:40:00+02:00",
     ["2024-10-27T01:45:00+02:00", "2024-10-27T02:00:00+02:00", "2024-10-27T02:15:00+02:00",
      "2024-10-27T02:30:00+02:00", "2024-10-27T02:45:00+02:00", "2024-10-27T02:00:00+01:00",
      "2024-10-27T02:15:00+01:00", "2024-10-27T02:30:00+01:00", "2024-10-27T02:45:00+01:00",
      "2024-10-27T03:00:00+01:00"]),
    ("0 */15 * * * ?", "Europe/Berlin", "2024-10-27T02:50:00+02:00",
     ["2024-10-27T02:00:00+01:00", "2024-10-27T02:15:00+01:00"]),
    ("0 30 * * * ?", "Europe/Berlin", "2024-10-27T00:40:00+02:00",
     ["2024-10-27T01:30:00+02:00", "2024-10-27T02:30:00+02:00", "2024-10-27T02:30:00+01:00",
      "2024-10-27T03:30:00+01:00"]),
    # America/New_York, spring 2024-03-10: 02:00-05:00 -> 03:00-04:00
    ("0 30 2 * * ?", "America/New_York", "2024-03-09T12:00:00-05:00",
     ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"]),
    ("0 */20 * * * ?", "America/New_York", "2024-03-10T01:30:00-05:00",
     ["2024-03-10T01:40:00-05:00", "2024-03-10T03:00:00-04:00", "2024-03-10T03:20:00-04:00"]),
    # America/New_York, autumn 2024-11-03: 02:00-04:00 -> 01:00-05:00
    ("0 30 1 * * ?", "America/New_York", "2024-11-02T12:00:00-04:00",
     ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]),
    ("30 59 1 * * ?", "America/New_York", "2024-11-03T01:00:00-04:00",
     ["2024-11-03T01:59:30-04:00", "2024-11-04T01:59:30-05:00"]),
    ("0 */20 * * * ?", "America/New_York", "2024-11-03T00:30:00-04:00",
     ["2024-11-03T00:40:00-04:00", "2024-11-03T01:00:00-04:00", "2024-11-03T01:20:00-04:00",
      "2024-11-03T01:40:00-04:00", "2024-11-03T01:00:00-05:00", "2024-11-03T01:20:00-05:00",
      "2024-11-03T01:40:00-05:00", "2024-11-03T02:00:00-05:00"]),
    # Australia/Lord_Howe shifts by 30 minutes
    ("0 15 2 * * ?", "Australia/Lord_Howe", "2024-10-05T12:00:00+10:30",
     ["2024-10-06T02:30:00+11:00", "2024-10-07T02:15:00+11:00"]),
    ("0 */15 * * * ?", "Australia/Lord_Howe", "2024-10-06T01:40:00+10:30",
     ["2024-10-06T01:45:00+10:30", "2024-10-06T02:30:00+11:00", "2024-10-06T02:45:00+11:00"]),
    ("0 */15 * * * ?", "Australia/Lord_Howe", "2024-04-07T01:40:00+11:00",
     ["2024-04-07T01:45:00+11:00", "2024-04-07T01:30:00+10:30", "2024-04-07T01:45:00+10:30",
      "2024-04-07T02:00:00+10:30"]),
    ("0 45 1 * * ?", "Australia/Lord_Howe", "2024-04-06T12:00:00+11:00",
     ["2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"]),
    # Europe/Dublin (tzdata models winter as negative DST): only the offsets matter
    ("0 30 1 * * ?", "Europe/Dublin", "2024-03-30T12:00:00+00:00",
     ["2024-03-31T02:00:00+01:00", "2024-04-01T01:30:00+01:00"]),
    ("0 30 1 * * ?", "Europe/Dublin", "2024-10-26T12:00:00+01:00",
     ["2024-10-27T01:30:00+01:00", "2024-10-28T01:30:00+00:00"]),
]


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), DST_ROWS)
def test_dst_policy(expr: str, tz: str, after: str, expected: list[str]) -> None:
    assert fires(expr, tz, after, len(expected)) == expected


DST_ZONES = {  # zone -> its 2024 transitions
    "Europe/Berlin": ("2024-03-31T01:00:00Z", "2024-10-27T01:00:00Z"),
    "America/New_York": ("2024-03-10T07:00:00Z", "2024-11-03T06:00:00Z"),
    "Australia/Lord_Howe": ("2024-04-06T15:00:00Z", "2024-10-05T15:30:00Z"),
    "Europe/Dublin": ("2024-03-31T01:00:00Z", "2024-10-27T01:00:00Z"),
}


def test_the_dst_zone_table_names_real_transitions() -> None:
    for tz, transitions in DST_ZONES.items():
        for t in transitions:
            s = ms(t) // 1000
            before = datetime.fromtimestamp(s - 1, ZoneInfo(tz)).utcoffset()
            assert before != datetime.fromtimestamp(s, ZoneInfo(tz)).utcoffset(), (tz, t)


@pytest.mark.parametrize(("tz", "transition", "expr"), [
    (tz, t, expr) for tz, ts in DST_ZONES.items() for t in ts
    for expr in ("0 */15 * * * ?", "0 0 * * * ?", "30 */7 * * * ?")
    # Lord Howe shifts by 30 minutes: only a 15-minute step stays regular there
    if tz != "Australia/Lord_Howe" or expr == "0 */15 * * * ?"])
def test_a_clock_schedule_keeps_elapsed_time_regular_through_transitions(
        tz: str, transition: str, expr: str) -> None:
    """Every 15 minutes (every hour) stays every 15 minutes (hour) of real time through gaps
    and repeats: the steps between fires are the same as in UTC."""
    got = fire_times(parse_cron(expr), tz, ms(transition) - 6 * 3_600_000, 200)
    assert got[-1] > ms(transition)
    utc = fire_times(parse_cron(expr), "UTC", ms("2024-01-01T00:00:00Z"), 200)
    assert {b - a for a, b in zip(got, got[1:], strict=False)} == {
        b - a for a, b in zip(utc, utc[1:], strict=False)}


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                                "Europe/Dublin", "Asia/Shanghai", "UTC"])
@pytest.mark.parametrize("expr", ["0 30 2 * * ?", "0 30 1 * * ?", "0 15 2 * * ?"])
def test_a_daily_schedule_fires_once_every_day_of_2024(tz: str, expr: str) -> None:
    got = fire_times(parse_cron(expr), tz, ms("2023-12-31T12:00:00Z"), 366)
    days = [datetime.fromtimestamp(t / 1000, ZoneInfo(tz)).date() for t in got]
    assert days[0].isoformat() == "2024-01-01" and days[-1].isoformat() == "2024-12-31"
    assert len(set(days)) == 366
    assert all(b > a for a, b in zip(got, got[1:], strict=False))


# --- fixed intervals --------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "after", "anchor", "expected"), [
    (60_000, 0, 0, 60_000),
    (60_000, 59_999, 0, 60_000),
    (60_000, 60_000, 0, 120_000),  # strictly after
    (60_000, 1_704_067_200_001, 0, 1_704_067_260_000),
    (60_000, 1_000, 1_000, 61_000),  # a schedule created at 1_000 fires one interval later
    (60_000, 0, 1_000, 1_000),
    (60_000, -1, 0, 0),
    (7, 20, 3, 24),
    (1, 41, 0, 42),
    (86_400_000, ms("2024-03-31T00:00:00+01:00"), ms("2024-03-30T00:00:00+01:00"),
     ms("2024-04-01T01:00:00+02:00")),  # elapsed time: 24 h, not "midnight"
])
def test_fixed_intervals(interval: int, after: int, anchor: int, expected: int) -> None:
    for tz in ("UTC", "Europe/Berlin"):
        assert next_fire_ms(interval, tz, after, anchor_ms=anchor) == expected


def test_interval_preview() -> None:
    assert fire_times(1_000, "UTC", 1_500, 3, anchor_ms=200) == [2_200, 3_200, 4_200]
    assert fire_times(1_000, "UTC", 1_500, 0) == []


@pytest.mark.parametrize("interval", [0, -5, True, 1.5, "60000", None])
def test_bad_intervals_are_refused(interval: object) -> None:
    with pytest.raises(ValidationError, match="^interval: ") as info:
        next_fire_ms(interval, "UTC", 0)  # type: ignore[arg-type]
    assert info.value.field == "interval"
    with pytest.raises(ValidationError, match="^every: "):
        check_interval(interval, field="every")  # type: ignore[arg-type]


def test_check_interval_passes_good_values() -> None:
    assert check_interval(1) == 1 and check_interval(3_600_000) == 3_600_000


# --- previews, timezones, argument checks ----------------------------------------------------


@pytest.mark.parametrize("expr", ["* * * * * ?", "0 */15 * * * ?", "0 30 2 * * ?",
                                  "0 0 12 ? * 2", "0 */30 8-9 5,20 * ?", "0 0 1-3 * * ?"])
@pytest.mark.parametrize("tz", ["UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("after", ["2024-03-09T20:00:00Z", "2024-10-26T22:00:00Z",
                                   "2024-11-02T22:00:00Z"])
def test_fire_times_strictly_increase_and_match_repeated_next_fire(
        expr: str, tz: str, after: str) -> None:
    c = parse_cron(expr)
    got = fire_times(c, tz, ms(after), 40)
    assert got[0] > ms(after)
    assert all(b > a for a, b in zip(got, got[1:], strict=False))
    previous = ms(after)
    for t in got:
        assert next_fire_ms(c, tz, previous) == t
        previous = t


@pytest.mark.parametrize("count", [-1, MAX_PREVIEW + 1, True, 2.0])
def test_preview_count_is_bounded(count: object) -> None:
    with pytest.raises(ValidationError, match="^count: "):
        fire_times(parse_cron("0 0 0 * * ?"), "UTC", 0, count)  # type: ignore[arg-type]


@pytest.mark.parametrize("tz", ["UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York",
                                "Etc/GMT+5", "Australia/Lord_Howe"])
def test_known_timezones(tz: str) -> None:
    assert check_timezone(tz) == tz


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "Asia", "Asia/Shanghai ",
                                "../etc/passwd", "/etc/localtime", "localtime", "right/UTC",
                                "zone.tab", "Asia/Shanghai\x00", 8, None])
def test_unknown_timezones_are_refused(tz: object) -> None:
    with pytest.raises(ValidationError, match="^timezone: unknown time zone") as info:
        check_timezone(tz)  # type: ignore[arg-type]
    assert info.value.field == "timezone"
    with pytest.raises(ValidationError, match="^timezone: unknown time zone"):
        next_fire_ms(parse_cron("0 0 0 * * ?"), tz, 0)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="^app.tz: unknown time zone"):
        check_timezone(tz, field="app.tz")  # type: ignore[arg-type]


@pytest.mark.parametrize("after", [True, 1.5, "0", None, -10**13, 10**15])
def test_after_ms_must_be_epoch_ms_in_range(after: object) -> None:
    with pytest.raises(ValidationError, match="^after_ms: "):
        next_fire_ms(parse_cron("0 0 0 * * ?"), "UTC", after)  # type: ignore[arg-type]


def test_results_are_whole_seconds_strictly_after_a_millisecond_start() -> None:
    c = parse_cron("* * * * * ?")
    assert next_fire_ms(c, "UTC", 1_000) == 2_000
    assert next_fire_ms(c, "UTC", 1_001) == 2_000
    assert next_fire_ms(c, "UTC", 1_999) == 2_000
    assert next_fire_ms(c, "UTC", -1) == 0


def test_cron_expr_is_frozen_and_compares_by_value() -> None:
    a, b = parse_cron("0 0 12 ? * 2"), parse_cron("0 0 12 ? * 2")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.source = "x"  # type: ignore[misc]


# --- properties ---------------------------------------------------------------------------------

FIELD_SPECS = {  # name -> (low, high, names)
    "second": (0, 59, ()), "minute": (0, 59, ()), "hour": (0, 23, ()),
    "day-of-month": (1, 31, ()),
    "month": (1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT",
                      "NOV", "DEC")),
    "day-of-week": (1, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
}


@st.composite
def field_text(draw: st.DrawFn, name: str) -> tuple[str, frozenset[int]]:
    """A random valid spelling of a field and the set of values it means."""
    low, high, names = FIELD_SPECS[name]
    value = st.integers(low, high)

    def spell(v: int) -> str:
        use_name: bool = draw(st.booleans())
        if names and use_name:
            word = names[v - low]
            return draw(st.sampled_from([word, word.lower(), word.title()]))
        return str(v)

    form = draw(st.sampled_from(["*", "one", "list", "range", "step", "star-step", "range-step"]))
    if form == "*":
        return "*", frozenset(range(low, high + 1))
    if form == "one":
        v = draw(value)
        return spell(v), frozenset({v})
    if form == "list":
        vs = draw(st.lists(value, min_size=1, max_size=5))
        return ",".join(spell(v) for v in vs), frozenset(vs)
    a, b = sorted((draw(value), draw(value)))
    step = draw(st.integers(1, high - low + 1))
    if form == "range":
        return f"{spell(a)}-{spell(b)}", frozenset(range(a, b + 1))
    if form == "step":
        return f"{spell(a)}/{step}", frozenset(range(a, high + 1, step))
    if form == "star-step":
        return f"*/{step}", frozenset(range(low, high + 1, step))
    return f"{spell(a)}-{spell(b)}/{step}", frozenset(range(a, b + 1, step))


class Sets:
    def __init__(self, sets: dict[str, frozenset[int]]) -> None:
        self.sets = sets

    def matches(self, local: datetime) -> bool:
        s = self.sets
        return (local.second in s["second"] and local.minute in s["minute"]
                and local.hour in s["hour"] and local.day in s["day-of-month"]
                and local.month in s["month"]
                and (local.isoweekday() % 7) + 1 in s["day-of-week"])


@st.composite
def expressions(draw: st.DrawFn, free: tuple[str, ...] = ()) -> tuple[str, Sets]:
    """A random valid expression (fields in ``free`` are ``*``) and what it means."""
    texts, sets = [], {}
    day_mode = draw(st.sampled_from(["dom", "dow", "free"]))
    for name in FIELD_SPECS:
        low, high, _ = FIELD_SPECS[name]
        if name in free or (name == "day-of-month" and day_mode != "dom") or (
                name == "day-of-week" and day_mode != "dow"):
            text, values = "*", frozenset(range(low, high + 1))
        else:
            text, values = draw(field_text(name))
        texts.append(text)
        sets[name] = values
    if day_mode == "dom" or (day_mode == "free" and draw(st.booleans())):
        texts[5] = "?"
    elif day_mode == "dow" or draw(st.booleans()):
        texts[3] = "?"
    assume(not (day_mode == "dom" and min(sets["day-of-month"]) > max(
        [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1] for m in sets["month"])))
    spaces = draw(st.lists(st.sampled_from([" ", "  ", "\t", " \t "]), min_size=5, max_size=5))
    expr = texts[0] + "".join(sep + text for sep, text in zip(spaces, texts[1:], strict=True))
    return expr, Sets(sets)


AFTER_MS = st.integers(ms("2000-01-01T00:00:00Z"), ms("2090-01-01T00:00:00Z"))


@settings(max_examples=80, deadline=None, database=None)
@given(expressions(free=("day-of-month", "month", "day-of-week")), AFTER_MS,
       st.sampled_from(["UTC", "Asia/Shanghai"]))
def test_no_fire_is_skipped_brute_force(case: tuple[str, Sets], after_ms: int, tz: str) -> None:
    """Every second between ``after`` and the answer is checked (non-matching hours skipped
    whole) in zones without DST: the answer matches, and nothing earlier does."""
    expr, sets = case
    got = next_fire_ms(parse_cron(expr), tz, after_ms)
    assert got > after_ms and got % 1000 == 0
    zone = ZoneInfo(tz)
    assert sets.matches(datetime.fromtimestamp(got // 1000, zone))
    t = after_ms // 1000 + 1
    while t < got // 1000:
        local = datetime.fromtimestamp(t, zone)
        if local.hour not in sets.sets["hour"]:
            t += 3600 - local.minute * 60 - local.second
            continue
        assert not sets.matches(local), (expr, iso(t * 1000, tz))
        t += 1


@settings(max_examples=80, deadline=None, database=None)
@given(expressions(), AFTER_MS)
def test_agrees_with_croniter_on_its_translation(case: tuple[str, Sets], after_ms: int) -> None:
    """croniter, given ``croniter_expr`` and a naive start, is an independent oracle for the
    wall-clock arithmetic (UTC has no DST, so the two must agree exactly)."""
    expr, sets = case
    c = parse_cron(expr)
    start = datetime.fromtimestamp(after_ms / 1000, ZoneInfo("UTC")).replace(tzinfo=None)
    theirs = croniter(c.croniter_expr, start).get_next(datetime)
    got = datetime.fromtimestamp(next_fire_ms(c, "UTC", after_ms) // 1000, ZoneInfo("UTC"))
    assert got.replace(tzinfo=None) == theirs
    assert sets.matches(got)


def _offset(zone: ZoneInfo, s: int) -> int:
    offset = datetime.fromtimestamp(s, zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def reference_next(sets: Sets, zone: ZoneInfo, policy: str, after_s: int, second: int) -> int:
    """The documented DST policy, by brute force over minutes (the expression fires at one
    second of the minute; transitions fall on whole minutes): "clock" fires at every instant
    whose local time matches; "once" at first readings (fold 0) only, plus at the end of a gap
    that swallowed a matching time."""
    u = after_s - after_s % 60
    previous = _offset(zone, u - 60)
    for _ in range(4 * 1440):
        offset = _offset(zone, u)
        gap = range(u + previous + second, u + offset, 60)
        if policy == "once" and u > after_s and any(
                sets.matches(datetime.fromtimestamp(w, ZoneInfo("UTC"))) for w in gap):
            return u
        local = datetime.fromtimestamp(u + second, zone)
        if u + second > after_s and sets.matches(local) and (policy == "clock" or not local.fold):
            return u + second
        previous, u = offset, u + 60
    raise AssertionError("no fire within 4 days")


@settings(max_examples=60, deadline=None, database=None)
@given(st.data())
def test_dst_policy_against_a_brute_force_reference(data: st.DataObject) -> None:
    tz = data.draw(st.sampled_from(sorted(DST_ZONES)))
    transition = ms(data.draw(st.sampled_from(DST_ZONES[tz])))
    after_ms = transition + data.draw(st.integers(-6 * 3_600_000, 6 * 3_600_000))
    second = data.draw(st.integers(0, 59))
    expr, sets = data.draw(expressions(free=("day-of-month", "month", "day-of-week")))
    expr = " ".join([str(second), *expr.split()[1:]])
    sets.sets["second"] = frozenset({second})
    c = parse_cron(expr)
    want = reference_next(sets, ZoneInfo(tz), c.dst_policy, after_ms // 1000, second)
    assert next_fire_ms(c, tz, after_ms) == want * 1000, (expr, tz, iso(want * 1000, tz))


@settings(max_examples=60, deadline=None, database=None)
@given(expressions(), st.data(), st.integers(1, 30))
def test_fire_times_is_repeated_next_fire(case: tuple[str, Sets], data: st.DataObject,
                                          count: int) -> None:
    tz = data.draw(st.sampled_from(["UTC", "Asia/Shanghai", *sorted(DST_ZONES)]))
    after_ms = data.draw(st.one_of(
        AFTER_MS, st.sampled_from(DST_ZONES.get(tz, ("2024-03-31T01:00:00Z",))).map(ms)))
    c = parse_cron(case[0])
    got = fire_times(c, tz, after_ms, count)
    assert len(got) == count
    previous = after_ms
    for t in got:
        assert t > previous
        assert next_fire_ms(c, tz, previous) == t
        previous = t
