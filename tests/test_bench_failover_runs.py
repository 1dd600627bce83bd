"""The failover benchmark runs in --quick mode (real processes: a throwaway PostgreSQL, three
`cloudqueue serve` nodes, a function host and a load process; 3 node kills, 2 SIGSTOPs, 2
PostgreSQL kills, then a minute of a schedule firing every second while its node is killed
twice). This checks what the benchmark exists to show, not speed: no acknowledged task lost, no
atMostOnce task invoked twice, every app running again after every round, no schedule slot
missed outside an outage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cloudqueue.engine.runtime.postgres.local import PostgresMissingError, server_bindir

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[subprocess.CompletedProcess[str], Path]:
    try:
        server_bindir()
    except PostgresMissingError as exc:
        pytest.skip(str(exc))
    out_dir = tmp_path_factory.mktemp("failover")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_failover", "--quick", "--out",
         str(out_dir / "results.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=540, check=False)
    return proc, out_dir


def _records(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {r["case"]: r for r in map(json.loads, proc.stdout.splitlines())}


@pytest.mark.timeout(600)
def test_no_acknowledged_task_is_lost_and_no_at_most_once_task_runs_twice(
        quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out_dir = quick_run
    assert proc.returncode == 0, proc.stderr[-6000:]
    records = _records(proc)
    assert set(records) == {"failover", "failover_cron"}
    figures = records["failover"]["figures"]
    assert figures["acked"] > 1_000
    assert figures["lost"] == 0
    assert figures["at_most_once_twice"] == 0
    assert figures["success_never_invoked"] == 0
    assert records["failover"]["verdict"]["passed"] is True
    document = json.loads((out_dir / "failover-quick.json").read_text())["failover"]
    for kind, rounds in (("kill", 3), ("sigstop", 2), ("pg_kill", 2)):
        phase = document["phases"][kind]
        assert phase["rounds"] == rounds and phase["recovered"] == rounds  # every app ran again
    checks = document["checks"]
    assert checks["tasks"]["missing"] == 0
    assert checks["disagreements"] == 0  # the task list and GET agree
    # keepResult 40 s: tasks ran and left the queue within the run; the failed ones (atMostOnce
    # runs lost) were listed while it held them
    assert checks["keep_result_ms"] == 40_000 and checks["expired_after_running"] > 1_000
    assert checks["failed_lists"]["sweeps"] >= 3


@pytest.mark.timeout(600)
def test_every_schedule_slot_fires_once_across_leader_kills(
        quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out_dir = quick_run
    assert proc.returncode == 0, proc.stderr[-6000:]
    cron = json.loads((out_dir / "failover-quick.json").read_text())["failover_cron"]
    slots = cron["slots"]
    assert len(cron["kills"]) == 2
    assert slots["expected"] >= 50 and slots["fired"] == slots["expected"]
    assert slots["missed"] == 0 and slots["outside_range"] == 0
    assert slots["catch_ups"] >= 2  # the slots of each outage, fired late by the new owner
    assert slots["invoked_twice"] == slots["invoked_twice_after_lost_run"]
    assert cron["verdict"]["passed"] is True
