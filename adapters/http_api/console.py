"""The operator's views (extension): what the dashboard reads, open to the viewer token too.

    GET /1.1/engine/cloud-queue/apps          the apps the credentials cover, and their role
    GET /1.1/engine/cloud-queue/overview      one app at a glance (``overview_body``)
    GET /1.1/engine/cloud-queue/events        the app's live changes, as Server-Sent Events
    GET /1.1/engine/cloud-queue/tasks/{uniqueId}/detail
                                              task info, params, options, why it waits

The event stream sends ``overview`` at once and every ``OVERVIEW_EVERY_S``, and ``tasks``: the
tasks that changed since the last message (their info without ``runs``), gathered for
``TASKS_EVERY_S`` and sent once the changes are durable, at most ``MAX_TASKS_PER_MESSAGE`` a
message (``more``: some were left out; read the list again). Every wait is on the app engine's
clock. The charts' points come from ``engine.runtime.recent``: one sample of the engine's
metrics every ``recent.STEP_MS``, taken by a task per app while the server runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from cloudqueue.adapters.auth import Role, bearer_role
from cloudqueue.adapters.http_api.stream import _send
from cloudqueue.adapters.http_api.tenants import (
    APPS,
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    QueueApp,
    caller,
    tenant,
)
from cloudqueue.engine.core.errors import ForbiddenError, LogError
from cloudqueue.engine.core.task import iso_ms
from cloudqueue.engine.runtime.recent import Recent

OVERVIEW_EVERY_S = 2.0
TASKS_EVERY_S = 0.5
MAX_TASKS_PER_MESSAGE = 100
RECENT = web.AppKey("recent", dict[str, Recent])

_ROLE_NAMES = {Role.OPERATOR: "operator", Role.VIEWER: "viewer", Role.MASTER: "master"}


async def apps(request: web.Request) -> web.Response:
    """The server's operator or viewer token alone: every app; an app's master key: that one."""
    role = bearer_role(request.headers, request.app.get(OPERATOR_TOKEN),
                       request.app.get(VIEWER_TOKEN))
    if role is not Role.NONE:
        return web.json_response({"role": _ROLE_NAMES[role],
                                  "apps": sorted(request.app[APPS].keys())})
    queue_app, role = caller(request)
    if role < Role.MASTER:
        raise ForbiddenError("the list of apps needs an app's master key, or the operator or "
                             "viewer token")
    return web.json_response({"role": _ROLE_NAMES[role], "apps": [queue_app.keys.app_id]})


def overview_body(queue_app: QueueApp, recent: Recent | None) -> dict[str, Any]:
    """One app at a glance: tasks by state (counted as the queue works), dispatch, host, run
    limit, quotas, the backlog's age, schedules, and the last minutes' points."""
    engine = queue_app.engine
    core = engine.core
    now_ms = engine.clock.now_ms()
    counts = {state.value: count for state, count in core.tasks_by_state().items()}
    body: dict[str, Any] = {"appId": queue_app.keys.app_id, "now": iso_ms(now_ms)}
    body.update(core.dispatch_state().to_wire())
    counts["total"] = sum(counts.values())
    quotas = core.quota.quotas
    today = core.quota.day_count if core.quota.day == now_ms // 86_400_000 else 0
    body.update({
        "tasks": counts,
        "concurrency": core.concurrency, "runLimit": engine.run_cap,
        "host": {"configured": engine.has_function_host, "up": engine.host_available},
        "quotas": {"ratePerS": quotas.rate_per_s, "perDay": quotas.per_day,
                   "held": quotas.held, "today": today, "unfinished": core.unfinished},
        "schedules": len(core.schedules()),
        "metrics": engine.metrics is not None,
        "oldestReadyAgeMs": (engine.metrics.oldest_ready_age_ms(now_ms)
                             if engine.metrics is not None else None),
        "series": {"stepS": (recent.step_ms if recent else 0) / 1000,
                   "points": recent.points() if recent else []},
    })
    return body


async def overview(request: web.Request) -> web.Response:
    queue_app = tenant(request, Role.VIEWER)
    recent = request.app[RECENT].get(queue_app.keys.app_id)
    return web.json_response(overview_body(queue_app, recent))


async def detail(request: web.Request) -> web.Response:
    queue_app = tenant(request, Role.VIEWER)
    found = await queue_app.engine.inspect(request.match_info["unique_id"])
    return web.json_response(found.to_wire())


class _Changed:
    """The uniqueIds of the tasks that changed, in the order they first did."""

    def __init__(self) -> None:
        self.ids: dict[str, None] = {}

    def __call__(self, unique_id: str) -> None:
        self.ids[unique_id] = None

    def take(self, most: int) -> tuple[list[str], bool]:
        taken: list[str] = []
        for unique_id in self.ids:
            if len(taken) == most:
                break
            taken.append(unique_id)
        more = len(self.ids) > len(taken)
        self.ids.clear()  # what was left out: the reader lists again
        return taken, more


async def events(request: web.Request) -> web.StreamResponse:
    queue_app = tenant(request, Role.VIEWER)
    engine = queue_app.engine
    recent = request.app[RECENT].get(queue_app.keys.app_id)
    changed = _Changed()
    engine.watchers.feeds.append(changed)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        clock = engine.clock
        next_overview = clock.monotonic_ms()
        while True:
            if clock.monotonic_ms() >= next_overview:
                next_overview = clock.monotonic_ms() + OVERVIEW_EVERY_S * 1000
                await _message(request, response, "overview", overview_body(queue_app, recent))
            if changed.ids:
                body = await _changes(queue_app, changed)
                if body is None:
                    break  # the log failed: nothing more will be durable
                await _message(request, response, "tasks", body)
            await clock.sleep(TASKS_EVERY_S * 1000)
    finally:
        engine.watchers.feeds.remove(changed)
    await response.write_eof()
    return response


async def _changes(queue_app: QueueApp, changed: _Changed) -> dict[str, Any] | None:
    """The ``tasks`` message: the changed tasks as they are now, once durable; None if the
    log failed."""
    engine = queue_app.engine
    ids, more = changed.take(MAX_TASKS_PER_MESSAGE)
    tasks, gone = [], []
    for unique_id in ids:
        task = engine.core.task(unique_id)
        if task is None:
            gone.append(unique_id)
        else:
            tasks.append(task)
    seq = max((task.changed_seq for task in tasks), default=0)
    try:
        await engine.store.wait_durable(seq)
    except LogError:
        return None
    shown = []
    for task in tasks:
        wire = engine.core.info(task).to_wire()
        wire.pop("runs", None)
        shown.append(wire)
    body: dict[str, Any] = {"tasks": shown, "more": more}
    if gone:
        body["gone"] = gone
    return body


async def _message(request: web.Request, response: web.StreamResponse, kind: str,
                   data: dict[str, Any]) -> None:
    text = json.dumps(data, separators=(",", ":"))
    await _send(request, response, f"event: {kind}\ndata: {text}\n\n".encode())


async def _sampling(app: web.Application) -> AsyncIterator[None]:
    """One sampler per app with metrics, from when the engines have started until the server
    stops."""
    found = app[RECENT]
    for app_id, queue_app in app[APPS].items():
        if queue_app.engine.metrics is not None:
            found[app_id] = Recent(queue_app.engine.metrics)
    samplers = [asyncio.create_task(_sample(app[APPS][app_id], recent, found))
                for app_id, recent in found.items()]
    try:
        yield
    finally:
        for sampler in samplers:
            sampler.cancel()
        await asyncio.gather(*samplers, return_exceptions=True)


async def _sample(queue_app: QueueApp, recent: Recent, found: dict[str, Recent]) -> None:
    clock = queue_app.engine.clock
    while True:
        metrics = queue_app.engine.metrics
        if metrics is not None and metrics is not recent.metrics:  # a new engine (a node took
            recent = found[queue_app.keys.app_id] = Recent(metrics)  # the app again)
        recent.sample(clock.now_ms())
        await clock.sleep(recent.step_ms)


def add_routes(app: web.Application, base: str) -> None:
    """The views, and the samplers (after the engines have started: add after them)."""
    app[RECENT] = {}
    app.router.add_get(f"{base}/apps", apps)
    app.router.add_get(f"{base}/overview", overview)
    app.router.add_get(f"{base}/events", events)
    app.router.add_get(f"{base}/tasks/{{unique_id:[^/]+}}/detail", detail)
    app.cleanup_ctx.append(_sampling)
