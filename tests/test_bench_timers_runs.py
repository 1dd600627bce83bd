"""bench_timers runs in --quick mode, and no timer fires early (the one property it checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_reports_lateness_and_nothing_early(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_timers", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["case"] for r in records] == ["delay_lateness", "retry_lateness"]
    for record in records:
        figures = record["figures"]
        assert figures["ops"] == record["params"]["n"]
        assert 0 <= figures["p50_us"] <= figures["p99_us"] <= figures["max_us"]
        assert figures["early"] == 0
    assert out.read_text().count("\n") == 2
