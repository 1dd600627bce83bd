"""HttpInvoker: runs tasks by calling cloud functions on a LeanEngine-style function host.

``POST <host>/1.1/functions/<name>`` with the params as the JSON body, ``X-LC-Id``, master
credentials and the hook key (so ``internal: true`` functions run), and no session header
(protocol §2.1). One ``ClientSession`` per invoker, connections reused. The core cancels a run at
its deadline; the session's own timeout is only a backstop.

When the host cannot be reached (D11) the run is handed back uncharged and the invoker reports
itself unavailable: the driver starts no runs while a probe (``GET /__engine/1/ping``; any real
answer counts) retries with capped exponential backoff, and dispatch resumes when it answers.
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

import aiohttp

from adapters.http_api.auth import AppKeys, run_token
from adapters.http_invoker.outcome import (
    broken_after_sending,
    classify_response,
    connection_failed,
    timed_out,
    with_checkpoint,
)
from engine.core.commands import Invoke
from engine.runtime.functions import Invoker, Outcome, Unavailable

log = logging.getLogger("cloudqueue.invoker")

# Shorter than Node's default keep-alive (5 s), so we never reuse a socket the host is closing:
# a request lost that way would look like an unknown outcome.
_KEEPALIVE_S = 2.0


class HttpInvoker(Invoker):
    def __init__(self, base_url: str, keys: AppKeys, *, prod: int | None = None,
                 probe_min_ms: int = 250, probe_max_ms: int = 15_000,
                 connections: int = 100) -> None:
        self.base_url = base_url.rstrip("/")
        self.keys = keys
        self.prod = prod
        self.probe_min_ms = probe_min_ms
        self.probe_max_ms = probe_max_ms
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._down_since_success = 0
        self._probe: asyncio.Task[None] | None = None
        self.calls = 0
        self._fixed = self._fixed_headers()
        self._timeouts: dict[int, aiohttp.ClientTimeout] = {}

    @property
    def available(self) -> bool:
        return self._probe is None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=_KEEPALIVE_S)
        self._session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _fixed_headers(self) -> dict[str, str]:
        """The headers every call carries (built once)."""
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "X-LC-Id": self.keys.app_id,
                   "X-LC-Key": f"{self.keys.master_key},master"}
        if self.keys.hook_key:
            headers["X-LC-Hook-Key"] = self.keys.hook_key
        if self.prod is not None:
            headers["X-LC-Prod"] = str(self.prod)
        return headers

    def _headers(self, command: Invoke) -> dict[str, str]:
        headers = self._fixed.copy()
        attempt, slice_ = str(command.attempt), str(command.slice)
        headers["X-CloudQueue-Unique-Id"] = command.unique_id
        headers["X-CloudQueue-Attempt"] = attempt
        headers["Idempotency-Key"] = f"{command.unique_id}:{attempt}:{slice_}"
        headers["X-CloudQueue-Slice"] = slice_
        headers["X-CloudQueue-Run-Token"] = run_token(self.keys, command.unique_id,
                                                      command.run_seq)
        return headers

    def _timeout(self, timeout_ms: int) -> aiohttp.ClientTimeout:
        """The whole call's limit: the run's timeout, plus time for the answer to arrive."""
        timeout = self._timeouts.get(timeout_ms)
        if timeout is None:
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            timeout = self._timeouts[timeout_ms] = aiohttp.ClientTimeout(
                total=timeout_ms / 1000 + 5)
        return timeout

    async def invoke(self, command: Invoke) -> Outcome:
        assert self._session is not None, "HttpInvoker.start() was not awaited"
        self.calls += 1
        url = f"{self.base_url}/1.1/functions/{command.function}"
        params = with_checkpoint(command.params, command.checkpoint, command.slice)
        body = json.dumps(params, separators=(",", ":")).encode()
        timeout = self._timeout(command.timeout_ms)
        try:
            async with self._session.post(url, data=body, headers=self._headers(command),
                                          timeout=timeout) as response:
                payload = await response.read()
                outcome = classify_response(response.status,
                                            response.headers.get("Content-Type", ""), payload)
        except aiohttp.ClientConnectorError as exc:
            outcome = connection_failed(str(exc.os_error or exc))
        except TimeoutError:
            outcome = timed_out(command.timeout_ms)
        except aiohttp.ClientError as exc:
            outcome = broken_after_sending(type(exc).__name__ + (f": {exc}" if str(exc) else ""))
        if isinstance(outcome, Unavailable):
            self._host_down(outcome.reason)
        else:
            self._down_since_success = 0
        return outcome

    # ------------------------------------------------------------------ outage

    def _host_down(self, reason: str) -> None:
        if self._probe is None:
            log.warning("function host %s is unavailable (%s); dispatch paused, probing",
                        self.base_url, reason)
            self._probe = asyncio.ensure_future(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        delay_ms = min(self.probe_max_ms, self.probe_min_ms * 2 ** self._down_since_success)
        self._down_since_success += 1
        while True:
            await asyncio.sleep(delay_ms / 1000)
            if await self._answers():
                break
            delay_ms = min(self.probe_max_ms, delay_ms * 2)
        log.info("function host %s answers again; dispatch resumes", self.base_url)
        self._probe = None
        if self._wake is not None:
            self._wake()

    async def _answers(self) -> bool:
        assert self._session is not None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self._session.get(f"{self.base_url}/__engine/1/ping",
                                         timeout=aiohttp.ClientTimeout(total=5)) as response:
                body = await response.read()
                down = classify_response(response.status,
                                         response.headers.get("Content-Type", ""), body)
                return not isinstance(down, Unavailable)
        return False
