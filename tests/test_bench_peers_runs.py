"""The peer benchmark runs in --quick mode (real redis-servers, workers and a Node driver; this
checks that it runs, not speed): exit 0, one JSON line per case with a positive rate, the same
lines appended to --out, a ``skipped <peer>`` line for each peer left out, and no Redis data
directory left behind. Skipped only when redis-server is unavailable (not installed, and not
installable here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("arq", "saq", "taskiq", "bullmq")
CASES = {"peer_enqueue_one_producer", "peer_enqueue_concurrent", "peer_enqueue_bulk",
         "peer_end_to_end_noop"}


@pytest.mark.timeout(900)  # the first run may apt/pip/npm-install what it needs
def test_peer_benchmark_quick_run_reports_every_ready_peer(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_peers", "--quick", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=880,
                          env={**os.environ, "TMPDIR": str(scratch)}, check=False)
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    no_redis = [line for line in skipped if "redis-server unavailable" in line]
    if no_redis:
        pytest.skip(no_redis[0])

    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records, proc.stderr
    for record in records:
        assert record["case"] in CASES
        assert record["params"]["peer"] in PEERS
        assert record["params"]["fsync"] in {"always", "everysec"}
        assert record["quick"] is True
        figures = record["figures"]
        assert figures["ops_per_s"] > 0, record
        assert figures["ops"] == record["params"]["n"]
        assert figures["redis_cpu_share"] >= 0 and figures["aof_bytes_per_op"] > 0
    measured = {r["params"]["peer"] for r in records}
    for peer in PEERS:
        if peer not in measured:  # left out, and said why
            assert any(peer in line.split(":", 1)[0] for line in skipped), proc.stderr
    for peer in measured:
        rows = {(r["case"], r["params"]["fsync"], r["params"].get("producers"))
                for r in records if r["params"]["peer"] == peer}
        for fsync in ("always", "everysec"):
            assert {("peer_enqueue_one_producer", fsync, 1),
                    ("peer_enqueue_concurrent", fsync, 16),
                    ("peer_enqueue_concurrent", fsync, 64),
                    ("peer_end_to_end_noop", fsync, 1)} <= rows
            assert (("peer_enqueue_bulk", fsync, None) in rows) == (peer == "bullmq")
    assert out.read_text(encoding="utf-8").splitlines() == proc.stdout.splitlines()
    assert list(scratch.iterdir()) == []  # every Redis directory was removed
