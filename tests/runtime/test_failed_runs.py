"""Failures that show, in an embedded engine: an in-process function's exception keeps its type,
message and traceback; every failed run is one log line (WARNING while the task retries, ERROR
when it failed for good) naming the app, function, uniqueId, attempt and error, written as text
or as JSON; no secret reaches any of it; and the run history survives a restart and a
compaction."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from cloudqueue import Engine, FakeClock, RunContext, TaskState
from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.http_invoker.invoker import HttpInvoker
from cloudqueue.engine.core.history import RunOutcome
from cloudqueue.engine.core.task import iso_ms
from cloudqueue.log_format import JsonFormatter, TextFormatter
from cloudqueue.testing import settle

T0 = 1_700_000_000_000


async def missing(params: Any, run: RunContext) -> Any:
    raise KeyError("missing thing")


# the traceback of ``missing``: its frame alone (not the queue's), its file shown relative to
# the import path entry it came from (where pytest put this directory, or the checkout)
MISSING_LINE = missing.__code__.co_firstlineno + 1


def missing_trace(trace: str) -> None:
    head, where, source, error, end = trace.split("\n")
    assert (head, source, error, end) == ("Traceback (most recent call last):",
                                          '    raise KeyError("missing thing")',
                                          "KeyError: 'missing thing'", "")
    assert where.startswith('  File "') and not where.startswith('  File "/')
    assert where.endswith(f'test_failed_runs.py", line {MISSING_LINE}, in missing')


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "cloudqueue.runs"]


async def test_an_exception_keeps_its_type_message_and_traceback(
        store_options: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cloudqueue.runs")
    clock = FakeClock(T0)
    async with Engine(clock=clock, name="shop", **store_options) as queue:
        queue.define("missing")(missing)
        uid = await queue.enqueue("missing", attempts=1, backoff=1_000, unique_id="u1")
        await settle(queue)
        waiting = await queue.get_task_info(uid)
        clock.advance(1_000)
        info = await queue.wait(uid, timeout=10_000)
    assert (waiting.state, waiting.error) == (TaskState.RETRY_WAIT, "KeyError: 'missing thing'")
    assert (info.state, info.error) == (TaskState.FAILED, "KeyError: 'missing thing'")
    first, last = info.to_wire()["runs"]
    assert first == {"attempt": 1, "slice": 0, "startedAt": iso_ms(T0),
                     "finishedAt": iso_ms(T0), "durationMs": 0, "outcome": "failed",
                     "error": "KeyError: 'missing thing'"}  # its traceback went to the later one
    trace = last.pop("traceback")
    assert last == {"attempt": 2, "slice": 0, "startedAt": iso_ms(T0 + 1_000),
                    "finishedAt": iso_ms(T0 + 1_000), "durationMs": 0, "outcome": "failed",
                    "error": "KeyError: 'missing thing'"}
    missing_trace(trace)

    retry, final = failures(caplog)
    assert (retry.levelno, final.levelno) == (logging.WARNING, logging.ERROR)
    assert retry.getMessage() == (f"task u1 (missing, app shop): attempt 1 of 2 failed, retry "
                                  f"at {iso_ms(T0 + 1_000)}: KeyError: 'missing thing'")
    assert final.getMessage() == ("task u1 (missing, app shop) failed for good on attempt 2 of "
                                  "2: KeyError: 'missing thing'")
    assert final.structured == {  # type: ignore[attr-defined]
        "app": "shop", "function": "missing", "uniqueId": "u1", "attempt": 2, "maxRuns": 2,
        "outcome": "failed", "error": "KeyError: 'missing thing'", "traceback": trace}


async def test_the_log_lines_as_text_and_as_json(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cloudqueue.runs")
    async with Engine(clock=FakeClock(T0), name="shop") as queue:
        queue.define("missing")(missing)
        await queue.wait(await queue.enqueue("missing", attempts=0, unique_id="u1"),
                         timeout=10_000)
    (record,) = failures(caplog)

    text = TextFormatter().format(record).splitlines()
    assert text[0].endswith(" ERROR cloudqueue.runs: task u1 (missing, app shop) failed for good "
                            "on attempt 1 of 1: KeyError: 'missing thing'")
    missing_trace("\n".join(text[1:]) + "\n")

    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed == {
        "time": iso_ms(int(record.created * 1000)), "level": "ERROR", "logger": "cloudqueue.runs",
        "message": "task u1 (missing, app shop) failed for good on attempt 1 of 1: KeyError: "
                   "'missing thing'",
        "app": "shop", "function": "missing", "uniqueId": "u1", "attempt": 1, "maxRuns": 1,
        "outcome": "failed", "error": "KeyError: 'missing thing'",
        "traceback": "\n".join(text[1:]) + "\n"}


def test_a_json_line_of_another_logger_and_an_exception() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.getLogger("cloudqueue.serve").makeRecord(
            "cloudqueue.serve", logging.ERROR, __file__, 1, "app %s: %d", ("a", 5), None)
        record.exc_info = sys.exc_info()
    parsed = json.loads(JsonFormatter().format(record))
    assert (parsed["level"], parsed["logger"], parsed["message"]) == (
        "ERROR", "cloudqueue.serve", "app a: 5")
    assert parsed["exception"].endswith("ValueError: bad")
    assert set(parsed) == {"time", "level", "logger", "message", "exception"}


async def test_a_timeout_is_logged_and_kept_as_one(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cloudqueue.runs")
    clock = FakeClock(T0)

    async def stuck(params: Any, run: RunContext) -> None:
        await asyncio.Event().wait()

    async with Engine(clock=clock) as queue:
        queue.define("stuck")(stuck)
        uid = await queue.enqueue("stuck", attempts=0, timeout=500, unique_id="s")
        await settle(queue)
        clock.advance(500)
        info = await queue.wait(uid, timeout=10_000)
    assert info.to_wire()["runs"] == [{
        "attempt": 1, "slice": 0, "startedAt": iso_ms(T0), "finishedAt": iso_ms(T0 + 500),
        "durationMs": 500, "outcome": "timeout",
        "error": "cloud function timed out after 500 ms"}]
    (record,) = failures(caplog)
    assert record.getMessage() == ("task s (stuck) failed for good on attempt 1 of 1: cloud "
                                   "function timed out after 500 ms")
    assert record.structured["outcome"] == "timeout"  # type: ignore[attr-defined]
    assert record.structured["app"] is None  # type: ignore[attr-defined]


async def test_no_secret_reaches_the_error_the_traceback_or_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    """Beside a function host, what the host's invoker hides (its URL's password, the app's
    keys) is hidden in an in-process function's failure too."""
    caplog.set_level(logging.WARNING, "cloudqueue.runs")
    keys = AppKeys("shop", "app-key-1", "master-secret-2", "hook-secret-3")
    host = HttpInvoker("http://user:url-secret-4@127.0.0.1:9", keys)

    async def leaky(params: Any, run: RunContext) -> None:
        raise RuntimeError(f"cannot log in with {keys.master_key} at {host.base_url} "
                           f"({keys.hook_key})")

    async with Engine(clock=FakeClock(T0), invoker=host, name="shop") as queue:
        queue.define("leaky")(leaky)
        info = await queue.wait(await queue.enqueue("leaky", attempts=0), timeout=10_000)
    (record,) = failures(caplog)
    shown = [json.dumps(info.to_wire()), TextFormatter().format(record),
             JsonFormatter().format(record)]
    for text in shown:
        assert "RuntimeError: cannot log in with ***" in text
        for secret in ("master-secret-2", "url-secret-4", "hook-secret-3"):
            assert secret not in text


async def test_the_history_survives_a_restart_and_a_compaction(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    hang = True

    async def sliced(params: Any, run: RunContext) -> Any:
        if run.slice == 0:
            return run.continue_with({"step": 1})
        if hang:
            await asyncio.Event().wait()  # the queue stops during this slice
        return "done"

    queue = Engine(data_dir=tmp_path, clock=clock)
    queue.define("sliced")(sliced)
    await queue.start()
    uid = await queue.enqueue("sliced", attempts=1, unique_id="r")
    await settle(queue)
    clock.advance(10)
    await queue.close(grace_ms=0)  # the second slice is in flight

    hang = False
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        queue.define("sliced")(sliced)
        before = await queue.wait(uid, timeout=10_000)
        await queue.compact()
    assert [(r.attempt, r.slice, r.outcome) for r in before.runs] == [
        (1, 0, RunOutcome.CONTINUED), (1, 1, RunOutcome.LOST), (1, 1, RunOutcome.SUCCESS)]
    assert before.runs[1].error == "the queue restarted during the run"
    assert [(r.started_ms, r.finished_ms) for r in before.runs] == [
        (T0, T0), (T0, T0 + 10), (T0 + 10, T0 + 10)]

    async with Engine(data_dir=tmp_path, clock=clock) as queue:  # from the snapshot
        assert queue.recovery is not None and queue.recovery.snapshot_tasks == 1
        assert await queue.get_task_info(uid) == before
