"""Host-adaptive concurrency (engine/runtime/host_limit.py): the rule with exact sequences of
limits, the rule against a model host whose latency grows with its load, and the engine keeping
as many runs in flight as a load-sensitive host takes, on the fake clock."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import pytest

from cloudqueue import Engine, FakeClock, RunContext
from cloudqueue.engine.core.commands import Invoke
from cloudqueue.engine.core.events import FailureKind
from cloudqueue.engine.runtime.functions import Failed, Invoker, Outcome, Succeeded
from cloudqueue.engine.runtime.host_limit import HostLimit
from cloudqueue.testing import settle

T0 = 1_700_000_000_000


def feed(rule: HostLimit, latencies: Sequence[float], *, in_flight: int | None = None,
         epoch: int | None = None) -> list[int]:
    """The limit after each answer; ``in_flight`` defaults to the limit (it is in use), the
    epoch to the rule's current one (runs started under the current limit)."""
    limits = []
    for latency in latencies:
        limits.append(rule.observe(
            latency, epoch=rule.epoch if epoch is None else epoch,
            in_flight=rule.limit if in_flight is None else in_flight))
    return limits


# ---------------------------------------------------------------------------- the rule


def test_flat_latency_raises_the_limit_one_a_round_up_to_the_ceiling() -> None:
    rule = HostLimit(7)
    assert rule.limit == 1  # it starts at the floor
    # rounds of 4 answers while the limit is under 4, then of `limit` answers
    assert feed(rule, [20.0] * 12) == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4]
    assert feed(rule, [20.0] * 4) == [4, 4, 4, 5]
    assert feed(rule, [20.0] * 5) == [5, 5, 5, 5, 6]
    assert feed(rule, [20.0] * 6) == [6] * 5 + [7]
    assert feed(rule, [20.0] * 14) == [7] * 14  # never above the ceiling (the concurrency)
    assert (rule.baseline_ms, rule.latency_ms, rule.rounds, rule.backoffs) == (20.0, 20.0, 8, 0)


def test_a_round_whose_median_passes_the_threshold_backs_off_by_a_tenth() -> None:
    rule = HostLimit(64)
    feed(rule, [20.0] * 12)  # limit 4, baseline 20 ms: the threshold is 30 ms
    assert rule.threshold_ms == 30.0
    assert feed(rule, [30.0] * 4) == [4, 4, 4, 5]  # at the threshold: not above it, +1
    assert feed(rule, [31.0, 31.0, 31.0, 31.0, 20.0]) == [5, 5, 5, 5, 4]  # 5 x 0.9 = 4.5
    assert rule.backoffs == 1 and rule.latency_ms == 31.0
    assert feed(rule, [20.0] * 4) == [4, 4, 4, 5]  # 4.5 + 1


def test_one_slow_answer_in_a_round_is_not_load() -> None:
    rule = HostLimit(64)
    feed(rule, [20.0] * 16)  # limit 5
    assert feed(rule, [20.0, 900.0, 21.0, 19.0, 20.0]) == [5, 5, 5, 5, 6]  # median 20 ms
    # half of a round slow is not one answer: the lower median of six is the third
    assert feed(rule, [900.0, 20.0, 900.0, 20.0, 20.0, 20.0]) == [6] * 5 + [7]  # 20 ms
    assert feed(rule, [900.0, 20.0, 900.0, 20.0, 900.0, 900.0, 20.0]) == [7] * 6 + [6]  # 6.3


def test_very_fast_functions_need_a_rise_of_a_few_ms_not_just_a_ratio() -> None:
    rule = HostLimit(64, min_rise_ms=5.0)
    feed(rule, [1.0] * 12)  # limit 4, baseline 1 ms
    assert rule.threshold_ms == 6.0  # max(1 x 1.5, 1 + 5)
    assert feed(rule, [6.0] * 4) == [4, 4, 4, 5]  # 6x the baseline, but only 5 ms more
    assert feed(rule, [6.5] * 5) == [5, 5, 5, 5, 4]


def test_a_host_error_halves_the_limit_at_once_and_once_per_epoch() -> None:
    rule = HostLimit(64)
    feed(rule, [20.0] * 12 + [20.0] * 4 + [20.0] * 5 + [20.0] * 6 + [20.0] * 7)  # limit 8
    assert rule.limit == 8
    old = rule.epoch
    assert rule.observe(2.0, epoch=old, in_flight=8, host_error=True) == 4
    # more errors from runs started before the decrease: counted, but the limit stays
    assert [rule.observe(2.0, epoch=old, in_flight=8, host_error=True) for _ in range(3)] == [
        4, 4, 4]
    assert (rule.host_errors, rule.backoffs, rule.epoch) == (4, 1, old + 1)
    assert rule.observe(2.0, epoch=rule.epoch, in_flight=4, host_error=True) == 2
    assert rule.observe(2.0, epoch=rule.epoch, in_flight=2, host_error=True) == 1
    assert rule.observe(2.0, epoch=rule.epoch, in_flight=1, host_error=True) == 1  # the floor


def test_answers_to_runs_started_before_a_decrease_are_left_out() -> None:
    rule = HostLimit(64)
    feed(rule, [20.0] * 16)  # limit 5
    before = rule.epoch
    feed(rule, [40.0] * 5)  # slow: 4 (4.5)
    assert rule.limit == 4 and rule.epoch == before + 1
    # the other runs started at 5 answer slowly too: not a second decrease
    assert feed(rule, [40.0] * 8, epoch=before) == [4] * 8
    assert rule.backoffs == 1
    assert feed(rule, [20.0] * 4) == [4, 4, 4, 5]  # runs started at 4 judge 4


def test_an_idle_queue_proves_nothing_about_the_host() -> None:
    rule = HostLimit(64)
    feed(rule, [20.0] * 16)  # limit 5
    # two runs in flight of five allowed: fast answers, but the limit was not in use
    assert feed(rule, [20.0] * 10, in_flight=2) == [5] * 10
    assert feed(rule, [20.0] * 5, in_flight=3) == [5, 5, 5, 5, 6]  # 3 of 5: in use
    assert feed(rule, [50.0] * 6, in_flight=1) == [6] * 5 + [5]  # slow is slow, idle or not


def test_a_probe_runs_one_round_at_half_the_limit_and_measures_the_baseline_afresh() -> None:
    rule = HostLimit(64, probe_every=5)
    feed(rule, [20.0] * 12)  # 3 rounds: limit 4
    feed(rule, [20.0] * 4 + [20.0] * 5)  # rounds 4 and 5: limit 6, then the probe
    assert (rule.rounds, rule.probing, rule.limit) == (5, True, 3)
    epoch = rule.epoch
    assert feed(rule, [25.0] * 6, epoch=epoch - 1) == [3] * 6  # runs from before the probe
    # the host has become slower for good: the probe's round sets the baseline to 25 ms
    assert feed(rule, [25.0] * 4) == [3, 3, 3, 6]
    assert (rule.baseline_ms, rule.probing) == (25.0, False)
    assert feed(rule, [25.0] * 6) == [6] * 5 + [7]  # 25 ms is flat now: it climbs again


def test_an_error_during_a_probe_ends_it() -> None:
    rule = HostLimit(64, probe_every=4)
    feed(rule, [20.0] * 16)  # round 4 closed at limit 5: the probe at 2
    assert (rule.probing, rule.limit) == (True, 2)
    assert rule.observe(1.0, epoch=rule.epoch, in_flight=2, host_error=True) == 2  # 5 x 0.5
    assert not rule.probing


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ceiling": 0}, "floor <= ceiling"),
    ({"ceiling": 4, "floor": 5}, "floor <= ceiling"),
    ({"ceiling": 4, "backoff": 1.0}, "backoff must be between 0 and 1"),
    ({"ceiling": 4, "error_backoff": 0.0}, "error_backoff must be between 0 and 1"),
    ({"ceiling": 4, "tolerance": 1.0}, "tolerance > 1"),
    ({"ceiling": 4, "min_round": 0}, "min_round >= 1"),
])
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HostLimit(**kwargs)


# ---------------------------------------------------------------------------- a model host


def model_latency_ms(in_flight: int) -> float:
    """The module docstring's host: 20 ms up to 16 in flight, 2 ms more for each one beyond."""
    return 20.0 * (1 + 0.1 * max(0, in_flight - 16))


def play(tasks: int, ceiling: int, adaptive: bool) -> dict[str, Any]:
    """A backlog of ``tasks`` against the model host (503 at once past 48 in flight), runs
    refilled as answers come: an event simulation in whole ms, so every figure is exact."""
    rule = HostLimit(ceiling) if adaptive else None
    answers: list[tuple[float, int, bool, float, int]] = []  # (at, order, ok, started, epoch)
    order = in_flight = at_host = done = errors = 0
    left, now = tasks, 0.0
    limits: list[tuple[float, int]] = []
    latencies: list[float] = []
    while left or answers:
        cap = rule.limit if rule is not None else ceiling
        while left and in_flight < cap:
            left, in_flight, order = left - 1, in_flight + 1, order + 1
            epoch = rule.epoch if rule is not None else 0
            if at_host + 1 > 48:
                heapq.heappush(answers, (now + 1, order, False, now, epoch))
            else:
                at_host += 1
                heapq.heappush(answers, (now + model_latency_ms(at_host), order, True, now,
                                         epoch))
        now, _, ok, started, epoch = heapq.heappop(answers)
        if ok:
            at_host, done = at_host - 1, done + 1
            latencies.append(now - started)
        else:
            errors, left = errors + 1, left + 1  # tried again
        if rule is not None:
            rule.observe(now - started, epoch=epoch, in_flight=in_flight, host_error=not ok)
            if not limits or limits[-1][1] != rule.limit:
                limits.append((now, rule.limit))
        in_flight -= 1
    latencies.sort()
    return {"tasks_per_s": round(done / now * 1000), "p99_ms": latencies[99 * done // 100 - 1],
            "errors": errors, "limits": limits}


def test_against_a_load_sensitive_host_it_settles_near_the_knee_without_errors() -> None:
    adaptive = play(3000, 64, adaptive=True)
    # from 1, one a round, up to 23, where latency shows: back to 20, and again
    assert [limit for _, limit in adaptive["limits"][:27]] == [
        *range(1, 24), 20, 21, 22, 23]
    assert adaptive["limits"][15] == (400.0, 16)  # 16 in flight after 0.4 s
    assert {limit for at, limit in adaptive["limits"] if at > 1000} <= set(range(10, 24))
    assert (adaptive["errors"], adaptive["p99_ms"]) == (0, 34.0)
    assert adaptive["tasks_per_s"] == 659  # the host's best is 800/s, at 16 in flight
    fixed_1, fixed_64 = play(300, 1, adaptive=False), play(3000, 64, adaptive=False)
    assert (fixed_1["tasks_per_s"], fixed_1["p99_ms"], fixed_1["errors"]) == (50, 20.0, 0)
    assert fixed_64["p99_ms"] == 84.0 and fixed_64["errors"] > 10_000  # 48 in flight, 503s


# ---------------------------------------------------------------------------- the engine


class LoadSensitiveHost(Invoker):
    """A host on the fake clock: 20 ms with up to 4 requests in flight, 10 ms more for each one
    beyond, and a 503 after 1 ms past 8 (a host error). Notes each request's in-flight count."""

    def __init__(self, clock: FakeClock, *, fail: bool = False) -> None:
        self.clock = clock
        self.in_flight = 0
        self.seen: list[int] = []
        self.errors = 0
        self.fail = fail  # every function answers its own error (a 500 with {code, error})

    async def invoke(self, command: Invoke) -> Outcome:
        self.in_flight += 1
        try:
            self.seen.append(self.in_flight)
            if self.in_flight > 8:
                self.errors += 1
                await self.clock.sleep(1)
                return Failed("a gateway answered 503", FailureKind.UNKNOWN, 503,
                              host_error=True)
            await self.clock.sleep(20 + 10 * max(0, self.in_flight - 4))
            if self.fail:
                return Failed("the function said no", FailureKind.ERROR, 500)
            return Succeeded({"result": None}, 200)
        finally:
            self.in_flight -= 1


async def run_backlog(engine: Engine, host: LoadSensitiveHost, count: int,
                      **options: Any) -> list[str]:
    async with engine:
        ids = [await engine.enqueue("work", {"i": i}, **{"attempts": 3, "backoff": 1, **options})
               for i in range(count)]
        infos = [await engine.wait(uid, timeout=600_000) for uid in ids]
    return [info.status for info in infos]


def record_limits(engine: Engine, clock: FakeClock) -> list[tuple[int, int]]:
    """(ms since T0, limit) at the start and at every change of the engine's host limit."""
    rule = engine.host_limit
    assert rule is not None
    changes = [(clock.now_ms() - T0, rule.limit)]
    observe = rule.observe

    def observed(latency_ms: float, **kwargs: Any) -> int:
        limit = observe(latency_ms, **kwargs)
        if limit != changes[-1][1]:
            changes.append((clock.now_ms() - T0, limit))
        return limit

    rule.observe = observed  # type: ignore[method-assign]
    return changes


async def test_the_engine_raises_runs_while_latency_is_flat_and_backs_off_when_it_rises(
        ) -> None:
    clock = FakeClock(T0, autojump_threshold_s=0.001)
    host = LoadSensitiveHost(clock)
    engine = Engine(clock=clock, invoker=host, concurrency=16, host_concurrency="adaptive")
    assert engine.run_cap == 1  # before a single answer: one run in flight
    async with engine:
        changes = record_limits(engine, clock)
        ids = [await engine.enqueue("work", {"i": i}) for i in range(300)]
        statuses = [(await engine.wait(uid, timeout=600_000)).status for uid in ids]
    assert statuses == ["success"] * 300
    # one a round while answers take 20 ms (4 answers a round below 4): 5 after 180 ms; at 5 in
    # flight they take 30 ms, the threshold: 6 and 7 (40, 50 ms) are over it, back off
    assert changes[:10] == [(0, 1), (80, 2), (120, 3), (160, 4), (180, 5), (200, 6), (230, 7),
                            (280, 6), (350, 5), (400, 6)]
    assert {limit for at, limit in changes if at >= 280} == {5, 6, 7}
    assert host.seen[:5] == [1] * 5 and max(host.seen) == 7 and host.errors == 0
    rule = engine.host_limit
    assert rule is not None
    assert (rule.baseline_ms, rule.host_errors, rule.ceiling) == (20.0, 0, 16)


async def test_with_the_mode_off_nothing_changes() -> None:
    clock = FakeClock(T0, autojump_threshold_s=0.001)
    host = LoadSensitiveHost(clock)
    engine = Engine(clock=clock, invoker=host, concurrency=16)
    assert engine.host_limit is None and engine.run_cap == 16
    statuses = await run_backlog(engine, host, 100, attempts=0)
    assert max(host.seen) == 16  # 16 at once, as always
    assert host.errors > 0 and statuses.count("failed") == host.errors  # each 503 a failure
    assert engine.run_cap == 16


async def test_a_run_that_times_out_is_a_host_error() -> None:
    clock = FakeClock(T0, autojump_threshold_s=0.001)
    answering = True

    class Host(Invoker):
        async def invoke(self, command: Invoke) -> Outcome:
            await clock.sleep(10 if answering else 60_000)
            return Succeeded({"result": None}, 200)

    engine = Engine(clock=clock, invoker=Host(), concurrency=8, host_concurrency="adaptive")
    async with engine:
        ids = [await engine.enqueue("work", {}) for _ in range(40)]
        for uid in ids:
            await engine.wait(uid, timeout=60_000)
        rule = engine.host_limit
        assert rule is not None and rule.limit == 8
        answering = False
        hung = [await engine.enqueue("work", {}, timeout=1_000, attempts=0) for _ in range(8)]
        for uid in hung:
            assert (await engine.wait(uid, timeout=60_000)).status == "failed"
        # the first timeout halved the limit; the others were runs started before it
        assert (rule.limit, rule.host_errors, rule.backoffs) == (4, 8, 1)
        assert engine.run_cap == 4


async def test_a_functions_own_failure_is_not_the_hosts_load() -> None:
    seen = {}
    for fail in (False, True):
        clock = FakeClock(T0, autojump_threshold_s=0.001)
        host = LoadSensitiveHost(clock, fail=fail)
        engine = Engine(clock=clock, invoker=host, concurrency=16, host_concurrency="adaptive")
        statuses = await run_backlog(engine, host, 100, attempts=0)
        assert statuses == ["failed" if fail else "success"] * 100
        rule = engine.host_limit
        assert rule is not None and rule.host_errors == 0
        seen[fail] = host.seen
    assert seen[True] == seen[False]  # failing answers move the limit as successes do


async def test_in_process_functions_beside_a_host_teach_the_limit_nothing() -> None:
    clock = FakeClock(T0, autojump_threshold_s=0.001)
    host = LoadSensitiveHost(clock)
    engine = Engine(clock=clock, invoker=host, concurrency=4, host_concurrency="adaptive")

    @engine.define
    async def local(params: Any, ctx: RunContext) -> Any:
        await clock.sleep(5_000)  # slow, but not at the host
        return None

    async with engine:
        uid = await engine.enqueue("local", {})
        await engine.wait(uid, timeout=60_000)
        rule = engine.host_limit
        assert rule is not None and (rule.rounds, rule.latency_ms) == (0, None)
        ids = [await engine.enqueue("work", {}) for _ in range(4)]
        for uid in ids:
            await engine.wait(uid, timeout=60_000)
        assert (rule.rounds, rule.latency_ms) == (1, 20.0)


async def test_the_run_cap_is_the_lower_of_the_loop_lag_cap_and_the_host_limit() -> None:
    clock = FakeClock(T0, autojump_threshold_s=0.001)
    host = LoadSensitiveHost(clock)
    engine = Engine(clock=clock, invoker=host, concurrency=8, adaptive_concurrency=True,
                    host_concurrency="adaptive")
    async with engine:
        driver, rule = engine.driver, engine.host_limit
        assert rule is not None and driver.run_cap is not None
        ids = [await engine.enqueue("work", {"i": i}) for i in range(40)]
        for uid in ids:
            await engine.wait(uid, timeout=60_000)
        assert rule.limit == 6 and engine.run_cap == 6  # the host's limit; the loop is calm
        driver._on_lag(50.0)  # the loop was 50 ms late: 8 x 0.7 = 5.6 -> 5
        driver._on_lag(50.0)  # 3.92 -> 3, below the host's 6
        assert engine.run_cap == 3
        for _ in range(5):
            driver._on_lag(0.0)  # calm: the lag cap goes back up to 8
        assert engine.run_cap == 6  # the host limit holds it
        await settle(engine)


def test_engine_config_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="host_concurrency must be one of fixed, adaptive"):
        Engine(host_concurrency="auto")
