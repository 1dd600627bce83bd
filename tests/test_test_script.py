"""``scripts/test.sh`` when chromium cannot be installed: apt's lock held by another process, the
network down, no root. The run goes on without the browser tests and says which tests skip and
why; a lock released in time is waited for. Run against stand-ins on PATH (``apt-get``, ``id``,
and the virtualenv's ``python``, which notes how pytest was started), so nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LOCKED = ("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 "
          "(apt-get)")
OFFLINE = "E: Failed to fetch http://deb.debian.org/debian/pool/main/c/chromium/chromium.deb"


@dataclass
class Run:
    status: int
    stderr: str
    pytest_args: list[str] | None  # None: pytest was not started
    browser_missing: str  # CLOUDQUEUE_BROWSER_MISSING as pytest got it
    apt_calls: list[str]


def run_test_sh(tmp: Path, apt_get: str | None, *args: str, root: bool = True,
                pytest_status: int = 0, **env: str) -> Run:
    """``scripts/test.sh ARGS`` on a PATH with only the tools it uses, ``apt-get`` answering as
    the shell snippet ``apt_get`` does (None: no apt-get), and ``id -u`` saying root or not."""
    bin_dir, venv, notes = tmp / "bin", tmp / "venv", tmp / "notes"
    for directory in (bin_dir, venv / "bin", notes):
        directory.mkdir(parents=True, exist_ok=True)
    for tool in ("dirname", "cat", "env", "sleep"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    tools = {"id": f"echo {0 if root else 1000}",
             # the virtualenv's python: runs _venv.sh's checks, installs nothing, and notes how
             # pytest would have run
             "python": textwrap.dedent(f"""\
                 case "$1" in
                   -c) exec {sys.executable} "$@" ;;
                   -m) [ "$2" = pip ] && exit 0
                       shift 2; printf '%s\\n' "$@" > {notes}/pytest-args
                       printf '%s' "${{CLOUDQUEUE_BROWSER_MISSING-unset}}" > {notes}/missing
                       exit {pytest_status} ;;
                 esac
                 exit 99""")}
    if apt_get is not None:
        tools["apt-get"] = f'echo "$*" >> {notes}/apt-calls\n{apt_get}'
    for name, body in tools.items():
        path = venv / "bin" / name if name == "python" else bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("CLOUDQUEUE_") and k not in ("CHROMIUM", "PATH")}
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(ROOT / "scripts" / "test.sh"), *args],
        env={**base, "PATH": str(bin_dir), "CLOUDQUEUE_VENV": str(venv),
             # PostgreSQL "found" (these tests are about chromium), unless a test says otherwise
             "CLOUDQUEUE_PG_BINDIR": str(tmp / "pg-bin"), **env},
        cwd=tmp, capture_output=True, text=True, timeout=60)
    args_file, calls = notes / "pytest-args", notes / "apt-calls"
    return Run(done.returncode, done.stderr,
               args_file.read_text().splitlines() if args_file.exists() else None,
               (notes / "missing").read_text() if (notes / "missing").exists() else "",
               calls.read_text().splitlines() if calls.exists() else [])


LOCK_HELD = "installing chromium failed: another process held apt's lock for more than 0 s"
FAILED = "installing chromium with apt-get failed (apt's error is above)"


def skip_note(why: str) -> str:
    return (f"{why}: the browser tests (pytest -m browser) skip; with chromium installed "
            "(apt-get install chromium), run them: scripts/test.sh -m browser")


def test_apts_lock_held_past_the_wait_runs_the_rest_and_says_what_skipped(
        tmp_path: Path) -> None:
    run = run_test_sh(tmp_path, f'echo "{LOCKED}" >&2; exit 100',
                      CLOUDQUEUE_APT_LOCK_TIMEOUT="0")
    assert run.status == 0, run.stderr
    assert run.pytest_args == ["-p", "no:cacheprovider", "-m", "not slow"]
    assert run.browser_missing == LOCK_HELD  # the browser test's skip says it too
    # apt was asked to wait for dpkg's lock (here for no time), not to fail at once
    assert [call.split()[:2] for call in run.apt_calls] == [["-o", "DPkg::Lock::Timeout=0"]] * 2
    assert LOCKED in run.stderr
    # the last word, after pytest's
    assert run.stderr.rstrip().splitlines()[-1] == skip_note(LOCK_HELD)


def test_a_lock_released_within_the_wait_is_waited_for(tmp_path: Path) -> None:
    # held for apt-get update's first try (apt does not wait for the lists' lock itself), then
    # free; the install puts a chromium on PATH
    chromium, held = tmp_path / "bin" / "chromium", tmp_path / "lock-was-held"
    chmod = shutil.which("chmod")
    apt_get = textwrap.dedent(f"""\
        if [ ! -e {held} ]; then
          : > {held}
          echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 7" >&2
          exit 100
        fi
        case "$*" in
          *install*) printf '#!/bin/sh\\n' > {chromium}; {chmod} +x {chromium} ;;
        esac""")
    run = run_test_sh(tmp_path, apt_get, CLOUDQUEUE_APT_LOCK_TIMEOUT="30")
    assert run.status == 0, run.stderr
    assert [call.split()[2] for call in run.apt_calls] == ["update", "update", "install"]
    assert "apt's lock is held by another process; waiting up to" in run.stderr
    assert run.browser_missing == ""
    assert "pytest -m browser" not in run.stderr  # nothing skips


def test_no_network_runs_the_rest_and_the_failing_status_stands(tmp_path: Path) -> None:
    run = run_test_sh(tmp_path, f'echo "{OFFLINE}" >&2; exit 100', "tests/core",
                      pytest_status=1, CLOUDQUEUE_APT_LOCK_TIMEOUT="30")
    assert run.status == 1  # pytest's own status, not the install's
    assert run.pytest_args == ["-p", "no:cacheprovider", "tests/core"]
    # not a lock: tried once each, no waiting (apt itself would wait for dpkg's lock, within
    # what is left of the wait)
    assert [call.split()[2] for call in run.apt_calls] == ["update", "install"]
    assert all(0 < int(call.split()[1].removeprefix("DPkg::Lock::Timeout=")) <= 30
               for call in run.apt_calls)
    assert "apt-get update failed; trying the install with the package lists at hand" \
        in run.stderr
    assert run.stderr.count(OFFLINE) == 2 and "waiting" not in run.stderr
    assert run.browser_missing == FAILED
    assert run.stderr.rstrip().splitlines()[-1] == skip_note(FAILED)


@pytest.mark.parametrize("apt_get", [None, "exit 0"])
def test_without_root_nothing_is_installed_and_the_reason_is_given(
        tmp_path: Path, apt_get: str | None) -> None:
    run = run_test_sh(tmp_path, apt_get, root=False)
    assert run.status == 0 and run.pytest_args is not None
    assert run.apt_calls == []
    assert run.browser_missing == ("no chromium, and no way to install it here (it takes "
                                   "apt-get as root or with passwordless sudo)")
    assert "(pytest -m browser) skip" in run.stderr.splitlines()[-1]


def test_ci_still_requires_the_browser(tmp_path: Path) -> None:
    """Under CLOUDQUEUE_REQUIRE_BROWSER (``.ci/run`` sets it) the run goes on too, but the
    browser tests fail rather than skip, and the last line says so."""
    run = run_test_sh(tmp_path, f'echo "{LOCKED}" >&2; exit 100',
                      CLOUDQUEUE_APT_LOCK_TIMEOUT="0", CLOUDQUEUE_REQUIRE_BROWSER="1")
    assert run.pytest_args is not None and run.browser_missing == LOCK_HELD
    assert run.stderr.rstrip().splitlines()[-1] == (
        f"{LOCK_HELD}: the browser tests (pytest -m browser) fail, as CLOUDQUEUE_REQUIRE_BROWSER "
        "is set")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "CLOUDQUEUE_REQUIRE_BROWSER=1" in ci and "bash scripts/test.sh" in ci
