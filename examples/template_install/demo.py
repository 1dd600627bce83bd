"""The whole story on one machine: a queue, a function host, a template archive and a page.

``Demo`` starts, all on 127.0.0.1:

* the **function host** (a LeanEngine-compatible Python app, ``adapters.function_host``) serving
  ``install_template`` (see ``install.py``), the progress page at ``/install/`` and the template
  archive at ``/templates/blog.zip`` (the "remote" archive the install downloads);
* the **queue** (``cloudqueue``'s REST API on its durable log under ``DATA/queue``), which
  calls the host's function over HTTP, slice after slice.

Site files land in ``DATA/storage/blog/``, collections in ``DATA/site.sqlite3``.
"""

from __future__ import annotations

import errno
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.client import QueueClient
from cloudqueue.adapters.function_host import FunctionHost
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker
from cloudqueue.engine.embedded import Engine

from .install import Installer, define_install
from .template import DEFAULT_COLLECTIONS, make_archive

PAGE = Path(__file__).with_name("page.html")
TEMPLATE = "blog"


class PortInUse(Exception):
    """A port the demo was told to use is taken; the message says what to do."""


def _bound_socket(port: int, flag: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        raise PortInUse(f"cannot listen on 127.0.0.1:{port}: another process is using port "
                        f"{port}. Stop it (`ss -ltnp 'sport = :{port}'` shows which), or give "
                        f"another port: `{flag} 0` takes any free one") from None
    return sock


@dataclass
class Demo:
    data: Path
    queue_port: int = 0  # 0: any free port
    host_port: int = 0
    files: int = 300
    collections: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_COLLECTIONS))
    keys: AppKeys = field(default_factory=lambda: AppKeys(
        "templateDemo", secrets.token_hex(12), secrets.token_hex(12), secrets.token_hex(12)))
    queue_url: str = ""
    host_url: str = ""
    engine: Engine | None = None
    installer: Installer | None = None
    _runners: list[web.AppRunner] = field(default_factory=list)

    async def __aenter__(self) -> Demo:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _start(self) -> None:
        queue_sock = _bound_socket(self.queue_port, "--queue-port")
        try:
            host_sock = _bound_socket(self.host_port, "--host-port")
        except BaseException:
            queue_sock.close()
            raise
        try:
            self.data.mkdir(parents=True, exist_ok=True)
            archive = make_archive(self.data / "archives" / f"{TEMPLATE}.zip",
                                   files=self.files, collections=self.collections)
        except BaseException:
            queue_sock.close()
            host_sock.close()
            raise
        self.queue_url = f"http://127.0.0.1:{queue_sock.getsockname()[1]}"
        self.host_url = f"http://127.0.0.1:{host_sock.getsockname()[1]}"

        host = FunctionHost(self.keys, queue_url=self.queue_url)
        self.installer = Installer(storage=self.data / "storage",
                                   database=self.data / "site.sqlite3", work=self.data / "work")
        define_install(host, self.installer)

        async def page(request: web.Request) -> web.FileResponse:
            return web.FileResponse(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})

        async def template(request: web.Request) -> web.FileResponse:
            if request.match_info["name"] != archive.name:
                raise web.HTTPNotFound()
            return web.FileResponse(archive)  # answers Range requests with 206

        host.app.router.add_get("/install/", page)
        host.app.router.add_get("/templates/{name}", template)
        await self._serve(host.app, host_sock)

        self.engine = Engine(data_dir=self.data / "queue", concurrency=4,
                             invoker=HttpInvoker(self.host_url, self.keys))
        await self._serve(create_app({self.keys.app_id: QueueApp(self.keys, self.engine)}),
                          queue_sock)

    async def _serve(self, app: web.Application, sock: socket.socket) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, sock).start()

    async def close(self) -> None:
        for runner in reversed(self._runners):  # the queue first: it stops calling the host
            await runner.cleanup()
        self._runners.clear()
        if self.installer is not None:
            await self.installer.close()

    def client(self) -> QueueClient:
        return QueueClient(self.queue_url, self.keys.app_id, master_key=self.keys.master_key)

    async def enqueue_install(self, queue: QueueClient, *, budget_ms: int = 50,
                              pause_ms: int = 0, timeout_ms: int = 2_000) -> str:
        """Queue the install: each slice gets ``timeout_ms``; the whole job 10 minutes."""
        params: dict[str, Any] = {"template": TEMPLATE, "budget_ms": budget_ms,
                                  "pause_ms": pause_ms,
                                  "archive_url": f"{self.host_url}/templates/{TEMPLATE}.zip"}
        return await queue.enqueue("install_template", params, timeout=timeout_ms,
                                   deadline=600_000, attempts=2, backoff=1_000)

    async def page_url(self, queue: QueueClient, unique_id: str) -> str:
        token = await queue.read_token(unique_id)
        query = urlencode({"queue": self.queue_url, "app": self.keys.app_id, "task": unique_id,
                           "token": token, "template": TEMPLATE})
        return f"{self.host_url}/install/?{query}"
