"""``cloudqueue.define``: functions declared once, with their own option defaults, run by an
embedded ``Engine`` (and, in tests/adapters/test_serve_functions.py, by ``cloudqueue serve``)."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

import cloudqueue
from cloudqueue import ConfigError, Engine, FakeClock, TaskState
from cloudqueue.engine.runtime.defined import defined, defined_in
from cloudqueue.testing import settle

T0 = 1_700_000_000_000


@cloudqueue.define
async def plain(params: Any, run: cloudqueue.Run) -> str:
    return f"plain {params['n']}"


@cloudqueue.define("send-mail", attempts=3, backoff=5_000, timeout=2_000,
                   delivery_mode="atMostOnce")
async def send_mail(params: Any, run: cloudqueue.Run) -> None:
    raise RuntimeError("smtp down")


def test_the_decorator_keeps_the_function_and_records_its_declaration() -> None:
    declared = defined(send_mail)
    assert declared is not None
    assert (declared.name, declared.fn, dict(declared.defaults)) == (
        "send-mail", send_mail,
        {"attempts": 3, "backoff": 5_000, "timeout": 2_000, "delivery_mode": "atMostOnce"})
    assert declared.wire_defaults() == {"attempts": 3, "backoff": 5_000, "timeout": 2_000,
                                        "deliveryMode": "atMostOnce"}
    assert defined(plain) is not None and defined(plain).name == "plain"  # type: ignore[union-attr]


@pytest.mark.parametrize(("defaults", "message"), [
    ({"unique_id": "x"}, "'unique_id' cannot be a function's default"),
    ({"atempts": 3}, "'atempts' cannot be a function's default"),
    ({"timeout": 0}, "function 'f': timeout"),
    ({"concurrency": 0}, "function 'f': concurrency must be a whole number >= 1"),
    ({"concurrency": "2"}, "function 'f': concurrency must be a whole number >= 1"),
])
def test_bad_declarations_are_refused_when_the_module_loads(defaults: dict[str, Any],
                                                             message: str) -> None:
    async def f(params: Any, run: cloudqueue.Run) -> None:
        return None

    with pytest.raises(ConfigError, match=message):
        cloudqueue.define("f", **defaults)(f)


def test_a_blocking_function_is_refused() -> None:
    def blocking(params: Any, run: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="must be 'async def'"):
        cloudqueue.define(blocking)  # type: ignore[arg-type]


def test_a_module_is_searched_and_must_declare_something() -> None:
    module = types.ModuleType("mine")
    module.plain = plain  # type: ignore[attr-defined]
    module.send_mail = send_mail  # type: ignore[attr-defined]
    module.helper = len  # type: ignore[attr-defined]
    assert sorted(d.name for d in defined_in([module])) == ["plain", "send-mail"]
    with pytest.raises(ConfigError, match="module 'empty' declares no function"):
        defined_in([types.ModuleType("empty")])


async def test_an_engine_runs_declared_functions_with_their_defaults() -> None:
    clock = FakeClock(T0)
    async with Engine(clock=clock) as queue:
        module = types.ModuleType("mine")
        module.plain = plain  # type: ignore[attr-defined]
        module.send_mail = send_mail  # type: ignore[attr-defined]
        queue.register(module)
        uid = await queue.enqueue("plain", {"n": 1})
        await settle(queue)
        assert (await queue.get_task_info(uid)).return_value == "plain 1"
        mail = await queue.enqueue("send-mail", {})
        mine = await queue.enqueue("send-mail", {}, attempts=0, timeout=9_000)
        await settle(queue)
        first, second = await queue.get_task_info(mail), await queue.get_task_info(mine)
        # the function's defaults: 3 retries, 5 s apart; the caller's options win over them
        assert (first.state, first.max_runs, first.retry_at_ms) == (
            TaskState.RETRY_WAIT, 4, T0 + 5_000)
        assert (second.state, second.max_runs) == (TaskState.FAILED, 1)
        many = await queue.enqueue_many([{"function": "send-mail"},
                                         {"function": "plain", "params": {"n": 2}}])
        await settle(queue)
        assert (await queue.get_task_info(many[0])).max_runs == 4


async def test_engine_define_takes_a_declared_function_as_declared() -> None:
    async with Engine(clock=FakeClock(T0)) as queue:
        queue.define(send_mail)
        uid = await queue.enqueue("send-mail", {})
        await settle(queue)
        assert (await queue.get_task_info(uid)).max_runs == 4


async def test_a_functions_own_concurrency_holds_back_only_its_runs() -> None:
    """``define(concurrency=1)``: one run of it at a time, while the app's other functions use
    the rest of its slots; the limit holds for a remote queue's server as for an embedded one
    (both go through ``Engine.register``)."""
    gate = asyncio.Event()
    in_flight: list[str] = []

    @cloudqueue.define("call-api", concurrency=1)
    async def call_api(params: Any, run: cloudqueue.Run) -> None:
        in_flight.append(str(run.unique_id))
        await gate.wait()

    @cloudqueue.define
    async def other(params: Any, run: cloudqueue.Run) -> None:
        in_flight.append(str(run.unique_id))
        await gate.wait()

    async with Engine(concurrency=4, clock=FakeClock(T0)) as queue:
        queue.register(call_api, other)
        for uid in ("a1", "a2", "a3"):
            await queue.enqueue("call-api", unique_id=uid)
        await queue.enqueue("other", unique_id="o1")
        await settle(queue)
        assert in_flight == ["a1", "o1"]  # a2 waits for call-api's one slot, not the app's
        gate.set()
        await settle(queue)
        assert in_flight == ["a1", "o1", "a2", "a3"]
        states = {(await queue.get_task_info(uid)).state for uid in in_flight}
        assert states == {TaskState.SUCCESS}
