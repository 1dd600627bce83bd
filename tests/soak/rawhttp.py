"""A minimal HTTP/1.1 client over asyncio streams, for the soak test's processes.

The load generator sends a thousand requests a second on a 2-core machine that also runs the
server and the function host, so it speaks HTTP itself (prebuilt request bytes; the status line
and a few headers parsed) at a fraction of aiohttp's client's CPU. It also has to send what no
proper client sends: non-UTF-8 header bytes, half a request line, a body cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this client can read."""


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; the last value of a repeated header
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


def request_bytes(method: str, path: str, headers: dict[str, str] | list[tuple[str, str]],
                  body: bytes | None = None, *, raw_headers: bytes = b"") -> bytes:
    """The bytes of one request. ``raw_headers`` are appended as they are (CRLF-terminated
    lines), for header values that are not text."""
    items = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in items)]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n").encode("latin-1") + raw_headers + b"\r\n"
    return head + (body or b"")


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One answer: Content-Length, chunked, or (neither) up to the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError("answer head too long") from exc
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP status line: {lines[0][:80]!r}")
    status = int(status_line[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY:
            raise ProtocolError(f"answer of {length} bytes")
        body = await reader.readexactly(length)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        body = await reader.read(MAX_BODY)
    return Answer(status, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        length = int(line.split(b";", 1)[0].strip(), 16)
        if length == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        size += length
        if size > MAX_BODY:
            raise ProtocolError("chunked answer too long")
        parts.append(await reader.readexactly(length))
        await reader.readexactly(2)


async def open_connection(host: str, port: int
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, limit=MAX_HEAD)


def close(writer: asyncio.StreamWriter, abort: bool = False) -> None:
    with contextlib.suppress(Exception):
        if abort:
            writer.transport.abort()
        else:
            writer.close()


async def one_shot(host: str, port: int, request: bytes, timeout_s: float) -> Answer:
    """A request on a connection of its own, closed afterwards (TimeoutError past timeout_s)."""
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await open_connection(host, port)
            writer.write(request)
            return await read_answer(reader)
    finally:
        if writer is not None:
            close(writer)
