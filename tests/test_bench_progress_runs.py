"""The progress benchmark runs in --quick mode (1 s per case: this checks that it runs, not
speed): exit 0, one JSON line per case on stdout, the same lines appended to --out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (case, variant)
QUICK_CASES = [
    ("progress_absorb", "store=log,pace=tight"),
    ("progress_absorb", "store=memory,pace=tight"),
    ("progress_paced", "store=log,pace=50ms"),
]


def test_quick_run_prints_one_json_line_per_case(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_progress", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["case"], r["variant"]) for r in records] == QUICK_CASES
    for record in records:
        figures = record["figures"]
        assert record["quick"] is True
        assert record["commit"]
        assert record["params"]["tasks"] == 100
        assert figures["ops_per_s"] > 0
        assert figures["progress_records"] >= 100  # at least the first report of every task
        if record["params"]["store"] == "log":
            assert figures["log_bytes_grown"] > 0
            assert figures["last_logged_is_latest"] == 1.0
    assert out.read_text(encoding="utf-8").splitlines() == proc.stdout.splitlines()
