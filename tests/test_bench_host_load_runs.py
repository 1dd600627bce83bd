"""The host-load benchmark runs in --quick mode (the queue and a load-sensitive function host as
real processes on loopback, a few hundred tasks per case: this checks that it runs and that its
figures hang together, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = [("host_fixed", 1), ("host_fixed", 16), ("host_fixed", 64), ("host_adaptive", 64)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[subprocess.CompletedProcess[str], Path]:
    out_dir = tmp_path_factory.mktemp("host-load")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_host_load", "--quick", "--out",
         str(out_dir / "results.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=200, check=False)
    return proc, out_dir


def _records(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.timeout(220)
def test_quick_run_has_every_case_in_one_run(
        quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out_dir = quick_run
    assert proc.returncode == 0, proc.stderr
    records = _records(proc)
    assert [(r["case"], r["params"]["concurrency"]) for r in records] == CASES
    assert [r["variant"] for r in records] == [
        "concurrency 1, fixed", "concurrency 16, fixed", "concurrency 64, fixed",
        "concurrency 64, adaptive"]
    assert (out_dir / "results.jsonl").read_text().splitlines() == proc.stdout.splitlines()
    assert "host errors" in proc.stderr  # the comparison table


@pytest.mark.timeout(220)
def test_quick_figures_are_sane(quick_run: tuple[subprocess.CompletedProcess[str], Path]
                                ) -> None:
    proc, out_dir = quick_run
    assert proc.returncode == 0, proc.stderr
    for record in _records(proc):
        f, params = record["figures"], record["params"]
        tasks = params["tasks"]
        assert record["quick"] is True and f["ops_per_s"] > 0
        assert f["acked"] == tasks and f["enqueue_errors"] == 0
        assert f["server_success"] == f["host_ok"] == tasks  # every task ran once, to success
        assert f["server_failed"] == f["server_unfinished"] == 0
        assert f["host_calls"] == f["host_ok"] + f["host_errors"]
        assert 0 < f["p50_us"] <= f["p99_us"] <= f["max_us"]
        assert 1 <= f["peak_in_flight"] <= params["concurrency"]
        assert 1 <= f["limit_max"] <= params["concurrency"]
        if params["host_concurrency"] == "fixed":
            assert f["limit_max"] == params["concurrency"]
        series = json.loads((out_dir / f"host-load-{params['host_concurrency']}-"
                                       f"{params['concurrency']}-quick.json").read_text())
        assert sum(row["ok"] for row in series["series"]) == tasks
        assert series["model"] == {"base_ms": 20.0, "capacity": 16, "penalty": 0.1,
                                   "hard_limit": 48}
    fixed_1 = _records(proc)[0]["figures"]
    assert fixed_1["peak_in_flight"] == 1 and fixed_1["host_errors"] == 0
