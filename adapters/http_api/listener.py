"""Listening sockets and the accept loop of ``cloudqueue serve``, with a cap on connections.

While ``ConnectionCount.limit`` connections are open the listener accepts no more: new clients
wait in the kernel's backlog (``BACKLOG``, then the kernel drops their SYNs and they retry) and
are accepted, in order, as connections close — a slow or idle client is cut off by the protocol's
timeouts (``protocol.py``), so a well-behaved one is served after at most the header timeout.
The server's descriptors never run out on account of clients, and when they run out anyway
(``EMFILE``: other files, a lower ``ulimit -n``) accepting pauses ``RETRY_S`` (on the listener's
``Clock``) and says so once per interval, instead of the line a millisecond asyncio's own accept
loop writes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from cloudqueue.adapters.http_api.protocol import ConnectionCount
from cloudqueue.engine.runtime.clock import Clock, SystemClock

log = logging.getLogger("cloudqueue.serve")

BACKLOG = 512
RETRY_S = 0.5
# accept() errors about one client (it reset, a firewall refused it): the next may be fine.
# Any other (EMFILE: out of descriptors, ENOBUFS...) pauses accepting RETRY_S.
_ONE_CLIENT = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EAGAIN})


def bind(host: str, port: int, backlog: int = BACKLOG) -> list[socket.socket]:
    """A listening socket for each address ``host`` resolves to (as ``loop.create_server``).

    Raises:
        OSError: the address is in use, not this machine's, or the port is privileged.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts on ``sockets`` while ``count`` has room; hands each connection to ``factory``."""

    def __init__(self, sockets: list[socket.socket], factory: Callable[[], asyncio.Protocol],
                 count: ConnectionCount, clock: Clock | None = None) -> None:
        self.sockets = sockets
        self.clock = clock or SystemClock()
        self._factory = factory
        self._count = count
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        port: int = self.sockets[0].getsockname()[1]
        return port

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._accept(sock)) for sock in self.sockets]

    async def close(self) -> None:
        """Stop accepting and close the listening sockets (open connections stay)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in self.sockets:
            sock.close()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._count.room()
            try:
                conn, _address = await loop.sock_accept(sock)
            except OSError as exc:
                await self._accept_failed(exc)
                continue
            try:
                await loop.connect_accepted_socket(self._factory, conn)
            except OSError as exc:  # the client left before its transport was made
                log.debug("could not set up a connection: %s", exc)
                conn.close()

    async def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in _ONE_CLIENT:
            log.debug("a connection was lost before it was accepted: %s", exc)
            return
        log.error("cannot accept connections: %s (%d open); retrying in %g s",
                  exc.strerror or exc, self._count.open, RETRY_S)
        await self.clock.sleep(RETRY_S * 1000)
