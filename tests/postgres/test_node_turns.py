"""A node's turn (``Node.turn``) against a scripted connection: an app handed back while the
turn's renewal is on its way, or while the turn stops the apps it lost, is skipped, not a failed
turn. And which standbys a node reads, and when (``Node._keep_standbys``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from cloudqueue.engine.runtime.clock import FakeClock, SystemClock
from cloudqueue.engine.runtime.postgres import leases as sql
from cloudqueue.engine.runtime.postgres.node import STANDBY_CALM_MS, Node
from cloudqueue.engine.runtime.postgres.store import Lease


class Holder:
    def __init__(self) -> None:
        self.lost_calls = 0
        self.meanwhile: Any = None  # what happens while it stops

    async def acquired(self, lease: Lease) -> None:
        return None

    async def lost(self) -> None:
        self.lost_calls += 1
        if self.meanwhile is None:
            raise AssertionError("no app was taken over")
        self.meanwhile()

    async def handover(self) -> None:
        return None


class Conn:
    """Answers a turn's statements; the renewal also hands app ``b`` back meanwhile, as a
    ``_hand_back`` finishing while the statement runs does."""

    def __init__(self, renew_all: bool = True) -> None:
        self.node: Node
        self.renew_all = renew_all

    async def execute(self, query: str, *args: Any) -> str:
        return "OK"

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        if query == sql.RENEW:
            if not self.renew_all:
                return []  # both taken over
            renewed = [{"app_id": app_id} for app_id in args[2]]
            del self.node.held["b"]  # handed back while the renewal was on its way
            return renewed
        if query == sql.LIVE_NODES:
            return [{"node_id": self.node.node_id, "url": None, "apps": ["a", "b"], "warm": None}]
        if query == sql.LEASES:
            owner = self.node.node_id if self.renew_all else "other"
            return [{"app_id": app_id, "owner": owner if app_id == "a" else None,
                     "epoch": 1, "expired": False} for app_id in ("a", "b")]
        raise AssertionError(query)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return None  # a take: another node was quicker

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:  # (a take's)
        yield


class Pool:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        yield self.conn


async def test_an_app_handed_back_during_the_renewal_is_skipped() -> None:
    conn = Conn()
    clock = SystemClock()
    node = Node(Pool(conn), {"a": Holder(), "b": Holder()}, clock,  # type: ignore[arg-type]
                node_id="me")
    conn.node = node
    node.held = {"a": Lease("a", "me", 1, 0), "b": Lease("b", "me", 1, 0)}
    await node.turn()  # raised KeyError: 'b' before
    assert node.turns == 1
    assert list(node.held) == ["a"]
    assert node.held["a"].valid(clock.monotonic_ms())  # its renewal counted
    assert node.owners["a"].node_id == "me"


async def test_an_app_handed_back_while_the_turn_stops_a_lost_one_is_skipped() -> None:
    conn = Conn(renew_all=False)
    holders = {"a": Holder(), "b": Holder()}
    node = Node(Pool(conn), holders, SystemClock(), node_id="me")  # type: ignore[arg-type]
    conn.node = node
    node.held = {"a": Lease("a", "me", 1, 0), "b": Lease("b", "me", 1, 0)}
    holders["a"].meanwhile = lambda: node.held.pop("b")  # b's hand-back finishes meanwhile
    await node.turn()  # raised KeyError: 'b' before
    assert node.turns == 1 and node.held == {}
    assert (holders["a"].lost_calls, holders["b"].lost_calls) == (1, 0)
    assert node.owners["a"].node_id == "other"


class Warming:
    """A holder that keeps standbys: each ``warm`` reads (records it) and is ready."""

    def __init__(self, reads: list[str], app_id: str) -> None:
        self.reads, self.app_id = reads, app_id
        self.cooled = 0

    async def acquired(self, lease: Lease) -> None:
        return None

    async def lost(self) -> None:
        return None

    async def handover(self) -> None:
        return None

    async def warm(self) -> bool:
        self.reads.append(self.app_id)
        return True

    def cool(self) -> None:
        self.cooled += 1


async def test_standbys_are_read_one_at_a_time_and_against_a_death_only_when_calm() -> None:
    reads: list[str] = []
    clock = FakeClock()
    holders = {a: Warming(reads, a) for a in ("heir", "joining", "later")}
    node = Node(Pool(Conn()), holders, clock, node_id="me")  # type: ignore[arg-type]

    async def keep(apps: list[str], handovers: set[str]) -> None:
        node._keep_standbys(apps, handovers)
        await asyncio.gather(*node._warming.values())

    await keep(["heir", "joining"], {"joining"})
    assert reads == ["joining"]  # the app it waits to be handed first; one read at a time
    await keep(["heir", "joining"], {"joining"})
    assert reads == ["joining", "joining", "heir"]  # the first catches up; the other is read
    assert node.warm == {"heir", "joining"}
    node._moved_ms = clock.monotonic_ms()  # an app moved: not calm
    await keep(["heir", "joining", "later"], {"joining"})
    assert "later" not in reads  # a new standby against a death waits
    clock.advance(STANDBY_CALM_MS)
    await keep(["heir", "joining", "later"], {"joining"})
    assert reads[-1] == "later" and node.warm == {"heir", "joining", "later"}
    await keep(["joining"], {"joining"})  # the others went to other nodes' lines
    assert node.warm == {"joining"} and holders["heir"].cooled == 1
