"""Malformed requests get a 4xx `{code, error}` naming what is wrong, never a 500: unreadable
credential headers, tokens and counts that `int()` would choke on or misread, JSON that Python
parses into something unstorable, and requests aiohttp cannot parse at all (answered from its
protocol layer). Raw sockets, against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.adapters.hostile import MASTER, TASKS, exchange, parse, request, serving


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[int]:
    async with serving(tmp_path) as bound:
        yield bound


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def not_utf8(header: str, value: bytes = b"\xff\xfe") -> bytes:
    return header.encode() + b": " + value + b"\r\n"


@pytest.mark.parametrize("header", ["X-LC-Key", "X-LC-Sign", "X-AVOSCloud-Application-Key",
                                    "X-AVOSCloud-Master-Key", "X-LC-Id"])
async def test_a_credential_header_that_is_not_utf8_is_named_in_a_400(port: int,
                                                                       header: str) -> None:
    headers = not_utf8(header) + (b"" if header == "X-LC-Id" else b"X-LC-Id: appA\r\n")
    answer = await exchange(port, request("GET", f"{TASKS}/some-task", headers=headers))
    assert (answer.status, answer.body) == (400, {
        "code": 1, "error": f"header {header} is not UTF-8 text; credentials are ASCII",
        "type": "validation", "field": header})


async def test_a_run_token_that_is_not_utf8_is_named_in_a_400(port: int) -> None:
    headers = b"X-LC-Id: appA\r\n" + not_utf8("X-CloudQueue-Run-Token", b"1.\xff")
    answer = await exchange(port, request("GET", f"{TASKS}/t/checkpoint", headers=headers))
    assert (answer.status, answer.error) == (
        400, "header X-CloudQueue-Run-Token is not UTF-8 text; credentials are ASCII")


@pytest.mark.parametrize("expires", ["%C2%B2",  # "²": isdigit() but int() refuses it
                                     "%D9%A1%D9%A2%D9%A3",  # Arabic-Indic digits, int() takes them
                                     "9" * 5000,  # int() refuses > 4300 digits
                                     "99999999999999999999"],
                         ids=["superscript", "arabic-indic", "5000-digits", "20-digits"])
async def test_a_read_token_with_strange_digits_is_unauthorized(port: int, expires: str) -> None:
    target = f"{TASKS}/t/events?app=appA&token={expires}.00ff"
    answer = await exchange(port, request("GET", target))
    assert (answer.status, answer.body) == (401, {"code": 401, "error": "Unauthorized."})


@pytest.mark.parametrize("run", ["9" * 5000, "\u00b2", "\u0661"],
                         ids=["5000-digits", "superscript", "arabic-indic"])
async def test_a_run_token_with_strange_digits_is_unauthorized(port: int, run: str) -> None:
    headers = f"X-LC-Id: appA\r\nX-CloudQueue-Run-Token: {run}.00ff\r\n".encode()
    answer = await exchange(port, request("GET", f"{TASKS}/t/checkpoint", headers=headers))
    assert (answer.status, answer.body) == (401, {"code": 401, "error": "Unauthorized."})


@pytest.mark.parametrize(("target", "message"), [
    (f"{TASKS}?limit=%D9%A1%D9%A0", "limit must be a whole number from 1 to 1000"),
    (f"{TASKS}?limit={'9' * 5000}", "limit must be a whole number from 1 to 1000"),
    (f"{TASKS}?limit=1_0", "limit must be a whole number from 1 to 1000"),
    ("/1.1/engine/cloud-queue/schedules/s?count=%C2%B2", "count must be a whole number from 1 "
                                                          "to 100"),
    (f"/1.1/engine/cloud-queue/schedules/s?count={'9' * 5000}", "count must be a whole number "
                                                                 "from 1 to 100"),
], ids=["limit-arabic-indic", "limit-5000-digits", "limit-underscore", "count-superscript",
        "count-5000-digits"])
async def test_counts_in_the_query_are_ascii_digits_in_range(port: int, target: str,
                                                            message: str) -> None:
    answer = await exchange(port, request("GET", target, headers=MASTER))
    field = message.split()[0]  # the body names the field as well as the message does
    assert (answer.status, answer.body) == (400, {"code": 1, "error": message,
                                                  "type": "validation", "field": field})


async def test_a_json_number_of_thousands_of_digits_is_malformed_json(port: int) -> None:
    body = b'{"function": "f", "delay": ' + b"9" * 5000 + b"}"
    answer = await exchange(port, request("POST", TASKS, headers=MASTER, body=body))
    assert (answer.status, answer.body) == (400, {
        "code": 107, "error": "Malformed json object. A json dictionary is expected. "
                              "(a number has more than 4300 digits)"})


async def test_a_preview_count_of_thousands_of_digits_is_refused(port: int) -> None:
    body = b'{"cron": "0 * * * * ?", "count": "' + b"9" * 5000 + b'"}'
    answer = await exchange(port, request("POST", "/1.1/engine/cloud-queue/schedules/preview",
                                          headers=MASTER, body=body))
    assert (answer.status, answer.error) == (400, "count must be a whole number from 1 to 1000")


async def test_a_preview_from_outside_the_supported_years_names_from(port: int) -> None:
    body = b'{"cron": "0 * * * * ?", "from": "9999-01-01T00:00:00Z"}'
    answer = await exchange(port, request("POST", "/1.1/engine/cloud-queue/schedules/preview",
                                          headers=MASTER, body=body))
    assert (answer.status, answer.error) == (
        400, "from must be a time from 1900-01-01 to 9000-01-01 (UTC)")


@pytest.mark.parametrize("body", [b'{"function": "f", "params": {"a": "\\ud800"}}',
                                  b'{"function": "f", "params": {"\\udfff": 1}}',
                                  b'{"function": "f", "params": ["x\\uDBFFy"]}'])
async def test_half_a_surrogate_pair_is_malformed_json_and_the_log_keeps_working(
        port: int, body: bytes) -> None:
    answer = await exchange(port, request("POST", TASKS, headers=MASTER, body=body))
    assert answer.status == 400 and answer.body["code"] == 107
    assert "half of a UTF-16 surrogate pair; strings must be valid Unicode" in answer.error
    paired = b'{"function": "f", "params": {"smile": "\\ud83d\\ude00"}, "uniqueId": "ok"}'
    answer = await exchange(port, request("POST", TASKS, headers=MASTER, body=paired))
    assert (answer.status, answer.body) == (200, {"uniqueId": "ok"})


# --------------------------------------------------------------------- the protocol layer


@pytest.mark.parametrize(("raw", "error"), [
    (b"GARBAGE\r\n\r\n", "Invalid method encountered"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "Received HTTPS traffic on an HTTP port"),
    (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", "Invalid header token"),
    (b"GET / HTTP/1.1\r\nX-LC-Key: secret-key" + b"a" * 9000 + b"\r\n\r\n",
     "a request line or header field is longer than 8190 bytes"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
     "a request line or header field is longer than 8190 bytes"),
    (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", "Invalid character in Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     "Invalid character in chunk size"),
    (b"GET / HTTP/1.1\r\n\r\n", "Missing 'Host' header in request"),
], ids=["request-line", "tls", "header-token", "long-header", "long-url", "content-length",
        "chunk-size", "no-host"])
async def test_what_aiohttp_cannot_parse_is_answered_in_json_without_echoing_it(
        port: int, raw: bytes, error: str) -> None:
    answer = await exchange(port, raw)
    assert (answer.status, answer.body) == (400, {"code": 400,
                                                  "error": f"malformed HTTP request: {error}"})
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_a_body_whose_chunked_framing_breaks_after_the_headers_is_a_400(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("POST", TASKS, headers=MASTER + b"Transfer-Encoding: chunked\r\n"
                                                         b"Expect: 100-continue\r\n"))
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"5\r\n{\"fun\r\nzz\r\n")  # the headers were parsed: the body is being read
    answer = parse(await asyncio.wait_for(reader.read(), 5))
    writer.close()
    assert (answer.status, answer.body) == (400, {
        "code": 400, "error": "the request body could not be read: "
                              "Invalid character in chunk size"})


async def test_a_body_that_does_not_decompress_is_a_400(port: int) -> None:
    headers = MASTER + b"Content-Encoding: gzip\r\n"
    answer = await exchange(port, request("POST", TASKS, headers=headers, body=b"hello"))
    assert (answer.status, answer.body) == (400, {
        "code": 400, "error": "the request body could not be read: "
                              "Can not decode content-encoding: gzip"})
    bomb = gzip.compress(b'{"function": "f", "params": "' + b"a" * 3_000_000 + b'"}')
    answer = await exchange(port, request("POST", TASKS, headers=headers, body=bomb))
    assert (answer.status, answer.body) == (413, {"code": 413,
                                                  "error": "Request Entity Too Large"})
