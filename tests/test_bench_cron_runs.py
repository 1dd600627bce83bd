"""The schedules-at-scale benchmark runs in --quick mode (1,000 schedules, 3 s windows: this
checks that it runs and that no firing is doubled, not speed): exit 0, one JSON line per case on
stdout, the same lines appended to --out, and no data directory left behind under --tmp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(90)
def test_quick_run_prints_one_json_line_per_case(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    scratch = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_cron", "--quick", "--out", str(out),
         "--tmp", str(scratch)],
        cwd=ROOT, capture_output=True, text=True, timeout=80, check=False)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["case"], r["params"]["store"]) for r in records] == [
        ("cron_scale", "log"), ("cron_scale", "memory")]
    for record in records:
        figures = record["figures"]
        assert record["quick"] is True
        assert record["params"]["schedules"] == 1000
        assert figures["ops"] > 0 and figures["expected_per_s"] > 0
        assert figures["doubled"] == 0 and figures["unexpected"] == 0
        assert 0 < figures["cpu_share"] and figures["lateness_p99_ms"] >= 0
        assert figures["next_fire_calls"] > 0
        assert record["commit"]
    assert "records_per_fsync" in records[0]["figures"]
    assert out.read_text(encoding="utf-8").splitlines() == proc.stdout.splitlines()
    assert list(scratch.iterdir()) == []  # the data directories were removed
