"""The test session's own PostgreSQL: one throwaway cluster (``engine.runtime.postgres.local``)
started on first use, each test given a new empty database in it.

The cluster runs with ``fsync=off``: the behaviour tests do not lose power, and a database per
test costs milliseconds instead of a sync of every file. (The benchmarks and the kill tests of
the server run their own clusters with fsync on.) Without PostgreSQL on the machine the tests
that need it skip, saying how to install it; they fail instead under
``CLOUDQUEUE_REQUIRE_POSTGRES=1`` (as in CI, where ``scripts/test.sh`` installs it).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cloudqueue.engine.runtime.postgres.local import (
    LocalPostgres,
    PostgresMissingError,
    server_bindir,
)

_cluster: LocalPostgres | None = None
_names = itertools.count(1)


def cluster() -> LocalPostgres:
    """The session's cluster, started on first use (stopped at the session's end)."""
    global _cluster
    if _cluster is None:
        try:
            server_bindir()
        except PostgresMissingError as exc:
            if os.environ.get("CLOUDQUEUE_REQUIRE_POSTGRES"):
                pytest.fail(f"{exc} (CLOUDQUEUE_REQUIRE_POSTGRES is set)")
            pytest.skip(f"{exc}; scripts/test.sh installs it when it can")
        directory = Path(tempfile.mkdtemp(prefix="cloudqueue-pg-"))
        _cluster = LocalPostgres(directory, {"fsync": "off", "synchronous_commit": "off",
                                             "full_page_writes": "off"}).init().start()
    return _cluster


def new_database() -> str:
    """The URL of a new, empty database in the session's cluster."""
    return cluster().create_database(f"t{os.getpid()}_{next(_names)}")


def stop() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop("immediate")
        shutil.rmtree(_cluster.directory, ignore_errors=True)
        _cluster = None
