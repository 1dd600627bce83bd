"""Quotas with exact times: rate, per day, held; refusals create nothing and say when to retry."""

from __future__ import annotations

from typing import TypedDict, Unpack

import pytest

from cloudqueue.engine.core.commands import Append, Invoke
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.quotas import DAY_MS, QuotaExceededError, Quotas
from cloudqueue.engine.runtime.rebuild import rebuild

DAY0 = 20_000 * DAY_MS  # a UTC midnight


class QuotaLimits(TypedDict, total=False):
    """``Quotas``' fields, as keywords."""

    rate_per_s: float
    burst: int
    per_day: int
    held: int


def core_with(**quotas: Unpack[QuotaLimits]) -> EngineCore:
    return EngineCore(CoreConfig(concurrency=10, quotas=Quotas(**quotas)), start_ms=DAY0)


def submit(core: EngineCore, uid: str, now: int) -> None:
    core.submit(uid, "f", {}, TaskOptions(delay_ms=10**9), now)


def refused(core: EngineCore, uid: str, now: int) -> QuotaExceededError:
    before = (len(core), core.last_seq)
    with pytest.raises(QuotaExceededError) as info:
        submit(core, uid, now)
    assert (len(core), core.last_seq) == before  # nothing created, nothing logged
    return info.value


def test_rate_refuses_past_the_bucket_and_says_when_a_token_returns() -> None:
    core = core_with(rate_per_s=2)
    submit(core, "a", DAY0)
    submit(core, "b", DAY0)
    error = refused(core, "c", DAY0 + 100)
    assert (error.quota, error.retry_after_ms, error.http_status) == ("rate", 400, 429)
    assert error.body()["code"] == 429 and "2 tasks a second" in str(error)
    submit(core, "c", DAY0 + 500)


def test_burst_allows_a_larger_bucket() -> None:
    core = core_with(rate_per_s=1, burst=3)
    for uid in "abc":
        submit(core, uid, DAY0)
    assert refused(core, "d", DAY0).retry_after_ms == 1000


def test_daily_limit_resets_at_utc_midnight() -> None:
    core = core_with(per_day=2)
    submit(core, "a", DAY0 + 1_000)
    submit(core, "b", DAY0 + 2_000)
    error = refused(core, "c", DAY0 + 3_000)
    assert (error.quota, error.retry_after_ms) == ("daily", DAY_MS - 3_000)
    submit(core, "c", DAY0 + DAY_MS)


def test_held_counts_unfinished_tasks_only() -> None:
    core = core_with(held=2)
    core.submit("a", "f", {}, TaskOptions(), DAY0)
    submit(core, "b", DAY0)
    assert refused(core, "c", DAY0).quota == "held"
    (run,) = [c for c in core.tick(DAY0) if isinstance(c, Invoke)]
    core.run_succeeded("a", run.run_seq, {"result": 1}, DAY0 + 1)
    submit(core, "c", DAY0 + 1)


def test_day_count_is_rebuilt_by_replay_and_kept_by_counters() -> None:
    core = core_with(per_day=3)
    events: list[Event] = []
    for uid in "ab":
        for command in core.submit(uid, "f", {}, TaskOptions(), DAY0 + 5):
            assert isinstance(command, Append)
            events.extend(command.events)
    replayed = rebuild(core_with(per_day=3), events)
    submit(replayed, "c", DAY0 + 6)
    assert refused(replayed, "d", DAY0 + 7).quota == "daily"
    restored = core_with(per_day=3)
    restored.restore_counters(replayed.counters())
    assert refused(restored, "d", DAY0 + 8).quota == "daily"


def test_rolled_back_submission_gives_its_quota_back() -> None:
    core = core_with(per_day=1, held=1)
    submit(core, "a", DAY0)
    core.forget("a")
    submit(core, "b", DAY0)


def test_quotas_must_be_positive() -> None:
    with pytest.raises(ValueError, match="quota per_day must be > 0"):
        Quotas(per_day=0)


# ---------------------------------------------------------------------- batches (enqueue_many)


def submit_many(core: EngineCore, uids: list[str], now: int) -> None:
    core.submit_many([(uid, "f", {}, TaskOptions(delay_ms=10**9)) for uid in uids], now)


def refused_many(core: EngineCore, uids: list[str], now: int) -> QuotaExceededError:
    before = (len(core), core.last_seq)
    with pytest.raises(QuotaExceededError) as info:
        submit_many(core, uids, now)
    assert (len(core), core.last_seq) == before  # nothing created, nothing logged
    return info.value


def test_a_batch_over_the_held_limit_is_refused_whole() -> None:
    core = core_with(held=3)
    submit_many(core, ["a", "b"], DAY0)
    error = refused_many(core, ["c", "d"], DAY0)
    assert error.quota == "held" and "a batch of 2 would exceed it" in str(error)
    submit_many(core, ["c"], DAY0)


def test_a_batch_over_the_daily_limit_is_refused_whole_even_on_a_new_day() -> None:
    core = core_with(per_day=3)
    submit_many(core, ["a", "b"], DAY0)
    assert refused_many(core, ["c", "d"], DAY0).quota == "daily"
    assert refused_many(core, ["c", "d", "e", "f"], DAY0 + DAY_MS).quota == "daily"
    submit_many(core, ["c", "d", "e"], DAY0 + DAY_MS)


def test_a_batch_takes_one_rate_token_per_task() -> None:
    core = core_with(rate_per_s=4)
    submit_many(core, ["a", "b", "c"], DAY0)
    error = refused_many(core, ["d", "e"], DAY0)
    assert (error.quota, error.retry_after_ms) == ("rate", 250)
    submit_many(core, ["d", "e"], DAY0 + 250)


def test_a_batch_larger_than_the_burst_can_never_pass_and_says_so() -> None:
    core = core_with(rate_per_s=4)
    error = refused_many(core, [f"t{i}" for i in range(5)], DAY0)
    assert error.quota == "rate" and "a batch of 5 is over this app's burst of 4" in str(error)
