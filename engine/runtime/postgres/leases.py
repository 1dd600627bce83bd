"""Which node dispatches which app: the plan (pure) and the statements behind it.

Every node serving the same apps runs the same plan over the same view of the database (the
nodes alive, the apps' leases): an app's preferred node is the live node serving it that ranks
highest for it by rendezvous hashing (a hash of app and node), so apps spread evenly over the
nodes and only the apps of a node that comes or goes move. A node takes an app it prefers once
its lease is free or expired, and hands back an app another live node prefers (a node that
joined), so that node takes it at its next turn.

A lease row names its owner, an epoch bumped at every takeover (the fence of the owner's
writes: ``store.INSERT_BATCH``) and an expiry in the database's time; the owner renews all its
leases in one statement each turn. Times are the database's (``now()``), so the nodes' clocks
need not agree; a node's own deadline for starting runs is on its monotonic clock
(``store.Lease``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    url: str | None
    apps: frozenset[str]
    # the apps it keeps a standby of, ready to take (None: it keeps none; ``standby.py``)
    warm: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class LeaseRow:
    app_id: str
    owner: str | None
    epoch: int
    expired: bool

    @property
    def free(self) -> bool:
        return self.owner is None or self.expired


@dataclass(frozen=True, slots=True)
class Plan:
    take: list[str] = field(default_factory=list)
    release: list[str] = field(default_factory=list)


def rank(app_id: str, node_id: str) -> bytes:
    return hashlib.blake2b(f"{app_id}\0{node_id}".encode(), digest_size=8).digest()


def preferred(app_id: str, nodes: Iterable[NodeRow]) -> str | None:
    """The live node serving ``app_id`` that ranks highest for it; None if none serves it."""
    serving = [n.node_id for n in nodes if app_id in n.apps]
    return max(serving, key=lambda node_id: rank(app_id, node_id)) if serving else None


def plan(me: str, apps: Iterable[str], nodes: Iterable[NodeRow],
         leases: Mapping[str, LeaseRow], held: Iterable[str],
         overdue: Collection[str] = ()) -> Plan:
    """What node ``me`` does this turn: take the free apps it prefers, release the apps it holds
    that another live node prefers, once that node has a standby of the app ready (it takes it
    over in a moment, instead of reading it whole while the app waits), or keeps none, or the
    app is ``overdue`` (it has waited long enough). ``nodes``: those alive (``me`` among
    them)."""
    live = list(nodes)
    rows = {n.node_id: n for n in live}
    holding = set(held)
    result = Plan()
    for app_id in apps:
        want = preferred(app_id, live)
        if app_id in holding:
            if want is not None and want != me:
                warm = rows[want].warm
                if warm is None or app_id in warm or app_id in overdue:
                    result.release.append(app_id)
            continue
        row = leases.get(app_id)
        if want == me and (row is None or row.free or row.owner == me):
            result.take.append(app_id)
    return result


def next_in_line(me: str, apps: Iterable[str], nodes: Iterable[NodeRow],
                 leases: Mapping[str, LeaseRow], held: Iterable[str]) -> list[str]:
    """The apps another node dispatches that node ``me`` would take next: the one it prefers
    (waiting for a handover), or the one it would go to if its owner died. ``me`` keeps a
    standby of each."""
    live = list(nodes)
    holding = set(held)
    found = []
    for app_id in apps:
        row = leases.get(app_id)
        if app_id in holding or row is None or row.free:
            continue
        others = [n for n in live if n.node_id != row.owner]
        if preferred(app_id, others) == me:
            found.append(app_id)
    return found


# ---------------------------------------------------------------------- statements

HEARTBEAT = """
INSERT INTO cq_nodes (node_id, url, apps, warm) VALUES ($1, $2, $3, $4)
ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now(), url = $2, apps = $3, warm = $4
"""
LIVE_NODES = """
SELECT node_id, url, apps, warm FROM cq_nodes
 WHERE heartbeat_at > now() - make_interval(secs => $1::float8 / 1000)
"""
LEASES = """
SELECT app_id, owner, epoch, expires_at < now() AS expired FROM cq_leases
 WHERE app_id = ANY($1::text[])
"""
# taken first in a takeover's transaction: waits for the batches being inserted to commit, and
# holds new ones back until the epoch has moved (store.py: the fence)
TAKE_LOCK = "LOCK TABLE cq_batches IN SHARE MODE"
# a takeover: free, expired, or already this node's (a new epoch either way); also how long
# ago the previous lease ended (released or expired; NULL: the app had none), in ms
TAKE = """
WITH before AS (SELECT expires_at FROM cq_leases WHERE app_id = $1)
INSERT INTO cq_leases AS l (app_id, owner, epoch, expires_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3::float8 / 1000))
ON CONFLICT (app_id) DO UPDATE
   SET owner = $2, epoch = l.epoch + 1,
       expires_at = now() + make_interval(secs => $3::float8 / 1000)
 WHERE l.owner IS NULL OR l.expires_at < now() OR l.owner = $2
RETURNING epoch,
          (SELECT extract(epoch FROM now() - b.expires_at)::float8 * 1000 FROM before b
            WHERE isfinite(b.expires_at)) AS ended_ms_ago
"""
RENEW = """
UPDATE cq_leases AS l SET expires_at = now() + make_interval(secs => $2::float8 / 1000)
  FROM unnest($3::text[], $4::bigint[]) AS held(app_id, epoch)
 WHERE l.app_id = held.app_id AND l.epoch = held.epoch AND l.owner = $1
RETURNING l.app_id
"""
# free at once (no owner); the expiry says when it ended (a handover, not an outage: TAKE)
RELEASE = """
UPDATE cq_leases SET owner = NULL, expires_at = now()
 WHERE app_id = $1 AND owner = $2 AND epoch = $3
"""
LEAVE = "DELETE FROM cq_nodes WHERE node_id = $1"
FORGET_DEAD_NODES = """
DELETE FROM cq_nodes WHERE heartbeat_at < now() - interval '1 day'
"""
