"""The console benchmark runs in --quick mode (2,000 tasks, 20 requests a case: this checks that
it runs and answers what it should, not speed): exit 0, one JSON line per case on stdout, the
same lines appended to --out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = ["http_floor", "overview", "list_first_page", "list_rare_state", "list_empty_state",
         "list_function", "list_deep_page", "list_time_window", "task_detail", "bulk_dry_run",
         "overview_body"]
LISTS = [name for name in CASES if name.startswith("list_")]


def test_quick_run_prints_one_json_line_per_case(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_console", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=45, check=False)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["case"] for r in records] == CASES
    by_case = {r["case"]: r for r in records}
    states = records[0]["states"]
    assert sum(states.values()) == 2_000
    assert states["queued"] and states["retry_wait"] and states["failed"] and states["success"]
    assert states["running"] == 0  # dispatch is paused: list_empty_state matches nothing
    for record in records:
        figures = record["figures"]
        assert record["quick"] is True and record["commit"] and record["variant"]
        assert record["params"]["tasks"] == 2_000
        assert record["states"] == states
        assert figures["tasks_held"] == 2_000
        assert figures["ops"] >= 1 and figures["p50_us"] > 0 and figures["max_us"] > 0
        assert 0 < figures["cpu_share"] <= 1.5
        assert figures["answer_bytes"] > 0
    for name in LISTS:
        figures = by_case[name]["figures"]
        assert figures["engine_us"] > 0 and figures["passed_over"] >= figures["shown"]
    assert by_case["list_first_page"]["figures"]["shown"] == 50
    assert by_case["list_first_page"]["figures"]["count"] == 2_000
    assert by_case["list_rare_state"]["figures"]["count"] == states["retry_wait"]
    empty = by_case["list_empty_state"]["figures"]
    assert empty["shown"] == 0 and empty["passed_over"] == 2_000  # the whole table walked
    assert by_case["list_deep_page"]["figures"]["cursor_depth"] >= 1_000
    assert by_case["list_deep_page"]["figures"]["passed_over"] > 1_000
    assert by_case["list_time_window"]["figures"]["shown"] == 50
    assert by_case["bulk_dry_run"]["figures"]["matched"] == states["failed"]  # counts exactly
    assert by_case["overview"]["figures"]["series_points"] > 0
    assert by_case["overview_body"]["figures"]["json_us"] > 0
    assert out.read_text(encoding="utf-8").splitlines() == proc.stdout.splitlines()
