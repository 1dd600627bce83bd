"""The invoker's HTTP/1.1 client (adapters/http_invoker/h1.py) against scripted servers on
127.0.0.1: every way an answer can be framed, connection reuse, and the three failures the
invoker must tell apart (no connection / broken after sending / no answer in time)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from cloudqueue.adapters.http_invoker.h1 import ConnectFailed, ConnectionBroken, HostClient
from cloudqueue.adapters.http_invoker.h1_answer import ResponseParser
from cloudqueue.engine.runtime.clock import FakeClock
from tests.waiting import until

T0 = 1_700_000_000_000

# one connection's side of the conversation; reads requests through Scripted.read_request
Script = Callable[["Scripted", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A TCP server running ``script`` per connection; counts connections and requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One whole request (head + Content-Length body), or None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client += 1
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[tuple[Scripted, str]]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script, ssl_context: ssl.SSLContext | None = None
                    ) -> tuple[Scripted, str]:
        scripted = Scripted(script)
        server = await asyncio.start_server(scripted._serve, "127.0.0.1", 0, ssl=ssl_context)
        scripted.server = server
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return scripted, f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{lines}Content-Length: {len(body)}\r\n\r\n".encode() + body


def keep_answering(*responses: bytes) -> Script:
    """A script answering each request on a connection with the next response, in turn."""
    async def script(scripted: Scripted, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        for response in responses:
            if await scripted.read_request(reader) is None:
                return
            writer.write(response)
            await writer.drain()
        await scripted.read_request(reader)
    return script


def reply_once(reply: bytes) -> Script:
    """A script that reads one request, sends ``reply`` and closes the connection."""
    async def script(scripted: Scripted, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await scripted.read_request(reader)
        writer.write(reply)
        await writer.drain()
    return script


# ---------------------------------------------------------------------- framing and reuse

async def test_content_length_answers_reuse_one_connection(serve) -> None:  # type: ignore[no-untyped-def]
    responses = [answer(b'{"result":%d}' % i, "Content-Type: application/json") for i in range(3)]
    scripted, url = await serve(keep_answering(*responses))
    client = HostClient(url)
    try:
        for i in range(3):
            response = await client.request("POST", "/1.1/functions/f", b"X-A: 1\r\n", b"{}")
            assert (response.status, response.body) == (200, b'{"result":%d}' % i)
            assert response.header("content-type") == "application/json"
        assert scripted.connections == 1 and client.connections_made == 1
    finally:
        await client.close()
    first = scripted.requests[0]
    assert first.startswith(b"POST /1.1/functions/f HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-A: 1\r\n" in first and b"\r\nContent-Length: 2\r\n" in first
    assert first.endswith(b"\r\n\r\n{}")


async def test_a_chunked_answer_arriving_a_byte_at_a_time(serve) -> None:  # type: ignore[no-untyped-def]
    wire = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")

    async def script(scripted: Scripted, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        while await scripted.read_request(reader) is not None:
            for i in range(len(wire)):
                writer.write(wire[i:i + 1])
                await writer.drain()

    scripted, url = await serve(script)
    client = HostClient(url)
    try:
        for _ in range(2):
            response = await client.request("POST", "/f", body=b"{}")
            assert response.body == b"hello world"
        assert scripted.connections == 1  # a chunked answer leaves the connection reusable
    finally:
        await client.close()


async def test_an_answer_without_length_ends_with_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    scripted, url = await serve(
        reply_once(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"))
    client = HostClient(url)
    try:
        assert (await client.request("POST", "/f", body=b"1")).body == b"all of it"
        assert (await client.request("POST", "/f", body=b"2")).body == b"all of it"
        assert scripted.connections == 2
    finally:
        await client.close()


@pytest.mark.parametrize("response", [
    answer(b"x", "Connection: close"),
    b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
])
async def test_a_connection_the_host_will_close_is_not_reused(serve, response: bytes) -> None:  # type: ignore[no-untyped-def]
    scripted, url = await serve(keep_answering(response, response))
    client = HostClient(url)
    try:
        for _ in range(2):
            assert (await client.request("POST", "/f", body=b"{}")).body == b"x"
        assert client.connections_made == 2
    finally:
        await client.close()


async def test_http_1_0_keep_alive_is_reused(serve) -> None:  # type: ignore[no-untyped-def]
    response = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"
    scripted, url = await serve(keep_answering(response, response))
    client = HostClient(url)
    try:
        for _ in range(2):
            await client.request("POST", "/f", body=b"{}")
        assert client.connections_made == 1
    finally:
        await client.close()


async def test_an_idle_connection_past_its_keepalive_is_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    response = answer(b"x")
    scripted, url = await serve(keep_answering(response, response))
    client = HostClient(url, keepalive_s=0.0)
    try:
        for _ in range(2):
            await client.request("POST", "/f", body=b"{}")
        assert client.connections_made == 2
    finally:
        await client.close()


async def test_a_connection_the_host_closed_while_idle_is_replaced(serve) -> None:  # type: ignore[no-untyped-def]
    scripted, url = await serve(reply_once(answer(b"x")))  # says keep-alive, closes anyway
    client = HostClient(url)
    try:
        await client.request("POST", "/f", body=b"{}")
        await until(lambda: all(conn.lost for conn in client._idle), "the host's FIN")
        assert (await client.request("POST", "/f", body=b"{}")).body == b"x"
        assert client.connections_made == 2
    finally:
        await client.close()


async def test_interim_100_continue_is_skipped(serve) -> None:  # type: ignore[no-untyped-def]
    response = b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"done")
    scripted, url = await serve(keep_answering(response))
    client = HostClient(url)
    try:
        response_ = await client.request("POST", "/f", body=b"{}")
        assert (response_.status, response_.body) == (200, b"done")
    finally:
        await client.close()


async def test_no_body_for_204(serve) -> None:  # type: ignore[no-untyped-def]
    response = b"HTTP/1.1 204 No Content\r\n\r\n"
    scripted, url = await serve(keep_answering(response, answer(b"next")))
    client = HostClient(url)
    try:
        assert (await client.request("POST", "/f", body=b"{}")).body == b""
        assert (await client.request("POST", "/f", body=b"{}")).body == b"next"
        assert client.connections_made == 1
    finally:
        await client.close()


@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, no zlib wrapper
])
async def test_compressed_bodies_are_decoded(serve, coding, encode) -> None:  # type: ignore[no-untyped-def]
    body = b'{"result": "' + b"z" * 5000 + b'"}'
    response = answer(encode(body), f"Content-Encoding: {coding}")
    scripted, url = await serve(keep_answering(response))
    client = HostClient(url)
    try:
        assert (await client.request("POST", "/f", body=b"{}")).body == body
    finally:
        await client.close()
    assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in scripted.requests[0]


def test_repeated_and_any_case_headers() -> None:
    parser = ResponseParser(head_only=False)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nset-cookie: a\r\nSET-COOKIE: b\r\n"
                       b"content-TYPE:  text/plain \r\ncontent-length: 0\r\n\r\n")
    response = parser.response
    assert response is not None
    assert response.header("Set-Cookie") == "a, b"
    assert response.header("Content-Type") == "text/plain"
    assert response.header("X-Missing") == ""


# ---------------------------------------------------------------------- failures


async def test_nothing_listening_is_connect_failed(unused_tcp_port: int) -> None:
    client = HostClient(f"http://127.0.0.1:{unused_tcp_port}")
    try:
        with pytest.raises(ConnectFailed, match="ConnectionRefusedError"):
            await client.request("POST", "/f", body=b"{}")
    finally:
        await client.close()


async def test_an_unknown_host_name_is_connect_failed() -> None:
    client = HostClient("http://no-such-host.invalid:9")
    try:
        with pytest.raises(ConnectFailed):
            await client.request("POST", "/f", body=b"{}", timeout_s=10)
    finally:
        await client.close()


@pytest.mark.parametrize("reply", [
    b"",  # read the request, closed without a word
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed mid-body
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",  # closed mid-chunk
    # a body ended by the close that does not decode: fails at once, not at the timeout
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nConnection: close\r\n\r\nxyz",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\nnot gzip",
])
async def test_a_connection_ending_before_the_whole_answer_is_broken(serve, reply: bytes) -> None:  # type: ignore[no-untyped-def]
    scripted, url = await serve(reply_once(reply))
    client = HostClient(url)
    try:
        with pytest.raises(ConnectionBroken):
            await client.request("POST", "/f", body=b"{}")
        assert len(scripted.requests) == 1  # the request did reach the host
    finally:
        await client.close()


@pytest.mark.parametrize("reply", [
    b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
])
async def test_an_answer_that_is_not_http_is_broken(serve, reply: bytes) -> None:  # type: ignore[no-untyped-def]
    scripted, url = await serve(keep_answering(reply))
    client = HostClient(url)
    try:
        with pytest.raises(ConnectionBroken):
            await client.request("POST", "/f", body=b"{}")
    finally:
        await client.close()


async def test_no_answer_in_time_times_out_and_drops_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    async def script(scripted: Scripted, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if await scripted.read_request(reader) is None:
            return
        if len(scripted.requests) == 1:
            await scripted.read_request(reader)  # never answers the first; sees the close
            return
        writer.write(answer(b"ok"))
        await writer.drain()
        await scripted.read_request(reader)

    scripted, url = await serve(script)
    client = HostClient(url)
    try:
        with pytest.raises(TimeoutError):
            await client.request("POST", "/f", body=b"{}", timeout_s=0.2)
        assert (await client.request("POST", "/f", body=b"{}")).body == b"ok"
        assert client.connections_made == 2  # the timed-out connection was not reused
    finally:
        await client.close()
    assert scripted.closed_by_client >= 1


async def test_a_cancelled_request_drops_its_connection(serve) -> None:  # type: ignore[no-untyped-def]
    arrived = asyncio.Event()

    async def script(scripted: Scripted, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await scripted.read_request(reader)
        arrived.set()
        await scripted.read_request(reader)  # EOF: the client closed it

    scripted, url = await serve(script)
    client = HostClient(url)
    try:
        call = asyncio.ensure_future(client.request("POST", "/f", body=b"{}"))
        await asyncio.wait_for(arrived.wait(), 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert client._idle == [] and client._busy == set()
    finally:
        await client.close()


async def test_a_bad_url_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        HostClient("ftp://example.com")


# ---------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 issued by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_https_with_a_trusted_certificate(serve, ca: trustme.CA,  # type: ignore[no-untyped-def]
                                                server_tls: ssl.SSLContext) -> None:
    scripted, url = await serve(keep_answering(answer(b"secret"), answer(b"again")), server_tls)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client = HostClient(url, ssl_context=client_ctx)
    try:
        assert (await client.request("POST", "/f", body=b"{}")).body == b"secret"
        assert (await client.request("POST", "/f", body=b"{}")).body == b"again"
        assert client.connections_made == 1
    finally:
        await client.close()


async def test_https_with_an_untrusted_certificate_is_connect_failed(  # type: ignore[no-untyped-def]
        serve, server_tls: ssl.SSLContext) -> None:
    scripted, url = await serve(keep_answering(answer(b"secret")), server_tls)
    client = HostClient(url)  # the system's trust store: this CA is not in it
    try:
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await client.request("POST", "/f", body=b"{}")
        assert scripted.requests == []  # nothing was sent
    finally:
        await client.close()


# ---------------------------------------------------------------------- found in review


async def test_no_connection_in_time_is_connect_failed_not_a_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def silent(scripted: Scripted, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts TCP, never answers the TLS handshake

    scripted, url = await serve(silent)
    client = HostClient(url.replace("http://", "https://"))
    try:
        with pytest.raises(ConnectFailed, match="no connection to the host within 0.2 s"):
            await client.request("POST", "/f", body=b"{}", timeout_s=0.2)
    finally:
        await client.close()


async def test_waiting_for_a_free_connection_past_the_timeout_is_connect_failed(serve) -> None:  # type: ignore[no-untyped-def]
    arrived = asyncio.Event()

    async def script(scripted: Scripted, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await scripted.read_request(reader)
        arrived.set()
        await scripted.read_request(reader)  # holds the one connection

    scripted, url = await serve(script)
    client = HostClient(url, limit=1)
    first = asyncio.ensure_future(client.request("POST", "/f", body=b"1", timeout_s=30))
    try:
        await asyncio.wait_for(arrived.wait(), 5)
        with pytest.raises(ConnectFailed):
            await client.request("POST", "/f", body=b"2", timeout_s=0.2)
        assert len(scripted.requests) == 1  # the second was never sent
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await client.close()


async def test_connections_idle_past_their_keepalive_are_closed_oldest_first(serve) -> None:  # type: ignore[no-untyped-def]
    gate = asyncio.Event()

    async def script(scripted: Scripted, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        while await scripted.read_request(reader) is not None:
            await gate.wait()
            writer.write(answer(b"x"))
            await writer.drain()

    scripted, url = await serve(script)
    client = HostClient(url, keepalive_s=3600)
    try:
        calls = [asyncio.ensure_future(client.request("POST", "/f", body=b"{}"))
                 for _ in range(3)]
        gate.set()
        await asyncio.gather(*calls)
        assert len(client._idle) == 3
        client.keepalive_s = 0.0  # from now on every idle connection is past its keep-alive
        await client.request("POST", "/f", body=b"{}")
        assert len(client._idle) == 1 and client.connections_made == 4
        # the three old ones were closed, not kept
        await until(lambda: scripted.closed_by_client == 3, "the old connections' close")
    finally:
        await client.close()


@pytest.mark.parametrize("length, ok", [
    ("3", True), ("3, 3", True), ("+3", False), ("0x3", False), ("1_0", False), ("3, 4", False),
])
def test_content_length_must_be_plain_digits(length: str, ok: bool) -> None:
    parser = ResponseParser(head_only=False)
    wire = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nabc".encode()
    if ok:
        assert parser.feed(wire) and parser.response is not None
        assert parser.response.body == b"abc"
    else:
        with pytest.raises(ConnectionBroken, match="bad Content-Length"):
            parser.feed(wire)


def test_a_body_that_inflates_past_the_cap_is_refused() -> None:
    bomb = gzip.compress(bytes(65 * 1024 * 1024), compresslevel=1)
    parser = ResponseParser(head_only=False)
    wire = (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            % len(bomb)) + bomb
    with pytest.raises(ConnectionBroken, match="decompresses to over"):
        parser.feed(wire)


async def test_credentials_in_the_url_are_sent_as_basic_auth(serve) -> None:  # type: ignore[no-untyped-def]
    scripted, url = await serve(keep_answering(answer(b"x")))
    client = HostClient(url.replace("http://", "http://us%40er:p%3Ass@"))
    try:
        await client.request("POST", "/f", body=b"{}")
    finally:
        await client.close()
    # base64("us@er:p:ss")
    assert b"\r\nAuthorization: Basic dXNAZXI6cDpzcw==\r\n" in scripted.requests[0]
    assert b"\r\nHost: 127.0.0.1:" in scripted.requests[0]


async def test_idle_connections_close_after_their_keepalive_without_another_request(  # type: ignore[no-untyped-def]
        serve) -> None:
    scripted, url = await serve(keep_answering(answer(b"x")))
    clock = FakeClock(T0)
    client = HostClient(url, keepalive_s=0.05, clock=clock)
    try:
        await client.request("POST", "/f", body=b"{}")
        assert clock.next_deadline_ms() == T0 + 50  # a timer of the client's own
        clock.advance(49)
        assert len(client._idle) == 1
        clock.advance(1)
        assert client._idle == []
        await until(lambda: scripted.closed_by_client == 1, "the host seeing the close")
    finally:
        await client.close()


async def test_without_a_limit_every_caller_has_a_connection_at_once(serve) -> None:  # type: ignore[no-untyped-def]
    callers = 150  # past the 100 that aiohttp's pool (and this client's first version) allowed
    all_in = asyncio.Event()

    async def hold_until_all_arrive(scripted: Scripted, reader: asyncio.StreamReader,
                                    writer: asyncio.StreamWriter) -> None:
        await scripted.read_request(reader)
        if len(scripted.requests) == callers:
            all_in.set()
        await all_in.wait()  # with any limit below `callers` this never happens
        writer.write(answer(b"x"))
        await writer.drain()
        await scripted.read_request(reader)

    scripted, url = await serve(hold_until_all_arrive)
    client = HostClient(url)
    try:
        answers = await asyncio.gather(*(client.request("POST", "/f", body=b"{}", timeout_s=20)
                                         for _ in range(callers)))
        assert [a.body for a in answers] == [b"x"] * callers
        assert scripted.connections == callers
    finally:
        await client.close()


async def test_a_connection_used_within_its_keepalive_is_reused_and_swept_after_its_last_use(  # type: ignore[no-untyped-def]
        serve) -> None:
    scripted, url = await serve(keep_answering(answer(b"x"), answer(b"y")))
    clock = FakeClock(T0)
    client = HostClient(url, keepalive_s=0.05, clock=clock)
    try:
        await client.request("POST", "/f", body=b"{}")
        clock.advance(49)
        await client.request("POST", "/f", body=b"{}")  # idle 49 ms: reused
        assert client.connections_made == 1
        clock.advance(1)  # the sweep looks, finds it idle 1 ms, and looks again at +99
        assert len(client._idle) == 1 and clock.next_deadline_ms() == T0 + 99
        clock.advance(48)
        assert len(client._idle) == 1
        clock.advance(1)
        assert client._idle == []
        await until(lambda: scripted.closed_by_client == 1, "the host seeing the close")
    finally:
        await client.close()
