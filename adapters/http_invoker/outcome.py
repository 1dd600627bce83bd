"""How a call to a function host went, decided from what came back (protocol §2.3, D11). Pure.

* 2xx: success; ``result`` is the host's whole JSON body (``{"result": v}``), or its raw text when
  the body is not JSON; unless the function returned ``{"__cloudqueue": {"continue": cp}}``,
  which asks to be called again from checkpoint ``cp`` (continuation).
* Any other answer: a failed run, retried while runs remain under both delivery modes;
  ``error`` is the body's ``error`` string, ``statusCode`` the status.
* 502/503/504 whose body is not a LeanEngine ``{code, error}`` body: a gateway speaking for a dead
  host. Nothing ran: the host is *unavailable* and no attempt is charged.
* No connection at all: unavailable. The connection broke after the request was sent, or no
  answer in time: an *unknown* outcome, which the task's deliveryMode decides.
"""

from __future__ import annotations

import json
from typing import Any

from engine.core.events import FailureKind
from engine.runtime.functions import Continued, Failed, Outcome, Succeeded, Unavailable

_GATEWAY_STATUSES = frozenset({502, 503, 504})
_EXCERPT = 200


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _parse(content_type: str, body: bytes) -> tuple[bool, Any]:
    if not _is_json(content_type):
        return False, None
    try:
        return True, json.loads(body)
    except (ValueError, RecursionError):
        return False, None


def _excerpt(body: bytes) -> str:
    text = body[:_EXCERPT].decode("utf-8", "replace")
    return text + ("..." if len(body) > _EXCERPT else "")


CONTINUATION_KEY = "__cloudqueue"


def _continuation(body: Any) -> Continued | None:
    """A function that returned ``{"__cloudqueue": {"continue": checkpoint}}`` asks to be called
    again with ``checkpoint``; the host wraps it as ``{"result": ...}``."""
    result = body.get("result") if isinstance(body, dict) else None
    marker = result.get(CONTINUATION_KEY) if isinstance(result, dict) else None
    if isinstance(marker, dict) and "continue" in marker:
        return Continued(marker["continue"])
    return None


def with_checkpoint(params: Any, checkpoint: Any, slice_: int) -> Any:
    """The body for a continued run: object params gain ``__cloudqueue: {checkpoint, slice}``,
    which a plain LeanEngine function reads as ``req.params.__cloudqueue``. Other params go
    unchanged; the host fetches their checkpoint with the run's token (``GET
    .../tasks/<id>/checkpoint``)."""
    if slice_ == 0 or not isinstance(params, dict):
        return params
    return {**params, CONTINUATION_KEY: {"checkpoint": checkpoint, "slice": slice_}}


def classify_response(status: int, content_type: str, body: bytes) -> Outcome:
    parsed, value = _parse(content_type, body)
    if 200 <= status < 300:
        continued = _continuation(value) if parsed else None
        if continued is not None:
            return continued
        return Succeeded(value if parsed else body.decode("utf-8", "replace"), status)
    leanengine_error = (parsed and isinstance(value, dict) and "code" in value
                        and isinstance(value.get("error"), str))
    if status in _GATEWAY_STATUSES and not leanengine_error:
        return Unavailable(f"the function host answered {status} with no LeanEngine error body "
                           f"(a gateway for a host that is down): {_excerpt(body)!r}")
    if leanengine_error:
        return Failed(value["error"], FailureKind.ERROR, status)
    return Failed(f"the function host answered HTTP {status}: {_excerpt(body)}",
                  FailureKind.ERROR, status)


def connection_failed(reason: str) -> Outcome:
    """The request never reached the host (refused, DNS, unreachable)."""
    return Unavailable(f"could not reach the function host: {reason}")


def broken_after_sending(reason: str) -> Outcome:
    return Failed(f"the connection to the function host broke after the request was sent "
                  f"({reason}); the function may have run", FailureKind.UNKNOWN)


def timed_out(timeout_ms: int) -> Outcome:
    return Failed(f"cloud function timed out after {timeout_ms} ms", FailureKind.UNKNOWN)
