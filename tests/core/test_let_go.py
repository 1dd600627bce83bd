"""``EngineCore.let_go``: the core of an engine whose app went to another node frees its tasks at
once, by reference counting, though the core itself (whose parts refer to one another) waits for
a full garbage collection."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from cloudqueue.engine.core.commands import Invoke
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.task import Task
from cloudqueue.engine.core.task_rows import KeptTask
from cloudqueue.engine.runtime.rebuild import rebuild
from cloudqueue.engine.runtime.snapshot import decode_snapshot, encode_snapshot

T0 = 1_700_000_000_000


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def tasks_alive() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, Task))  # KeptTask too


def test_a_core_let_go_frees_its_tasks_at_once(no_cyclic_gc: None) -> None:
    before = tasks_alive()
    core = EngineCore(CoreConfig())
    for i in range(50):  # queued (one running, with its timeout), and delayed (a timer each)
        core.submit(f"q{i}", "f", {"i": i}, TaskOptions(), T0)
        core.submit(f"d{i}", "f", {"i": i}, TaskOptions(delay_ms=60_000), T0)
    core.tick(T0, dispatch=True)
    assert tasks_alive() - before == 100 and len(core) == 100
    core.let_go()
    assert len(core) == 0 and core.unfinished == 0 and core.next_deadline_ms() is None
    assert tasks_alive() == before  # gone, with no collection (the core is still here)


def test_a_core_let_go_frees_the_finished_tasks_a_snapshot_kept_packed(no_cyclic_gc: None
                                                                       ) -> None:
    source = EngineCore(CoreConfig(concurrency=50))
    for i in range(50):
        source.submit(f"t{i}", "f", {"i": i}, TaskOptions(), T0)
    for command in source.tick(T0, dispatch=True):
        if isinstance(command, Invoke):
            source.run_succeeded(command.unique_id, command.run_seq, None, T0 + 1)
    data = encode_snapshot(source.last_seq, source.tasks(), source.counters())
    del source, command
    before = tasks_alive()
    snapshot = decode_snapshot(data, "test")
    core = rebuild(EngineCore(CoreConfig(), start_ms=T0 + 2), [], snapshot_seq=snapshot.seq,
                   snapshot_tasks=snapshot.tasks, counters=snapshot.counters)
    del snapshot
    assert tasks_alive() - before == 50
    assert all(isinstance(t, KeptTask) for t in core.tasks())
    core.let_go()
    assert tasks_alive() == before
