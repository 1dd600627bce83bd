"""A throwaway PostgreSQL cluster: ``initdb`` into a directory, listening on a Unix socket there
only (no TCP port), for tests, benchmarks and trying several nodes on one machine.

``initdb`` refuses to run as root: as root the cluster belongs to the ``postgres`` user (Debian's
package makes it) and its programs run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

PG_USER = "postgres"  # the superuser of the throwaway cluster


class PostgresMissingError(RuntimeError):
    """No PostgreSQL server programs on this machine."""


def server_bindir() -> Path:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are: ``$CLOUDQUEUE_PG_BINDIR``, Debian's
    newest ``/usr/lib/postgresql/N/bin``, or the PATH."""
    given = os.environ.get("CLOUDQUEUE_PG_BINDIR")
    if given:
        return Path(given)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    raise PostgresMissingError("no PostgreSQL server here (initdb, pg_ctl): install it with "
                               "`apt-get install postgresql`")


class LocalPostgres:
    """One cluster in ``directory`` (made by ``init``), served by ``start`` on a socket there.

    ``settings``: ``postgres -c`` settings on top of the defaults set here (fsync and
    synchronous_commit stay on unless given)."""

    def __init__(self, directory: Path, settings: dict[str, str] | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.data = self.directory / "data"
        self.bindir = server_bindir()
        self.settings = {"listen_addresses": "", "unix_socket_directories": str(self.directory),
                         "max_connections": "100", "shared_buffers": "128MB",
                         "logging_collector": "off", **(settings or {})}
        self._as_user = os.geteuid() == 0

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database, as ``--store`` takes it."""
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql://{PG_USER}@/{database}?host={quote(str(self.directory), safe='/')}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_user:
            command = ["runuser", "-u", PG_USER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=120) if not check else _checked(command)

    def init(self) -> LocalPostgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            user = pwd.getpwnam(PG_USER)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust",
                      "--no-sync", "-E", "UTF8", "--locale=C")
        return self

    def start(self) -> LocalPostgres:
        options = " ".join(f"-c {k}={_quoted(v)}" for k, v in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, while it runs."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql; its output (tuples only, unaligned)."""
        psql = shutil.which("psql") or str(self.bindir / "psql")
        command = [psql, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h",
                   str(self.directory), "-U", PG_USER, "-d", database, "-c", sql]
        return _checked(command).stdout.strip()

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url_of(name)


def _quoted(value: str) -> str:
    return f"'{value}'" if not value or " " in value else value


def _checked(command: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done


@contextlib.contextmanager
def running_postgres(directory: Path, settings: dict[str, str] | None = None
                     ) -> Iterator[LocalPostgres]:
    """A cluster in ``directory``, started, and stopped when the block exits."""
    cluster = LocalPostgres(directory, settings).init().start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
