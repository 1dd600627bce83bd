"""The embedded benchmark runs in --quick mode (tiny sizes: this checks that it runs, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (case, store, the parameter that tells its variants apart)
QUICK_CASES = {
    ("enqueue_one_producer", "memory", 1),
    ("enqueue_concurrent", "memory", 16),
    ("enqueue_concurrent", "memory", 64),
    ("end_to_end_noop", "memory", 1),
    ("end_to_end_noop", "memory", 16),
    ("end_to_end_noop", "memory", 256),
    ("end_to_end_noop", "log", 1),
    ("end_to_end_noop", "log", 16),
    ("end_to_end_noop", "log", 256),
    ("core_submit_tick", "none", 1),
    ("core_submit_tick", "none", 256),
    ("enqueue_metrics", "memory", 1),
    ("enqueue_metrics", "memory", 64),
    ("enqueue_metrics", "log", 64),
    ("metrics_scrape", "memory", 2_000),
}


def _run_bench(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_embedded", "--quick", "--out", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=45, check=False)


def _key(record: dict[str, Any]) -> tuple[str, str, int]:
    params = record["params"]
    if record["case"] == "end_to_end_noop":
        return record["case"], params["store"], params["concurrency"]
    if record["case"] == "metrics_scrape":
        return record["case"], params["store"], params["held"]
    return record["case"], params["store"], params.get("producers", params.get("concurrency"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                                  Path]:
    out = tmp_path_factory.mktemp("bench") / "results.jsonl"
    return _run_bench(out), out


def test_quick_run_exits_zero(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stderr


def test_quick_run_prints_one_json_line_per_case(
        quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = quick_run
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(_key(r) for r in records) == sorted(QUICK_CASES)
    for record in records:
        assert record["quick"] is True
        assert record["figures"]["ops_per_s"] > 0
        assert record["commit"]
        assert record["params"]["store"] in {"memory", "log", "none"}


def test_quick_run_appends_the_same_lines_to_the_results_file(
        quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = quick_run
    assert out.read_text(encoding="utf-8").splitlines() == proc.stdout.splitlines()


def test_case_flag_runs_only_the_named_case(tmp_path: Path) -> None:
    proc = _run_bench(tmp_path / "core.jsonl", "--case", "core_submit_tick")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(_key(r) for r in records) == [("core_submit_tick", "none", 1),
                                                ("core_submit_tick", "none", 256)]
