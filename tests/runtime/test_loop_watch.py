"""LoopWatch: a loop held for longer than ``stall_ms`` is logged once, with where it was held,
and again when it runs; a loop that keeps beating is not. Its checks are driven here with exact
times; the loop's thread is played by one held at a known place."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from cloudqueue.engine.runtime.loop_watch import LoopWatch


def held_here(release: threading.Event) -> None:
    release.wait(10)


async def test_a_held_loop_is_logged_once_with_where_it_was_held(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cloudqueue.loop")
    watch = LoopWatch(asyncio.get_running_loop(), stall_ms=1_000)
    release = threading.Event()
    holder = threading.Thread(target=held_here, args=(release,))
    holder.start()
    try:
        watch._loop_thread = holder.ident or 0  # the "loop" thread: held in held_here
        watch._last = 100.0  # its last beat
        watch.check(100.9)
        assert watch.stalls == 0 and caplog.text == ""  # under a second: nothing to say
        watch.check(101.0)
        assert watch.stalls == 1
        assert "the event loop has been held for 1.0 s" in caplog.text
        assert "held_here" in caplog.text  # where
        watch.check(103.0)
        assert watch.stalls == 1  # the same stall: said once
        watch._last = 103.5  # it beat again
        watch.check(103.6)
        assert "the event loop ran again after 3.5 s" in caplog.text and watch.longest_s == 3.5
        watch.check(104.0)
        assert watch.stalls == 1 and caplog.text.count("ran again") == 1
    finally:
        release.set()
        holder.join()
