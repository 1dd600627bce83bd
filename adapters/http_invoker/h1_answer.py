"""Reading a function host's answer: the HTTP/1.x response parser of ``h1.HostClient`` and the
errors that tell the invoker whether the function may have run.

:class:`ResponseParser` is fed the bytes of one connection as they arrive and says when a whole
answer is in: framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the connection's
end (``closed``), ``1xx`` interim answers skipped, ``gzip``/``deflate`` bodies decoded. Heads and
trailers are bounded, and so are bodies (``max_body``): checked while the answer is read and while
it is decoded, so an answer over the cap is never held whole.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

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


class ResponseParser:
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

    _STEPS: dict[str, Callable[[ResponseParser], bool]] = {
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
