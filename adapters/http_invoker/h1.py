"""A small HTTP/1.1 client for one origin: the function host the invoker calls for every run.

Why not aiohttp's client: at 1,000 runs/s a call through ``ClientSession`` cost the queue
~285 us of CPU (a quarter of the server's core in the burst benchmark's profile), most of it
building a general-purpose request and response. Calling one host with a JSON body and reading a
JSON answer needs far less: this client writes one prebuilt byte string per request and parses the
answer in a ``Protocol`` without streams. aiohttp still serves everything else (the REST API, the
function host, the SDK client).

What it speaks: ``http`` and ``https`` (the system's default certificate checks), Basic auth
from ``user:password@`` in the URL, keep-alive connections reused most-recent-first and closed
once idle past ``keepalive_s`` (measured on the client's ``Clock``), and the answers
``h1_answer.ResponseParser`` reads (it sends ``Accept-Encoding: gzip, deflate``, as aiohttp did;
bodies are capped at ``max_body``, the queue's cap on a function's answer, 8 MiB by default). No
redirects, proxies, cookies or pipelining: the queue needs none of them.

What it reports, so that the invoker can tell "nothing ran" from "the function may have run":

* :class:`ConnectFailed` - the request was provably never sent: no connection could be made
  (refused, DNS, TLS handshake, unreachable), none was made within ``timeout_s``, or the
  connection was gone before the request was written. This is the only failure after which
  nothing can have run.
* :class:`ConnectionBroken` - the connection ended, or spoke something other than HTTP/1.x,
  after the request was written.
* :class:`AnswerTooLarge` (a ``ConnectionBroken``) - the answer is over ``max_body``.
* ``TimeoutError`` - the request was written but no whole answer came within ``timeout_s``.

Any :class:`Response` came after the request was written, so it never means "nothing ran",
whatever its status (a gateway's 502/503/504 included: a proxy may have passed the request on).

A connection is reused only after a whole answer that allows it; on any error, timeout or
cancellation it is closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

from cloudqueue.adapters.http_invoker.h1_answer import (
    DEFAULT_MAX_BODY,
    AnswerTooLarge,
    ConnectFailed,
    ConnectionBroken,
    Response,
    ResponseParser,
)
from cloudqueue.engine.core.redact import redact_url
from cloudqueue.engine.runtime.clock import Clock, SystemClock, TimerCancel

__all__ = ["DEFAULT_MAX_BODY", "AnswerTooLarge", "ConnectFailed", "ConnectionBroken",
           "HostClient", "Response"]


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "parser", "waiter", "lost", "idle_since_ms")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.lost = False
        self.idle_since_ms = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser, waiter = self.parser, self.waiter
        if parser is None or waiter is None or waiter.done():
            self._abort()  # bytes nobody asked for: this connection cannot be trusted again
            return
        try:
            if parser.feed(data):
                waiter.set_result(parser.response)  # type: ignore[arg-type]
        except ConnectionBroken as exc:
            waiter.set_exception(exc)
            self._abort()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        parser, waiter = self.parser, self.waiter
        if parser is None or waiter is None or waiter.done():
            return
        try:
            ended = parser.closed()
        except ConnectionBroken as broken:  # e.g. a body that does not decode
            waiter.set_exception(broken)
            return
        if ended:
            parser.keep_alive = False
            waiter.set_result(parser.response)  # type: ignore[arg-type]
        else:
            reason = f"{type(exc).__name__}: {exc}" if exc else "the host closed the connection"
            waiter.set_exception(ConnectionBroken(reason))

    def _abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def reusable(self, now_ms: float, keepalive_s: float) -> bool:
        return (not self.lost and self.transport is not None and not self.transport.is_closing()
                and now_ms - self.idle_since_ms < keepalive_s * 1000)


class HostClient:
    """Requests to one origin (``scheme://host[:port]``) over reused connections; at most
    ``limit`` at once when given (a request waiting for one past its timeout was never sent:
    ``ConnectFailed``). The invoker gives none: the engine's concurrency already bounds the
    runs in flight, and a second bound below it would only make runs wait."""

    def __init__(self, base_url: str, *, limit: int | None = None, keepalive_s: float = 2.0,
                 ssl_context: ssl.SSLContext | None = None,
                 max_body: int = DEFAULT_MAX_BODY, clock: Clock | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the function host must be an http:// or https:// URL, got "
                             f"{redact_url(base_url)!r}")
        self.max_body = max_body
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        default_port = self.port == (443 if self.ssl else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self._auth = b""  # user:password in the URL -> Basic auth, as aiohttp's client sent it
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._auth = (b"Authorization: Basic " + base64.b64encode(credentials.encode())
                          + b"\r\n")
        self.keepalive_s = keepalive_s
        self.clock = clock or SystemClock()
        self._slots: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if limit is None else asyncio.Semaphore(limit))
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._sweeper: TimerCancel | None = None
        self._closed = False
        self.connections_made = 0  # for tests and benchmarks: how often a socket was opened

    def head(self, method: str, path: str, headers: bytes, body_length: int | None) -> bytes:
        """The request's head. ``headers``: ``Name: value\\r\\n`` lines (no Host, no length)."""
        length = b"" if body_length is None else b"Content-Length: %d\r\n" % body_length
        return ((f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                "Accept-Encoding: gzip, deflate\r\n").encode("latin-1") + self._auth + headers
                + length + b"\r\n")

    async def request(self, method: str, path: str, headers: bytes = b"", body: bytes = b"",
                      timeout_s: float = 30.0) -> Response:
        """One request; ``path`` is appended to the base URL's path."""
        if self._closed:
            raise RuntimeError("HostClient is closed")
        data = self.head(method, path, headers, len(body) if body or method != "GET" else None)
        sent = False
        try:
            async with asyncio.timeout(timeout_s), self._slots:
                conn = self._take_idle()
                if conn is None:
                    conn = await self._connect()
                    if conn.lost:
                        raise ConnectFailed("the host closed the new connection before the "
                                            "request was sent")
                sent = True  # _exchange writes before its first await
                return await self._exchange(conn, data + body if body else data,
                                            method == "HEAD")
        except TimeoutError:
            if not sent:  # waiting for a connection: the host never saw this request
                raise ConnectFailed(f"no connection to the host within {timeout_s:g} s") from None
            raise

    def _take_idle(self) -> _Connection | None:
        now = self.clock.monotonic_ms()
        idle, keepalive_s = self._idle, self.keepalive_s
        # the oldest first: close every connection idle past its keep-alive
        while idle and not idle[0].reusable(now, keepalive_s):
            idle.pop(0)._abort()
        while idle:
            conn = idle.pop()  # most recently used first
            if conn.reusable(now, keepalive_s):
                return conn
            conn._abort()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection, self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl else None)
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        self.connections_made += 1
        return conn

    async def _exchange(self, conn: _Connection, data: bytes, head_only: bool) -> Response:
        loop = asyncio.get_running_loop()
        conn.parser = ResponseParser(head_only, self.max_body)
        conn.waiter = waiter = loop.create_future()
        self._busy.add(conn)
        reuse = False
        try:
            if conn.lost or conn.transport is None or conn.transport.is_closing():
                # nothing was written: the host cannot have seen this request
                raise ConnectFailed("the connection closed before the request was written")
            conn.transport.write(data)
            response: Response = await waiter
            reuse = conn.parser.keep_alive and not conn.lost
            return response
        finally:
            self._busy.discard(conn)
            conn.parser = conn.waiter = None
            if reuse and not self._closed:
                conn.idle_since_ms = self.clock.monotonic_ms()
                self._idle.append(conn)
                if self._sweeper is None:
                    self._sweep_in(self.keepalive_s * 1000)
            else:
                conn._abort()

    def _sweep(self) -> None:
        """Close idle connections past their keep-alive, so that none outlives it for long
        even when no request comes to look; again later while any stay idle."""
        self._sweeper = None
        now, idle = self.clock.monotonic_ms(), self._idle
        while idle and not idle[0].reusable(now, self.keepalive_s):
            idle.pop(0)._abort()
        if idle and not self._closed:
            self._sweep_in(idle[0].idle_since_ms + self.keepalive_s * 1000 - now)

    def _sweep_in(self, ms: float) -> None:
        self._sweeper = self.clock.call_at(self.clock.now_ms() + math.ceil(max(0.0, ms)),
                                           self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in [*self._idle, *self._busy]:
            conn._abort()
        self._idle.clear()
        self._busy.clear()
        await asyncio.sleep(0)  # let the transports finish closing
