"""Task options with LeanCloud's meanings and defaults, and their validation.

One validator serves both spellings: the Python API's snake_case keywords (``delivery_mode``,
``keep_result``, ``unique_id``) and the wire's camelCase fields (``deliveryMode``, ``keepResult``,
``uniqueId``), so the two can never disagree about what is valid. Messages name the option in the
caller's own spelling and say what to send instead. Durations are integer milliseconds.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.names import near_miss

MAX_UNIQUE_ID_CHARS = 32
MAX_FUNCTION_NAME_CHARS = 128
# A year: long enough for any real delay or retention, small enough that ms + duration stays exact.
MAX_DURATION_MS = 366 * 24 * 3600 * 1000
MAX_PARAMS_DEPTH = 64


class DeliveryMode(StrEnum):
    AT_LEAST_ONCE = "atLeastOnce"
    AT_MOST_ONCE = "atMostOnce"


class BackoffType(StrEnum):
    """How the wait before a retry grows: ``fixed`` (LeanCloud's: every retry waits
    ``backoff``) or ``exponential`` (``backoff`` doubling each run, capped at ``backoffMax``,
    with jitter: see ``retry_wait_ms``)."""

    FIXED = "fixed"
    EXPONENTIAL = "exponential"


DEFAULT_BACKOFF_MAX_MS = 3_600_000  # an hour: exponential backoff's default cap


@dataclass(frozen=True, slots=True)
class Limits:
    """The queue's own bounds on options (config, not per task)."""

    max_timeout_ms: int = 600_000
    max_attempts: int = 1_000


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Validated options of one task. ``attempts`` counts retries: runs = attempts + 1
    (docs/protocol.md §3.2)."""

    attempts: int = 1
    backoff_ms: int = 60_000
    delay_ms: int = 0
    delivery_mode: DeliveryMode = DeliveryMode.AT_LEAST_ONCE
    keep_result_ms: int = 300_000
    priority: int | float | None = None
    timeout_ms: int = 15_000
    unique_id: str | None = None
    deadline_ms: int = 0  # overall limit on a continued task, from enqueue (0: none)
    backoff_type: BackoffType = BackoffType.FIXED
    backoff_max_ms: int = DEFAULT_BACKOFF_MAX_MS  # exponential only; never below backoff_ms

    @property
    def max_runs(self) -> int:
        return self.attempts + 1

    def retry_wait_ms(self, unique_id: str, run: int) -> int:
        """How long after its ``run``-th run (1 for the first) failed the task waits to run
        again.

        ``fixed``: ``backoff``. ``exponential``: ``d = min(cap, backoff * 2**(run - 1))`` with
        ``cap = max(backoff, backoffMax)``, less a jitter of up to half of it ("equal jitter",
        so retries of tasks that failed together spread out but none comes sooner than ``d/2``):
        ``d - floor(d * j / 2)``, where ``j`` in [0, 1) is the CRC-32 of ``"uniqueId:run"`` over
        2**32 (in integers: ``d - d * crc32 // 2**33``). The jitter is a function of the task
        and the run, not of a random source, so replaying the log or restoring a snapshot gives
        every retry the same ``retryAt``.

        Worked example (backoff 1000, backoffMax 5000, uniqueId "t1"): runs 1, 2, 3, 4 wait
        at most 1000, 2000, 4000, 5000 ms and at least half of each.
        """
        base = self.backoff_ms
        if self.backoff_type is BackoffType.FIXED:
            return base
        cap = max(base, self.backoff_max_ms)
        # 2**(run - 1) past the cap is never needed: stop doubling there (run may be 1,000)
        wait = base
        for _ in range(run - 1):
            if wait >= cap:
                break
            wait *= 2
        wait = min(wait, cap)
        return wait - wait * zlib.crc32(f"{unique_id}:{run}".encode()) // 2**33


# (python name, wire name, TaskOptions field)
OPTION_NAMES: tuple[tuple[str, str, str], ...] = (
    ("attempts", "attempts", "attempts"),
    ("backoff", "backoff", "backoff_ms"),
    ("delay", "delay", "delay_ms"),
    ("delivery_mode", "deliveryMode", "delivery_mode"),
    ("keep_result", "keepResult", "keep_result_ms"),
    ("priority", "priority", "priority"),
    ("timeout", "timeout", "timeout_ms"),
    ("unique_id", "uniqueId", "unique_id"),
    ("deadline", "deadline", "deadline_ms"),
    ("backoff_type", "backoffType", "backoff_type"),
    ("backoff_max", "backoffMax", "backoff_max_ms"),
)
PYTHON_OPTION_NAMES = frozenset(p for p, _, _ in OPTION_NAMES)


def options_to_wire(options: TaskOptions) -> dict[str, Any]:
    """The options as an enqueue body names them (durations in ms), every one the task runs
    with: ``uniqueId`` is the task's own, ``deadline`` only when set, ``backoffMax`` only for
    an exponential backoff."""
    wire: dict[str, Any] = {}
    for _, name, field in OPTION_NAMES:
        value = getattr(options, field)
        if name == "uniqueId" or (name == "deadline" and not value) or (
                name == "backoffMax" and options.backoff_type is BackoffType.FIXED):
            continue
        wire[name] = value.value if isinstance(value, StrEnum) else value
    return wire
WIRE_OPTION_NAMES = frozenset(w for _, w, _ in OPTION_NAMES)
# Body fields LeanCloud's SDKs send that the queue ignores by design: ``prod`` (the SDK's
# production flag), and ``notify`` and ``retryTimeout`` from older SDKs.
SDK_FIELDS = frozenset({"prod", "notify", "retryTimeout"})


_DEFAULTS = TaskOptions()


# Validated options by what was given: most enqueues repeat a handful of option sets, and
# validating one and building its frozen TaskOptions cost more than the rest of an enqueue. The
# key holds each value's type beside it, since True == 1 == 1.0 but only 1 is valid everywhere.
# uniqueId differs per task, so options naming one are never cached. Bounded: cleared when full.
_PARSED: dict[tuple[Any, ...], TaskOptions] = {}
_PARSED_MAX = 1_024
_WIRE_NAMES = tuple(w for _, w, _ in OPTION_NAMES)


def parse_options(values: Mapping[str, Any], *, wire: bool,
                  limits: Limits = Limits()) -> TaskOptions:
    """Validate options given in the Python (``wire=False``) or wire (``wire=True``) spelling.

    Unknown names are refused in the Python spelling (a typo there is a bug) and ignored on the
    wire (the protocol says so: older SDKs send ``notify``, ``retryTimeout``, ``prod``).

    Raises:
        ValidationError: naming the first offending option and what it accepts.
    """
    if not values:
        return _DEFAULTS
    if wire:
        given = [(name, values[name]) for name in _WIRE_NAMES if name in values]
        if values.get("uniqueId") is not None:
            return _parse_options(values, wire, limits)
    else:
        given = list(values.items())
        if values.get("unique_id") is not None:
            return _parse_options(values, wire, limits)
    try:
        key = (wire, limits, *[(k, v.__class__, v) for k, v in given])
        cached = _PARSED.get(key)
    except TypeError:  # an unhashable value: not valid anyway, the full check says why
        return _parse_options(values, wire, limits)
    if cached is None:
        cached = _parse_options(values, wire, limits)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = cached
    return cached


def _parse_options(values: Mapping[str, Any], wire: bool, limits: Limits) -> TaskOptions:
    if not wire:
        unknown = sorted(set(values) - PYTHON_OPTION_NAMES)
        if unknown:
            meant = near_miss(unknown[0], PYTHON_OPTION_NAMES)
            hint = f"did you mean {meant!r}? " if meant else ""
            raise ValidationError(
                f"unknown option {unknown[0]!r}; {hint}options are: "
                f"{', '.join(sorted(PYTHON_OPTION_NAMES))}",
                unknown[0],
            )
    fields: dict[str, Any] = {}
    for py_name, wire_name, field in OPTION_NAMES:
        name = wire_name if wire else py_name
        value = values.get(name)
        if value is None:
            continue
        fields[field] = _CHECKS[field](name, value, limits)
    if "backoff_max_ms" in fields:
        _check_backoff_max(fields, wire)
    return TaskOptions(**fields) if fields else _DEFAULTS


def _check_backoff_max(fields: dict[str, Any], wire: bool) -> None:
    names = ("backoffMax", "backoffType", "backoff") if wire else (
        "backoff_max", "backoff_type", "backoff")
    if fields.get("backoff_type") is not BackoffType.EXPONENTIAL:
        raise ValidationError(f"{names[0]} caps an exponential backoff: send {names[1]} "
                              f"\"exponential\" with it (a fixed backoff always waits "
                              f"{names[2]})", names[0])


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(
            f"{name} must be an integer number of milliseconds, got {_describe(value)}", name)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValidationError(
                f"{name} must be a whole number of milliseconds, got {value}", name)
        return int(value)
    return int(value)


def _duration(name: str, value: Any, limits: Limits) -> int:
    ms = _integer(name, value)
    if ms < 0:
        raise ValidationError(f"{name} must be >= 0 ms, got {ms}", name)
    if ms > MAX_DURATION_MS:
        raise ValidationError(f"{name} must be at most {MAX_DURATION_MS} ms (366 days), got {ms}",
                              name)
    return ms


def _attempts(name: str, value: Any, limits: Limits) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        isinstance(value, float) and not value.is_integer()
    ):
        raise ValidationError(
            f"{name} must be a whole number of retries (runs = {name} + 1), got {_describe(value)}",
            name)
    n = int(value)
    if not 0 <= n <= limits.max_attempts:
        raise ValidationError(f"{name} must be between 0 and {limits.max_attempts}, got {n}", name)
    return n


def _timeout(name: str, value: Any, limits: Limits) -> int:
    ms = _integer(name, value)
    if ms < 1:
        raise ValidationError(f"{name} must be at least 1 ms, got {ms}", name)
    if ms > limits.max_timeout_ms:
        raise ValidationError(
            f"{name} {ms} ms is over this queue's maximum of {limits.max_timeout_ms} ms; "
            "split longer work into continued slices", name)
    return ms


def _delivery_mode(name: str, value: Any, limits: Limits) -> DeliveryMode:
    try:
        return DeliveryMode(value)
    except ValueError:
        raise ValidationError(
            f"{name} must be \"atLeastOnce\" or \"atMostOnce\", got {_describe(value)}", name
        ) from None


def _backoff_type(name: str, value: Any, limits: Limits) -> BackoffType:
    try:
        return BackoffType(value)
    except ValueError:
        raise ValidationError(
            f"{name} must be \"fixed\" or \"exponential\", got {_describe(value)}", name
        ) from None


def _priority(name: str, value: Any, limits: Limits) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise ValidationError(f"{name} must be a finite number (lower runs first), got "
                              f"{_describe(value)}", name)
    if isinstance(value, int):
        check_storable_int(value, name)
    return value


def _unique_id(name: str, value: Any, limits: Limits) -> str:
    check_unique_id(value, name)
    return str(value)


_CHECKS = {
    "attempts": _attempts,
    "backoff_ms": _duration,
    "delay_ms": _duration,
    "keep_result_ms": _duration,
    "delivery_mode": _delivery_mode,
    "priority": _priority,
    "timeout_ms": _timeout,
    "unique_id": _unique_id,
    "deadline_ms": _duration,
    "backoff_type": _backoff_type,
    "backoff_max_ms": _duration,
}

# Characters that cannot reach the queue intact through the SDK's unencoded GET path (LeanCloud's
# SDK puts the id in the task-info URL as it is): they would split, cut or re-decode the path.
_ID_FORBIDDEN = frozenset("/?#%")


def check_unique_id(value: Any, name: str = "uniqueId") -> None:
    """Refuse ids that are not 1-32 printable ASCII characters without space, / ? # or %."""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {_describe(value)}", name)
    if not 1 <= len(value) <= MAX_UNIQUE_ID_CHARS:
        raise ValidationError(
            f"{name} must be 1 to {MAX_UNIQUE_ID_CHARS} characters, got {len(value)}", name)
    for ch in value:
        if not ("!" <= ch <= "~") or ch in _ID_FORBIDDEN:
            raise ValidationError(
                f"{name} may not contain {ch!r}: use printable ASCII without space, / ? # or % "
                "(letters, digits and _ . ~ - are always safe)", name)


_GOOD_NAMES: set[str] = set()  # function names already checked (a handful per app)
_GOOD_NAMES_MAX = 4_096


def check_function_name(value: Any, name: str = "function") -> str:
    if value.__class__ is str and value in _GOOD_NAMES:
        return value
    _check_function_name(value, name)
    if value.__class__ is str:
        if len(_GOOD_NAMES) >= _GOOD_NAMES_MAX:
            _GOOD_NAMES.clear()
        _GOOD_NAMES.add(value)
    return value  # type: ignore[no-any-return]


def _check_function_name(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{name} must be a non-empty string naming the cloud function, got "
                              f"{_describe(value)}", name)
    if len(value) > MAX_FUNCTION_NAME_CHARS:
        raise ValidationError(
            f"{name} must be at most {MAX_FUNCTION_NAME_CHARS} characters, got {len(value)}", name)
    for ch in value:
        if not ("!" <= ch <= "~") or ch in _ID_FORBIDDEN:
            raise ValidationError(f"{name} may not contain {ch!r}: it becomes a URL path segment",
                                  name)


_SCALARS = (str, int, float, bool, type(None))
# packed; a log record holds at most 16 MiB, and a snapshot row holds params and result both
MAX_PARAMS_BYTES = 4 * 1024 * 1024
_FLAT_MAX_ITEMS = 256  # a flat dict this small of strings this short is far under the cap
_FLAT_MAX_CHARS = 4_096
_packer = msgpack.Packer(use_bin_type=True)  # the log's own settings
# What the log's msgpack can hold: an integer outside this range cannot be stored (JSON can
# carry it, so a body parses; it must be refused where it enters, never reach the log writer).
MIN_STORABLE_INT = -(1 << 63)
MAX_STORABLE_INT = (1 << 64) - 1


def check_storable_int(value: int, name: str) -> None:
    """Refuse an integer the log cannot hold (beyond 64 bits)."""
    if not MIN_STORABLE_INT <= value <= MAX_STORABLE_INT:
        raise ValidationError(f"{name} holds the integer {_short_int(value)}, beyond the 64-bit "
                              f"range the queue can store ({MIN_STORABLE_INT} to "
                              f"{MAX_STORABLE_INT}); send it as a string", name)


def _short_int(value: int) -> str:
    digits = str(abs(value)) if value.bit_length() < 4_000 else None
    if digits is None or len(digits) > 24:
        return f"{'-' if value < 0 else ''}of about {int(value.bit_length() * 0.30103) + 1} digits"
    return f"{'-' if value < 0 else ''}{digits}"


def check_params(value: Any, name: str = "params", max_depth: int = MAX_PARAMS_DEPTH,
                 max_bytes: int = MAX_PARAMS_BYTES) -> None:
    """Refuse what the log cannot store and answer as JSON: anything but plain JSON (dict with
    str keys, list, str, number, bool, None), NaN or Infinity, an integer beyond 64 bits, text
    that is not valid Unicode (a lone surrogate), nesting deeper than ``max_depth``, or more
    than ``max_bytes`` packed (a log record holds at most 16 MiB)."""
    if value.__class__ is dict and max_depth >= 1 and _flat_json_object(value):
        return
    _check_json(value, name, max_depth)
    try:
        size = len(_packer.pack(value))
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{name} holds text that is not valid Unicode ({exc.reason}: "
                              "a lone surrogate?)", name) from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise ValidationError(f"{name} cannot be stored: {exc}", name) from None
    if size > max_bytes:
        raise ValidationError(f"{name} is {size} bytes packed, over the {max_bytes} bytes a "
                              "task may carry; keep large data elsewhere and pass a reference",
                              name)


def _check_json(value: Any, name: str, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, _SCALARS):
            _check_scalar(item, name)
            continue
        if depth > max_depth:
            raise ValidationError(f"{name} nest deeper than {max_depth} levels", name)
        if isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            for key, v in item.items():
                if not isinstance(key, str):
                    raise ValidationError(f"{name} must be JSON: object key {key!r} is not a "
                                          "string", name)
                stack.append((v, depth + 1))
        else:
            raise ValidationError(
                f"{name} must be JSON: a {type(item).__name__} cannot be stored", name)


def _check_scalar(item: Any, name: str) -> None:
    if isinstance(item, float) and not math.isfinite(item):
        raise ValidationError(f"{name} must be JSON: {item} is not a JSON number", name)
    if isinstance(item, int) and not isinstance(item, bool):
        check_storable_int(item, name)


def _flat_json_object(value: dict[Any, Any]) -> bool:
    """The common params, decided fast: a small dict of ASCII str keys to ASCII str, int, bool,
    None or finite float values (exact types). False means "not sure": the full check decides."""
    if len(value) > _FLAT_MAX_ITEMS:
        return False
    for key, item in value.items():
        if key.__class__ is not str or not key.isascii() or len(key) > _FLAT_MAX_CHARS:
            return False
        kind = item.__class__
        if kind is str:
            if not item.isascii() or len(item) > _FLAT_MAX_CHARS:
                return False
            continue
        if kind is bool or item is None:
            continue
        if kind is int and MIN_STORABLE_INT <= item <= MAX_STORABLE_INT:
            continue
        if kind is float and math.isfinite(item):
            continue
        return False
    return True


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, int):
        return f"number {_short_int(value)}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
