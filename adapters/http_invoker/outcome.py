"""How a call to a function host went, decided from what came back (docs/protocol.md §2.3). Pure.

* 2xx: success; ``result`` is the host's whole JSON body (``{"result": v}``), or its raw text when
  the body is not JSON; unless the function returned ``{"__cloudqueue": {"continue": cp}}``,
  which asks to be called again from checkpoint ``cp`` (continuation).
* Any other answer: a failed run, retried while runs remain under both delivery modes;
  ``error`` is the body's ``error`` string, ``statusCode`` the status. Except LeanEngine's own
  timeout (a 502/503/504 with ``code`` 124): the function was called and never answered, an
  *unknown* outcome like our own timeout.
* 502/503/504 whose body is not a LeanEngine ``{code, error}`` body: a gateway's answer. The
  request was sent whole before it came (an answer always follows the request), and a proxy may
  have passed it on to the function before failing, so it proves nothing about whether the
  function ran: an *unknown* outcome, charged, which the task's deliveryMode decides (retried
  under atLeastOnce, final under atMostOnce). It also suggests the host is down, so the invoker
  pauses dispatch and probes (``gateway_down``).
* The request provably never left (``h1.ConnectFailed``: refused, DNS, connect timeout, the
  connection gone before the request was written): *unavailable*, the one outcome that charges
  no attempt. The connection broke after the request was sent, no answer in time, or an answer
  over the cap: an *unknown* outcome, which the task's deliveryMode decides.

Apart from what an outcome does to its task, a failure is marked ``host_error`` when the host
rather than the function failed the call: a 429; a 5xx without the function's own ``{code,
error}`` body (a proxy's 502/503/504, a server's error page); LeanEngine's own timeout (code
124); no answer in time; a connection broken after sending (the invoker's ``Unavailable`` is one
too). The host-adaptive limit backs off on them (``engine/runtime/host_limit.py``). A function
that raised or answered an error of its own (a 4xx, or a 5xx with a ``{code, error}`` body) is
not a sign of the host's load.
"""

from __future__ import annotations

import json
from typing import Any

from cloudqueue.engine.core.events import FailureKind
from cloudqueue.engine.runtime.functions import Continued, Failed, Outcome, Succeeded, Unavailable

_GATEWAY_STATUSES = frozenset({502, 503, 504})
_LEANENGINE_TIMEOUT = 124  # LeanEngine's code for a function that did not answer in time
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


def _leanengine_error(parsed: bool, value: Any) -> bool:
    return (parsed and isinstance(value, dict) and "code" in value
            and isinstance(value.get("error"), str))


def gateway_down(status: int, content_type: str, body: bytes) -> bool:
    """A gateway's 502/503/504 without a LeanEngine ``{code, error}`` body: the host behind it
    looks down (dispatch pauses and the host is probed). Says nothing about whether a request
    that got this answer ran: ``classify_response`` decides that."""
    return status in _GATEWAY_STATUSES and not _leanengine_error(*_parse(content_type, body))


def classify_response(status: int, content_type: str, body: bytes) -> Outcome:
    """An answer to a request that was sent: never ``Unavailable`` (only a request that never
    left may be retried uncharged)."""
    parsed, value = _parse(content_type, body)
    if 200 <= status < 300:
        continued = _continuation(value) if parsed else None
        if continued is not None:
            return continued
        return Succeeded(value if parsed else body.decode("utf-8", "replace"), status)
    if _leanengine_error(parsed, value):
        if status in _GATEWAY_STATUSES and value["code"] == _LEANENGINE_TIMEOUT:
            # LeanEngine's own "the request timed out": the function was called and did not
            # answer in time, which is no answer from it at all
            return Failed(f"{value['error']} (the function may have run, so the outcome is "
                          f"unknown; an atMostOnce task is not retried)",
                          FailureKind.UNKNOWN, status, host_error=True)
        # the function's own error answer (a 429 is the host's however it is worded)
        return Failed(value["error"], FailureKind.ERROR, status, host_error=status == 429)
    if status in _GATEWAY_STATUSES:
        return Failed(f"a gateway answered {status} without a LeanEngine error body "
                      f"({_excerpt(body)!r}) after the request was sent: the function may have "
                      f"run, so the outcome is unknown (an atMostOnce task is not retried)",
                      FailureKind.UNKNOWN, status, host_error=True)
    return Failed(f"the function host answered HTTP {status}: {_excerpt(body)}",
                  FailureKind.ERROR, status, host_error=status == 429 or status >= 500)


def connection_failed(reason: str) -> Unavailable:
    """The request provably never reached the host (refused, DNS, connect timeout, the
    connection gone before the request was written): nothing ran."""
    return Unavailable(f"could not reach the function host: {reason}")


def broken_after_sending(reason: str) -> Outcome:
    return Failed(f"the connection to the function host broke after the request was sent "
                  f"({reason}): the function may have run, so the outcome is unknown (an "
                  f"atMostOnce task is not retried)", FailureKind.UNKNOWN, host_error=True)


def answer_too_large(limit: int) -> Outcome:
    """The function answered with more than the queue stores: it ran, but its answer cannot be
    kept. An unknown outcome as far as the task goes (atMostOnce: final; atLeastOnce: retried
    while runs remain), never an endless retry."""
    return Failed(f"the function's result cannot be stored: its answer is over the {limit}-byte "
                  f"cap on a function's answer (it was not read); keep large results elsewhere "
                  f"and return a reference to them", FailureKind.UNKNOWN)


def timed_out(timeout_ms: int) -> Outcome:
    return Failed(f"cloud function timed out after {timeout_ms} ms", FailureKind.TIMEOUT,
                  host_error=True)
