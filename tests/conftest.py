import sys
from pathlib import Path

import pytest

# Let `pytest` run from a plain checkout too (the package is normally pip-installed -e).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs PostgreSQL (tests/pg_cluster.py starts a "
                                       "throwaway cluster; scripts/test.sh installs it)")
    config.addinivalue_line("markers", "browser: drives a headless Chromium (scripts/test.sh "
                                       "installs Debian's chromium when it can)")


@pytest.fixture
def pg_url() -> str:
    """A new, empty PostgreSQL database for this test (``tests/pg_cluster.py``)."""
    from tests import pg_cluster as postgres
    return postgres.new_database()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests import pg_cluster as postgres
    postgres.stop()
