"""``QueueClient``: a remote queue (``cloudqueue serve``, or LeanCloud) through its REST API.

It implements the ``Queue`` protocol as the embedded ``Engine`` does (same method names, option
names, validator, ``TaskInfo``/``ScheduleInfo`` and typed errors; durations in milliseconds),
so a service can move between an in-process queue and a remote one::

    async with QueueClient("http://127.0.0.1:3100", app_id, master_key=master_key) as queue:
        uid = await queue.enqueue("resize", {"image": "cat.png"}, attempts=3, backoff=1000)
        info = await queue.wait(uid, timeout=60_000)      # info.status == "success"

Errors: 400 ``ValidationError`` (the server's message), 401 ``UnauthorizedError``, 403
``ForbiddenError``, 404 ``UnknownTaskError`` (``UnknownScheduleError`` for a schedule), 409
``DuplicateTaskError`` (enqueue) or ``InvalidTransitionError`` (cancel), 429
``RemoteQuotaExceededError`` (a ``QuotaExceededError``), 503 ``LogPoisonedError`` or
``EngineClosedError``, 507 ``DiskFullError``; ``QueueUnavailableError`` (cannot reach the queue)
and ``UnexpectedResponseError`` (an answer that is not the protocol's).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any

from cloudqueue.adapters.client.answers import item_error, with_message
from cloudqueue.adapters.client.schedules import check_upcoming, preview_body, schedule_body
from cloudqueue.adapters.client.transport import Transport
from cloudqueue.adapters.client.wire import (
    MAX_LIST_LIMIT,
    audit_entry_from_wire,
    bulk_result_from_wire,
    check_count,
    check_state,
    dispatch_state_from_wire,
    fire_time_ms,
    schedule_info_from_wire,
    segment,
    task_info_from_wire,
    wire_options,
)
from cloudqueue.engine.core.actions import (
    MAX_AUDIT,
    MAX_BULK,
    AuditEntry,
    BulkAction,
    BulkResult,
    DispatchState,
    bulk_filter,
)
from cloudqueue.engine.core.batch_items import MAX_BATCH_ITEMS, parse_each
from cloudqueue.engine.core.errors import (
    DuplicateTaskError,
    EngineError,
    UnexpectedResponseError,
    UnknownScheduleError,
    ValidationError,
)
from cloudqueue.engine.core.options import (
    Limits,
    check_function_name,
    check_params,
    parse_options,
)
from cloudqueue.engine.core.schedules import ScheduleInfo, check_schedule_name
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import TaskInfo, iso_ms
from cloudqueue.engine.queue import TaskPage, task_filter


class QueueClient(Transport):
    """A remote queue. Use as ``async with QueueClient(...) as queue``; the client owns one
    ``aiohttp.ClientSession`` while open.

    Args:
        base_url: the queue's root, e.g. ``http://127.0.0.1:3100`` (a path prefix is kept).
        app_id: the LeanCloud app id (``X-LC-Id``).
        app_key: the app key: reads only (``get_task_info``, ``wait``, ``watch``).
        master_key: the master key: everything. Used instead of ``app_key`` when both are given.
        admin_token: the server's operator token (``Authorization: Bearer``): what the master
            key may, on any app the server serves; used when no key is given.
        via: what this caller is, in the audit list of operator actions (``cli``, ``dashboard``;
            the ``X-CloudQueue-Actor`` header).
        timeout_ms: bound on each request, connection included.

    Raises:
        ConfigError: no key or token, a base URL that is not http(s), a bad ``via``, or a timeout
            that is not positive.
    """

    # ------------------------------------------------------------------ tasks

    async def enqueue(self, function: str, params: Any = None, **options: Any) -> str:
        """Queue a task on the server; return its uniqueId once the server holds it durably.

        The options are ``Engine.enqueue``'s, checked by the same validator before anything is
        sent: ``attempts``, ``backoff`` (with ``backoff_type``, ``backoff_max``), ``delay``,
        ``delivery_mode``, ``keep_result``, ``priority``, ``timeout``, ``unique_id``, ``deadline``
        (durations in ms). Only the options given are
        sent; the server applies its defaults to the rest. ``params`` None sends ``{}``.

        Raises:
            ValidationError: a bad option, function name or params (no request made), or one
                the server refused (e.g. a ``timeout`` over its maximum), in its words.
            DuplicateTaskError: the uniqueId is held by a task.
            ForbiddenError: the client has no master key.
            UnauthorizedError: the server rejected the credentials.
            QuotaExceededError: over one of the app's quotas (``RemoteQuotaExceededError``).
            EngineClosedError, LogPoisonedError, DiskFullError: the server cannot take work.
            QueueUnavailableError: the server cannot be reached (see ``outcome_unknown``).
            UnexpectedResponseError: an answer outside the protocol.
        """
        parsed = parse_options(options, wire=False)
        check_function_name(function)
        if params is None:
            params = {}
        check_params(params)
        body: dict[str, Any] = {"function": function, "params": params,
                                **wire_options(options, parsed)}
        answer = await self._call("enqueue", "POST", "/tasks", json_body=body,
                                  unique_id=parsed.unique_id)
        unique_id = answer.get("uniqueId") if isinstance(answer, Mapping) else None
        if not isinstance(unique_id, str):
            raise UnexpectedResponseError("the enqueue answer has no string uniqueId", 200)
        return unique_id

    async def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Queue many tasks in one request, all or none; their uniqueIds (in order) once every
        one is durable. Items as ``Engine.enqueue_many``'s: ``{"function", "params",
        **options}`` (Python names), each checked here before anything is sent.

        Raises:
            ValidationError, DuplicateTaskError: the first item refused (``index`` names it);
                nothing was queued.
            QuotaExceededError and the rest: as ``enqueue``, for the batch as a whole.
        """
        sent, refused = _batch_bodies(items)
        if refused:
            raise refused[0]
        results = await self._batch([body for _, body in sent], atomic=True)
        for result in results:
            if not isinstance(result, str):
                raise result
        return [result for result in results if isinstance(result, str)]

    async def enqueue_each(self, items: Iterable[Mapping[str, Any]]) -> list[str | EngineError]:
        """Queue many tasks in one request, each on its own: in each item's place its uniqueId
        (durable when this returns) or the error that refused it (``ValidationError`` - checked
        here or by the server -, ``DuplicateTaskError``), ``index`` naming the item.

        Raises: as ``enqueue``, for what refuses the request as a whole (a quota, credentials,
        a server that cannot take work or cannot be reached).
        """
        sent, refused = _batch_bodies(items)
        if not sent:
            return list(refused)
        answers = iter(await self._batch([body for _, body in sent], atomic=False))
        positions = {index: position for position, (index, _) in enumerate(sent)}
        results: list[str | EngineError] = []
        local = iter(refused)
        for index in range(len(sent) + len(refused)):
            if index not in positions:
                results.append(next(local))
                continue
            answer = next(answers)
            if isinstance(answer, EngineError):
                answer = _renumbered(answer, positions[index], index)
            results.append(answer)
        return results

    async def _batch(self, tasks: list[dict[str, Any]], *, atomic: bool
                     ) -> list[str | EngineError]:
        answer = await self._call("enqueue", "POST", "/tasks/batch",
                                  json_body={"tasks": tasks, "atomic": atomic})
        results = answer.get("results") if isinstance(answer, Mapping) else None
        if not isinstance(results, list) or len(results) != len(tasks):
            raise UnexpectedResponseError(
                f"the bulk enqueue answer has no results array of {len(tasks)} items", 200)
        out: list[str | EngineError] = []
        for result in results:
            unique_id = result.get("uniqueId") if isinstance(result, Mapping) else None
            if isinstance(result, Mapping) and "error" in result:
                out.append(item_error(result))
            elif isinstance(unique_id, str):
                out.append(unique_id)
            else:
                raise UnexpectedResponseError("a bulk enqueue result is neither a uniqueId nor "
                                              "an error", 200)
        return out

    async def get_task_info(self, unique_id: str) -> TaskInfo:
        """The task's current info, as the server sees it (``result`` is ``ABSENT`` until it
        succeeds).

        Raises:
            UnknownTaskError: no such task, or its keepResult window has passed.
            UnauthorizedError: the server rejected the credentials.
            QueueUnavailableError: the server cannot be reached.
            UnexpectedResponseError: an answer outside the protocol.
        """
        answer = await self._call("get_task_info", "GET", f"/tasks/{segment(unique_id)}",
                                  unique_id=unique_id)
        return task_info_from_wire(answer)

    async def cancel(self, unique_id: str) -> TaskInfo:
        """Cancel a queued or retry-waiting task (needs the master key); its final info.

        Raises:
            UnknownTaskError: no such task.
            InvalidTransitionError: the task is running or already finished.
            ForbiddenError, UnauthorizedError, EngineClosedError, LogPoisonedError,
            DiskFullError, QueueUnavailableError, UnexpectedResponseError: as ``enqueue``.
        """
        answer = await self._call("cancel", "POST", f"/tasks/{segment(unique_id)}/cancel",
                                  unique_id=unique_id)
        return task_info_from_wire(answer)

    # ------------------------------------------------------------------ operator actions

    async def retry(self, unique_id: str) -> TaskInfo:
        """Queue a failed or cancelled task again, now: fresh runs, the same uniqueId (master
        key or operator token); its info.

        Raises:
            UnknownTaskError: no such task.
            InvalidTransitionError: the task has not finished, or it succeeded.
            ForbiddenError, UnauthorizedError, QueueUnavailableError, UnexpectedResponseError:
                as ``cancel``.
        """
        answer = await self._call("retry", "POST", f"/tasks/{segment(unique_id)}/retry",
                                  unique_id=unique_id)
        return task_info_from_wire(answer)

    async def run_now(self, unique_id: str) -> TaskInfo:
        """Make a task waiting for its delay or its retry ready at once; its info. Raises as
        ``retry`` (``InvalidTransitionError``: it waits for neither)."""
        answer = await self._call("run_now", "POST", f"/tasks/{segment(unique_id)}/run-now",
                                  unique_id=unique_id)
        return task_info_from_wire(answer)

    async def pause(self) -> DispatchState:
        """Pause the app's dispatch: no run starts until ``resume`` (runs in flight finish;
        enqueues are still accepted and durable). Raises as ``list_tasks``."""
        return dispatch_state_from_wire(await self._call("pause", "POST", "/pause"))

    async def resume(self) -> DispatchState:
        """Resume the app's dispatch. Raises as ``list_tasks``."""
        return dispatch_state_from_wire(await self._call("resume", "POST", "/resume"))

    async def dispatch_state(self) -> DispatchState:
        """Whether the app's dispatch is paused, and since when. Raises as ``list_tasks``."""
        return dispatch_state_from_wire(await self._call("dispatch_state", "GET", "/dispatch"))

    async def retry_tasks(self, *, state: Any = None, function: str | None = None,
                          created_from: int | None = None, created_to: int | None = None,
                          dry_run: bool = False, limit: int = MAX_BULK) -> BulkResult:
        """Retry the failed or cancelled tasks a filter takes, in one request: ``state`` (one
        or a list; default both), ``function``, created in ``[created_from, created_to)``
        (epoch ms); oldest first, at most ``limit`` (1 to 10,000). ``dry_run``: count only.

        Raises:
            ValidationError: a bad filter (no request made), or one the server refused.
            ForbiddenError, UnauthorizedError, QueueUnavailableError,
            UnexpectedResponseError: as ``list_tasks``.
        """
        return await self._bulk(BulkAction.RETRY, state, function, created_from, created_to,
                                dry_run, limit)

    async def cancel_tasks(self, *, state: Any = None, function: str | None = None,
                           created_from: int | None = None, created_to: int | None = None,
                           dry_run: bool = False, limit: int = MAX_BULK) -> BulkResult:
        """Cancel the queued or retry-waiting tasks a filter takes (as ``retry_tasks``)."""
        return await self._bulk(BulkAction.CANCEL, state, function, created_from, created_to,
                                dry_run, limit)

    async def purge_tasks(self, *, state: Any = None, function: str | None = None,
                          created_from: int | None = None, created_to: int | None = None,
                          dry_run: bool = False, limit: int = MAX_BULK) -> BulkResult:
        """Forget the finished tasks a filter takes (as ``retry_tasks``)."""
        return await self._bulk(BulkAction.PURGE, state, function, created_from, created_to,
                                dry_run, limit)

    async def _bulk(self, action: BulkAction, state: Any, function: str | None,
                    created_from: int | None, created_to: int | None, dry_run: bool,
                    limit: int) -> BulkResult:
        chosen = bulk_filter(action, state, function, created_from, created_to)
        if not isinstance(dry_run, bool):
            raise ValidationError(f"dry_run must be True or False, got {dry_run!r}", "dryRun")
        body: dict[str, Any] = {key: value for key, value in chosen.to_record().items()
                                if key not in ("createdFrom", "createdTo")}
        for key, ms in (("createdFrom", chosen.created_from_ms),
                        ("createdTo", chosen.created_to_ms)):
            if ms is not None:
                body[key] = iso_ms(ms)
        body["dryRun"] = dry_run
        body["limit"] = check_count(limit, "limit", MAX_BULK)
        return bulk_result_from_wire(await self._call(action.value, "POST",
                                                      f"/tasks/{action.value}", json_body=body))

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        """The last ``limit`` (1 to 200) operator actions, newest first. Raises as
        ``list_tasks``."""
        query = {"limit": str(check_count(limit, "limit", MAX_AUDIT))}
        answer = await self._call("audit", "GET", "/audit", query=query)
        results = answer.get("results") if isinstance(answer, Mapping) else None
        if not isinstance(results, list):
            raise UnexpectedResponseError("the audit answer has no results array", 200)
        return [audit_entry_from_wire(item) for item in results]

    async def list_tasks(self, state: TaskState | str | None = None,
                         limit: int = 100, *, status: str | None = None,
                         function: str | None = None, created_from: int | None = None,
                         created_to: int | None = None, cursor: str | None = None) -> TaskPage:
        """Up to ``limit`` (1 to 1000) tasks the server holds, newest first (in ``state`` or
        ``status``, of ``function``, created in ``[created_from, created_to)`` epoch ms, when
        given), how many match (None when the filter names a function or a time), and the
        next page's cursor (pass it as ``cursor``, same filter). Needs the master key.

        Raises:
            ValidationError: a bad state or limit (no request made), or one the server refused.
            ForbiddenError, UnauthorizedError, QueueUnavailableError,
            UnexpectedResponseError: as ``enqueue``.
        """
        query = {"limit": str(check_count(limit, "limit", MAX_LIST_LIMIT))}
        task_filter(state, status)  # refused here, before any request
        if state is not None:
            query["state"] = check_state(state).value
        if status is not None:
            query["status"] = status
        given = {"function": function, "cursor": cursor, "createdFrom": created_from,
                 "createdTo": created_to}
        query.update({name: str(value) for name, value in given.items() if value is not None})
        answer = await self._call("list_tasks", "GET", "/tasks", query=query)
        results = answer.get("results") if isinstance(answer, Mapping) else None
        if not isinstance(results, list):
            raise UnexpectedResponseError("the list answer has no results array", 200)
        tasks = [task_info_from_wire(item) for item in results]
        count = answer.get("count")
        if isinstance(count, bool) or not isinstance(count, int):
            count = None
        following = answer.get("next")
        return TaskPage(tasks, count, following if isinstance(following, str) else None)

    async def wait(self, unique_id: str, timeout: int | None = None, *,
                   poll_ms: int = 200) -> TaskInfo:
        """Poll until the task is final (success, failed or cancelled) and return its info.

        ``timeout`` (ms; None: no limit) bounds the whole wait, requests in flight included;
        ``poll_ms`` is the pause between polls.

        Raises:
            TimeoutError: not final within ``timeout`` ms.
            ValueError: ``poll_ms`` is not positive or ``timeout`` is negative.
            UnknownTaskError, UnauthorizedError, QueueUnavailableError,
            UnexpectedResponseError: as ``get_task_info``.
        """
        if not poll_ms > 0:
            raise ValueError(f"poll_ms must be > 0, got {poll_ms}")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 ms, got {timeout}")
        last: TaskInfo | None = None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout / 1000
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    last = await self.get_task_info(unique_id)
                    if last.state.is_final:
                        return last
                    await asyncio.sleep(poll_ms / 1000)
        except TimeoutError:
            seen = f" (last seen {last.state.value})" if last is not None else ""
            raise TimeoutError(f"task '{unique_id}' was not final within {timeout} ms{seen}"
                               ) from None

    def watch(self, unique_id: str) -> AsyncGenerator[tuple[str, TaskInfo], None]:
        """Live updates of a task, from the server's Server-Sent Events stream (an extension).

        Yields ``(type, info)``: first ``state`` (the current state), then any of ``queued``,
        ``running``, ``progress``, ``retry``, ``continued``, and a last ``finished`` (its info
        is final), after which the iteration ends; a task already final yields only its
        ``state``. A slow reader misses intermediate updates, never the latest. The stream has
        no overall time limit; it fails if the server is silent for 60 s (it sends a keep-alive
        every 15 s). Stopping early closes the HTTP response; ``contextlib.aclosing`` closes it
        at once rather than when the generator is collected.

        Raises (from the first iteration, before anything is yielded, unless noted):
            UnknownTaskError: no such task, or its keepResult window has passed.
            UnauthorizedError, ForbiddenError: the credentials may not read the task.
            QueueUnavailableError: the server cannot be reached, or (while streaming) the
                connection broke, went silent, or ended before ``finished``.
            UnexpectedResponseError: an answer outside the protocol (also while streaming).
        """
        return self._stream(unique_id)

    async def read_token(self, unique_id: str) -> str:
        """A fresh read token for the task's event stream (an extension), for a browser's
        ``EventSource``: ``.../tasks/<uniqueId>/events?app=<appId>&token=<token>``. It is good
        for that one task only, for 24 hours. Raises as ``get_task_info``."""
        answer = await self._call("read_token", "GET", f"/tasks/{segment(unique_id)}/read-token",
                                  unique_id=unique_id)
        token = answer.get("readToken") if isinstance(answer, Mapping) else None
        if not isinstance(token, str) or not token:
            raise UnexpectedResponseError("the read-token answer has no string readToken", 200)
        return token

    # ------------------------------------------------------------------ schedules

    async def set_schedule(self, name: str, function: str, params: Any = None, *,
                           cron: str | None = None, interval: int | None = None,
                           timezone: str | None = None, paused: bool = False,
                           **options: Any) -> ScheduleInfo:
        """Create or replace the schedule ``name`` on the server (needs the master key).

        ``Engine.set_schedule``'s arguments, checked by the same validator before anything is
        sent: exactly one of ``cron`` (LeanCloud's six fields, seconds first) or ``interval``
        (ms); ``timezone`` (an IANA name; None: the server's default zone); per-firing task
        options ``attempts``, ``backoff``, ``backoff_type``, ``backoff_max``, ``delivery_mode``,
        ``timeout``, ``keep_result``.

        Raises:
            ValidationError: a bad name, function, params, expression, zone or option (no
                request made), or one the server refused, in its words.
            ForbiddenError, UnauthorizedError, QueueUnavailableError, UnexpectedResponseError,
            EngineClosedError, LogPoisonedError, DiskFullError: as ``enqueue``.
        """
        body = schedule_body(name, function, params, cron, interval, timezone, paused, options)
        return schedule_info_from_wire(
            await self._schedule_call("set_schedule", "PUT", name, "", json_body=body))

    async def get_schedule(self, name: str, upcoming: int = 5) -> ScheduleInfo:
        """One schedule, with its next ``upcoming`` (1 to 100) fire times (none while paused).

        Raises:
            UnknownScheduleError: no schedule of that name.
            ValidationError: a bad name or ``upcoming`` (no request made).
            ForbiddenError, UnauthorizedError, QueueUnavailableError,
            UnexpectedResponseError: as ``list_tasks``.
        """
        query = {"count": str(check_upcoming(upcoming))}
        return schedule_info_from_wire(
            await self._schedule_call("get_schedule", "GET", name, "", query=query))

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name, each with its next fire time. Raises as ``list_tasks``."""
        answer = await self._call("list_schedules", "GET", "/schedules")
        results = answer.get("results") if isinstance(answer, Mapping) else None
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise UnexpectedResponseError("the schedule list has no results array of objects",
                                          200)
        return [schedule_info_from_wire(result) for result in results]

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        """Stop firing ``name`` until resumed. Raises ``UnknownScheduleError``, others as
        ``get_schedule``."""
        return schedule_info_from_wire(
            await self._schedule_call("pause_schedule", "POST", name, "/pause"))

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Fire ``name`` again, from now (slots missed while paused are not caught up). Raises
        ``UnknownScheduleError``, others as ``get_schedule``."""
        return schedule_info_from_wire(
            await self._schedule_call("resume_schedule", "POST", name, "/resume"))

    async def run_schedule_now(self, name: str) -> str:
        """Fire ``name`` once now, outside its slots (an operator action, in the audit list):
        the uniqueId of the task it made, once durable. Raises ``UnknownScheduleError``,
        others as ``get_schedule``."""
        answer = await self._schedule_call("run_schedule_now", "POST", name, "/run-now")
        unique_id = answer.get("uniqueId")
        if not isinstance(unique_id, str):
            raise UnexpectedResponseError("the run-now answer has no uniqueId", 200)
        return unique_id

    async def delete_schedule(self, name: str) -> None:
        """Delete ``name`` (tasks it already fired are kept). Raises ``UnknownScheduleError``,
        others as ``get_schedule``."""
        await self._schedule_call("delete_schedule", "DELETE", name, "")

    async def preview_schedule(self, *, cron: str | None = None, interval: int | None = None,
                               timezone: str | None = "UTC", from_ms: int | None = None,
                               count: int = 5) -> list[int]:
        """The next ``count`` (1 to 1000) fire times strictly after ``from_ms`` (epoch ms;
        default the server's now), as the server computes them, in epoch ms.

        An ``interval`` counts from ``from_ms`` (``from_ms + k * interval``); a saved schedule's
        interval counts from its creation instead. ``timezone=None`` uses the server's default
        zone.

        Raises:
            ValidationError: not exactly one of cron and interval, a bad expression, zone,
                count or time (no request made), or one the server refused.
            ForbiddenError, UnauthorizedError, QueueUnavailableError,
            UnexpectedResponseError: as ``list_tasks``.
        """
        body = preview_body(cron, interval, timezone, from_ms, count)
        answer = await self._call("preview_schedule", "POST", "/schedules/preview",
                                  json_body=body)
        times = answer.get("fireTimes") if isinstance(answer, Mapping) else None
        if not isinstance(times, list):
            raise UnexpectedResponseError("the preview answer has no fireTimes array", 200)
        return [fire_time_ms(value) for value in times]

    async def _schedule_call(self, op: str, method: str, name: str, suffix: str, *,
                             json_body: Any = None,
                             query: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One request on ``/schedules/<name><suffix>``: its JSON object answer; a 404 from the
        schedule handlers is ``UnknownScheduleError``."""
        check_schedule_name(name)
        try:
            answer = await self._call(op, method, f"/schedules/{segment(name)}{suffix}",
                                      json_body=json_body, query=query)
        except UnexpectedResponseError as exc:
            # a route-level 404 ("Not Found") is a server without the schedule endpoints
            if exc.status == 404 and exc.server_code == 404 and str(exc) != "Not Found":
                raise with_message(UnknownScheduleError(name), str(exc)) from None
            raise
        if not isinstance(answer, dict):
            raise UnexpectedResponseError(f"the {op} answer is not a JSON object", 200)
        return answer


def _batch_bodies(items: Iterable[Mapping[str, Any]]
                  ) -> tuple[list[tuple[int, dict[str, Any]]], list[EngineError]]:
    """Each item checked as ``enqueue`` checks its arguments: the good ones as ``(index, wire
    body)``, the refusals (``index`` set) in order."""
    items = list(items)
    if len(items) > MAX_BATCH_ITEMS:
        raise ValidationError(f"a bulk enqueue takes at most {MAX_BATCH_ITEMS} items, got "
                              f"{len(items)}: split it", "items")
    sent: list[tuple[int, dict[str, Any]]] = []
    refused: list[EngineError] = []
    for index, parsed in enumerate(parse_each(items, Limits(), str)):
        if isinstance(parsed, ValidationError):
            refused.append(parsed)
            continue
        _, function, params, options = parsed
        given = {k: v for k, v in items[index].items() if k != "function" and k != "params"}
        sent.append((index, {"function": function, "params": params,
                             **wire_options(given, options)}))
    return sent, refused


def _renumbered(error: EngineError, sent_at: int, index: int) -> EngineError:
    """A server's refusal of the ``sent_at``-th item sent, named as item ``index`` of the
    caller's list (items refused here were not sent)."""
    if sent_at != index:
        message = str(error)
        prefix = f"item {sent_at}: "
        if message.startswith(prefix):
            error.args = (f"item {index}: {message[len(prefix):]}",)
    if isinstance(error, ValidationError | DuplicateTaskError):
        error.index = index
    return error
