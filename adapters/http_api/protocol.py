"""The HTTP connection layer of ``cloudqueue serve``: aiohttp's request handler with the limits a
server facing untrusted clients needs, and every answer it makes itself in ``{code, error}`` JSON.

aiohttp times out neither a request's headers nor its body, so a client that sends half a header
line and stalls holds its connection (and a file descriptor) for as long as it likes. Here:

* **headers**: a request's headers must be complete ``header_timeout_s`` after its first byte (on
  a new connection, after the connection opened); else the client gets a 408 and is cut off;
* **body**: the body must be complete ``body_timeout_s`` after the headers; else reading it raises
  :class:`BodyTimeoutError` (the API answers 408) and the connection closes (both timers run on
  the server's ``Clock``);
* **idle**: a keep-alive connection with no request in ``idle_timeout_s`` is closed (aiohttp's own
  ``keepalive_timeout``, set by the runner, on the event loop's time);
* **count**: :class:`ConnectionCount` counts open connections; the listener (``listener.py``)
  accepts no more while ``max_connections`` are open, so more clients wait in the backlog.

aiohttp answers a request it cannot parse (bad request line, headers, chunked framing) from its
protocol layer, before any middleware, in plain text, logging a traceback each time; here
``handle_error`` answers ``{"code": status, "error": what was wrong}`` (never echoing the bytes
sent, which may hold a key) and logs one rate-limited line. This uses aiohttp's ``RequestHandler``
internals (``_messages``, ``_waiter``, ``_process_keepalive``), checked by
``tests/adapters/test_slow_clients.py`` and ``test_hostile_http.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from cloudqueue.adapters.http_api.logs import RATE_LIMITED
from cloudqueue.engine.runtime.clock import Clock, SystemClock, TimerCancel

log = logging.getLogger("cloudqueue.http")

_CLIENT_GONE = (ConnectionError, asyncio.CancelledError)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0  # longer than a proxy's idle upstream connections (nginx: 60 s)
    max_connections: int = 1000


class BodyTimeoutError(TimeoutError):
    """The request body did not arrive in time (a ``TimeoutError``, which aiohttp's lingering
    read after the answer takes as "stop reading")."""


class ConnectionCount:
    """Open connections of one server, and whether there is room for one more."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._room = asyncio.Event()
        self._room.set()

    def opened(self) -> None:
        self.open += 1
        if self.open >= self.limit:
            self._room.clear()

    def closed(self) -> None:
        self.open -= 1
        if self.open < self.limit:
            self._room.set()

    async def room(self) -> None:
        await self._room.wait()


def describe_protocol_error(exc: BaseException | None) -> str:
    """What was wrong with a request aiohttp could not parse, without the bytes it quotes."""
    if isinstance(exc, LineTooLong):
        return f"a request line or header field is longer than {exc.args[1]} bytes"
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc or "")
    text = re.sub(r"^\d{3}, message:\s*", "", text.strip())
    first = text.split("\n", 1)[0]
    first = re.split(r"""\s*b['"]""", first, maxsplit=1)[0]  # the input, quoted as bytes
    first = re.sub(r"""\s*(['"]).*\1$""", "", first)  # or quoted at the end
    return first.strip(" :.") or "malformed HTTP request"


def raw_json_response(status: int, message: str) -> bytes:
    """A whole closing HTTP/1.1 response, for answering outside any request's handling."""
    body = json.dumps({"code": status, "error": message}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class GuardedRequestHandler(RequestHandler):
    """One connection: aiohttp's handler plus the header and body timers and the count."""

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, count: ConnectionCount,
                 clock: Clock, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._count = count
        self._clock = clock
        self._counted = False
        self._header_timer: TimerCancel | None = None
        self._body_timer: TimerCancel | None = None
        self._body: StreamReader | None = None  # the request body still arriving

    # ----------------------------------------------------------------- connection events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._count.opened()
        self._counted = True
        self._start_header_timer()  # the first request must come in time too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        self._end_body()
        if self._counted:
            self._counted = False
            self._count.closed()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._force_close or self._close:
            return
        before = len(self._messages)
        super().data_received(data)
        if len(self._messages) > before:
            self._on_messages(list(itertools.islice(self._messages, before, None)))
        elif data and not self._receiving_body():
            self._start_header_timer()  # the first bytes of the next request

    def _on_messages(self, new: list[tuple[Any, StreamReader]]) -> None:
        self._stop_header_timer()
        for message, _payload in new:
            if not isinstance(message, RawRequestMessage) and self._receiving_body():
                # aiohttp leaves a body whose framing broke waiting forever: fail its read
                assert self._body is not None
                self._body.set_exception(web.RequestPayloadError(
                    describe_protocol_error(getattr(message, "exc", None))))
        message, payload = new[-1]
        if isinstance(message, RawRequestMessage) and not payload.is_eof():
            self._watch_body(payload)

    # ----------------------------------------------------------------- headers

    def _start_header_timer(self) -> None:
        if self._header_timer is None and self._limits.header_timeout_s > 0:
            self._header_timer = self._after(self._limits.header_timeout_s,
                                             self._headers_timed_out)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _process_keepalive(self) -> None:
        # aiohttp's idle timer: a connection with a request arriving is not idle; the header
        # deadline governs it (start() arms the idle timer again after the answer)
        if self._header_timer is not None:
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        limit = self._limits.header_timeout_s
        log.info("closed a connection from %s: its request headers were not complete within "
                 "%g s", self._peer(), limit, extra=RATE_LIMITED)
        if self._waiter is None or self._waiter.done():  # a request is being answered
            self.close()  # after that answer
            return
        if self.transport is not None:
            self.transport.write(raw_json_response(
                408, f"the request headers were not complete within {limit:g} s"))
        self.force_close()

    # ----------------------------------------------------------------- body

    def _watch_body(self, payload: StreamReader) -> None:
        self._end_body()
        self._body = payload
        if self._limits.body_timeout_s > 0:
            self._body_timer = self._after(self._limits.body_timeout_s, self._body_timed_out)
        payload.on_eof(self._end_body)

    def _receiving_body(self) -> bool:
        body = self._body
        if body is None:
            return False
        if body.is_eof() or body.exception() is not None:
            self._end_body()
            return False
        return True

    def _end_body(self) -> None:
        self._body = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._receiving_body():
            return
        assert self._body is not None
        limit = self._limits.body_timeout_s
        log.info("request body from %s not complete within %g s", self._peer(), limit,
                 extra=RATE_LIMITED)
        self._body.set_exception(BodyTimeoutError(
            f"the request body was not complete within {limit:g} s"))
        self._body = None

    def _after(self, seconds: float, callback: Callable[[], None]) -> TimerCancel:
        return self._clock.call_at(self._clock.now_ms() + math.ceil(seconds * 1000), callback)

    # ----------------------------------------------------------------- answers of its own

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse or hand to the application (and to
        an error escaping it): ``{code, error}`` JSON, and the connection closes after it."""
        if request.writer.output_size > 0:  # as aiohttp: an answer is under way, cannot replace it
            raise ConnectionError("the answer had started; cannot send an error instead")
        if status >= 500:
            if not isinstance(exc, _CLIENT_GONE):
                log.error("unexpected error answering %s: %r", self._peer(), exc,
                          exc_info=exc, extra=RATE_LIMITED)
            body = {"code": 1, "error": "internal error; the server logged the details"}
        else:
            what = describe_protocol_error(exc) if exc is not None else (message or "")
            log.info("malformed request from %s: %s", self._peer(), what, extra=RATE_LIMITED)
            body = {"code": status, "error": f"malformed HTTP request: {what}"}
        response = web.json_response(body, status=status)
        response.force_close()
        return response

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if isinstance(peer, tuple) else "a client"


class GuardedServer(web.Server):
    """aiohttp's low-level server, making :class:`GuardedRequestHandler` connections."""

    def __init__(self, plain: web.Server, limits: ConnectionLimits,
                 count: ConnectionCount, clock: Clock) -> None:
        super().__init__(plain.request_handler, request_factory=plain.request_factory,
                         handler_cancellation=plain.handler_cancellation,
                         loop=asyncio.get_running_loop(), **plain._kwargs)
        self.limits = limits
        self.count = count
        self.clock = clock

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, limits=self.limits, count=self.count,
                                     clock=self.clock, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An ``AppRunner`` whose server is a :class:`GuardedServer`. It registers no site: the
    listener (``listener.py``) accepts connections and hands them to ``runner.server``."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, count: ConnectionCount,
                 clock: Clock | None = None, **kwargs: Any) -> None:
        lingering_s = min(10.0, limits.body_timeout_s or 10.0)
        super().__init__(app, keepalive_timeout=limits.idle_timeout_s,
                         lingering_time=lingering_s, **kwargs)
        self._limits = limits
        self._count = count
        self._clock = clock or SystemClock()

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self._limits, self._count,
                             self._clock)
