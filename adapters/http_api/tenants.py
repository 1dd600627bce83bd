"""Tenants: each app's keys and engine, and who a request speaks for."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from cloudqueue.adapters.auth import AppKeys, Role, authenticate, malformed_credentials
from cloudqueue.engine.core.errors import ForbiddenError, UnauthorizedError, ValidationError
from cloudqueue.engine.embedded import Engine


@dataclass
class QueueApp:
    """One tenant: its keys and its engine (its own log, function host and concurrency)."""

    keys: AppKeys
    engine: Engine


APPS = web.AppKey("apps", dict[str, QueueApp])


def refusal(request: web.Request) -> ValidationError | UnauthorizedError:
    """Why credentials were not accepted: an unreadable header (400) or simply wrong (401)."""
    return malformed_credentials(request.headers) or UnauthorizedError()


def tenant(request: web.Request, need: Role) -> QueueApp:
    """The app the request's credentials prove, if they carry role ``need``.

    Raises:
        ValidationError: a credential header that is not UTF-8 text (400, naming it).
        UnauthorizedError: no app, or wrong credentials.
        ForbiddenError: app credentials where the master key is needed.
    """
    apps = request.app[APPS]
    keys, role = authenticate(request.headers, {a: q.keys for a, q in apps.items()})
    if keys is None or role is Role.NONE:
        raise refusal(request)
    if role < need:
        raise ForbiddenError("That operation isn't allowed for clients. It needs the master key "
                             "(X-LC-Sign: <sign>,<ts>,master or X-LC-Key: <masterKey>,master).")
    return apps[keys.app_id]
