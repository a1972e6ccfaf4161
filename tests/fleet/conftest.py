"""One fleet (main + six workers, PostgreSQL, Redis, nginx) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fleet import Fleet
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="module")
def fleet(postgres_server: PostgresServer) -> Iterator[Fleet]:
    running = Fleet(postgres_server)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        errors = running.all_errors()
        if errors:
            print(f"ERROR lines in the fleet's logs ({running.workdir}):\n{errors}")
        else:
            running.cleanup()
