"""Which node dispatches which app (``leases.plan``): pure, so every rule is checked exactly."""

from __future__ import annotations

from collections import Counter

from cloudqueue.engine.runtime.postgres.leases import LeaseRow, NodeRow, plan, preferred

APPS = [f"app{i}" for i in range(300)]


def nodes(*ids: str, apps: list[str] = APPS) -> list[NodeRow]:
    return [NodeRow(i, f"http://{i}", frozenset(apps)) for i in ids]


def test_apps_spread_evenly_and_only_a_leaving_nodes_apps_move() -> None:
    three = nodes("a", "b", "c")
    before = {app: preferred(app, three) for app in APPS}
    shares = Counter(before.values())
    assert set(shares) == {"a", "b", "c"} and min(shares.values()) >= 70  # 100 each, roughly
    after = {app: preferred(app, nodes("a", "c")) for app in APPS}
    moved = {app for app in APPS if before[app] != after[app]}
    assert moved == {app for app, owner in before.items() if owner == "b"}


def test_a_node_takes_the_free_apps_it_prefers_and_leaves_the_others() -> None:
    live = nodes("a", "b")
    mine = [app for app in APPS if preferred(app, live) == "a"]
    theirs = [app for app in APPS if preferred(app, live) == "b"]
    leases = {mine[0]: LeaseRow(mine[0], "b", 3, expired=False),  # held: wait for it
              mine[1]: LeaseRow(mine[1], "b", 3, expired=True),   # expired: take it
              mine[2]: LeaseRow(mine[2], None, 4, expired=False)}  # released: take it
    todo = plan("a", APPS, live, leases, held=())
    assert mine[0] not in todo.take and {mine[1], mine[2]} <= set(todo.take)
    assert not set(todo.take) & set(theirs) and todo.release == []
    assert len(todo.take) == len(mine) - 1


def test_a_node_hands_back_what_a_joining_node_prefers() -> None:
    alone = plan("a", APPS, nodes("a"), {}, held=())
    assert alone.take == APPS
    joined = plan("a", APPS, nodes("a", "b"), {}, held=APPS)
    assert joined.take == []
    assert joined.release == [app for app in APPS if preferred(app, nodes("a", "b")) == "b"]


def test_an_app_goes_only_to_nodes_that_serve_it() -> None:
    live = [NodeRow("a", None, frozenset({"x"})), NodeRow("b", None, frozenset({"x", "y"}))]
    assert preferred("y", live) == "b"
    assert "y" not in plan("a", ["x", "y"], live, {}, held=()).take
    assert preferred("z", live) is None  # nobody serves it
