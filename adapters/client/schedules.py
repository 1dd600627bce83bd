"""Schedule requests, checked as the server checks them before anything is sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudqueue.adapters.client.wire import check_count, wire_options
from cloudqueue.engine.core.cron import MAX_PREVIEW, check_interval, check_timezone, parse_cron
from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.schedules import parse_schedule
from cloudqueue.engine.core.task import iso_ms

MAX_UPCOMING = 100  # most upcoming fire times get_schedule asks for (the server's bound)


def schedule_body(name: str, function: str, params: Any, cron: str | None,
                  interval: int | None, timezone: str | None, paused: bool,
                  options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``PUT /schedules/<name>`` body: validated by the embedded engine's validator; only
    the options given are sent, and no zone when none was given (the server's default)."""
    values = {"function": function, "params": params, "cron": cron, "interval": interval,
              "timezone": timezone, "paused": paused, **options}
    spec = parse_schedule(name, {k: v for k, v in values.items() if v is not None},
                          wire=False, default_timezone="UTC")
    body: dict[str, Any] = {"function": spec.function, "params": spec.params}
    if spec.cron is not None:
        body["cron"] = spec.cron
    else:
        body["interval"] = spec.interval_ms
    if timezone is not None:
        body["timezone"] = spec.timezone
    body["paused"] = spec.paused
    body.update(wire_options(options, spec.options))
    return body


def check_upcoming(upcoming: Any) -> int:
    return check_count(upcoming, "upcoming", MAX_UPCOMING, "count")


def preview_body(cron: str | None, interval: int | None, timezone: str | None,
                  from_ms: int | None, count: int) -> dict[str, Any]:
    """A preview request's body, checked as the server checks it."""
    if (cron is None) == (interval is None):
        raise ValidationError("give exactly one of cron (an expression) or interval (ms)",
                              "cron")
    body: dict[str, Any] = {}
    if cron is not None:
        parse_cron(cron)
        body["cron"] = cron
    else:
        body["interval"] = check_interval(interval)  # type: ignore[arg-type]  # it checks
    if timezone is not None:
        body["timezone"] = check_timezone(timezone)
    if from_ms is not None:
        if isinstance(from_ms, bool) or not isinstance(from_ms, int):
            raise ValidationError(f"from_ms must be epoch milliseconds (an int), got "
                                  f"{from_ms!r}", "from")
        try:
            body["from"] = iso_ms(from_ms)
        except (ValueError, OverflowError, OSError):
            raise ValidationError(f"from_ms {from_ms} is not a representable time",
                                  "from") from None
    body["count"] = check_count(count, "count", MAX_PREVIEW)
    return body
