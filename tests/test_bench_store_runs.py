"""The PostgreSQL store's benchmarks run in --quick mode (tiny sizes: this checks that they run,
not speed): ``bench_store`` prints one JSON line per case and the PostgreSQL/log ratios;
``bench_pg_soak`` (slow lane: 2.5 minutes) holds a transaction past the alarm's age and finds
the alarm naming its holder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pg_cluster

ROOT = Path(__file__).resolve().parent.parent


def test_bench_store_quick_runs(tmp_path: Path) -> None:
    pg_cluster.cluster()  # skips (or fails, in CI) without PostgreSQL
    out = tmp_path / "results.jsonl"
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_store", "--quick", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    cases = {(r["case"], r["params"].get("store"), r["params"].get("producers")) for r in records}
    assert cases == {("raw_commit", None, None)} | {
        (case, store, producers) for store in ("log", "postgresql")
        for case, producers in (("enqueue", 1), ("enqueue", 64), ("end_to_end_noop", None),
                                ("paced_start_latency", None))}
    assert all(r["figures"]["ops_per_s"] > 0 for r in records)
    assert "enqueue64: postgresql / log = " in done.stderr
    assert len(out.read_text().splitlines()) == len(records)


@pytest.mark.slow
def test_bench_pg_soak_quick_names_the_holder(tmp_path: Path) -> None:
    pg_cluster.cluster()
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_pg_soak", "--quick", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    hold = result["hold"]
    assert hold["alarm"] is not None and "soak-held-transaction" in hold["alarm"]
    assert f"pg_terminate_backend({hold['pid']})" in hold["alarm"]
    assert 60 <= hold["alarm_after_s"] < 80  # the node checks every 10 s
    assert all(step["started"] > 0 for step in result["steps"])
