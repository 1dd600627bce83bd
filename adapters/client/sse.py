"""Server-Sent Events: the parser, and one message of a task's event stream as an update."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from cloudqueue.adapters.client.wire import kind_of, task_info_from_wire
from cloudqueue.engine.core.errors import UnexpectedResponseError
from cloudqueue.engine.core.task import TaskInfo

_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEParser:
    """Server-Sent Events, as the HTML spec parses them: ``field: value`` lines (one optional
    space after the colon), ``:`` comments ignored, ``data`` lines joined with newlines, a blank
    line dispatching the message (skipped when it has no data). ``id`` and ``retry`` are read
    and ignored; an unfinished last message is dropped."""

    def __init__(self) -> None:
        self._buffer = ""
        self._started = False
        self._event = ""
        self._data: list[str] = []

    def feed(self, text: str, final: bool = False) -> list[tuple[str, str]]:
        """More of the stream (``final``: its end); the messages it completes, as
        ``(event, data)``."""
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._buffer += text
        messages: list[tuple[str, str]] = []
        start = 0
        while (match := _LINE_END.search(self._buffer, start)) is not None:
            if match.group() == "\r" and match.end() == len(self._buffer) and not final:
                break  # maybe the first half of a \r\n
            message = self._line(self._buffer[start:match.start()])
            if message is not None:
                messages.append(message)
            start = match.end()
        self._buffer = self._buffer[start:]
        return messages

    def _line(self, line: str) -> tuple[str, str] | None:
        if not line:
            event, data = self._event or "message", self._data
            self._event, self._data = "", []
            return (event, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def event_update(event: str, data: str) -> tuple[str, TaskInfo]:
    """One SSE message of the task stream as ``(type, info)``."""
    try:
        body = json.loads(data)
    except ValueError:
        raise UnexpectedResponseError(f"an event's data is not JSON: {data[:80]!r}") from None
    if not isinstance(body, Mapping) or "task" not in body:
        raise UnexpectedResponseError(f"an event's data has no task: {kind_of(body)}")
    kind = body.get("type") if event == "message" else event  # no event field: the data's
    if not isinstance(kind, str):
        raise UnexpectedResponseError("an event has no type")
    return kind, task_info_from_wire(body["task"])

