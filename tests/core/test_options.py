"""Task options: LeanCloud's defaults, and a clear error for every bad value in both spellings."""

from __future__ import annotations

from typing import Any

import pytest

from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.options import (
    DeliveryMode,
    Limits,
    TaskOptions,
    check_function_name,
    check_params,
    check_unique_id,
    parse_options,
)


def test_defaults_are_leanclouds() -> None:
    opts = parse_options({}, wire=True)
    assert opts == TaskOptions(attempts=1, backoff_ms=60_000, delay_ms=0,
                               delivery_mode=DeliveryMode.AT_LEAST_ONCE, keep_result_ms=300_000,
                               priority=None, timeout_ms=15_000, unique_id=None)
    assert opts.max_runs == 2


def test_python_and_wire_spellings_mean_the_same() -> None:
    python = parse_options({"attempts": 3, "backoff": 10, "delay": 20,
                            "delivery_mode": "atMostOnce", "keep_result": 30, "priority": 5,
                            "timeout": 40, "unique_id": "u-1"}, wire=False)
    wire = parse_options({"attempts": 3, "backoff": 10, "delay": 20, "deliveryMode": "atMostOnce",
                          "keepResult": 30, "priority": 5, "timeout": 40, "uniqueId": "u-1"},
                         wire=True)
    assert python == wire == TaskOptions(3, 10, 20, DeliveryMode.AT_MOST_ONCE, 30, 5, 40, "u-1")


def test_wire_ignores_unknown_fields_the_sdk_sends() -> None:
    assert parse_options({"prod": 0, "notify": True, "retryTimeout": 5}, wire=True) == TaskOptions()


def test_python_refuses_an_unknown_option_naming_it() -> None:
    with pytest.raises(ValidationError, match="unknown option 'deliveryMode'") as info:
        parse_options({"deliveryMode": "atMostOnce"}, wire=False)
    assert info.value.field == "deliveryMode"


def test_integral_floats_are_accepted_as_milliseconds() -> None:
    assert parse_options({"backoff": 1e3, "attempts": 2.0}, wire=True).backoff_ms == 1000


def test_null_options_take_their_defaults() -> None:
    assert parse_options({"delay": None, "uniqueId": None}, wire=True) == TaskOptions()


BAD: list[tuple[str, Any, str]] = [
    ("attempts", "3", "attempts must be a whole number of retries"),
    ("attempts", True, "attempts must be a whole number of retries"),
    ("attempts", 1.5, "attempts must be a whole number of retries"),
    ("attempts", -1, "attempts must be between 0 and 1000, got -1"),
    ("attempts", 1001, "attempts must be between 0 and 1000, got 1001"),
    ("backoff", -5, "backoff must be >= 0 ms, got -5"),
    ("backoff", "1000", "backoff must be an integer number of milliseconds, got string '1000'"),
    ("backoff", 2.5, "backoff must be a whole number of milliseconds, got 2.5"),
    ("backoffType", "linear", 'backoffType must be "fixed" or "exponential", got string'),
    ("backoffMax", 5_000, 'backoffMax caps an exponential backoff: send backoffType '
                          '"exponential" with it'),
    ("delay", -1, "delay must be >= 0 ms, got -1"),
    ("delay", 10**13, "delay must be at most 31622400000 ms"),
    ("keepResult", -1, "keepResult must be >= 0 ms, got -1"),
    ("keepResult", [1], "keepResult must be an integer number of milliseconds, got an array"),
    ("timeout", 0, "timeout must be at least 1 ms, got 0"),
    ("timeout", 600_001, "timeout 600001 ms is over this queue's maximum of 600000 ms"),
    ("deliveryMode", "exactlyOnce", 'deliveryMode must be "atLeastOnce" or "atMostOnce"'),
    ("deliveryMode", 1, 'deliveryMode must be "atLeastOnce" or "atMostOnce", got number 1'),
    ("priority", "high", "priority must be a finite number"),
    ("priority", float("inf"), "priority must be a finite number"),
    ("priority", False, "priority must be a finite number"),
    ("uniqueId", "x" * 33, "uniqueId must be 1 to 32 characters, got 33"),
    ("uniqueId", "", "uniqueId must be 1 to 32 characters, got 0"),
    ("uniqueId", 42, "uniqueId must be a string, got number 42"),
    ("uniqueId", "a/b", "uniqueId may not contain '/'"),
    ("uniqueId", "a b", "uniqueId may not contain ' '"),
    ("uniqueId", "caf\u00e9", "uniqueId may not contain"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD)
def test_bad_wire_option_is_refused_with_a_message_naming_it(name: str, value: Any,
                                                             message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_options({name: value}, wire=True)
    assert message in str(info.value)
    assert info.value.field == name
    assert info.value.http_status == 400 and info.value.body()["code"] == 1


def test_an_exponential_backoff_is_capped_never_below_backoff_and_fixed_stays_fixed() -> None:
    fixed = parse_options({"backoff": 1_000}, wire=True)
    assert [fixed.retry_wait_ms("t", run) for run in (1, 2, 10)] == [1_000] * 3
    capped = parse_options({"backoff": 1_000, "backoffType": "exponential"}, wire=True)
    assert capped.backoff_max_ms == 3_600_000  # an hour unless given
    assert 1_800_000 < capped.retry_wait_ms("t", 1_000) <= 3_600_000  # no 2**999 computed
    low_cap = parse_options({"backoff": 8_000, "backoffType": "exponential",
                             "backoffMax": 1_000}, wire=True)
    assert all(4_000 < low_cap.retry_wait_ms("t", run) <= 8_000 for run in range(1, 6))
    zero = parse_options({"backoff": 0, "backoff_type": "exponential"}, wire=False)
    assert [zero.retry_wait_ms("t", run) for run in (1, 5)] == [0, 0]


def test_python_spelling_is_named_in_python_errors() -> None:
    with pytest.raises(ValidationError, match="keep_result must be >= 0 ms") as info:
        parse_options({"keep_result": -1}, wire=False)
    assert info.value.field == "keep_result"


def test_timeout_maximum_is_configurable() -> None:
    limits = Limits(max_timeout_ms=3_600_000)
    assert parse_options({"timeout": 3_600_000}, wire=True, limits=limits).timeout_ms == 3_600_000


@pytest.mark.parametrize("uid", ["a", "x" * 32, "Ab_.~-09", "order:42", "b6cd3d33-908c-4c91"])
def test_safe_unique_ids_are_accepted(uid: str) -> None:
    check_unique_id(uid)


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "function must be a non-empty string"), ("a/b", "function may not contain '/'"),
     ("x" * 129, "function must be at most 128 characters"), (None, "non-empty string")],
)
def test_bad_function_names_are_refused(name: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        check_function_name(name)


def test_params_may_be_any_json_value() -> None:
    for value in [{}, [], "s", 1, 1.5, True, None, {"a": [1, {"b": None}]}]:
        check_params(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [({1: "a"}, "object key 1 is not a string"), ({"a": {1, 2}}, "a set cannot be stored"),
     ({"x": float("nan")}, "nan is not a JSON number"), (object(), "a object cannot be stored")],
)
def test_params_that_are_not_json_are_refused(value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        check_params(value)


def test_deeply_nested_params_are_refused_without_recursion() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValidationError, match="nest deeper than 64 levels"):
        check_params(deep)


# ---------------------------------------------------------------------- the fast paths agree


@pytest.mark.parametrize(("good", "bad"), [
    ({"attempts": 1}, {"attempts": True}),          # True == 1, but a boolean is refused
    ({"delay": 0}, {"delay": False}),
    ({"priority": 1}, {"priority": float("nan")}),
])
def test_a_cached_option_set_never_vouches_for_an_equal_but_invalid_one(
        good: dict[str, Any], bad: dict[str, Any]) -> None:
    for wire in (False, True):
        assert parse_options(good, wire=wire) == parse_options(good, wire=wire)
        with pytest.raises(ValidationError):
            parse_options(bad, wire=wire)


def test_cached_options_keep_the_type_they_were_given() -> None:
    assert type(parse_options({"priority": 5}, wire=False).priority) is int
    assert type(parse_options({"priority": 5.0}, wire=False).priority) is float


def test_options_depend_on_the_limits_they_were_checked_against() -> None:
    wide = Limits(max_timeout_ms=3_600_000)
    assert parse_options({"timeout": 3_600_000}, wire=False, limits=wide).timeout_ms == 3_600_000
    with pytest.raises(ValidationError, match="over this queue's maximum"):
        parse_options({"timeout": 3_600_000}, wire=False)


def test_a_unique_id_is_kept_per_call() -> None:
    assert parse_options({"unique_id": "a", "delay": 5}, wire=False).unique_id == "a"
    assert parse_options({"unique_id": "b", "delay": 5}, wire=False).unique_id == "b"
    assert parse_options({"uniqueId": "c"}, wire=True).unique_id == "c"


def test_an_unhashable_option_value_is_refused_not_crashed_on() -> None:
    with pytest.raises(ValidationError, match="attempts"):
        parse_options({"attempts": [1]}, wire=True)


def test_a_checked_function_name_stays_checked_and_bad_ones_stay_bad() -> None:
    assert check_function_name("resize") == "resize"
    assert check_function_name("resize") == "resize"
    with pytest.raises(ValidationError):
        check_function_name("re size")
    with pytest.raises(ValidationError):
        check_function_name("re size")


@pytest.mark.parametrize("value", [
    {"a": float("inf")}, {"a": 1, 2: "b"}, {"a": b"bytes"}, {"a": {1: 2}}, {"a": (1, object())},
])
def test_flat_looking_params_with_a_bad_value_are_still_refused(value: Any) -> None:
    with pytest.raises(ValidationError):
        check_params(value)


def test_flat_params_with_subclassed_scalars_are_accepted() -> None:
    check_params({"state": DeliveryMode.AT_MOST_ONCE, "n": 1, "f": 1.5, "b": False, "z": None})
