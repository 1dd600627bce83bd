"""The burst benchmark runs in --quick mode (three real processes on loopback, 200/s for 2 s plus
two short bends, and 200/s over two nodes sharing a PostgreSQL cluster: this checks that it runs
and that its figures hang together, not speed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICK_RATES = [("burst", 200), ("burst_bend", 500), ("burst_bend", 1000), ("burst_fixed", 200),
               ("burst_two_nodes", 200)]
STEMS = ["burst-200-quick", "burst-500-quick", "burst-1000-quick", "burst-200-fixed-quick",
         "burst-200-nodes2-quick"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[subprocess.CompletedProcess[str], Path]:
    out_dir = tmp_path_factory.mktemp("burst")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_burst", "--quick", "--out",
         str(out_dir / "results.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    return proc, out_dir


def _records(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.timeout(260)
def test_quick_run_exits_zero_with_one_record_per_case(
        quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out_dir = quick_run
    assert proc.returncode == 0, proc.stderr
    records = _records(proc)
    assert [(r["case"], r["params"]["rate_per_s"]) for r in records] == QUICK_RATES
    assert [r["params"]["adaptive_concurrency"] for r in records] == [True] * 3 + [False, True]
    assert (out_dir / "results.jsonl").read_text().splitlines() == proc.stdout.splitlines()


@pytest.mark.timeout(260)
def test_quick_figures_are_sane(quick_run: tuple[subprocess.CompletedProcess[str], Path]
                                ) -> None:
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stderr
    for record in _records(proc):
        figures = record["figures"]
        assert record["quick"] is True
        assert figures["ops_per_s"] > 0
        assert figures["acked"] > 0 and figures["errors"] == 0
        assert 0 < figures["p50_us"] <= figures["p99_us"] <= figures["max_us"]
        assert figures["acked"] + figures["dropped"] + figures["unsent"] <= record["params"]["n"]
        assert figures["drained"] == 1 and figures["drain_s"] >= 0
        assert figures["server_success"] == figures["acked"]
        assert figures["server_unfinished"] == 0
        assert figures["peak_depth"] >= 0
        verdict = record["burst_verdict"]
        assert verdict["p99_ms"] == pytest.approx(figures["p99_us"] / 1000, abs=0.01)
        assert "target" not in record  # the target is held against the full run only


@pytest.mark.timeout(260)
def test_quick_run_writes_the_time_series_and_the_plot(
        quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out_dir = quick_run
    assert proc.returncode == 0, proc.stderr
    for stem in STEMS:
        series = json.loads((out_dir / f"{stem}.json").read_text())
        rows = series["series"]
        assert series["bucket_ms"] == 100 and rows
        assert {"t_s", "sent", "acked", "completed", "ack_p99_ms", "depth"} <= set(rows[0])
        assert sum(row["acked"] for row in rows) == series["figures"]["acked"]
        assert max(row["depth"] for row in rows) <= series["figures"]["peak_depth"]
        assert rows[-1]["depth"] == 0  # drained
        png = out_dir / f"{stem}.png"
        if importlib.util.find_spec("matplotlib") is not None:
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
