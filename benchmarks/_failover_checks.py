"""The failover benchmark's bookkeeping: the record file, the cluster's view of itself, the final
verdict on every acknowledged task, and the cron schedule's slots. Pure functions where it can
(tested through the benchmark's quick run)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import time
from array import array
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks._harness import percentile
from cloudqueue.engine.runtime.postgres.leases import rank

now_ns = time.monotonic_ns
FINAL = frozenset({"success", "failed", "cancelled"})
# an acknowledged task the queue no longer holds, invoked before: it ran, and was kept its
# keepResult (the audit's state for it: ``account``)
EXPIRED = "expired"
CATCH_UP_MS = 250  # a firing created this late after its slot was a catch-up (timers: ~ms)


# ---------------------------------------------------------------------- the record file


class RecordTail:
    """Follows the invocation record file (``<uniqueId> <attempt> <monotonic_ns>`` lines) as
    the host appends to it: the first time each uniqueId of interest was invoked, the first
    invocation after a moment with a given prefix, and when each app's load tasks (uniqueIds
    ``L<app>-<i>``, ``M<app>-<i>``) were invoked (one host process appends them in the order of
    its clock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.first: dict[str, int] = {}
        self.lines = 0
        self.watch_prefixes: tuple[str, ...] = ("p",)  # probes; more may be added
        self.latest: list[tuple[str, int]] = []  # (uid, ns) of watched prefixes, in order
        self.app_times: dict[int, array[int]] = {}  # app index -> invocation times, in order

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            self.lines += 1
            uid, _, rest = raw.decode().partition(" ")
            if uid[:1] in ("L", "M"):
                app = int(uid[1:uid.index("-")])
                times = self.app_times.get(app)
                if times is None:
                    times = self.app_times[app] = array("q")
                times.append(int(rest.rsplit(" ", 1)[1]))
            elif uid.startswith(self.watch_prefixes):
                at = int(rest.rsplit(" ", 1)[1])
                self.first.setdefault(uid, at)
                self.latest.append((uid, at))

    async def first_run(self, uid: str, deadline_ns: int) -> int | None:
        """When ``uid`` was first invoked (CLOCK_MONOTONIC ns), waiting until ``deadline_ns``."""
        while True:
            self.poll()
            if uid in self.first:
                return self.first[uid]
            if now_ns() >= deadline_ns:
                return None
            await asyncio.sleep(0.02)

    def app_invoked_after(self, app: int, after_ns: int) -> int | None:
        """The first invocation of one of app ``app``'s load tasks after ``after_ns``."""
        self.poll()
        times = self.app_times.get(app)
        if times is None:
            return None
        at = bisect.bisect_right(times, after_ns)
        return times[at] if at < len(times) else None

    def first_after(self, prefix: str, after_ns: int) -> int | None:
        self.poll()
        return next((at for uid, at in self.latest if at > after_ns and uid.startswith(prefix)),
                    None)


def account(acked: Iterable[str], held: Mapping[str, str], invoked: Container[str],
            seen_failed: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """Every acknowledged task's state for the audit, when tasks leave the queue within the run
    (``keepResult`` shorter than it): the state the queue holds at the end (``held``); else, if
    the host invoked it, ``EXPIRED`` (it ran, and was kept its keepResult); else the final state
    a listing of the app's failed tasks showed during the run (``seen_failed``: an atMostOnce
    task whose run was lost fails without an invocation). A task none of these accounts for is
    left out: the audit asks the queue for it, and counts it lost if it is gone. Also returns
    how many were ``EXPIRED``."""
    states = dict(held)
    gone = 0
    for uid in acked:
        if uid not in states:
            if uid in invoked:
                states[uid] = EXPIRED
                gone += 1
            elif uid in seen_failed:
                states[uid] = seen_failed[uid]
    return states, gone


def read_invocations(path: Path) -> Counter[str]:
    """How many times each uniqueId was invoked (lines of the record file)."""
    counts: Counter[str] = Counter()
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for raw in f:
            uid = raw.split(b" ", 1)[0].decode()
            if uid:
                counts[uid] += 1
    return counts


# ---------------------------------------------------------------------- the cluster's view


@dataclass(frozen=True, slots=True)
class NodeView:
    index: int
    status: int  # of GET /__health/ready
    node_id: str
    dispatching: Mapping[str, str | None]
    standby_of: frozenset[str] = frozenset()  # the apps it keeps a ready standby of


def preferred(app_id: str, node_ids: Iterable[str]) -> str:
    """The node rendezvous hashing gives ``app_id`` among ``node_ids`` (``leases.preferred``)."""
    return max(node_ids, key=lambda node_id: rank(app_id, node_id))


def settled(views: Sequence[NodeView | None], apps: Sequence[str], expected: int) -> bool:
    """Every one of ``expected`` nodes answered ready, and each app is dispatched by the node it
    prefers among them, by that node's own word and in every node's view."""
    present = [v for v in views if v is not None and v.status == 200]
    if len(present) != expected or len({v.node_id for v in present}) != expected:
        return False
    ids = [v.node_id for v in present]
    for app in apps:
        want = preferred(app, ids)
        if any(v.dispatching.get(app) != want for v in present):
            return False
    return True


def owners(views: Sequence[NodeView | None], apps: Sequence[str]) -> dict[str, int]:
    """app -> the index of the node that says it dispatches it."""
    found = {}
    for view in views:
        if view is None:
            continue
        for app in apps:
            if view.dispatching.get(app) == view.node_id:
                found[app] = view.index
    return found


# ---------------------------------------------------------------------- statistics


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50 / p99 / max (nearest rank) of ``values`` and how many, rounded."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {"n": len(ordered), "p50": round(percentile(ordered, 50), 1),
            "p99": round(percentile(ordered, 99), 1), "max": round(ordered[-1], 1)}


def answers_between(buckets: Sequence[tuple[int, Mapping[str, int]]], t0_ns: int,
                    bucket_ns: int, windows: Iterable[tuple[int, int]]) -> Counter[str]:
    """The load's answers (by status or failure) that arrived inside any of ``windows``
    (monotonic ns), from its 100 ms buckets (a bucket counts if it overlaps a window)."""
    total: Counter[str] = Counter()
    spans = [((start - t0_ns) // bucket_ns, (end - t0_ns) // bucket_ns) for start, end in windows]
    for bucket, counts in buckets:
        if any(lo <= bucket <= hi for lo, hi in spans):
            total.update(counts)
    return total


# ---------------------------------------------------------------------- the verdict on tasks


@dataclass
class TaskAudit:
    """Every acknowledged task against the queue's final word on it and the host's record."""

    acked: int = 0
    missing: list[str] = field(default_factory=list)  # acknowledged, absent (404)
    unfinished: list[str] = field(default_factory=list)  # acknowledged, not final at the end
    states: Counter[str] = field(default_factory=Counter)  # final state of the acked, by mode
    at_most_once_twice: list[str] = field(default_factory=list)  # any M uid invoked > 1
    at_least_once_reruns: int = 0  # L uids invoked more than once (allowed)
    success_never_invoked: list[str] = field(default_factory=list)
    invoked_not_acked: int = 0  # invoked, never acknowledged (a 502/503/broken answer)
    invocations: int = 0

    @property
    def lost(self) -> int:
        return len(self.missing) + len(self.unfinished)

    def figures(self) -> dict[str, Any]:
        return {"acked": self.acked, "lost": self.lost, "missing": len(self.missing),
                "unfinished": len(self.unfinished), "states": dict(self.states),
                "at_most_once_twice": len(self.at_most_once_twice),
                "at_least_once_reruns": self.at_least_once_reruns,
                "success_never_invoked": len(self.success_never_invoked),
                "invoked_not_acked": self.invoked_not_acked, "invocations": self.invocations,
                "examples": {"missing": self.missing[:10], "unfinished": self.unfinished[:10],
                             "at_most_once_twice": self.at_most_once_twice[:10],
                             "success_never_invoked": self.success_never_invoked[:10]}}


def audit(acked: Iterable[str], states: Mapping[str, str], invocations: Counter[str]
          ) -> TaskAudit:
    """``states``: uid -> state (``"404"`` for a task the queue does not know)."""
    result = TaskAudit(invocations=sum(invocations.values()))
    acked_set = set()
    for uid in acked:
        acked_set.add(uid)
        state = states.get(uid, "404")
        mode = "atMostOnce" if uid.startswith("M") else "atLeastOnce"
        if state == "404":
            result.missing.append(uid)
        elif state not in FINAL and state != EXPIRED:
            result.unfinished.append(uid)
        else:
            result.states[f"{mode}:{state}"] += 1
            if state == "success" and invocations.get(uid, 0) == 0:
                result.success_never_invoked.append(uid)
    result.acked = len(acked_set)
    for uid, count in invocations.items():
        if uid.startswith("M") and count > 1:
            result.at_most_once_twice.append(uid)
        elif uid.startswith("L") and count > 1:
            result.at_least_once_reruns += 1
        if uid[:1] in ("L", "M") and uid not in acked_set:
            result.invoked_not_acked += 1
    return result


# ---------------------------------------------------------------------- the cron slots


def epoch_ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Outage:
    """One kill of the node dispatching the schedule's app: when (wall ms), and when the next
    firing was recorded (wall ms; None: never)."""

    killed_ms: int
    resumed_ms: int | None


def slot_audit(name: str, first_slot_ms: int, last_slot_ms: int, end_ms: int, period_ms: int,
               tasks: Mapping[str, Mapping[str, Any]], invocations: Counter[str],
               outages: Sequence[Outage]) -> dict[str, Any]:
    """Each slot from ``first_slot_ms`` to ``last_slot_ms``: fired (its task exists), invoked
    (how often), late (created ``CATCH_UP_MS`` or more after its slot: a catch-up). Every slot
    must be fired once: a slot that fell inside an outage (from a period before the kill to the
    firing after it) is fired late by the new owner, which fires every slot the app missed
    during a failover (docs/protocol.md §1.10). A slot not fired is *missed* (``in_outages``:
    how many of those fell inside one, a hint at the cause). A firing for a slot before the
    first or after ``end_ms`` (the schedule paused) should not exist."""
    expected = list(range(first_slot_ms, last_slot_ms + 1, period_ms))
    prefix = f"cron:{name}:"
    fired = {int(uid[len(prefix):]): info for uid, info in tasks.items()
             if uid.startswith(prefix)}
    missed = [s for s in expected if s not in fired]
    windows = [(o.killed_ms - period_ms, o.resumed_ms if o.resumed_ms is not None
                else last_slot_ms + period_ms) for o in outages]
    in_outages = [s for s in missed if any(lo <= s <= hi for lo, hi in windows)]
    late = sorted(s for s, info in fired.items()
                  if "createdAt" in info and epoch_ms(info["createdAt"]) - s >= CATCH_UP_MS)
    invoked = {s: invocations.get(f"{prefix}{s}", 0) for s in expected}
    doubled = [s for s, n in invoked.items() if n > 1]
    reruns_lost = [s for s in doubled
                   if any(r.get("outcome") == "lost" for r in fired.get(s, {}).get("runs", []))]
    per_outage = []
    for (lo, hi), outage in zip(windows, outages, strict=True):
        inside = [s for s in expected if lo < s <= hi]
        after = [s for s in sorted(fired) if s > outage.killed_ms - period_ms
                 and "createdAt" in fired[s] and epoch_ms(fired[s]["createdAt"]) > outage.killed_ms]
        first = after[0] if after else None
        per_outage.append({"killed_ms": outage.killed_ms, "resumed_ms": outage.resumed_ms,
                           "slots": len(inside),
                           "fired": sum(1 for s in inside if s in fired),
                           "missed": sum(1 for s in inside if s not in fired),
                           "first_slot_after": first,
                           "first_late_ms": epoch_ms(fired[first]["createdAt"]) - first
                           if first is not None else None})
    return {
        "expected": len(expected), "fired": sum(1 for s in expected if s in fired),
        "fired_once": sum(1 for s in expected if s in fired and invoked[s] == 1),
        "fired_not_invoked": sum(1 for s in expected if s in fired and invoked[s] == 0),
        "invoked_twice": len(doubled), "invoked_twice_after_lost_run": len(reruns_lost),
        "missed": len(missed), "missed_in_outages": len(in_outages), "catch_ups": len(late),
        "outside_range": sum(1 for s in fired if s < first_slot_ms or s > end_ms),
        "examples": {"missed": missed[:10], "doubled": doubled[:10],
                     "late": late[:10]},
        "outages": per_outage}


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
