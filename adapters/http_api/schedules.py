"""Schedule endpoints (extension, master role):

    PUT    /schedules/{name}          create or replace: {function, params, cron | interval,
                                      timezone, paused, attempts, backoff, deliveryMode, timeout,
                                      keepResult}
    GET    /schedules                 {"results": [schedule]}, by name
    GET    /schedules/{name}?count=N  one schedule with its next N fire times (default 5, max 100)
    POST   /schedules/{name}/pause    /resume
    DELETE /schedules/{name}          {"deleted": name}
    POST   /schedules/preview         {cron | interval, timezone, from, count} -> {"fireTimes"}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from cloudqueue.adapters.auth import Role
from cloudqueue.adapters.http_api.actions import operator
from cloudqueue.adapters.http_api.tenants import tenant
from cloudqueue.adapters.http_api.wire import parse_json_object, whole_number
from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.schedules import check_schedule_name, parse_schedule
from cloudqueue.engine.core.task import iso_ms

MAX_UPCOMING = 100
MAX_PREVIEW = 1_000


def _count(value: Any, default: int, maximum: int) -> int:
    """``count`` from a query string or a JSON body (a number or a string of ASCII digits)."""
    if type(value) is int:
        value = str(value) if value >= 0 else "-"
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"count must be a whole number from 1 to {maximum}", "count")
    return whole_number(value, "count", default, 1, maximum)


def _epoch_ms(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("from must be an ISO-8601 time, e.g. 2024-01-01T00:00:00Z", "from")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"from must be an ISO-8601 time, got {value!r}", "from") from None
    if parsed.tzinfo is None:
        raise ValidationError("from needs a zone (e.g. a trailing Z for UTC)", "from")
    return int(parsed.timestamp() * 1000)


async def put(request: web.Request) -> web.Response:
    queue = tenant(request, Role.MASTER).engine
    body = parse_json_object(await request.read())
    spec = parse_schedule(request.match_info["name"], body, wire=True,
                          default_timezone=queue.timezone, limits=queue.limits)
    return web.json_response((await queue.set_schedule_spec(spec)).to_wire())


async def list_all(request: web.Request) -> web.Response:
    queue = tenant(request, Role.VIEWER).engine
    return web.json_response({"results": [i.to_wire() for i in await queue.list_schedules()]})


def _name(request: web.Request) -> str:
    return check_schedule_name(request.match_info["name"])


async def show(request: web.Request) -> web.Response:
    queue = tenant(request, Role.VIEWER).engine
    count = _count(request.query.get("count"), 5, MAX_UPCOMING)
    return web.json_response((await queue.get_schedule(_name(request), count)).to_wire())


async def pause(request: web.Request) -> web.Response:
    queue = tenant(request, Role.MASTER).engine
    return web.json_response((await queue.pause_schedule(_name(request))).to_wire())


async def resume(request: web.Request) -> web.Response:
    queue = tenant(request, Role.MASTER).engine
    return web.json_response((await queue.resume_schedule(_name(request))).to_wire())


async def run_now(request: web.Request) -> web.Response:
    """One task of the schedule now, outside its slots (an operator action) -> its uniqueId."""
    queue_app, actor = operator(request)
    unique_id = await queue_app.engine.run_schedule_now(_name(request), actor=actor)
    return web.json_response({"uniqueId": unique_id})


async def delete(request: web.Request) -> web.Response:
    queue = tenant(request, Role.MASTER).engine
    name = _name(request)
    await queue.delete_schedule(name)
    return web.json_response({"deleted": name})


async def preview(request: web.Request) -> web.Response:
    queue = tenant(request, Role.VIEWER).engine
    body = parse_json_object(await request.read())
    interval = body.get("interval")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int)):
        raise ValidationError("interval must be a whole number of milliseconds", "interval")
    cron = body.get("cron")
    if cron is not None and not isinstance(cron, str):
        raise ValidationError("cron must be a string expression", "cron")
    try:
        times = await queue.preview_schedule(cron=cron, interval=interval,
                                             timezone=body.get("timezone"),
                                             from_ms=_epoch_ms(body.get("from")),
                                             count=_count(body.get("count"), 5, MAX_PREVIEW))
    except ValidationError as exc:
        if exc.field != "after_ms":  # the engine's name for ``from``
            raise
        raise ValidationError("from must be a time from 1900-01-01 to 9000-01-01 (UTC)",
                              "from") from None
    return web.json_response({"fireTimes": [iso_ms(ms) for ms in times]})


def add_routes(router: web.UrlDispatcher, base: str) -> None:
    name = "{name:[^/]+}"  # the handlers validate it, so a bad name gets a 400 that says why
    router.add_post(f"{base}/schedules/preview", preview)
    router.add_get(f"{base}/schedules", list_all)
    router.add_put(f"{base}/schedules/{name}", put)
    router.add_get(f"{base}/schedules/{name}", show)
    router.add_delete(f"{base}/schedules/{name}", delete)
    router.add_post(f"{base}/schedules/{name}/pause", pause)
    router.add_post(f"{base}/schedules/{name}/resume", resume)
    router.add_post(f"{base}/schedules/{name}/run-now", run_now)
