"""The topology test runs programs, not the suite's app: `make e2e` (tests/e2e/topology.py)."""

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.e2e.topology import running_topology


@pytest.fixture(autouse=True)
def empty_tables():
    """The suite's fixture empties the test database's tables; this test has its own database."""


@pytest.fixture(scope="session")
def topology(tmp_path_factory):
    """nginx, two DevLab instances, PgBouncer, one database and one Redis, for the whole run.

    The logs stay in the folder pytest keeps for the run (printed when a test fails).
    """
    logs = tmp_path_factory.mktemp("topology")
    with running_topology(logs, TEST_REDIS_URL) as running:
        yield running
