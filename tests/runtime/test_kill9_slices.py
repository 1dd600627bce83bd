"""kill -9 between continuation slices: the restart resumes from the last stored checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("slices_child.py")
EXPECTED = {"sum": sum(n * n for n in range(1, 41)), "n": 40}


def start(data: Path, log: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(CHILD), str(data), str(log), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def slices_logged(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.timeout(120)
def test_a_kill_between_slices_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "slices.log"
    child = start(data, log, "enqueue")
    try:
        deadline = time.monotonic() + 30
        while len(slices_logged(log)) < 12:  # let a dozen slices run, then kill -9
            assert time.monotonic() < deadline and child.poll() is None, "the child stopped"
            time.sleep(0.005)  # polling a real child process's output file
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)  # reap it and close its pipes
        assert child.returncode == -signal.SIGKILL
        before = slices_logged(log)
        child = start(data, log)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    assert child.returncode == 0, err
    done = [line for line in out.splitlines() if line.startswith("DONE ")]
    assert json.loads(done[0][len("DONE "):]) == EXPECTED  # as an uninterrupted run
    after = slices_logged(log)[len(before):]
    first_after = int(after[0].split()[1])
    # the restart resumed near where it stopped (at most the slice in flight ran again), not at 0
    assert len(before) - 2 <= first_after <= len(before)
    assert int(after[-1].split()[1]) == 39
