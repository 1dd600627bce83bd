"""The REST API's bodies: parsing and validation, pure (docs/protocol.md §1.4)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from cloudqueue.engine.core.batch_items import MAX_BATCH_ITEMS
from cloudqueue.engine.core.errors import EngineError, ValidationError
from cloudqueue.engine.core.names import near_miss
from cloudqueue.engine.core.options import (
    SDK_FIELDS,
    WIRE_OPTION_NAMES,
    Limits,
    TaskOptions,
    _describe,
    check_function_name,
    check_params,
    parse_options,
)


class MalformedJsonError(EngineError):
    http_status = 400
    code = 107

    def __init__(self, detail: str) -> None:
        super().__init__(f"Malformed json object. A json dictionary is expected. ({detail})")


@dataclass(frozen=True)
class EnqueueRequest:
    function: str
    params: Any
    options: TaskOptions
    ignored: tuple[str, ...] = ()  # unknown body fields, ignored as LeanCloud ignores them


# the fields of an enqueue body
ENQUEUE_FIELDS = frozenset({"function", "params"}) | WIRE_OPTION_NAMES


# an escape that may decode to half of a UTF-16 surrogate pair (\ud800-\udfff)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object of valid Unicode text, or ``MalformedJsonError`` naming what is wrong (never
    a RecursionError from deep nesting, never a string the log could not store)."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise MalformedJsonError("nested too deeply") from None
    except UnicodeDecodeError:
        raise MalformedJsonError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedJsonError(str(exc)) from None
    except ValueError:  # int() refuses a literal of more digits than Python converts
        raise MalformedJsonError(f"a number has more than {sys.get_int_max_str_digits()} "
                                 "digits") from None
    if not isinstance(value, dict):
        raise MalformedJsonError(f"got {type(value).__name__.replace('NoneType', 'null')}")
    if _SURROGATE_ESCAPE.search(body):  # rare: only then walk the value
        _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    """``json.loads`` turns an unpaired ``\\ud800`` escape into a string no UTF-8 encoder takes."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = f"\\u{ord(item[exc.start]):04x}"
                raise MalformedJsonError(f"a string holds {bad}, half of a UTF-16 surrogate "
                                         "pair; strings must be valid Unicode") from None


def whole_number(text: str | None, name: str, default: int, low: int, high: int) -> int:
    """A query or body count: ``default`` when absent, else ASCII digits from ``low`` to
    ``high``. ``int()`` alone would take "١٠", " 10 " or "1_0", and raise on thousands of digits."""
    if text is None:
        return default
    digits = len(str(high))
    if text.isascii() and text.isdigit() and len(text) <= digits and low <= int(text) <= high:
        return int(text)
    raise ValidationError(f"{name} must be a whole number from {low} to {high}", name)


def parse_enqueue(body: dict[str, Any], limits: Limits, *, strict: bool = False
                  ) -> EnqueueRequest:
    """Raises ``ValidationError`` naming the field. Absent or null ``params`` become ``{}``
    (other values, ``0`` and ``""`` too, are kept as sent).

    An unknown field is ignored, as LeanCloud's protocol says (the SDK sends ``prod``, older ones
    ``notify`` and ``retryTimeout``), and named in ``ignored`` — unless it is a near miss of a
    real one (``unique_id``, ``uniqueid``, ``keepresult``, ``atempts``): that is refused, naming
    the right name, since ignoring it would silently lose the option. With ``strict`` (an app's
    ``strict_options``) every unknown field but the SDK's own is refused.
    """
    ignored = _unknown_fields(body, strict)
    function = check_function_name(body.get("function"))
    params = body.get("params")
    if params is None:
        params = {}
    check_params(params)
    options = parse_options(body, wire=True, limits=limits)
    if "uniqueId" in body and body["uniqueId"] is None:
        raise ValidationError("uniqueId must be a string of 1 to 32 characters, got null",
                              "uniqueId")
    return EnqueueRequest(function, params, options, ignored)


BATCH_FIELDS = frozenset({"tasks", "atomic"})


def parse_batch_body(body: dict[str, Any]) -> tuple[list[Any], bool]:
    """A bulk enqueue's ``tasks`` (1 to ``MAX_BATCH_ITEMS`` enqueue bodies, each checked later
    on its own) and ``atomic`` (default false). Raises ``ValidationError`` naming the field."""
    for name in body:
        if name not in BATCH_FIELDS:
            meant = near_miss(name, BATCH_FIELDS)
            hint = f"did you mean {meant!r}? " if meant else ""
            raise ValidationError(f"unknown field {name!r} of a bulk enqueue; {hint}the body is "
                                  "{\"tasks\": [enqueue bodies], \"atomic\": false}", name)
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not 1 <= len(tasks) <= MAX_BATCH_ITEMS:
        got = f"{len(tasks)} items" if isinstance(tasks, list) else _describe(tasks)
        raise ValidationError(f"tasks must be an array of 1 to {MAX_BATCH_ITEMS} enqueue bodies, "
                              f"got {got}", "tasks")
    atomic = body.get("atomic", False)
    if not isinstance(atomic, bool):
        raise ValidationError(f"atomic must be true or false, got {_describe(atomic)}", "atomic")
    return tasks, atomic


def _unknown_fields(body: dict[str, Any], strict: bool) -> tuple[str, ...]:
    ignored: list[str] = []
    for name in body:
        if name in ENQUEUE_FIELDS or name in SDK_FIELDS:
            continue
        meant = near_miss(name, ENQUEUE_FIELDS)
        if meant is not None:
            raise ValidationError(f"unknown field {name!r}: did you mean {meant!r}? (the body "
                                  "uses LeanCloud's camelCase names)", name)
        if strict:
            raise ValidationError(f"unknown field {name!r} (this app has strict_options on); "
                                  f"the fields are: {', '.join(sorted(ENQUEUE_FIELDS))}", name)
        ignored.append(name)
    return tuple(ignored)
