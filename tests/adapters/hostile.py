"""A real `cloudqueue serve` in this process on 127.0.0.1, and a raw-socket client for it: the
bytes a hostile or broken client sends, unfiltered by any HTTP library."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cloudqueue.adapters.auth import AppKeys
from cloudqueue.engine.runtime.clock import Clock
from cloudqueue.server import AppConfig, ServeConfig, running

KEYS = AppKeys("appA", "appA-key-0123456789", "appA-master-0123456789")
MASTER = f"X-LC-Id: appA\r\nX-LC-Key: {KEYS.master_key},master\r\n".encode()
TASKS = "/1.1/engine/cloud-queue/tasks"


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any  # the JSON body

    @property
    def error(self) -> Any:
        return self.body["error"]


def config(data_dir: Path, **settings: Any) -> ServeConfig:
    return ServeConfig(port=0, data_dir=data_dir, apps=(AppConfig(KEYS),), gc_freeze_ms=0,
                       **settings)


@contextlib.asynccontextmanager
async def serving(data_dir: Path, *, clock: Clock | None = None, **settings: Any
                  ) -> AsyncIterator[int]:
    """The server's port (its time: ``clock``, the system's by default)."""
    async with running(config(data_dir, **settings), clock) as server:
        yield server.port


def request(method: str, target: str, *, headers: bytes = b"", body: bytes | None = None,
            close: bool = True) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + headers
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n".encode()
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + (body or b"")


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return Answer(int(status_line.split()[1]), headers, json.loads(body))


async def exchange(port: int, *parts: bytes, timeout_s: float = 5.0) -> Answer:
    """Send ``parts`` (one write each), read until the server closes, parse the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
    return parse(raw)
