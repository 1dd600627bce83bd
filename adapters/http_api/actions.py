"""Operator actions (extension; the app's master key, or the operator token):

    POST /tasks/{uniqueId}/retry      a failed or cancelled task queued again, now -> TaskInfo
    POST /tasks/{uniqueId}/run-now    a delayed or retry-waiting task ready at once -> TaskInfo
    POST /pause, POST /resume         the app's dispatch -> {"paused", "pausedAt"}
    GET  /dispatch                    the same, read only
    POST /tasks/retry, /tasks/cancel, /tasks/purge
                                      by filter: {"state", "function", "createdFrom",
                                      "createdTo", "dryRun", "limit"} -> {"count", "matched",
                                      "dryRun"}
    GET  /audit?limit=                the last operator actions, newest first

Every action (and ``POST /tasks/{uniqueId}/cancel``, in ``app``) is logged with who did it:
``master`` or ``operator`` by the credentials, and what the caller says it is in the
``X-CloudQueue-Actor`` header (``cli``, ``dashboard``; optional).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cloudqueue.adapters.auth import Role
from cloudqueue.adapters.http_api.tenants import QueueApp, tenant, tenant_role
from cloudqueue.adapters.http_api.wire import parse_json_object, whole_number
from cloudqueue.engine.core.actions import (
    MAX_AUDIT,
    MAX_BULK,
    Actor,
    BulkAction,
    bulk_filter,
    check_via,
)
from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.names import near_miss
from cloudqueue.engine.core.options import _describe

ACTOR_HEADER = "X-CloudQueue-Actor"
FILTER_FIELDS = frozenset({"state", "function", "createdFrom", "createdTo", "dryRun", "limit"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def operator(request: web.Request) -> tuple[QueueApp, Actor]:
    """The app, and who acts on it: the master key or the operator token (else 401/403), and
    what the caller calls itself (``X-CloudQueue-Actor``, checked: 400 naming the header)."""
    queue_app, role = tenant_role(request, Role.MASTER)
    via = check_via(request.headers.get(ACTOR_HEADER), ACTOR_HEADER)
    return queue_app, Actor("operator" if role is Role.OPERATOR else "master", via)


def _on_task(act: str) -> Any:
    """The handler of an action on one task: ``Engine.<act>(uniqueId, actor=...)`` -> its
    TaskInfo."""
    async def handle(request: web.Request) -> web.Response:
        queue_app, actor = operator(request)
        info = await getattr(queue_app.engine, act)(request.match_info["unique_id"], actor=actor)
        return web.json_response(info.to_wire())

    return handle


cancel = _on_task("cancel")
retry = _on_task("retry")
run_now = _on_task("run_now")


async def pause(request: web.Request) -> web.Response:
    queue_app, actor = operator(request)
    return web.json_response((await queue_app.engine.pause(actor=actor)).to_wire())


async def resume(request: web.Request) -> web.Response:
    queue_app, actor = operator(request)
    return web.json_response((await queue_app.engine.resume(actor=actor)).to_wire())


async def dispatch(request: web.Request) -> web.Response:
    queue_app = tenant(request, Role.VIEWER)
    return web.json_response((await queue_app.engine.dispatch_state()).to_wire())


async def audit(request: web.Request) -> web.Response:
    queue_app = tenant(request, Role.VIEWER)
    limit = whole_number(request.query.get("limit"), "limit", 50, 1, MAX_AUDIT)
    entries = await queue_app.engine.audit(limit)
    return web.json_response({"results": [entry.to_wire() for entry in entries]})


def _bulk(action: BulkAction) -> Any:
    async def handle(request: web.Request) -> web.Response:
        queue_app, actor = operator(request)
        body = parse_json_object(await request.read())
        chosen, dry_run, limit = parse_filter_body(action, body)
        result = await queue_app.engine.bulk(action, chosen, dry_run=dry_run, limit=limit,
                                             actor=actor)
        return web.json_response(result.to_wire())

    return handle


def parse_filter_body(action: BulkAction, body: dict[str, Any]) -> tuple[Any, bool, int]:
    """A bulk action's body: its filter, ``dryRun`` (default false) and ``limit`` (1 to
    ``MAX_BULK``, default ``MAX_BULK``). Raises ``ValidationError`` naming the field."""
    for name in body:
        if name not in FILTER_FIELDS:
            meant = near_miss(name, FILTER_FIELDS)
            hint = f"did you mean {meant!r}? " if meant else ""
            raise ValidationError(f"unknown field {name!r} of a bulk {action.value}; {hint}the "
                                  f"fields are {', '.join(sorted(FILTER_FIELDS))}", name)
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise ValidationError(f"dryRun must be true or false, got {_describe(dry_run)}",
                              "dryRun")
    limit = body.get("limit", MAX_BULK)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_BULK:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_BULK}, got "
                              f"{_describe(limit)}", "limit")
    chosen = bulk_filter(action, body.get("state"), body.get("function"),
                         wire_time(body.get("createdFrom"), "createdFrom"),
                         wire_time(body.get("createdTo"), "createdTo"))
    return chosen, dry_run, limit


def wire_time(given: Any, field: str) -> int | None:
    """An ISO-8601 time with a zone (``2024-01-01T00:00:00Z``) or epoch ms, as epoch ms."""
    if given is None or (isinstance(given, int) and not isinstance(given, bool)):
        return given
    when = None
    if isinstance(given, str):
        try:
            when = datetime.fromisoformat(given)
        except ValueError:
            pass
    if when is None or when.tzinfo is None:
        raise ValidationError(f"{field} must be an ISO-8601 time with a zone (e.g. "
                              f"2024-01-01T00:00:00Z) or epoch ms, got {_describe(given)}",
                              field)
    delta = when - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def add_routes(router: web.UrlDispatcher, base: str) -> None:
    task = f"{base}/tasks/{{unique_id:[^/]+}}"
    router.add_post(f"{task}/retry", retry)
    router.add_post(f"{task}/run-now", run_now)
    for action in BulkAction:
        router.add_post(f"{base}/tasks/{action.value}", _bulk(action))
    router.add_post(f"{base}/pause", pause)
    router.add_post(f"{base}/resume", resume)
    router.add_get(f"{base}/dispatch", dispatch)
    router.add_get(f"{base}/audit", audit)
