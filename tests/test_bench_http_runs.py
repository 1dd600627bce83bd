"""The HTTP benchmark runs in --quick mode (a real server process; checks it runs, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_http_benchmark_quick_run_reports_every_case(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_http", "--quick", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {(r["params"]["server"], r["params"]["concurrency"], r["params"]["client"])
            for r in records} == {(server, clients, client) for server in ("queue", "aiohttp_noop")
                                  for clients in (16, 64) for client in ("raw", "aiohttp")}
    assert all(r["figures"]["ops"] == 300 and r["figures"]["p99_us"] > 0 for r in records)
    assert len(out.read_text().splitlines()) == 8
