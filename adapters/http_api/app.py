"""The LeanCloud-compatible REST API (docs/protocol.md §1), plus marked extensions.

LeanCloud's endpoints:
    POST /1.1/engine/cloud-queue/tasks               enqueue (master; app key where the app
                                                     allows clients: params only)
    GET  /1.1/engine/cloud-queue/tasks/{uniqueId}    task info (app or master)
Extensions (master):
    GET  /1.1/engine/cloud-queue/tasks?state=&limit= list tasks, newest first
    POST /1.1/engine/cloud-queue/tasks/batch          bulk enqueue: {"tasks": [...], "atomic"}
    POST /1.1/engine/cloud-queue/tasks/{uniqueId}/cancel      (master or operator token)
    operator actions: retry, run now, pause, resume, bulk retry/cancel/purge, the audit list
                                                     (see ``actions``)
    POST /1.1/engine/cloud-queue/tasks/{uniqueId}/progress   (the run's token, see below)
    GET  /1.1/engine/cloud-queue/tasks/{uniqueId}/checkpoint (the run's token)
    /1.1/engine/cloud-queue/schedules...              schedules (see ``schedules``)
Unauthenticated:
    GET  /__health/live, /__health/ready, /1.1/engine/cloud-queue/openapi.json
    GET  /metrics    Prometheus metrics (``metrics.py``): open while the server listens on
                     loopback, else the operator token's only
    GET  /dashboard/ the web dashboard's assets (``dashboard.py``; its data comes from the API)

Every answer is JSON; every error is ``{"code", "error"}`` with a non-zero code. Credentials are
checked before the body is read, so a bad caller creates nothing and learns nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from cloudqueue.adapters.auth import RUN_TOKEN_HEADER, Role, check_run_token
from cloudqueue.adapters.http_api import actions, console, schedules, stream
from cloudqueue.adapters.http_api.actions import wire_time
from cloudqueue.adapters.http_api.cluster import (
    CLUSTER,
    Cluster,
    ClusterConfig,
    cluster_ctx,
    forward,
)
from cloudqueue.adapters.http_api.dashboard import add_routes as add_dashboard_routes
from cloudqueue.adapters.http_api.metrics import add_route as add_metrics_route
from cloudqueue.adapters.http_api.protocol import BodyTimeoutError, describe_protocol_error
from cloudqueue.adapters.http_api.tenants import (
    APPS,
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    QueueApp,
    caller,
    read_only,
    refusal,
    tenant,
)
from cloudqueue.adapters.http_api.wire import (
    EnqueueRequest,
    parse_batch_body,
    parse_enqueue,
    parse_json_object,
    whole_number,
)
from cloudqueue.engine.core.batch_items import Item
from cloudqueue.engine.core.errors import EngineError, ValidationError
from cloudqueue.engine.core.names import near_miss
from cloudqueue.engine.core.options import _describe
from cloudqueue.engine.core.progress import parse_progress
from cloudqueue.engine.core.quotas import QuotaExceededError
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.ids import random_uuid

__all__ = ["APPS", "OPENAPI_PATH", "AppStartError", "QueueApp", "create_app"]

log = logging.getLogger("cloudqueue.http")
# names the unknown fields of an enqueue body that were ignored (an extension)
IGNORED_HEADER = "X-CloudQueue-Ignored-Fields"

BASE = "/1.1/engine/cloud-queue"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"code": code, "error": message, **extra}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except QuotaExceededError as exc:
        retry_after = str(max(1, -(-exc.retry_after_ms // 1000)))
        return web.json_response(exc.body(), status=exc.http_status,
                                 headers={"Retry-After": retry_after})
    except EngineError as exc:
        return web.json_response(exc.body(), status=exc.http_status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.status, exc.reason or "error")
        if "Allow" in exc.headers:  # a 405 says which methods would do
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except BodyTimeoutError as exc:
        return _abandon_body(request, _error(408, 408, str(exc)))
    except web.RequestPayloadError as exc:  # bad chunked framing or compression
        return _abandon_body(request, _error(400, 400, f"the request body could not be read: "
                                                       f"{describe_protocol_error(exc)}"))
    except ConnectionResetError:  # the client left while its body was being read
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, 1, "internal error; the server logged the details")


def _abandon_body(request: web.Request, response: web.Response) -> web.Response:
    """Answer, then close the connection: the rest of the body is not worth reading. The body is
    marked ended, or aiohttp would read on after the answer and log its error again."""
    request.content.feed_eof()
    response.force_close()
    return response


def _enqueue_request(queue_app: QueueApp, body: dict[str, Any]) -> EnqueueRequest:
    function = body.get("function")
    if isinstance(function, str):  # the function's own option defaults, under what was sent
        merged = queue_app.engine.functions.with_defaults(function, body, wire=True)
        if merged is not body:  # a new dict only when the function declares defaults
            body = dict(merged)
    request = parse_enqueue(body, queue_app.engine.limits, strict=queue_app.strict_options)
    queue_app.check_function(request.function)
    return request


async def enqueue(request: web.Request) -> web.Response:
    queue_app, role = caller(request)
    if role is Role.VIEWER:
        raise read_only()
    if role is Role.APP and queue_app.client_enqueue is False:  # before reading the body
        queue_app.check_client_enqueue({})
    body = parse_json_object(await request.read())
    if role is Role.APP:
        queue_app.check_client_enqueue(body)
    spec = _enqueue_request(queue_app, body)
    unique_id = await queue_app.engine.submit(spec.function, spec.params, spec.options)
    response = web.Response(text=_unique_id_body(unique_id), content_type="application/json")
    if spec.ignored:
        queue_app.ignoring(spec.ignored)
        response.headers[IGNORED_HEADER] = ignored_header(spec.ignored)
    return response


async def enqueue_batch(request: web.Request) -> web.Response:
    """Many enqueues in one request (extension): each item an enqueue body, checked as
    ``POST /tasks`` checks one; the answer ``{"results": [...]}`` holds, in each item's place,
    ``{"uniqueId"}`` or the error body that refused it (its ``index`` naming the item). Every
    task accepted is durable before the answer. ``atomic``: all or none, the first refusal
    being the request's own error."""
    queue_app = tenant(request, Role.MASTER)
    items, atomic = parse_batch_body(parse_json_object(await request.read()))
    batch: list[Item | EngineError] = []
    ignored: dict[str, None] = {}
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValidationError("an enqueue body must be a JSON object with \"function\", "
                                      f"got {_describe(item)}", "function")
            spec = _enqueue_request(queue_app, item)
        except ValidationError as exc:
            if atomic:
                raise exc.at_item(index) from None
            batch.append(exc.at_item(index))
            continue
        ignored.update(dict.fromkeys(spec.ignored))
        batch.append((spec.options.unique_id or random_uuid(), spec.function, spec.params,
                      spec.options))
    if atomic:  # every item passed its checks, or the request was refused above
        accepted = [item for item in batch if not isinstance(item, EngineError)]
        answers: list[str | EngineError] = list(await queue_app.engine.submit_many(accepted))
    else:
        answers = await queue_app.engine.submit_each(batch)
    results = [{"uniqueId": answer} if isinstance(answer, str) else answer.body()
               for answer in answers]
    response = web.json_response({"results": results})
    if ignored:
        names = tuple(ignored)
        queue_app.ignoring(names)
        response.headers[IGNORED_HEADER] = ignored_header(names)
    return response


def ignored_header(names: tuple[str, ...], limit: int = 1_024) -> str:
    """The names as JSON strings, comma-separated (ASCII, whatever the names hold), cut after
    ``limit`` characters with a last ``...``."""
    shown = ""
    for name in names:
        item = json.dumps(name)
        if len(shown) + len(item) + 2 > limit:
            return f"{shown}, ..."
        shown = f"{shown}, {item}" if shown else item
    return shown


def _unique_id_body(unique_id: str) -> str:
    """Exactly LeanCloud's body, as ``json.dumps`` writes it, without its cost on every
    enqueue (an id needs escaping only if it holds a quote or a backslash)."""
    if '"' in unique_id or "\\" in unique_id:
        return json.dumps({"uniqueId": unique_id})
    return f'{{"uniqueId": "{unique_id}"}}'


async def task_info(request: web.Request) -> web.Response:
    queue_app = tenant(request, Role.APP)
    info = await queue_app.engine.get_task_info(request.match_info["unique_id"])
    return web.json_response(info.to_wire())


def _run_of(request: web.Request) -> tuple[QueueApp, str, int]:
    """The app, task and run a function host speaks for: X-LC-Id names the app and
    X-CloudQueue-Run-Token (handed to the host with the call) proves the run."""
    queue_app = request.app[APPS].get(request.headers.get("X-LC-Id", ""))
    unique_id = request.match_info["unique_id"]
    token = request.headers.get(RUN_TOKEN_HEADER, "")
    run_seq = check_run_token(queue_app.keys, unique_id, token) if queue_app else None
    if queue_app is None or run_seq is None:
        raise refusal(request)
    return queue_app, unique_id, run_seq


async def checkpoint(request: web.Request) -> web.Response:
    """The checkpoint the current run continues from, for a host whose params cannot carry it
    (params that are not a JSON object): ``{"checkpoint": cp, "slice": n}``."""
    queue_app, unique_id, run_seq = _run_of(request)
    saved, slice_ = queue_app.engine.run_checkpoint(unique_id, run_seq)
    return web.json_response({"checkpoint": saved, "slice": slice_})


async def progress(request: web.Request) -> web.Response:
    """A function host reports progress for the run it is serving (see ``_run_of``)."""
    queue_app, unique_id, run_seq = _run_of(request)
    body = parse_json_object(await request.read())
    known = {"percent", "done", "total", "message", "detail"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValidationError(f"unknown progress field {unknown[0]!r}; fields are: "
                              f"{', '.join(sorted(known))}", unknown[0])
    report = parse_progress(**body)
    queue_app.engine.report_progress(unique_id, run_seq, report)
    return web.json_response({"ok": True})


async def list_tasks(request: web.Request) -> web.Response:
    """Tasks newest first: ``?state=`` or ``?status=``, ``function=``, ``createdFrom=`` and
    ``createdTo=`` (ISO-8601 or epoch ms), ``limit=`` (1 to 1000), ``cursor=`` (the ``next``
    of the page before). ``count`` is there when the filter is by state (or status) alone."""
    queue_app = tenant(request, Role.VIEWER)
    query = request.query
    unknown = sorted(set(query) - LIST_FIELDS)
    if unknown:
        meant = near_miss(unknown[0], LIST_FIELDS)
        hint = f"did you mean {meant!r}? " if meant else ""
        raise ValidationError(f"unknown query parameter {unknown[0]!r}; {hint}the parameters "
                              f"are {', '.join(sorted(LIST_FIELDS))}", unknown[0])
    limit = whole_number(query.get("limit"), "limit", 100, 1, 1000)
    page = await queue_app.engine.list_tasks(
        query.get("state"), limit, status=query.get("status"), function=query.get("function"),
        created_from=wire_time(_epoch_or_iso(query.get("createdFrom")), "createdFrom"),
        created_to=wire_time(_epoch_or_iso(query.get("createdTo")), "createdTo"),
        cursor=query.get("cursor"))
    body: dict[str, Any] = {"results": [info.to_wire() for info in page.tasks]}
    if page.total is not None:
        body["count"] = page.total
    if page.next is not None:
        body["next"] = page.next
    return web.json_response(body)


LIST_FIELDS = frozenset({"state", "status", "function", "createdFrom", "createdTo", "limit",
                         "cursor"})


def _epoch_or_iso(given: str | None) -> str | int | None:
    """A query's time: epoch ms as digits, else the text (``wire_time`` reads ISO-8601)."""
    if given is not None and given.isascii() and given.isdigit() and len(given) <= 15:
        return int(given)
    return given


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "live"})


async def ready(request: web.Request) -> web.Response:
    problems = {}
    cluster = request.app.get(CLUSTER)
    every = request.app[APPS]
    apps = {a: q for a, q in every.items() if q.local}
    for app_id, queue_app in apps.items():
        failure = queue_app.engine.failure
        if failure is not None:
            problems[app_id] = str(failure)
    if cluster is not None and not cluster.healthy:
        problems["database"] = "this node cannot reach the database"
    limits = _host_limits(apps)
    shown: dict[str, Any] = {"hostConcurrency": limits} if limits else {}
    paused = {app_id: queue_app.engine.core.dispatch_state().to_wire()["pausedAt"]
              for app_id, queue_app in apps.items() if queue_app.engine.core.paused_ms is not None}
    if paused:  # still ready: an operator holds the runs back, enqueues are taken
        shown["paused"] = paused
    if cluster is not None:  # which node dispatches each app
        shown["node"] = cluster.node.node_id
        shown["dispatching"] = {a: (cluster.node.node_id if q.local else
                                    getattr(cluster.node.owners.get(a), "node_id", None))
                                for a, q in every.items()}
        shown["standbyOf"] = sorted(cluster.node.warm)  # ready to take over at once
    if problems:
        return web.json_response({"status": "not ready", "apps": problems, **shown}, status=503)
    return web.json_response({"status": "ready", **shown})


def _host_limits(apps: Mapping[str, QueueApp]) -> dict[str, dict[str, Any]]:
    """Each app with ``host_concurrency = "adaptive"``: its host limit and why it stands there
    (docs/concurrency.md)."""
    shown = {}
    for app_id, queue_app in apps.items():
        rule = queue_app.engine.host_limit
        if rule is not None:
            shown[app_id] = {
                "limit": rule.limit, "ceiling": rule.ceiling,
                "runCap": queue_app.engine.run_cap,  # the host limit and the loop-lag cap
                "latencyMs": _ms(rule.latency_ms), "baselineMs": _ms(rule.baseline_ms),
                "hostErrors": rule.host_errors, "backoffs": rule.backoffs}
    return shown


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def openapi(request: web.Request) -> web.FileResponse:
    return web.FileResponse(OPENAPI_PATH, headers={"Content-Type": "application/json"})


def create_app(apps: Mapping[str, QueueApp], *,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               operator_token: str | None = None, viewer_token: str | None = None,
               metrics: bool = True, listen_host: str | None = None,
               dashboard: bool = True, cluster: ClusterConfig | None = None) -> web.Application:
    """The aiohttp application; engines are started and stopped with it. ``operator_token``:
    ``Authorization: Bearer <it>`` may do what each app's master key may; ``viewer_token``:
    ``Bearer <it>`` may read what each app's master key may read. ``metrics``: serve
    ``GET /metrics``, to anyone if ``listen_host`` (where the server listens) is loopback, else
    (None included) to the operator token only. ``dashboard``: serve the web dashboard's
    assets at ``/dashboard/`` (docs/dashboard.md). ``cluster``: this server is a node of
    several sharing a database (``cluster.py``): each app's engine runs on the node holding its
    lease, and the others forward its requests there."""
    middlewares = [errors_as_json] if cluster is None else [errors_as_json, forward]
    app = web.Application(middlewares=middlewares, client_max_size=max_body_bytes)
    app[APPS] = dict(apps)
    if cluster is not None:
        app[CLUSTER] = Cluster(cluster, app[APPS])
    if operator_token is not None:
        app[OPERATOR_TOKEN] = operator_token
    if viewer_token is not None:
        app[VIEWER_TOKEN] = viewer_token
    app.router.add_post(f"{BASE}/tasks", enqueue)
    app.router.add_post(f"{BASE}/tasks/batch", enqueue_batch)
    app.router.add_get(f"{BASE}/tasks", list_tasks)
    # any id without "/" (aiohttp's default pattern would refuse ids containing braces)
    app.router.add_get(f"{BASE}/tasks/{{unique_id:[^/]+}}", task_info)
    app.router.add_post(f"{BASE}/tasks/{{unique_id:[^/]+}}/cancel", actions.cancel)
    app.router.add_post(f"{BASE}/tasks/{{unique_id:[^/]+}}/progress", progress)
    app.router.add_get(f"{BASE}/tasks/{{unique_id:[^/]+}}/checkpoint", checkpoint)
    app.router.add_get(f"{BASE}/openapi.json", openapi)
    actions.add_routes(app.router, BASE)
    schedules.add_routes(app.router, BASE)
    stream.add_routes(app.router, BASE)
    app.router.add_get("/__health/live", live)
    app.router.add_get("/__health/ready", ready)
    if metrics:
        add_metrics_route(app, listen_host=listen_host)
    if dashboard:
        add_dashboard_routes(app)
    app.cleanup_ctx.append(_engines if cluster is None else cluster_ctx)
    console.add_routes(app, BASE)  # (its samplers start once the engines have)
    return app


class AppStartError(Exception):
    """An app's engine could not start: its log is locked, damaged or unreadable (``cause``)."""

    def __init__(self, app_id: str, data_dir: Path | None, cause: Exception) -> None:
        super().__init__(f"app {app_id}: {cause}")
        self.app_id = app_id
        self.data_dir = data_dir
        self.cause = cause


async def _engines(app: web.Application) -> Any:
    started: list[Engine] = []
    try:
        for app_id, queue_app in app[APPS].items():
            try:
                await queue_app.engine.start()
            except Exception as exc:  # a log unreadable in a way the reader did not foresee too
                raise AppStartError(app_id, queue_app.engine.data_dir, exc) from exc
            started.append(queue_app.engine)
        yield
    finally:
        for engine in started:
            await engine.close()
