"""The web dashboard's assets (docs/dashboard.md): ``GET /dashboard/`` and the files beside it.

    GET /dashboard           redirects to /dashboard/
    GET /dashboard/          index.html
    GET /dashboard/{file}    a file of the ``dashboard/`` folder next to this module

The assets hold no data, so they need no credentials: the page asks for them and sends them as
headers on its own requests to the API (never a cookie). Only the files directly in that folder
are served, by name (no sub-folder, no ``..``, no dot file), each with its content type,
``Cache-Control: no-cache`` (a browser revalidates, so an upgraded server's page is never stale)
and a Content-Security-Policy that lets the page load scripts, styles and data from this server
only and run no inline script.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

ASSETS = Path(__file__).with_name("dashboard")
PREFIX = "/dashboard"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# a plain file name: letters, digits, "_", "-" and dots, not starting with a dot
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def asset(name: str) -> Path | None:
    """The file of the dashboard's folder named ``name``, or None: not a plain name, not a
    served type, or no such file."""
    if not _NAME.fullmatch(name) or ".." in name:
        return None
    path = ASSETS / name
    if path.suffix not in CONTENT_TYPES or not path.is_file():
        return None
    return path


def _serve(name: str) -> web.FileResponse:
    path = asset(name)
    if path is None:
        raise web.HTTPNotFound(reason=f"no dashboard file {name!r}")
    return web.FileResponse(path, headers={**HEADERS,
                                           "Content-Type": CONTENT_TYPES[path.suffix]})


async def redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"{PREFIX}/")


async def index(request: web.Request) -> web.FileResponse:
    return _serve("index.html")


async def file(request: web.Request) -> web.FileResponse:
    return _serve(request.match_info["name"])


def add_routes(app: web.Application) -> None:
    """Serve the dashboard under ``/dashboard/``."""
    app.router.add_get(PREFIX, redirect)
    app.router.add_get(f"{PREFIX}/", index)
    app.router.add_get(f"{PREFIX}/{{name}}", file)
