"""Behaviour and model-based tests for engine.core.timer_wheel.TimerWheel."""

from __future__ import annotations

import bisect
import random
from collections.abc import Hashable
from typing import NamedTuple

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cloudqueue.engine.core import timer_wheel
from cloudqueue.engine.core.timer_wheel import TimerHandle, TimerWheel

T0 = 1_700_000_000_000  # an epoch-ms start, like production


def add(wheel: TimerWheel[str], key: str, at_ms: int) -> TimerHandle:
    handle = wheel.add(key, at_ms)
    assert handle is not None
    return handle


def stored_entries(wheel: TimerWheel[str]) -> int:
    return sum(len(bucket.entries) for bucket in wheel._buckets.values())


# --- construction -----------------------------------------------------------------------


@pytest.mark.parametrize("slots", [0, -8, 3, 6, 100, 4095])
def test_slots_must_be_power_of_two(slots: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        TimerWheel[str](T0, slots=slots)


@pytest.mark.parametrize("slots", [1, 2, 8, 4096])
def test_power_of_two_slot_counts_are_accepted(slots: int) -> None:
    assert len(TimerWheel[str](T0, slots=slots)) == 0


@pytest.mark.parametrize("tick_ms", [0, -1])
def test_tick_must_be_at_least_one_ms(tick_ms: int) -> None:
    with pytest.raises(ValueError, match="tick_ms"):
        TimerWheel[str](T0, tick_ms=tick_ms)


def test_current_ms_starts_at_start_ms() -> None:
    wheel = TimerWheel[str](T0)
    assert wheel.current_ms == T0
    assert wheel.next_expiry_ms() is None
    assert wheel.advance(T0 + 10) == []
    assert wheel.current_ms == T0 + 10


# --- adding and firing ------------------------------------------------------------------


def test_add_at_or_before_current_time_returns_none() -> None:
    wheel = TimerWheel[str](T0)
    assert wheel.add("now", T0) is None
    assert wheel.add("past", T0 - 1) is None
    assert wheel.add("ancient", 0) is None
    assert len(wheel) == 0
    assert wheel.next_expiry_ms() is None
    assert wheel.advance(T0 + 1_000_000) == []


def test_handle_exposes_key_time_and_cancelled_flag() -> None:
    wheel = TimerWheel[str](T0)
    handle = add(wheel, "job", T0 + 5)
    assert (handle.key, handle.at_ms, handle.cancelled) == ("job", T0 + 5, False)


def test_timer_never_fires_before_its_time() -> None:
    wheel = TimerWheel[str](T0)
    add(wheel, "a", T0 + 10)
    for now in range(T0, T0 + 10):
        assert wheel.advance(now) == []
    assert wheel.advance(T0 + 10) == ["a"]


def test_timer_fires_exactly_once() -> None:
    wheel = TimerWheel[str](T0)
    add(wheel, "a", T0 + 3)
    assert wheel.advance(T0 + 3) == ["a"]
    assert wheel.advance(T0 + 4) == []
    assert wheel.advance(T0 + 100_000) == []
    assert len(wheel) == 0


def test_fired_keys_are_sorted_by_time_then_add_order() -> None:
    wheel = TimerWheel[str](T0, slots=8)
    add(wheel, "c2", T0 + 30)
    add(wheel, "b1", T0 + 20)
    add(wheel, "a", T0 + 10)
    add(wheel, "c3", T0 + 30)
    add(wheel, "b2", T0 + 20)
    add(wheel, "later", T0 + 31)
    assert wheel.advance(T0 + 30) == ["a", "b1", "b2", "c2", "c3"]
    assert wheel.advance(T0 + 31) == ["later"]


def test_same_key_added_twice_fires_twice() -> None:
    wheel = TimerWheel[str](T0)
    add(wheel, "k", T0 + 1)
    add(wheel, "k", T0 + 2)
    assert wheel.advance(T0 + 2) == ["k", "k"]


def test_keys_may_be_any_hashable() -> None:
    wheel = TimerWheel[Hashable](T0)
    wheel.add(("run", 7), T0 + 2)
    wheel.add(42, T0 + 1)
    assert wheel.advance(T0 + 2) == [42, ("run", 7)]


def test_same_slot_later_round_waits() -> None:
    wheel = TimerWheel[str](T0, slots=8)  # times 8 ms apart share a slot
    add(wheel, "round2", T0 + 3 + 8)
    add(wheel, "round0", T0 + 3)
    add(wheel, "round5", T0 + 3 + 40)
    assert wheel.advance(T0 + 3) == ["round0"]
    assert wheel.next_expiry_ms() == T0 + 11
    assert wheel.advance(T0 + 10) == []
    assert wheel.advance(T0 + 11) == ["round2"]
    assert wheel.advance(T0 + 42) == []
    assert wheel.advance(T0 + 43) == ["round5"]


def test_coarse_tick_still_fires_at_the_exact_millisecond() -> None:
    wheel = TimerWheel[str](T0, tick_ms=100, slots=8)
    add(wheel, "a", T0 + 150)
    add(wheel, "b", T0 + 101)
    assert wheel.advance(T0 + 100) == []
    assert wheel.advance(T0 + 101) == ["b"]
    assert wheel.advance(T0 + 149) == []
    assert wheel.advance(T0 + 150) == ["a"]


def test_advance_jumps_long_idle_gap() -> None:
    wheel = TimerWheel[str](T0, tick_ms=1, slots=4096)
    add(wheel, "soon", T0 + 1)
    add(wheel, "in_3_hours", T0 + 3 * 3_600_000)
    add(wheel, "in_30_years", T0 + 30 * 365 * 86_400_000)
    assert wheel.advance(T0 + 1) == ["soon"]
    # Walking ~10^12 one-ms ticks would never finish; the bucket heap skips them.
    assert wheel.next_expiry_ms() == T0 + 3 * 3_600_000
    assert wheel.advance(T0 + 3 * 3_600_000) == ["in_3_hours"]
    assert wheel.advance(T0 + 31 * 365 * 86_400_000) == ["in_30_years"]
    assert wheel.current_ms == T0 + 31 * 365 * 86_400_000


def test_advancing_backwards_fires_nothing_and_keeps_current_time() -> None:
    wheel = TimerWheel[str](T0)
    add(wheel, "a", T0 + 50)
    assert wheel.advance(T0 + 20) == []
    assert wheel.advance(T0 + 5) == []
    assert wheel.current_ms == T0 + 20
    assert wheel.add("b", T0 + 10) is None  # behind current_ms even after the rewind
    assert wheel.advance(T0 + 50) == ["a"]


def test_len_counts_live_timers_only() -> None:
    wheel = TimerWheel[str](T0)
    handles = [add(wheel, f"t{i}", T0 + 1 + i) for i in range(5)]
    assert len(wheel) == 5
    wheel.cancel(handles[4])
    assert len(wheel) == 4
    wheel.advance(T0 + 2)
    assert len(wheel) == 2


# --- cancel -----------------------------------------------------------------------------


def test_cancelled_timer_does_not_fire() -> None:
    wheel = TimerWheel[str](T0)
    keep = add(wheel, "keep", T0 + 5)
    drop = add(wheel, "drop", T0 + 5)
    wheel.cancel(drop)
    assert drop.cancelled is True
    assert keep.cancelled is False
    assert wheel.advance(T0 + 5) == ["keep"]


def test_cancel_is_idempotent() -> None:
    wheel = TimerWheel[str](T0)
    add(wheel, "other", T0 + 5)
    handle = add(wheel, "a", T0 + 5)
    wheel.cancel(handle)
    wheel.cancel(handle)
    assert len(wheel) == 1
    assert wheel.advance(T0 + 5) == ["other"]


def test_cancelling_a_fired_timer_is_a_no_op() -> None:
    wheel = TimerWheel[str](T0)
    handle = add(wheel, "a", T0 + 1)
    add(wheel, "b", T0 + 2)
    assert wheel.advance(T0 + 1) == ["a"]
    wheel.cancel(handle)
    assert handle.cancelled is False
    assert len(wheel) == 1
    assert wheel.advance(T0 + 2) == ["b"]


def test_cancelling_a_handle_of_another_wheel_raises() -> None:
    one = TimerWheel[str](T0)
    two = TimerWheel[str](T0)
    handle = add(one, "a", T0 + 1)
    with pytest.raises(ValueError, match="another"):
        two.cancel(handle)
    assert len(one) == 1


# --- next_expiry_ms ---------------------------------------------------------------------


def test_next_expiry_is_earliest_live_timer() -> None:
    wheel = TimerWheel[str](T0, slots=8)
    add(wheel, "a", T0 + 900)
    assert wheel.next_expiry_ms() == T0 + 900
    add(wheel, "b", T0 + 4)  # same slot as "a", earlier round
    assert wheel.next_expiry_ms() == T0 + 4
    add(wheel, "c", T0 + 7)
    assert wheel.next_expiry_ms() == T0 + 4
    wheel.advance(T0 + 4)
    assert wheel.next_expiry_ms() == T0 + 7


def test_next_expiry_moves_on_after_cancelled_earliest() -> None:
    wheel = TimerWheel[str](T0, slots=8)
    early = add(wheel, "early", T0 + 3)
    add(wheel, "same_slot_later", T0 + 3 + 8 * 1000)
    add(wheel, "other_slot", T0 + 5_000)
    wheel.cancel(early)
    assert wheel.next_expiry_ms() == T0 + 5_000  # never the cancelled timer's time
    assert wheel.advance(T0 + 5_000) == ["other_slot"]
    assert wheel.next_expiry_ms() == T0 + 3 + 8 * 1000


def test_next_expiry_is_none_once_every_timer_is_cancelled() -> None:
    wheel = TimerWheel[str](T0)
    handles = [add(wheel, f"t{i}", T0 + 10 * i + 1) for i in range(20)]
    for handle in handles:
        wheel.cancel(handle)
    assert wheel.next_expiry_ms() is None
    assert stored_entries(wheel) == 0
    assert wheel.advance(T0 + 10_000) == []


def test_driver_loop_sleeping_until_next_expiry_always_progresses() -> None:
    wheel = TimerWheel[str](T0, slots=8)
    rng = random.Random(11)
    handles = [add(wheel, f"t{i}", T0 + rng.randint(1, 500)) for i in range(300)]
    for handle in rng.sample(handles, 270):
        wheel.cancel(handle)
    fired: list[str] = []
    wakeups = 0
    while (wake_at := wheel.next_expiry_ms()) is not None:
        assert wake_at > wheel.current_ms
        fired += wheel.advance(wake_at)
        wakeups += 1
        assert wakeups <= 300
    live = sorted((h.at_ms, i) for i, h in enumerate(handles) if not h.cancelled)
    assert fired == [f"t{i}" for _, i in live]


# --- memory bounds ----------------------------------------------------------------------


def test_mostly_cancelled_timers_do_not_accumulate() -> None:
    wheel = TimerWheel[str](T0, slots=64)
    # Run timeouts: one hour out, and 90% of runs finish first and cancel theirs.
    for i in range(20_000):
        handle = add(wheel, f"run{i}", T0 + 3_600_000 + i)
        if i % 10:
            wheel.cancel(handle)
    assert len(wheel) == 2_000
    assert stored_entries(wheel) <= 2 * len(wheel) + 7 * 64
    assert wheel.advance(T0 + 3_600_000 + 20_000) == [f"run{i}" for i in range(0, 20_000, 10)]
    assert stored_entries(wheel) == 0


def test_heap_stays_bounded_when_earlier_timers_keep_joining_a_bucket() -> None:
    wheel = TimerWheel[str](T0, slots=8)
    # Every add lands in slot 0 earlier than everything there, superseding its heap entry.
    for round_ in range(5_000, 0, -1):
        add(wheel, f"r{round_}", T0 + 8 * round_)
    assert len(wheel._heap) <= 2 * len(wheel._buckets) + 64
    assert wheel.next_expiry_ms() == T0 + 8
    assert wheel.advance(T0 + 8 * 5_000) == [f"r{r}" for r in range(1, 5_001)]


# --- model-based ------------------------------------------------------------------------


class WheelModel:
    """Naive reference: a plain list of (at_ms, add order, key, handle), kept sorted."""

    def __init__(self, start_ms: int) -> None:
        self.current = start_ms
        self.timers: list[tuple[int, int, str, TimerHandle]] = []
        self.live: dict[TimerHandle, tuple[int, int, str, TimerHandle]] = {}
        self.cancelled_times: set[int] = set()
        self.order = 0

    def add(self, key: str, at_ms: int, handle: TimerHandle | None) -> None:
        if at_ms <= self.current:
            assert handle is None
            return
        assert handle is not None
        timer = (at_ms, self.order, key, handle)
        bisect.insort(self.timers, timer)  # (at_ms, order) is unique: never compares keys
        self.live[handle] = timer
        self.order += 1

    def cancel(self, handle: TimerHandle) -> None:
        timer = self.live.pop(handle, None)
        if timer is not None:
            self.timers.remove(timer)
            self.cancelled_times.add(handle.at_ms)

    def advance(self, now_ms: int) -> list[str]:
        due = [t for t in self.timers if t[0] <= now_ms]
        self.timers = self.timers[len(due) :]
        for timer in due:
            del self.live[timer[3]]
        self.current = max(self.current, now_ms)
        return [key for _, _, key, _ in due]

    def check_next_expiry(self, named: int | None) -> None:
        # exact: never a cancelled timer's time (a driver sleeping until it wakes for nothing)
        earliest = self.timers[0][0] if self.timers else None
        assert named == earliest


def random_target(rng: random.Random, current: int) -> int:
    kind = rng.random()
    if kind < 0.10:
        return current - rng.randint(0, 3)  # already due
    if kind < 0.55:
        return current + rng.randint(1, 40)  # several rounds of an 8-slot wheel
    if kind < 0.85:
        return current + rng.randint(1, 3_000)
    return current + rng.randint(10**5, 10**8)


class Mix(NamedTuple):
    add_below: float  # op < add_below: add
    cancel_below: float  # add_below <= op < cancel_below: cancel; otherwise advance
    timeout_ms: int  # 0, or: most adds are this far ahead (-10%), like run timeouts
    slow_clock: bool  # advance by a few ms at most, never over idle gaps
    cancel_window: int  # cancel picks among this many most recent handles


# General traffic: frequent advances, including leaps over long idle gaps.
MIXED = Mix(add_below=0.55, cancel_below=0.87, timeout_ms=0, slow_clock=False, cancel_window=300)
# Run-timeout traffic: timers pile up and most are cancelled long before they are due,
# so buckets fill with cancelled entries between visits (drives purging).
CANCEL_HEAVY = Mix(
    add_below=0.5, cancel_below=0.95, timeout_ms=5_000, slow_clock=True, cancel_window=40
)


def random_advance(rng: random.Random, wheel: TimerWheel[str], slow_clock: bool) -> int:
    kind = rng.random()
    current = wheel.current_ms
    if kind < 0.40:
        return current + rng.randint(0, 3 if slow_clock else 15)
    if kind < 0.65 and not slow_clock:
        return current + rng.randint(0, 1_000)
    if kind < 0.70 and not slow_clock:
        return current + rng.randint(10**6, 10**9)  # long idle gap
    if kind < 0.80:
        return current - rng.randint(1, 1_000)  # clock went backwards
    named = wheel.next_expiry_ms()  # what a driver sleeping on the wheel would do
    return named if named is not None else current + 1


def step(
    rng: random.Random,
    mix: Mix,
    wheel: TimerWheel[str],
    model: WheelModel,
    issued: list[TimerHandle],
) -> None:
    op = rng.random()
    if op < mix.add_below:
        key = f"k{len(issued) % 97}"  # repeated keys: each timer must still fire once
        at_ms = random_target(rng, wheel.current_ms)
        if mix.timeout_ms and rng.random() < 0.8:
            at_ms = wheel.current_ms + rng.randint(mix.timeout_ms * 9 // 10, mix.timeout_ms)
        handle = wheel.add(key, at_ms)
        model.add(key, at_ms, handle)
        if handle is not None:
            issued.append(handle)
    elif op < mix.cancel_below:
        if issued:
            # Any recent handle: live, already cancelled or already fired.
            handle = rng.choice(issued[-mix.cancel_window :])
            was_live = handle in model.live
            was_cancelled = handle.cancelled
            wheel.cancel(handle)
            model.cancel(handle)
            assert handle.cancelled == (was_live or was_cancelled)
    else:
        now = random_advance(rng, wheel, mix.slow_clock)
        assert wheel.advance(now) == model.advance(now)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize(("tick_ms", "slots"), [(1, 8), (3, 8), (1, 4096), (7, 1)])
def test_matches_sorted_list_model(
    seed: int, tick_ms: int, slots: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    mix = CANCEL_HEAVY if seed % 2 else MIXED
    if seed >= 4:
        # Housekeeping on a hair trigger, so heap rebuilds and tiny-bucket purges (rare at
        # the production thresholds) interleave with everything else.
        monkeypatch.setattr(timer_wheel, "_HEAP_SLACK", 0)
        monkeypatch.setattr(timer_wheel, "_PURGE_MIN", 1)
    wheel = TimerWheel[str](T0, tick_ms=tick_ms, slots=slots)
    model = WheelModel(T0)
    issued: list[TimerHandle] = []
    for _ in range(2000):
        step(rng, mix, wheel, model, issued)
        assert len(wheel) == len(model.timers)
        assert wheel.current_ms == model.current
        # Not after every op: next_expiry_ms tidies the heap, which could mask bugs.
        if rng.random() < 0.5:
            model.check_next_expiry(wheel.next_expiry_ms())
    assert wheel.advance(wheel.current_ms + 10**10) == model.advance(wheel.current_ms + 10**10)
    assert len(wheel) == 0
    assert wheel.next_expiry_ms() is None


class WheelMachine(RuleBasedStateMachine):
    """Hypothesis-driven interleavings against the same reference model."""

    def __init__(self) -> None:
        super().__init__()
        self.wheel = TimerWheel[str](T0, slots=4)
        self.model = WheelModel(T0)
        self.issued: list[TimerHandle] = []
        self.n = 0

    @rule(offset=st.integers(-2, 60))
    def add(self, offset: int) -> None:
        self.n += 1
        key = f"k{self.n}"
        at_ms = self.wheel.current_ms + offset
        handle = self.wheel.add(key, at_ms)
        self.model.add(key, at_ms, handle)
        if handle is not None:
            self.issued.append(handle)

    @precondition(lambda self: bool(self.issued))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(self.issued))
        self.wheel.cancel(handle)
        self.model.cancel(handle)

    @rule(delta=st.integers(-20, 80))
    def advance(self, delta: int) -> None:
        now = self.wheel.current_ms + delta
        assert self.wheel.advance(now) == self.model.advance(now)

    @rule()
    def advance_to_next_expiry(self) -> None:
        named = self.wheel.next_expiry_ms()
        self.model.check_next_expiry(named)
        if named is not None:
            assert self.wheel.advance(named) == self.model.advance(named)
            after = self.wheel.next_expiry_ms()
            assert after is None or after > named

    @invariant()
    def same_observables(self) -> None:
        assert len(self.wheel) == len(self.model.timers)
        assert self.wheel.current_ms == self.model.current


WheelMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=40, deadline=None, database=None
)
test_wheel_state_machine = WheelMachine.TestCase
