"""Which node dispatches which app (``leases.plan``): pure, so every rule is checked exactly."""

from __future__ import annotations

from collections import Counter

from cloudqueue.engine.runtime.postgres.leases import (
    LeaseRow,
    NodeRow,
    next_in_line,
    plan,
    preferred,
)

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


def test_a_node_hands_an_app_back_once_the_joining_nodes_standby_is_ready() -> None:
    theirs = [app for app in APPS if preferred(app, nodes("a", "b")) == "b"]
    ready, cold, overdue = theirs[0], theirs[1], theirs[2]
    joining = [NodeRow("a", None, frozenset(APPS), frozenset()),
               NodeRow("b", None, frozenset(APPS), frozenset({ready}))]
    todo = plan("a", APPS, joining, {}, held=APPS, overdue={overdue})
    assert todo.release == [app for app in theirs if app in (ready, overdue)]
    assert cold not in todo.release  # b still reads it: a keeps dispatching it meanwhile
    keeps_none = [joining[0], NodeRow("b", None, frozenset(APPS), None)]  # (a pinned node)
    assert plan("a", APPS, keeps_none, {}, held=APPS).release == theirs


def test_a_node_keeps_a_standby_of_the_apps_it_would_take_next() -> None:
    three = nodes("a", "b", "c")
    leases = {app: LeaseRow(app, preferred(app, three), 1, expired=False) for app in APPS}
    line = {me: next_in_line(me, APPS, three, leases, held=[a for a in APPS
                                                             if leases[a].owner == me])
            for me in ("a", "b", "c")}
    for app in APPS:  # one node in line for each app: the one it would go to if its owner died
        owner = leases[app].owner
        assert owner is not None
        heirs = [me for me, apps in line.items() if app in apps]
        assert heirs == [preferred(app, [n for n in three if n.node_id != owner])]
    # a joining node is in line for the apps it prefers, held elsewhere until handed back
    joined = nodes("a", "b", "c", "d")
    line_d = next_in_line("d", APPS, joined, leases, held=())
    assert {app for app in APPS if preferred(app, joined) == "d"} <= set(line_d)
    free = {app: LeaseRow(app, None, 1, expired=False) for app in APPS}
    assert next_in_line("d", APPS, joined, free, held=()) == []  # free apps are just taken
