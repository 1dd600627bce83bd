"""The README's runnable example works, twice over the same data directory."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(data_dir: Path) -> list[str]:
    env = {**os.environ, "CLOUDQUEUE_DATA": str(data_dir), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "cloudqueue", "demo"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_embedded_quickstart_runs_its_tasks_and_replays_on_the_second_run(tmp_path: Path) -> None:
    first = run_example(tmp_path / "data")
    assert "replayed 0 records from 0 segment(s)" in first[0]
    infos = [ast.literal_eval(line) for line in first[1:]]
    assert [(i["status"], i["function"]) for i in infos] == [
        ("success", "resize"), ("success", "flaky"), ("success", "resize")]
    assert infos[1]["result"] == {"result": "done on attempt 2"}
    second = run_example(tmp_path / "data")
    assert "replayed 12 records" in second[0]  # 11 + the logged wake of the retry
