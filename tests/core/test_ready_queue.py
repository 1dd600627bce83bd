"""Behaviour and model-based tests for engine.core.ready_queue.ReadyQueue."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudqueue.engine.core.ready_queue import ReadyQueue


def drain(q: ReadyQueue) -> list[str]:
    out: list[str] = []
    while (task_id := q.pop()) is not None:
        out.append(task_id)
    return out


# --- ordering ---------------------------------------------------------------------------


def test_lower_priority_pops_first() -> None:
    q = ReadyQueue()
    q.push("late", 30, seq=1)
    q.push("early", 10, seq=2)
    q.push("middle", 20, seq=3)
    assert drain(q) == ["early", "middle", "late"]


def test_equal_priorities_pop_in_seq_order() -> None:
    q = ReadyQueue()
    for seq, task_id in [(5, "e"), (1, "a"), (3, "c"), (2, "b"), (4, "d")]:
        q.push(task_id, 7, seq)
    assert drain(q) == ["a", "b", "c", "d", "e"]


def test_int_and_float_priorities_are_ordered_together() -> None:
    q = ReadyQueue()
    q.push("ms", 1_700_000_000_001, seq=1)
    q.push("float", 1_700_000_000_000.5, seq=2)
    q.push("low", -1, seq=3)
    assert drain(q) == ["low", "float", "ms"]


def test_peek_returns_next_pop_without_removing_it() -> None:
    q = ReadyQueue()
    q.push("b", 2, seq=1)
    q.push("a", 1, seq=2)
    assert q.peek() == "a"
    assert q.peek() == "a"
    assert len(q) == 2
    assert q.pop() == "a"
    assert q.peek() == "b"


def test_empty_queue_pops_and_peeks_none() -> None:
    q = ReadyQueue()
    assert q.pop() is None
    assert q.peek() is None
    assert len(q) == 0


# --- push / discard ---------------------------------------------------------------------


def test_pushing_a_queued_task_raises_value_error() -> None:
    q = ReadyQueue()
    q.push("a", 1, seq=1)
    with pytest.raises(ValueError, match="already"):
        q.push("a", 0, seq=2)
    assert drain(q) == ["a"]


def test_nan_priority_is_rejected() -> None:
    q = ReadyQueue()
    with pytest.raises(ValueError, match="NaN"):
        q.push("a", float("nan"), seq=1)
    assert len(q) == 0
    assert "a" not in q


def test_discarded_task_is_never_popped() -> None:
    q = ReadyQueue()
    q.push("a", 1, seq=1)
    q.push("b", 2, seq=2)
    q.push("c", 3, seq=3)
    assert q.discard("a") is True
    assert q.peek() == "b"
    assert drain(q) == ["b", "c"]


def test_discard_of_unknown_or_already_discarded_task_returns_false() -> None:
    q = ReadyQueue()
    assert q.discard("ghost") is False
    q.push("a", 1, seq=1)
    assert q.discard("a") is True
    assert q.discard("a") is False
    assert q.pop() is None


def test_discard_of_popped_task_returns_false() -> None:
    q = ReadyQueue()
    q.push("a", 1, seq=1)
    assert q.pop() == "a"
    assert q.discard("a") is False


def test_repush_after_discard_uses_new_priority() -> None:
    q = ReadyQueue()
    q.push("a", 1, seq=1)
    q.push("b", 5, seq=2)
    q.discard("a")
    q.push("a", 9, seq=3)
    assert drain(q) == ["b", "a"]


def test_repush_with_reused_seq_does_not_resurrect_old_entry() -> None:
    q = ReadyQueue()
    q.push("a", 1, seq=1)
    q.push("b", 5, seq=2)
    q.discard("a")
    q.push("a", 9, seq=1)
    assert drain(q) == ["b", "a"]
    assert len(q) == 0


def test_popped_task_can_be_pushed_again() -> None:
    q = ReadyQueue()
    q.push("a", 1, seq=1)
    assert q.pop() == "a"
    q.push("a", 2, seq=2)
    assert q.pop() == "a"
    assert q.pop() is None


def test_len_and_contains_count_live_entries_only() -> None:
    q = ReadyQueue()
    q.push("a", 1, seq=1)
    q.push("b", 2, seq=2)
    q.push("c", 3, seq=3)
    q.discard("b")
    assert len(q) == 2
    assert "a" in q
    assert "b" not in q
    assert "c" in q
    q.pop()
    assert len(q) == 1
    assert "a" not in q


def test_first_is_the_task_pushed_longest_ago_whatever_its_priority() -> None:
    q = ReadyQueue()
    assert q.first() is None
    q.push("late-but-urgent", 9, seq=1)
    q.push("a", 1, seq=2)
    q.push("b", 0, seq=3)
    assert (q.first(), q.peek()) == ("late-but-urgent", "b")
    q.discard("late-but-urgent")
    assert q.first() == "a"
    q.pop()  # "b"
    q.push("late-but-urgent", 9, seq=4)  # pushed again: the newest now
    assert q.first() == "a"
    q.pop()  # "a"
    assert q.first() == "late-but-urgent"


def test_contains_is_false_for_non_string_keys() -> None:
    q = ReadyQueue()
    q.push("1", 1, seq=1)
    assert 1 not in q
    assert ["1"] not in q  # unhashable: must not raise


# --- compaction -------------------------------------------------------------------------


def test_stale_entries_never_exceed_max_of_64_and_live_count() -> None:
    q = ReadyQueue()
    for i in range(1000):
        q.push(f"t{i}", i, seq=i)
    for i in range(990):
        q.discard(f"t{i}")
        live = len(q)
        assert len(q._heap) - live <= max(64, live)
    assert len(q._heap) <= 10 + 64


def test_compaction_keeps_order() -> None:
    q = ReadyQueue()
    rng = random.Random(7)
    ids = [f"t{i}" for i in range(500)]
    priorities = {task_id: rng.randrange(20) for task_id in ids}
    for seq, task_id in enumerate(ids):
        q.push(task_id, priorities[task_id], seq)
    heap_before = len(q._heap)
    kept = ids[::10]
    for task_id in ids:
        if task_id not in kept:
            q.discard(task_id)
    assert len(q._heap) < heap_before  # a compaction happened
    expected = sorted(kept, key=lambda t: (priorities[t], ids.index(t)))
    assert drain(q) == expected


def test_discard_and_repush_cycles_keep_heap_bounded() -> None:
    q = ReadyQueue()
    for i in range(10):
        q.push(f"t{i}", i, seq=i)
    seq = 10
    for _ in range(5000):
        task_id = f"t{seq % 10}"
        q.discard(task_id)
        q.push(task_id, seq, seq)
        seq += 1
    assert len(q) == 10
    assert len(q._heap) <= 10 + 64 + 1
    assert drain(q) == [f"t{i % 10}" for i in range(seq - 10, seq)]


# --- model-based ------------------------------------------------------------------------


class ReadyModel:
    """Naive reference: a plain list of (priority, seq, task_id), kept sorted."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, str]] = []

    def ids(self) -> set[str]:
        return {task_id for _, _, task_id in self.entries}

    def push(self, task_id: str, priority: float, seq: int) -> None:
        self.entries.append((priority, seq, task_id))
        self.entries.sort()

    def discard(self, task_id: str) -> bool:
        before = len(self.entries)
        self.entries = [e for e in self.entries if e[2] != task_id]
        return len(self.entries) != before

    def pop(self) -> str | None:
        return self.entries.pop(0)[2] if self.entries else None

    def peek(self) -> str | None:
        return self.entries[0][2] if self.entries else None


def random_priority(rng: random.Random) -> float:
    kind = rng.random()
    if kind < 0.4:
        return rng.randrange(5)  # many ties: seq decides
    if kind < 0.7:
        return 1_700_000_000_000 + rng.randrange(1000)  # LeanCloud default: epoch ms
    return rng.uniform(-10, 10)


def run_ready_queue_model(rng: random.Random, n_ops: int, n_ids: int) -> None:
    q = ReadyQueue()
    model = ReadyModel()
    seq = 0
    for _ in range(n_ops):
        task_id = f"t{rng.randrange(n_ids)}"
        op = rng.random()
        if op < 0.45:
            seq += 1
            if task_id in model.ids():
                with pytest.raises(ValueError):
                    q.push(task_id, 0, seq)
            else:
                priority = random_priority(rng)
                q.push(task_id, priority, seq)
                model.push(task_id, priority, seq)
        elif op < 0.7:
            assert q.discard(task_id) == model.discard(task_id)
        elif op < 0.95:
            assert q.pop() == model.pop()
        else:
            assert q.peek() == model.peek()
        assert len(q) == len(model.entries)
        assert (task_id in q) == (task_id in model.ids())
    assert drain(q) == [task_id for _, _, task_id in model.entries]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_matches_sorted_list_model(seed: int) -> None:
    rng = random.Random(seed)
    # Few ids collide often (duplicate pushes, re-push after discard); many ids let the
    # heap grow past the compaction threshold.
    run_ready_queue_model(rng, n_ops=2000, n_ids=40 if seed % 2 else 400)


_ops = st.lists(
    st.tuples(
        st.sampled_from(["push", "discard", "pop", "peek"]),
        st.integers(0, 15),
        st.integers(-3, 3),
    ),
    max_size=120,
)


@settings(max_examples=50, deadline=None, database=None)
@given(_ops)
def test_arbitrary_op_sequences_match_model(ops: list[tuple[str, int, int]]) -> None:
    q = ReadyQueue()
    model = ReadyModel()
    for seq, (op, n, priority) in enumerate(ops):
        task_id = f"t{n}"
        if op == "push" and task_id not in model.ids():
            q.push(task_id, priority, seq)
            model.push(task_id, priority, seq)
        elif op == "discard":
            assert q.discard(task_id) == model.discard(task_id)
        elif op == "pop":
            assert q.pop() == model.pop()
        elif op == "peek":
            assert q.peek() == model.peek()
        assert len(q) == len(model.entries)
    assert drain(q) == [task_id for _, _, task_id in model.entries]
