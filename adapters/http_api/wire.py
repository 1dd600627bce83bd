"""The REST API's bodies: parsing and validation, pure (protocol §1.4)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.core.errors import EngineError, ValidationError
from engine.core.options import (
    Limits,
    TaskOptions,
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


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object, or ``MalformedJsonError`` (never a RecursionError from deep nesting)."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise MalformedJsonError("nested too deeply") from None
    except ValueError as exc:
        raise MalformedJsonError(str(exc) if isinstance(exc, json.JSONDecodeError)
                                 else "not UTF-8") from None
    if not isinstance(value, dict):
        raise MalformedJsonError(f"got {type(value).__name__.replace('NoneType', 'null')}")
    return value


def parse_enqueue(body: dict[str, Any], limits: Limits) -> EnqueueRequest:
    """Raises ``ValidationError`` naming the field. Unknown fields (``prod``, ``notify``…) are
    ignored; falsy ``params`` become ``{}``, as the SDK sends them."""
    function = check_function_name(body.get("function"))
    params = body.get("params")
    if params is None:
        params = {}
    check_params(params)
    options = parse_options(body, wire=True, limits=limits)
    if "uniqueId" in body and body["uniqueId"] is None:
        raise ValidationError("uniqueId must be a string of 1 to 32 characters, got null",
                              "uniqueId")
    return EnqueueRequest(function, params, options)
