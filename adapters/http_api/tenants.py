"""Tenants: each app's keys and engine, and who a request speaks for."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cloudqueue.adapters.auth import AppKeys, Role, authenticate, malformed_credentials
from cloudqueue.engine.core.errors import ForbiddenError, UnauthorizedError, ValidationError
from cloudqueue.engine.core.names import near_miss
from cloudqueue.engine.core.options import WIRE_OPTION_NAMES
from cloudqueue.engine.embedded import Engine

log = logging.getLogger("cloudqueue.http")
MAX_IGNORED_NAMES = 256  # names of ignored fields remembered per app (each logged once)


@dataclass
class QueueApp:
    """One tenant: its keys and its engine (its own log, function host and concurrency).

    ``strict_options``: refuse an enqueue naming any field the queue does not know (else it is
    ignored, as LeanCloud ignores it, named in the answer's ``X-CloudQueue-Ignored-Fields``
    header, and logged once per name).

    ``client_enqueue``: who may enqueue with the app key (a client, not a server): nobody
    (False, the default: LeanCloud's rule), every function (True), or the functions named. A
    client's enqueue carries ``function`` and ``params`` only; options need the master key.
    """

    keys: AppKeys
    engine: Engine
    strict_options: bool = False
    client_enqueue: bool | frozenset[str] = False
    # this node runs the app's engine (always, on one node; with a shared store, while it holds
    # the app's lease: otherwise its requests go to the node that does, ``cluster.py``)
    local: bool = True
    _ignored: set[str] = field(default_factory=set, repr=False)

    def check_function(self, function: str) -> None:
        """Refuse (400) a function this app cannot run: when it runs functions in-process and
        has no function host, a task for any other name would only fail ("No such cloud
        function") after its retries. (An app with neither takes tasks for later: its start
        says it has nothing to run them yet.)"""
        engine = self.engine
        if engine.has_function_host or function in engine.functions:
            return
        names = engine.functions.names()
        if not names:
            return
        meant = near_miss(function, frozenset(names))
        hint = f"did you mean {meant!r}? " if meant else ""
        raise ValidationError(f"no function {function!r} in this app: {hint}it runs "
                              f"{', '.join(names)} in-process and has no function host "
                              "(serve --function-host URL)", "function")

    def check_client_enqueue(self, body: dict[str, Any]) -> None:
        """Refuse (403) what an app-key caller may not enqueue: anything, when the app does not
        allow clients to, another function than those allowed, or any option."""
        allowed = self.client_enqueue
        if allowed is False:
            raise ForbiddenError("That operation isn't allowed for clients. It needs the master "
                                 "key (X-LC-Sign: <sign>,<ts>,master or X-LC-Key: <masterKey>,"
                                 "master); an app may let clients enqueue with client_enqueue.")
        function = body.get("function")  # not a name: the enqueue's own checks refuse it
        if allowed is not True and isinstance(function, str) and function not in allowed:
            raise ForbiddenError(f"clients of this app may enqueue only "
                                 f"{', '.join(sorted(allowed))}, not {function!r}; other "
                                 "functions need the master key")
        options = sorted(name for name in body if name in WIRE_OPTION_NAMES)
        if options:
            raise ForbiddenError(f"clients may enqueue with function and params only; "
                                 f"{', '.join(options)} need{'s' if len(options) == 1 else ''} "
                                 "the master key")

    def ignoring(self, names: tuple[str, ...]) -> None:
        """Log each ignored field name the first time this app sends it."""
        for name in names:
            if name in self._ignored or len(self._ignored) > MAX_IGNORED_NAMES:
                continue
            self._ignored.add(name)
            if len(self._ignored) > MAX_IGNORED_NAMES:
                log.warning("app %s: more unknown enqueue fields ignored; no more are logged",
                            self.keys.app_id)
            else:
                log.warning("app %s: enqueue field %r is not an option of this queue and is "
                            "ignored (strict_options = true refuses such requests)",
                            self.keys.app_id, name)


APPS = web.AppKey("apps", dict[str, QueueApp])
# the server's operator token (``admin_token``), or None: no operator access
OPERATOR_TOKEN = web.AppKey("operator_token", str)
# the server's viewer token (``viewer_token``): read-only access to every app
VIEWER_TOKEN = web.AppKey("viewer_token", str)


def refusal(request: web.Request) -> ValidationError | UnauthorizedError:
    """Why credentials were not accepted: an unreadable header (400) or simply wrong (401)."""
    return malformed_credentials(request.headers) or UnauthorizedError()


def caller(request: web.Request) -> tuple[QueueApp, Role]:
    """The app the request's credentials prove, and their role (APP, VIEWER, MASTER or
    OPERATOR).

    Raises:
        ValidationError: a credential header that is not UTF-8 text (400, naming it).
        UnauthorizedError: no app, or wrong credentials.
    """
    apps = request.app[APPS]
    keys, role = authenticate(request.headers, {a: q.keys for a, q in apps.items()},
                              request.app.get(OPERATOR_TOKEN), request.app.get(VIEWER_TOKEN))
    if keys is None or role is Role.NONE:
        raise refusal(request)
    return apps[keys.app_id], role


def tenant(request: web.Request, need: Role) -> QueueApp:
    """The app the request's credentials prove, if they carry role ``need`` (the operator
    token carries every role).

    Raises:
        ValidationError: a credential header that is not UTF-8 text (400, naming it).
        UnauthorizedError: no app, or wrong credentials.
        ForbiddenError: app credentials where the master key is needed.
    """
    return tenant_role(request, need)[0]


def read_only() -> ForbiddenError:
    return ForbiddenError("the viewer token is read-only; this needs the app's master key or the "
                          "operator token")


def tenant_role(request: web.Request, need: Role) -> tuple[QueueApp, Role]:
    """``tenant``, and the role the credentials proved (MASTER or OPERATOR, where ``need`` is
    MASTER)."""
    queue_app, role = caller(request)
    if role is Role.VIEWER and need > Role.VIEWER:
        raise read_only()
    if role < need:
        raise ForbiddenError("That operation isn't allowed for clients. It needs the master key "
                             "(X-LC-Sign: <sign>,<ts>,master or X-LC-Key: <masterKey>,master).")
    return queue_app, role
