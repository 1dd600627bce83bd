"""A LeanEngine-compatible function host for Python cloud functions (docs/protocol.md §2).

Serves Python functions the way a LeanEngine app serves ``AV.Cloud.define``'d ones, so the queue
(or anything else speaking LeanCloud's function protocol) can call them, with no Node::

    host = FunctionHost(AppKeys(app_id, app_key, master_key, hook_key),
                        queue_url="http://127.0.0.1:3100")

    @host.define()                        # or @host.define("name", internal=True)
    async def install(params, call):
        checkpoint = call.checkpoint or {"step": 0}
        await call.progress(percent=40, message="importing")     # shows in the task's info
        if not finished:
            return call.continue_with({"step": checkpoint["step"] + 1})  # or Continue(...)
        return {"installed": True}                               # -> 200 {"result": {...}}

    web.run_app(host.app, port=3000)

``cloudqueue host --functions MODULE`` (``cloudqueue/host.py``) serves a module's
``@cloudqueue.define`` functions this way without any code around them.

Endpoints: ``POST /1.1/functions/<name>`` and ``POST /1/functions/<name>`` (the name is taken from
the raw path, undecoded, as leanengine does), ``GET /__engine/1/ping`` (no auth) and
``POST /1.1/functions/_ops/metadatas`` (master: the function names).

Credentials are checked like leanengine's ``leancloud-headers`` middleware with ``restrict: true``
(§2.2), via :func:`cloudqueue.adapters.auth.authenticate`: the app id must match, then an app key,
``<masterKey>,master``, the bare master key (authenticated, not master) or an ``X-LC-Sign``.
``internal=True`` functions also need master credentials or the hook key. One deliberate
difference: a host with no hook key configured does *not* let non-master callers run internal
functions (leanengine's ``undefined === undefined`` quirk). Credentials are checked before the
body is read.

Answers (§2.2): ``{"result": v}`` (``{}`` when the function returns ``None``, like
``undefined``); :class:`CloudError` gives its status and ``{code, error}``; any other exception
500 ``{"code": 1, "error": str(exc)}``; an unknown function 404; a body that is not a JSON object
or array 400.
"""

from __future__ import annotations

import hmac
import json
import logging
import platform
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, overload

import aiohttp
from aiohttp import web

from cloudqueue.adapters.auth import AppKeys, Role, authenticate
from cloudqueue.engine.core.redact import redact_url
from cloudqueue.engine.runtime.functions import Continue

__all__ = ["Call", "CloudError", "CloudFunction", "FunctionHost", "ProgressError"]

log = logging.getLogger("cloudqueue.function_host")

CONTINUATION_KEY = "__cloudqueue"
MAX_BODY_BYTES = 20 * 1024 * 1024  # body-parser's limit in leanengine
_PROGRESS_TIMEOUT = aiohttp.ClientTimeout(total=10)
_PREFIXES = ("/1.1/functions/", "/1/functions/")


class CloudError(Exception):
    """Raise from a function to answer ``status`` with ``{"code": code, "error": message}``,
    like ``throw new AV.Cloud.Error(message, {status, code})``."""

    def __init__(self, message: str, status: int = 400, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


class ProgressError(Exception):
    """The queue refused a progress report: ``status`` 409 when this run is no longer current
    (it timed out; stop working), 401 when the token is not this task's, 400 for a bad report;
    ``None`` when the queue could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Call:
    """What a function gets besides its params: who is calling and which run this is. A
    ``Run``, as an in-process function's ``RunContext`` is: the same ``unique_id``,
    ``attempt``, ``checkpoint``, ``slice``, ``await progress(...)`` and ``continue_with``.

    ``params`` excludes the queue's ``__cloudqueue`` key; ``checkpoint`` is the checkpoint the
    previous slice continued with (``None`` on the first slice; for params that are not a JSON
    object, fetched from the queue before the function runs); ``slice`` counts the slices
    before this one; ``unique_id``/``attempt`` are ``None`` when the call did not come from the
    queue; ``meta`` is the request's headers (case-insensitive); ``remote`` the caller's address;
    ``master`` whether the caller proved the master key.
    """

    def __init__(self, host: FunctionHost, request: web.Request, params: Any, role: Role) -> None:
        self._host = host
        headers = request.headers
        self.meta: Mapping[str, str] = headers
        self.remote = request.remote
        self.master = role is Role.MASTER
        self.unique_id: str | None = headers.get("X-CloudQueue-Unique-Id") or None
        self.attempt = _int_or_none(headers.get("X-CloudQueue-Attempt"))
        self.run_token: str | None = headers.get("X-CloudQueue-Run-Token") or None
        marker = params.get(CONTINUATION_KEY) if isinstance(params, dict) else None
        if isinstance(params, dict) and CONTINUATION_KEY in params:
            params = {k: v for k, v in params.items() if k != CONTINUATION_KEY}
        marker = marker if isinstance(marker, dict) else {}
        self.params = params
        self.checkpoint: Any = marker.get("checkpoint")
        from_marker = marker.get("slice")
        slice_ = _int_or_none(headers.get("X-CloudQueue-Slice"))
        self.slice: int = (slice_ if slice_ is not None
                           else from_marker if isinstance(from_marker, int) else 0)
        self._warned = False

    async def fetch_checkpoint(self) -> None:
        """Params that are not a JSON object cannot carry the checkpoint: from the second slice
        on, ask the queue for it (``GET .../tasks/<id>/checkpoint`` with this run's token).
        Raises :class:`ProgressError` when that is impossible or refused."""
        queue_url = self._host.queue_url
        if queue_url is None or self.unique_id is None or self.run_token is None:
            raise ProgressError(
                f"slice {self.slice} of a task whose params are not a JSON object needs its "
                "checkpoint from the queue, but "
                + ("this host has no queue_url" if queue_url is None
                   else "the call carried no X-CloudQueue-Unique-Id / Run-Token"))
        url = f"{queue_url}/1.1/engine/cloud-queue/tasks/{self.unique_id}/checkpoint"
        body = await self._host.run_request("GET", url, self._run_headers())
        self.checkpoint = body.get("checkpoint") if isinstance(body, dict) else None

    def _run_headers(self) -> dict[str, str]:
        return {"X-LC-Id": self._host.keys.app_id,
                "X-CloudQueue-Run-Token": self.run_token or ""}

    @staticmethod
    def continue_with(checkpoint: Any) -> dict[str, Any]:
        """The value to return to be called again with ``checkpoint`` (as the same attempt):
        ``return call.continue_with({"step": 3})``. The checkpoint must be JSON, up to 256 KiB."""
        return {CONTINUATION_KEY: {"continue": checkpoint}}

    async def progress(self, percent: float | None = None, *, done: int | None = None,
                       total: int | None = None, message: str | None = None,
                       detail: Any = None) -> None:
        """Report progress to the queue (shown in the task's info as ``progress``).

        A no-op, with a warning logged once, when the host has no ``queue_url`` or this call did
        not come from the queue. Raises :class:`ProgressError` when the queue refuses the report
        (409: this run is no longer current, stop; 401: bad token; 400: bad report) or cannot be
        reached.
        """
        queue_url = self._host.queue_url
        if queue_url is None or self.unique_id is None or self.run_token is None:
            if not self._warned:
                self._warned = True
                why = ("the host has no queue_url" if queue_url is None
                       else "this call did not come from the queue (no run token)")
                log.warning("progress report dropped: %s", why)
            return
        fields = {"percent": percent, "done": done, "total": total, "message": message,
                  "detail": detail}
        body = {k: v for k, v in fields.items() if v is not None}
        url = f"{queue_url}/1.1/engine/cloud-queue/tasks/{self.unique_id}/progress"
        await self._host.run_request("POST", url, self._run_headers(), body)


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


CloudFunction = Callable[[Any, Call], Awaitable[Any]]


def _answer(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":"), allow_nan=False),
                        status=status, content_type="application/json", charset="utf-8")


def _error(status: int, code: int, message: str) -> web.Response:
    return _answer({"code": code, "error": message}, status)


UNAUTHORIZED = {"code": 401, "error": "Unauthorized."}


class FunctionHost:
    """An aiohttp app (``host.app``) serving the functions registered with :meth:`define`."""

    def __init__(self, keys: AppKeys, queue_url: str | None = None) -> None:
        self.keys = keys
        self.queue_url = queue_url.rstrip("/") if queue_url else None
        self.functions: dict[str, CloudFunction] = {}
        self.internal: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_get("/__engine/1/ping", self._ping)
        for prefix in _PREFIXES:
            self.app.router.add_post(f"{prefix}_ops/metadatas", self._metadatas)
            self.app.router.add_post(prefix + "{name:.*}", self._call)
        self.app.on_cleanup.append(self._close)

    @overload
    def define(self, name: CloudFunction, internal: bool = False) -> CloudFunction: ...

    @overload
    def define(self, name: str | None = None, internal: bool = False
               ) -> Callable[[CloudFunction], CloudFunction]: ...

    def define(self, name: str | CloudFunction | None = None, internal: bool = False
               ) -> CloudFunction | Callable[[CloudFunction], CloudFunction]:
        """Register ``async def fn(params, call) -> value`` under ``name`` (default: its
        ``__name__``). ``internal=True`` functions need master credentials or the hook key."""
        if callable(name):
            return self.define(None, internal)(name)

        def register(fn: CloudFunction) -> CloudFunction:
            fname = name or fn.__name__
            if not fname or "/" in fname:
                raise ValueError(f"a cloud function name must be non-empty without '/': {fname!r}")
            if fname in self.functions:
                raise ValueError(f"cloud function {fname!r} is already defined")
            self.functions[fname] = fn
            if internal:
                self.internal.add(fname)
            return fn
        return register

    # ------------------------------------------------------------------ handlers

    async def _ping(self, request: web.Request) -> web.Response:
        return _answer({"runtime": f"python-{platform.python_version()}",
                        "version": "cloudqueue"})

    async def _metadatas(self, request: web.Request) -> web.Response:
        keys, role = authenticate(request.headers, {self.keys.app_id: self.keys})
        if keys is None or role is not Role.MASTER:
            return _answer(UNAUTHORIZED, 401)
        return _answer({"result": sorted(self.functions)})

    async def _call(self, request: web.Request) -> web.Response:
        keys, role = authenticate(request.headers, {self.keys.app_id: self.keys})
        if keys is None or role is Role.NONE:
            return _answer(UNAUTHORIZED, 401)
        path = request.raw_path.split("?", 1)[0]
        prefix = next(p for p in _PREFIXES if path.startswith(p))
        name = path[len(prefix):]
        if not name:
            return _error(404, 1, f"No function name or class name: {path}")
        fn = self.functions.get(name)
        if fn is None:
            return _error(404, 1, f"No such cloud function '{name}'")
        if name in self.internal and not (role is Role.MASTER or self._hook_key_ok(request)):
            return _error(401, 401, f"Internal cloud function, request from {request.remote}")
        params, problem = await _read_params(request)
        if problem is not None:
            return problem
        call = Call(self, request, params, role)
        if call.slice > 0 and not isinstance(call.params, dict):
            try:
                await call.fetch_checkpoint()
            except ProgressError as exc:
                log.error("cloud function %r: %s", name, exc)
                return _error(500, 1, str(exc))
        return await self._run(name, fn, call)

    def _hook_key_ok(self, request: web.Request) -> bool:
        given = request.headers.get("X-LC-Hook-Key")
        expected = self.keys.hook_key
        # a header that was not UTF-8 arrives with surrogate escapes: compare its bytes as
        # they came (never equal to a key), rather than fail to encode it (a 500)
        return bool(given and expected) and hmac.compare_digest(
            str(given).encode("utf-8", "surrogateescape"),
            str(expected).encode("utf-8", "surrogateescape"))

    async def _run(self, name: str, fn: CloudFunction, call: Call) -> web.Response:
        try:
            value = await fn(call.params, call)
            if isinstance(value, Continue):  # as in-process: the same as call.continue_with
                value = call.continue_with(value.checkpoint)
            return _answer({} if value is None else {"result": value})
        except CloudError as exc:
            return _error(exc.status, exc.code or 1, exc.message)
        except Exception as exc:
            log.exception("cloud function %r failed", name)
            return _error(500, 1, str(exc) or type(exc).__name__)

    # ------------------------------------------------------------------ progress

    async def run_request(self, method: str, url: str, headers: dict[str, str],
                          body: dict[str, Any] | None = None) -> Any:
        """One call to the queue on behalf of a run (progress, checkpoint) over the host's
        shared session; the answer's JSON, or :class:`ProgressError`."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=_PROGRESS_TIMEOUT)
        try:
            async with self._session.request(method, url, json=body,
                                             headers=headers) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProgressError(f"could not reach the queue at {redact_url(url)}: "
                                f"{type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            raise ProgressError(_refusal(response.status, text), response.status)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ProgressError(f"the queue answered {redact_url(url)} with something not JSON: "
                                f"{text[:200]!r}") from exc

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _refusal(status: int, text: str) -> str:
    try:
        error = json.loads(text).get("error", text)
    except (ValueError, AttributeError):
        error = text[:200]
    if status == 409:
        return f"this run is no longer current (it timed out or the task moved on): {error}"
    if status == 401:
        return f"the queue did not accept this run's token: {error}"
    return f"the queue refused the request ({status}): {error}"


async def _read_params(request: web.Request) -> tuple[Any, web.Response | None]:
    """The JSON body (empty -> ``{}``), or the 400/413 answer for a body that will not do."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None, _error(413, 1, "request entity too large")
    if not raw.strip():
        return {}, None
    try:
        params = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return None, _error(400, 1, f"Unexpected token in JSON body: {exc}")
    if not isinstance(params, dict | list):
        return None, _error(400, 1, f"the body must be a JSON object or array, got "
                                    f"{type(params).__name__}")
    return params, None
