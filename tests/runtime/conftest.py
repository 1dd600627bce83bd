"""Fixtures shared by the runtime tests: the stores every engine behaviour test runs against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# Every store behind the ``Store`` protocol. A behaviour test that takes ``store_options`` runs
# once per store, so a new store (a database shared by several nodes) is held to the same
# behaviour by adding it here.
STORES = ("memory", "log", "postgresql")


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def store_options(store_kind: str, tmp_path: Path) -> dict[str, Any]:
    """``Engine(**store_options)``: the engine's store for this run of the test."""
    if store_kind == "memory":
        return {}
    if store_kind == "postgresql":
        from tests import pg_cluster as postgres
        # a lease far longer than any test's FakeClock jump: the tests' time is not the lease's
        return {"store": postgres.new_database(), "lease_ms": 3_600_000}
    return {"data_dir": tmp_path / "data"}
