"""The durable-log benchmark runs in --quick mode (tiny sizes: this checks that it runs, not
speed): exit 0, one JSON line per case on stdout, the same lines appended to --out, and no data
directory left behind under --tmp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (case, variant)
QUICK_CASES = [
    ("durable_enqueue", "producers=1"),
    ("durable_enqueue", "producers=16"),
    ("durable_enqueue", "producers=64"),
    ("durable_enqueue", "producers=256"),
    ("durable_enqueue_policy", "fsync=interval:100,producers=64"),
    ("durable_enqueue_policy", "fsync=never,producers=64"),
    ("enqueue_bulk", "items_per_call=1000"),
    ("enqueue_bulk", "items_per_call=10000"),
    ("replay_rate", "read_log"),
    ("replay_rate", "engine_start"),
    ("restart_with_snapshot", "tasks=2000"),
    ("restart_finished", "log,tasks=2000"),
    ("restart_finished", "snapshot,tasks=2000"),
    ("memory_per_task", "tasks=5000"),
]


def test_quick_run_prints_one_json_line_per_case(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    scratch = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_log", "--quick", "--out", str(out),
         "--tmp", str(scratch)],
        cwd=ROOT, capture_output=True, text=True, timeout=45, check=False)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["case"], r["variant"]) for r in records] == QUICK_CASES
    for record in records:
        assert record["quick"] is True
        assert record["params"]["store"] == "log"
        assert record["figures"]["ops_per_s"] > 0
        assert record["commit"]
    by_case = {(r["case"], r["variant"]): r["figures"] for r in records}
    assert by_case[("durable_enqueue", "producers=1")]["records_per_fsync"] == 1.0
    assert by_case[("memory_per_task", "tasks=5000")]["bytes_per_task_beyond_params"] > 0
    assert out.read_text(encoding="utf-8").splitlines() == proc.stdout.splitlines()
    assert list(scratch.iterdir()) == []  # every data directory was removed
