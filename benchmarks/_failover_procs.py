"""The failover benchmark's processes: PostgreSQL, the nodes, the function host and the load.

Every process the benchmark starts is a child in a process group of its own
(``start_new_session``), asked to die with the benchmark (``PR_SET_PDEATHSIG``: SIGKILL when
the benchmark's process ends, however it ends), and killed with its group at the end
(``Processes.kill_all``, also on an error). PostgreSQL is the one exception: ``pg_ctl`` starts
the postmaster as a daemon of the ``postgres`` user, so ``Postgres.close`` stops it
(``immediate``) and, failing that, SIGKILLs the postmaster and what is left of its children.

Chaos: ``Node.kill`` is ``kill -9`` of the node's process group (the node and a compactor child,
if one runs: a machine or container dying); ``Node.freeze`` / ``thaw`` are SIGSTOP / SIGCONT of
the group; ``Postgres.kill`` is ``kill -9`` of the postmaster, then waits for its backends to
notice and exit (each exits when it sees the postmaster gone), so that ``start`` can bring the
same data directory up again (crash recovery from the WAL, fsync on).

Database connections per node are counted from ``/proc`` (Linux): the node's sockets
(``/proc/<pid>/fd``) that are established TCP connections to PostgreSQL's port
(``/proc/net/tcp``). PostgreSQL listens on 127.0.0.1 for that reason (and on its socket
directory, as ``LocalPostgres`` sets up).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks._harness import REPO_ROOT, free_port
from cloudqueue.engine.runtime.postgres.local import LocalPostgres

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child, before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Processes:
    """The children started so far (by name), each in its own process group."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], log_path: Path,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, *argv], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
                start_new_session=True, preexec_fn=_die_with_parent)
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            signal_group(process, signal.SIGKILL)
            signal_group(process, signal.SIGCONT)
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """``sig`` to the process group of ``process`` (its session's), if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop_gracefully(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGTERM, wait, then SIGKILL the group; the exit code (None if it never exited)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
    return process.poll()


# ---------------------------------------------------------------------- /proc


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` now."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def exists(pid: int) -> bool:
    """Whether ``pid`` is still in the process table (a zombie too)."""
    return os.path.exists(f"/proc/{pid}")


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def tcp_connections_to(port: int) -> dict[str, int]:
    """Established TCP connections to 127.0.0.1:``port``: socket inode -> local port."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                    found[inode] = int(local.rsplit(":", 1)[1], 16)
    return found


def tcp_inbound(port: int) -> int:
    """Established TCP connections to 127.0.0.1:``port`` from its clients (the server side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


# ---------------------------------------------------------------------- PostgreSQL


class Postgres:
    """A throwaway cluster (``LocalPostgres``, fsync on) listening on 127.0.0.1:``port``."""

    def __init__(self) -> None:
        # the postgres user must reach the directory: a mkdtemp of its own, under /tmp
        self.directory = Path(tempfile.mkdtemp(prefix="cq-bench-failover-pg-"))
        self.port = free_port()
        self.local = LocalPostgres(self.directory, {"listen_addresses": "127.0.0.1",
                                                    "port": str(self.port)})
        self.kills: list[dict[str, Any]] = []

    def url_of(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        if not (self.local.data / "PG_VERSION").exists():
            self.local.init()
        self.local.start()
        return self

    @property
    def pid(self) -> int | None:
        return self.local.pid

    def kill(self) -> tuple[int, list[int]]:
        """``kill -9`` of the postmaster, now; (its pid, its children then) for ``wait_gone``.

        Raises:
            RuntimeError: PostgreSQL is not running.
        """
        pid = self.pid
        if pid is None or not exists(pid):
            raise RuntimeError("PostgreSQL is not running")
        children = children_of(pid)
        os.kill(pid, signal.SIGKILL)
        return pid, children

    def wait_gone(self, killed: tuple[int, list[int]], wait_s: float = 30.0) -> dict[str, Any]:
        """After ``kill``: wait until the postmaster and its children are gone, reaped too (a new
        postmaster refuses to start while the old pid exists, even as a zombie; the container's
        init may take a second or two to reap it). SIGKILL any child left after ``wait_s`` and
        say how many."""
        pid, children = killed
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(alive(c) for c in children):
            time.sleep(0.01)
        left = [c for c in children if alive(c)]
        for child in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        gone_at = time.monotonic()
        while time.monotonic() < deadline and any(exists(p) for p in (pid, *children)):
            time.sleep(0.01)
        return {"postmaster": pid, "children": len(children), "killed_after_wait": len(left),
                "reaped_after_s": round(time.monotonic() - gone_at, 3),
                "unreaped": sum(1 for p in (pid, *children) if exists(p))}

    def close(self, keep_log: Path | None = None) -> None:
        """Stop the cluster (immediate) and remove it; its server log goes to ``keep_log``."""
        pid = self.pid
        self.local.stop("immediate")
        if pid is not None and alive(pid):
            children = children_of(pid)
            for victim in (pid, *children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
        if keep_log is not None:
            with contextlib.suppress(OSError):
                shutil.copyfile(self.directory / "server.log", keep_log)
        shutil.rmtree(self.directory, ignore_errors=True)


# ---------------------------------------------------------------------- the nodes


# a node's connections: the load's requests in flight (during a failover, up to a few seconds'
# worth wait for the app's new owner), the other nodes' forwarded ones, the benchmark's
MAX_CONNECTIONS = 4_000
APP_KEY_SUFFIX, MASTER_KEY_SUFFIX = "-app-key-0123456789", "-master-key-0123456789"


def app_keys(app_id: str) -> tuple[str, str, str]:
    return app_id, app_id + APP_KEY_SUFFIX, app_id + MASTER_KEY_SUFFIX


def node_toml(port: int, store: str, lease_ms: int, data_dir: Path,
              apps: Mapping[str, str], concurrency: int) -> str:
    """The TOML of one node: ``apps`` maps each app id to its function host's URL."""
    lines = ['host = "127.0.0.1"', f"port = {port}", f'store = "{store}"',
             f'node_url = "http://127.0.0.1:{port}"', f"lease_ms = {lease_ms}",
             f'data_dir = "{data_dir}"', "dashboard = false", "shutdown_grace_ms = 2000",
             f"max_connections = {MAX_CONNECTIONS}", ""]
    for app_id, host in apps.items():
        _, app_key, master_key = app_keys(app_id)
        lines += ["[[apps]]", f'app_id = "{app_id}"', f'app_key = "{app_key}"',
                  f'master_key = "{master_key}"', f'function_host = "{host}"',
                  f"concurrency = {concurrency}", ""]
    return "\n".join(lines)


class Node:
    """One ``cloudqueue serve --config node-<i>.toml`` on a fixed port (kept across restarts,
    so that clients and the other nodes find it again)."""

    def __init__(self, index: int, root: Path, processes: Processes, toml: str,
                 port: int) -> None:
        self.index = index
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.config = root / f"node-{index}.toml"
        self.config.write_text(toml)
        self.log = root / f"node-{index}.log"
        self.processes = processes
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.starts = 0

    def start(self) -> None:
        self.process = self.processes.start(
            ["-m", "cloudqueue", "serve", "--config", str(self.config)], self.log)
        self.frozen = False
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9 of the node (its process group), reaped."""
        assert self.process is not None
        signal_group(self.process, signal.SIGKILL)
        if self.frozen:
            signal_group(self.process, signal.SIGCONT)
        self.process.wait(timeout=10)
        self.frozen = False

    def freeze(self) -> None:
        assert self.process is not None
        signal_group(self.process, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        signal_group(self.process, signal.SIGCONT)
        self.frozen = False

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def db_connections(self, pg_port: int) -> int | None:
        """Established connections of this node's process to PostgreSQL (None: not running)."""
        if not self.running or self.pid is None:
            return None
        inodes = socket_inodes(self.pid)
        return sum(1 for inode in tcp_connections_to(pg_port) if inode in inodes)
