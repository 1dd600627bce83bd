"""HttpInvoker: runs tasks by calling cloud functions on a LeanEngine-style function host.

``POST <host>/1.1/functions/<name>`` with the params as the JSON body, ``X-LC-Id``, master
credentials and the hook key (so ``internal: true`` functions run), and no session header
(docs/protocol.md §2.1). One :class:`~cloudqueue.adapters.http_invoker.h1.HostClient` per
invoker (a small HTTP/1.1 client for the one host, ~2x cheaper per call than aiohttp's),
connections reused. The core cancels a run at its deadline; the client's own timeout is only a
backstop.

When the request provably never reached the host (``ConnectFailed``: refused, DNS, connect
timeout, the connection gone before it was written) the run is handed back uncharged; that is the
only such case. Anything after the request was sent (a broken connection, no answer in time, a
gateway's 502/503/504) is an unknown outcome, charged, which the task's deliveryMode decides. In
both cases, and whenever a gateway says the host is down, the invoker reports itself
unavailable: the driver starts no runs while a probe (``GET /__engine/1/ping``; any answer but a
gateway's 502/503/504 counts) retries with capped exponential backoff, waiting on the invoker's
``Clock``, and dispatch resumes when it answers.

The host URL may carry credentials (``https://user:password@host``): log lines show it
redacted, and ``scrub`` takes the password and the app's keys out of any text the invoker hands
on (a run's error, a log line).

A function's answer is capped at ``max_answer_bytes`` (8 MiB by default, below the log's 16 MiB
record): a larger one is refused while it is read, and the run fails as an unknown outcome (the
function ran; its answer cannot be kept).
Extension headers tell the host which run it is serving: ``X-CloudQueue-Unique-Id``,
``X-CloudQueue-Attempt``, ``X-CloudQueue-Slice``, ``Idempotency-Key:
<uniqueId>:<attempt>:<slice>``, and ``X-CloudQueue-Run-Token``, which lets the host post progress
for this run (``POST .../tasks/<uniqueId>/progress``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from urllib.parse import unquote, urlsplit

from cloudqueue.adapters.auth import AppKeys, run_token
from cloudqueue.adapters.http_invoker.h1 import HostClient
from cloudqueue.adapters.http_invoker.h1_answer import (
    DEFAULT_MAX_BODY,
    AnswerTooLarge,
    ConnectFailed,
    ConnectionBroken,
    Response,
)
from cloudqueue.adapters.http_invoker.outcome import (
    answer_too_large,
    broken_after_sending,
    classify_response,
    connection_failed,
    gateway_down,
    timed_out,
    with_checkpoint,
)
from cloudqueue.engine.core.commands import Invoke
from cloudqueue.engine.core.redact import redact_url
from cloudqueue.engine.runtime.clock import Clock, SystemClock
from cloudqueue.engine.runtime.functions import Invoker, Outcome

log = logging.getLogger("cloudqueue.invoker")

# Shorter than Node's default keep-alive (5 s), so we never reuse a socket the host is closing:
# a request lost that way would look like an unknown outcome.
_KEEPALIVE_S = 2.0


class HttpInvoker(Invoker):
    def __init__(self, base_url: str, keys: AppKeys, *, prod: int | None = None,
                 probe_min_ms: int = 250, probe_max_ms: int = 15_000,
                 connections: int | None = None,
                 max_answer_bytes: int = DEFAULT_MAX_BODY, clock: Clock | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.shown_url = redact_url(self.base_url)  # for log lines and messages
        self._secrets = _secrets(self.base_url, keys)
        self.max_answer_bytes = max_answer_bytes
        self.keys = keys
        self.prod = prod
        self.probe_min_ms = probe_min_ms
        self.probe_max_ms = probe_max_ms
        self.clock = clock or SystemClock()
        self._connections = connections
        self._client: HostClient | None = None
        self._down_since_success = 0
        self._probe: asyncio.Task[None] | None = None
        self.calls = 0
        self._fixed = self._fixed_headers()

    @property
    def available(self) -> bool:
        return self._probe is None

    async def start(self) -> None:
        self._client = HostClient(self.base_url, limit=self._connections,
                                  keepalive_s=_KEEPALIVE_S, max_body=self.max_answer_bytes,
                                  clock=self.clock)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _fixed_headers(self) -> bytes:
        """The header lines every call carries (built once)."""
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "X-LC-Id": self.keys.app_id,
                   "X-LC-Key": f"{self.keys.master_key},master"}
        if self.keys.hook_key:
            headers["X-LC-Hook-Key"] = self.keys.hook_key
        if self.prod is not None:
            headers["X-LC-Prod"] = str(self.prod)
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} may not contain a line break")
        return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()

    def _headers(self, command: Invoke) -> bytes:
        """This run's header lines: the fixed ones and the run's own (unique ids, function names
        and numbers never hold a line break: the engine validates them)."""
        uid, attempt, slice_ = command.unique_id, command.attempt, command.slice
        token = run_token(self.keys, uid, command.run_seq)
        return self._fixed + (
            f"X-CloudQueue-Unique-Id: {uid}\r\nX-CloudQueue-Attempt: {attempt}\r\n"
            f"Idempotency-Key: {uid}:{attempt}:{slice_}\r\nX-CloudQueue-Slice: {slice_}\r\n"
            f"X-CloudQueue-Run-Token: {token}\r\n").encode()

    async def invoke(self, command: Invoke) -> Outcome:
        assert self._client is not None, "HttpInvoker.start() was not awaited"
        self.calls += 1
        params = with_checkpoint(command.params, command.checkpoint, command.slice)
        body = json.dumps(params, separators=(",", ":")).encode()
        # The whole call's limit: the run's timeout, plus time for the answer to arrive.
        timeout_s = command.timeout_ms / 1000 + 5
        down: str | None = None
        try:
            response = await self._client.request(
                "POST", f"/1.1/functions/{command.function}", self._headers(command), body,
                timeout_s)
            outcome = classify_response(response.status, response.header("content-type"),
                                        response.body)
            if _gateway_down(response):
                down = f"a gateway answered {response.status}"
        except ConnectFailed as exc:
            unavailable = connection_failed(self.scrub(str(exc)))
            outcome, down = unavailable, unavailable.reason
        except TimeoutError:
            outcome = timed_out(command.timeout_ms)
        except AnswerTooLarge as exc:
            outcome = answer_too_large(exc.limit)
        except ConnectionBroken as exc:
            outcome = broken_after_sending(self.scrub(str(exc)))
        if down is not None:
            self._host_down(down)
        else:
            self._down_since_success = 0
        return outcome

    def scrub(self, text: str) -> str:
        """``text`` without the host URL's password or the app's keys (each becomes ``***``)."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    # ------------------------------------------------------------------ outage

    def _host_down(self, reason: str) -> None:
        if self._probe is None:
            log.warning("function host %s is unavailable (%s); dispatch paused, probing",
                        self.shown_url, self.scrub(reason))
            self._probe = asyncio.ensure_future(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        delay_ms = min(self.probe_max_ms, self.probe_min_ms * 2 ** self._down_since_success)
        self._down_since_success += 1
        while True:
            await self.clock.sleep(delay_ms)
            if await self._answers():
                break
            delay_ms = min(self.probe_max_ms, delay_ms * 2)
        log.info("function host %s answers again; dispatch resumes", self.shown_url)
        self._probe = None
        if self._wake is not None:
            self._wake()

    async def _answers(self) -> bool:
        assert self._client is not None
        with contextlib.suppress(ConnectFailed, ConnectionBroken, TimeoutError):
            response = await self._client.request("GET", "/__engine/1/ping", timeout_s=5)
            return not _gateway_down(response)
        return False


def _gateway_down(response: Response) -> bool:
    return gateway_down(response.status, response.header("content-type"), response.body)


def _secrets(base_url: str, keys: AppKeys) -> tuple[str, ...]:
    """What must never be shown: the URL's password (as written and decoded) and the app's
    master and hook keys; longest first, so a secret holding another is hidden whole."""
    try:
        password = urlsplit(base_url).password
    except ValueError:
        password = None
    found = {password, unquote(password) if password else None, keys.master_key, keys.hook_key}
    return tuple(sorted((s for s in found if s), key=len, reverse=True))
