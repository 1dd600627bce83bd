"""The client's HTTP side: one signed request and its typed answer, and a task's event stream.

Requests are signed as the SDK signs them (``X-LC-Sign: md5(ts + key),ts[,master]``), with the
master key when one is given, else with the app key; or, with none of them but the server's
operator token, carry ``Authorization: Bearer <token>``. Keys and tokens never appear in an error
message or a repr.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp
from yarl import URL

from cloudqueue.adapters.auth import sign
from cloudqueue.adapters.client.answers import Answer
from cloudqueue.adapters.client.sse import SSEParser, event_update
from cloudqueue.adapters.client.wire import segment
from cloudqueue.engine.core.actions import check_via
from cloudqueue.engine.core.errors import (
    ConfigError,
    QueueUnavailableError,
    UnexpectedResponseError,
    ValidationError,
)
from cloudqueue.engine.core.redact import redact_url
from cloudqueue.engine.core.task import TaskInfo

API_BASE = "/1.1/engine/cloud-queue"
ACTOR_HEADER = "X-CloudQueue-Actor"  # what the caller says it is, in the audit list
# the longest silence an event stream may keep: well over the server's 15 s keep-alive
EVENTS_READ_TIMEOUT_S = 60.0


class Transport:
    """A base URL, credentials and one ``aiohttp.ClientSession`` (open while the client is
    entered): what ``QueueClient`` sends its requests through."""

    def __init__(self, base_url: str, app_id: str, app_key: str | None = None,
                 master_key: str | None = None, *, admin_token: str | None = None,
                 via: str | None = None, timeout_ms: int = 30_000) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"base_url must be an http(s) URL, got {redact_url(base_url)!r}")
        if not app_id:
            raise ConfigError("app_id must not be empty")
        if not master_key and not app_key and not admin_token:
            raise ConfigError("give app_key (to read tasks), master_key (to enqueue, cancel "
                              "and list them) or admin_token (the server's operator token)")
        if not timeout_ms > 0:
            raise ConfigError(f"timeout_ms must be > 0, got {timeout_ms}")
        self._base = url.with_query(None).with_fragment(None)
        self._shown_base = str(self._base.with_user(None))
        self.app_id = app_id
        self._key = master_key or app_key or ""
        self._master = bool(master_key)
        # the operator token, used when no key is given
        self._bearer = None if master_key or app_key else admin_token
        try:
            self.via = check_via(via)
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None
        self.timeout_ms = timeout_ms
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        role = "operator" if self._bearer else "master" if self._master else "app"
        return f"{type(self).__name__}({self._shown_base!r}, app_id={self.app_id!r}, role={role})"

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError(f"this {type(self).__name__} is already open")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_ms / 1000),
            headers={"X-LC-Id": self.app_id, "Accept": "application/json"},
        )
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _headers(self) -> dict[str, str]:
        if self._bearer is not None:
            headers = {"Authorization": f"Bearer {self._bearer}"}
        else:
            headers = {"X-LC-Sign": sign(self._key, int(time.time() * 1000),
                                         master=self._master)}
        if self.via is not None:
            headers[ACTOR_HEADER] = self.via
        return headers

    def _url(self, raw_path: str, query: Mapping[str, str] | None) -> URL:
        url = self._base.with_path(self._base.raw_path.rstrip("/") + API_BASE + raw_path,
                                   encoded=True)
        return url.with_query(query) if query else url

    async def _call(self, op: str, method: str, raw_path: str, *,
                    json_body: Any = None, query: Mapping[str, str] | None = None,
                    unique_id: str | None = None) -> Any:
        """Send one request; return the decoded JSON of a 2xx answer, else raise the typed
        error."""
        if self._session is None:
            raise RuntimeError("open the client first: async with QueueClient(...) as queue")
        url = self._url(raw_path, query)
        shown = str(url.with_user(None))
        try:
            async with self._session.request(method, url, json=json_body,
                                             headers=self._headers()) as response:
                text = await response.text(errors="replace")
                answer = Answer(method, shown, response.status, response.headers, text)
        except aiohttp.ClientConnectorError as exc:
            raise QueueUnavailableError(f"cannot reach the queue at {shown}: {exc.os_error}",
                                        shown) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = f"no answer within {self.timeout_ms} ms" if isinstance(
                exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            hint = ("; the task may or may not have been created: retry with the same unique_id"
                    if op == "enqueue" else "")
            raise QueueUnavailableError(f"{method} {shown} failed ({detail}){hint}", shown,
                                        outcome_unknown=True) from exc
        if 200 <= answer.status < 300:
            if answer.json is None:
                raise UnexpectedResponseError(f"{answer.message}: not a JSON answer",
                                              answer.status)
            return answer.json
        raise answer.error(op, unique_id)

    async def _stream(self, unique_id: str) -> AsyncGenerator[tuple[str, TaskInfo], None]:
        """The task's Server-Sent Events stream as ``(type, info)``, to ``finished``."""
        response, shown = await self._open_events(unique_id)
        finished = False
        try:
            parser = SSEParser()
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            try:
                end = False
                while not end:
                    chunk = await response.content.readany()
                    end = not chunk  # b"" at the end of the body
                    for event, data in parser.feed(decoder.decode(chunk, end), final=end):
                        kind, info = event_update(event, data)
                        yield kind, info
                        if kind == "finished" or info.state.is_final:  # final at the start
                            finished = True
                            return
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise QueueUnavailableError(f"the event stream {shown} broke ({_failure(exc)})",
                                            shown) from exc
            raise QueueUnavailableError(f"the event stream {shown} ended before the task "
                                        "finished", shown)
        finally:
            if finished:
                response.release()
            else:
                response.close()  # mid-stream: drop the connection, the server unsubscribes

    async def _open_events(self, unique_id: str) -> tuple[aiohttp.ClientResponse, str]:
        """The task's event stream, answered 2xx with ``text/event-stream`` (else the typed
        error), and its URL as shown in errors."""
        if self._session is None:
            raise RuntimeError("open the client first: async with QueueClient(...) as queue")
        url = self._url(f"/tasks/{segment(unique_id)}/events", None)
        shown = str(url.with_user(None))
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_ms / 1000,
                                        sock_read=EVENTS_READ_TIMEOUT_S)
        headers = {**self._headers(), "Accept": "text/event-stream",
                   "Cache-Control": "no-cache"}
        try:
            response = await self._session.get(url, headers=headers, timeout=timeout)
        except aiohttp.ClientConnectorError as exc:
            raise QueueUnavailableError(f"cannot reach the queue at {shown}: {exc.os_error}",
                                        shown) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise QueueUnavailableError(f"GET {shown} failed ({_failure(exc)})", shown,
                                        outcome_unknown=True) from exc
        try:
            if not 200 <= response.status < 300:
                try:
                    text = await response.text(errors="replace")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise QueueUnavailableError(f"GET {shown} failed ({_failure(exc)})",
                                                shown, outcome_unknown=True) from exc
                answer = Answer("GET", shown, response.status, response.headers, text)
                raise answer.error("events", unique_id)
            if response.content_type != "text/event-stream":
                raise UnexpectedResponseError(
                    f"GET {shown} answered {response.content_type or 'no content type'}, not "
                    "text/event-stream", response.status)
        except BaseException:
            response.close()
            raise
        return response, shown



def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no data in time"
    return f"{type(exc).__name__}: {exc}"

