"""A small HTTP/1.1 client for one origin: the function host the invoker calls for every run.

Why not aiohttp's client: at 1,000 runs/s a call through ``ClientSession`` cost the queue
~285 us of CPU (a quarter of the server's core in the burst benchmark's profile), most of it
building a general-purpose request and response. Calling one host with a JSON body and reading a
JSON answer needs far less: this client writes one prebuilt byte string per request and parses the
answer in a ``Protocol`` without streams. aiohttp still serves everything else (the REST API, the
function host, the SDK client).

What it speaks: ``http`` and ``https`` (the system's default certificate checks), Basic auth
from ``user:password@`` in the URL, keep-alive connections reused most-recent-first and closed
once idle past ``keepalive_s``, answers framed by
``Content-Length``, ``Transfer-Encoding: chunked`` or the connection's end, ``1xx`` interim answers
skipped, ``gzip``/``deflate`` bodies decoded (it sends ``Accept-Encoding: gzip, deflate``, as
aiohttp did). Heads and trailers are bounded, and so are bodies (``max_body``, the queue's cap on
a function's answer, 8 MiB by default): checked while the answer is read and while it is
decoded, so an answer over the cap is never held whole. No redirects, proxies, cookies or
pipelining: the queue needs none of them.

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
import ssl
import time
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from cloudqueue.engine.core.redact import redact_url

_MAX_HEAD = 64 * 1024  # status line + headers
# A function's answer: the queue stores it whole in one log record, capped at
# engine.core.framing.MAX_RECORD_BYTES (16 MiB), so answers are refused well below that.
DEFAULT_MAX_BODY = 8 * 1024 * 1024


class ConnectFailed(Exception):
    """No connection to the host: the request was not sent."""


class ConnectionBroken(Exception):
    """The connection failed after the request was sent: the host may have acted on it."""


class AnswerTooLarge(ConnectionBroken):
    """The answer (as sent, or once decoded) is over the client's ``max_body``: refused while
    it was read, never held whole. The request was sent: the function may have run."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} over the {limit}-byte cap on a function's answer")
        self.limit = limit


class Response:
    """``status``; ``head``, the status line and header lines as received; ``body``, decoded
    when the host compressed it."""

    __slots__ = ("status", "head", "body")

    def __init__(self, status: int, head: str, body: bytes) -> None:
        self.status = status
        self.head = head
        self.body = body

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes)"

    def header(self, name: str) -> str:
        """The value of header ``name`` (any case), "" when absent; repeated fields joined with
        ", "."""
        return _field(self.head, self.head.lower(), name.lower())


class _Parser:
    """Incremental HTTP/1.x response parser (one response at a time)."""

    __slots__ = ("buf", "head_only", "max_body", "state", "status", "head", "coding", "length",
                 "chunks", "received", "keep_alive", "response")

    def __init__(self, head_only: bool, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.buf = bytearray()
        self.head_only = head_only
        self.max_body = max_body
        self.state = "head"
        self.status = 0
        self.head = ""
        self.coding = ""  # Content-Encoding, lower case
        self.length = 0
        self.chunks: list[bytes] = []
        self.received = 0  # bytes of chunked body so far
        self.keep_alive = True
        self.response: Response | None = None

    def feed(self, data: bytes) -> bool:
        """Take bytes; True once a whole response is parsed (``self.response``)."""
        if self.state == "head" and not self.buf:  # the usual case: the whole answer at once
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                self._head(data[:end])
                if self.state == "length" and len(data) - end - 4 == self.length:
                    self._done(data[end + 4:])
                    return True
                data = data[end + 4:]
        self.buf += data
        while True:
            state = self.state
            if state == "done":
                if self.buf:
                    self.keep_alive = False  # never reuse a connection that said more
                return True
            if state == "until_close":
                if len(self.buf) > self.max_body:
                    raise AnswerTooLarge("a response body", self.max_body)
                return False
            if not self._STEPS[state](self):
                return False

    def _step_head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD:
                raise ConnectionBroken(f"response head over {_MAX_HEAD} bytes")
            return False
        head = bytes(self.buf[:end])
        del self.buf[:end + 4]
        self._head(head)
        return True

    def _step_length(self) -> bool:
        if len(self.buf) < self.length:
            return False
        self._done(bytes(self.buf[:self.length]))
        del self.buf[:self.length]
        return True

    def _step_chunk_size(self) -> bool:
        end = self.buf.find(b"\r\n")
        if end < 0:
            if len(self.buf) > 1024:
                raise ConnectionBroken("chunk size line too long")
            return False
        size_text = bytes(self.buf[:end]).split(b";", 1)[0].strip()
        del self.buf[:end + 2]
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            raise ConnectionBroken(f"bad chunk size {size_text[:20]!r}")
        self.length = int(size_text, 16)
        if self.received + self.length > self.max_body:
            raise AnswerTooLarge(f"a chunked body of {self.received + self.length}+ bytes",
                                 self.max_body)
        self.state = "chunk" if self.length else "trailers"
        return True

    def _step_chunk(self) -> bool:
        if len(self.buf) < self.length + 2:
            return False
        if self.buf[self.length:self.length + 2] != b"\r\n":
            raise ConnectionBroken("chunk not followed by CRLF")
        self.chunks.append(bytes(self.buf[:self.length]))
        del self.buf[:self.length + 2]
        self.received += self.length
        self.state = "chunk_size"
        return True

    def _step_trailers(self) -> bool:
        end = self.buf.find(b"\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD:
                raise ConnectionBroken(f"trailer line over {_MAX_HEAD} bytes")
            return False
        del self.buf[:end + 2]
        if end == 0:  # the empty line ending the trailers
            self._done(b"".join(self.chunks))
        return True

    _STEPS: dict[str, Callable[[_Parser], bool]] = {
        "head": _step_head, "length": _step_length, "chunk_size": _step_chunk_size,
        "chunk": _step_chunk, "trailers": _step_trailers}

    def _head(self, head: bytes) -> None:
        text = head.decode("latin-1")
        version, _, rest = text.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ConnectionBroken(f"not an HTTP/1.x response: {text[:60]!r}")
        status = int(code)
        for line in text.split("\r\n")[1:]:
            if ":" not in line:
                raise ConnectionBroken(f"malformed header line {line[:60]!r}")
        if 100 <= status < 200 and status != 101:
            return  # an interim answer: the real one follows
        self.status = status
        self.head = text
        lowered = text.lower()
        self.coding = _field(lowered, lowered, "content-encoding")
        connection = _field(lowered, lowered, "connection")
        self.keep_alive = (version == "HTTP/1.1" and "close" not in connection) or (
            version == "HTTP/1.0" and "keep-alive" in connection)
        if self.head_only or status in (204, 304):
            self._done(b"")
        elif "chunked" in _field(lowered, lowered, "transfer-encoding"):
            self.state = "chunk_size"
        elif "\r\ncontent-length:" in lowered:
            length = _field(lowered, lowered, "content-length")
            values = {value.strip() for value in length.split(",")}  # repeats must agree
            if len(values) != 1 or not _is_digits(next(iter(values))):
                raise ConnectionBroken(f"bad Content-Length {length[:20]!r}")
            self.length = int(values.pop())
            if self.length > self.max_body:
                raise AnswerTooLarge(f"Content-Length {self.length}", self.max_body)
            self.state = "length"
        else:
            self.keep_alive = False
            self.state = "until_close"

    def _done(self, body: bytes) -> None:
        self.state = "done"
        self.response = Response(
            self.status, self.head,
            _decode(self.coding, body, self.max_body) if body and self.coding else body)

    def closed(self) -> bool:
        """The connection ended: True when that ended the response (a body read until close)."""
        if self.state == "until_close":
            self._done(bytes(self.buf))
            self.buf.clear()
            return True
        return self.state == "done"


def _field(head: str, lowered: str, name: str) -> str:
    """The value of header ``name`` (lower case) in ``head``, found in its lower-cased copy
    ``lowered``; "" when absent, repeated fields joined with ", "."""
    values = []
    key = f"\r\n{name}:"
    start = lowered.find(key)
    while start >= 0:
        start += len(key)
        end = lowered.find("\r\n", start)
        values.append(head[start:end if end >= 0 else None].strip())
        start = lowered.find(key, start)
    return ", ".join(values)


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # int() would also take "+5", "1_0", " 7"


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    """Decompress, never past ``limit`` (a small body can inflate to gigabytes)."""
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit:
        raise AnswerTooLarge("a response body that decompresses to", limit)
    if not inflater.eof:
        raise zlib.error("incomplete or truncated stream")
    return out


def _decode(coding: str, body: bytes, limit: int) -> bytes:
    """``body`` decoded from ``coding`` (lower case), at most ``limit`` bytes of it."""
    if coding == "identity":
        return body
    try:
        if coding in ("gzip", "x-gzip"):
            return _inflate(body, 16 + zlib.MAX_WBITS, limit)
        if coding == "deflate":
            try:
                return _inflate(body, zlib.MAX_WBITS, limit)
            except zlib.error:  # raw deflate, as some servers send it
                return _inflate(body, -zlib.MAX_WBITS, limit)
    except zlib.error as exc:
        raise ConnectionBroken(f"could not decode a {coding} body: {exc}") from None
    raise ConnectionBroken(f"unsupported Content-Encoding {coding!r} (asked for gzip, deflate)")


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "parser", "waiter", "lost", "idle_since")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: _Parser | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.lost = False
        self.idle_since = 0.0

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

    def reusable(self, now: float, keepalive_s: float) -> bool:
        return (not self.lost and self.transport is not None
                and not self.transport.is_closing() and now - self.idle_since < keepalive_s)


class HostClient:
    """Requests to one origin (``scheme://host[:port]``) over reused connections; at most
    ``limit`` at once when given (a request waiting for one past its timeout was never sent:
    ``ConnectFailed``). The invoker gives none: the engine's concurrency already bounds the
    runs in flight, and a second bound below it would only make runs wait."""

    def __init__(self, base_url: str, *, limit: int | None = None, keepalive_s: float = 2.0,
                 ssl_context: ssl.SSLContext | None = None,
                 max_body: int = DEFAULT_MAX_BODY) -> None:
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
        self._slots: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if limit is None else asyncio.Semaphore(limit))
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
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
        now = time.monotonic()
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
        conn.parser = _Parser(head_only, self.max_body)
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
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
                if self._sweeper is None:
                    self._sweeper = loop.call_later(self.keepalive_s, self._sweep)
            else:
                conn._abort()

    def _sweep(self) -> None:
        """Close idle connections past their keep-alive, so that none outlives it for long
        even when no request comes to look; again later while any stay idle."""
        self._sweeper = None
        now, idle = time.monotonic(), self._idle
        while idle and not idle[0].reusable(now, self.keepalive_s):
            idle.pop(0)._abort()
        if idle and not self._closed:
            wait_s = max(0.0, idle[0].idle_since + self.keepalive_s - now)
            self._sweeper = asyncio.get_running_loop().call_later(wait_s, self._sweep)

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
