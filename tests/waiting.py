"""Waiting in tests without sleeping: turn the event loop until something has happened."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Only a guard against a test that would hang: never part of what a test asserts.
GIVE_UP_S = 20.0


async def until(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Turn the loop until ``condition()`` holds (work in threads, such as the log's writes,
    goes on meanwhile); fail after ``GIVE_UP_S`` of real time."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + GIVE_UP_S
    while not condition():
        if loop.time() > give_up:
            raise AssertionError(f"{what} did not happen")
        await asyncio.sleep(0)


async def turns(count: int = 20) -> None:
    """Let every task that can run do so, ``count`` loop turns (no time passes)."""
    for _ in range(count):
        await asyncio.sleep(0)
